//! ZooKeeper as a [`Backend`]: a standalone ZooKeeper started by the fixture; registries use a
//! 3 s session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use service_registry::zookeeper::{ZookeeperConfig, ZookeeperDiscovery, ZookeeperRegistry};
use service_registry::{Discovery, Registry, RegistryError};
use zookeeper_client::{Acls, CreateMode};

use super::{quick_backoff, sorted_addrs, Backend, Example, Harness, Record, EXPIRY};
use crate::fixtures::zookeeper::ZooKeeper;

/// The user and password of [`Harness::zookeeper_with_user`].
const CREDENTIALS: (&str, &str) = ("alice", "right");

/// A standalone ZooKeeper; with a user, registries write their nodes under its digest ACL.
pub struct ZookeeperBackend {
    pub zk: ZooKeeper,
    user: bool,
    /// One raw session for [`Backend::record`] and [`Backend::delete_raw`], which scenarios
    /// poll (a session per poll would pile up sessions); dropped at an outage.
    raw: tokio::sync::Mutex<Option<zookeeper_client::Client>>,
}

impl Harness {
    /// Starts ZooKeeper and waits until it answers.
    pub async fn zookeeper() -> Self {
        Self::new(ZookeeperBackend {
            zk: ZooKeeper::start().await,
            user: false,
            raw: Default::default(),
        })
    }

    /// Starts ZooKeeper; every registry here is digest user `alice` (discovery stays anonymous,
    /// as Kitex clients are: the nodes are world-readable).
    pub async fn zookeeper_with_user() -> Self {
        Self::new(ZookeeperBackend {
            zk: ZooKeeper::start().await,
            user: true,
            raw: Default::default(),
        })
    }
}

impl ZookeeperBackend {
    /// The raw session of [`ZookeeperBackend::raw`], opened on first use.
    async fn raw(&self) -> zookeeper_client::Client {
        let mut raw = self.raw.lock().await;
        if raw.is_none() {
            *raw = Some(self.zk.client(None).await);
        }
        raw.clone().expect("opened above")
    }

    /// A registry's configuration: [`ZookeeperBackend::config`], as `alice` (with `password`
    /// instead of hers) when the backend has a user.
    fn registry_config(&self, password: Option<&str>) -> ZookeeperConfig {
        match self.user {
            true => self
                .config()
                .user(CREDENTIALS.0, password.unwrap_or(CREDENTIALS.1)),
            false => self.config(),
        }
    }

    /// The configuration every client here uses.
    pub fn config(&self) -> ZookeeperConfig {
        ZookeeperConfig::new(self.zk.connect_string())
            .session_timeout(EXPIRY)
            .backoff(quick_backoff())
    }
}

#[async_trait]
impl Backend for ZookeeperBackend {
    fn name(&self) -> &'static str {
        "zookeeper"
    }
    fn connect(&self, password: Option<&str>) -> Arc<dyn Registry> {
        Arc::new(
            ZookeeperRegistry::new(self.registry_config(password)).expect("zookeeper registry"),
        )
    }
    fn connect_with_expiry(&self, expiry: Duration) -> Option<Arc<dyn Registry>> {
        let config = self.registry_config(None).session_timeout(expiry);
        Some(Arc::new(
            ZookeeperRegistry::new(config).expect("zookeeper registry"),
        ))
    }
    async fn discovery(&self) -> Arc<dyn Discovery> {
        Arc::new(ZookeeperDiscovery::new(self.config()))
    }
    async fn put_raw(&self, service: &str, node: &str, bytes: &[u8]) {
        let client = self.zk.client(None).await;
        let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
        match client
            .create(&format!("/{service}"), b"", &persistent)
            .await
        {
            Ok(_) | Err(zookeeper_client::Error::NodeExists) => {}
            Err(err) => panic!("create /{service}: {err}"),
        }
        let path = format!("/{service}/{node}");
        match client.create(&path, bytes, &persistent).await {
            Ok(_) => {}
            Err(zookeeper_client::Error::NodeExists) => {
                client.set_data(&path, bytes, None).await.expect("set data");
            }
            Err(err) => panic!("create {path}: {err}"),
        }
    }
    async fn record(&self, service: &str, node: &str) -> Option<Record> {
        let client = self.raw().await;
        match client.get_data(&format!("/{service}/{node}")).await {
            Ok((bytes, stat)) => Some(Record {
                bytes,
                holder: stat.ephemeral_owner,
                version: stat.mzxid,
            }),
            Err(zookeeper_client::Error::NoNode) => None,
            Err(err) => panic!("read /{service}/{node}: {err}"),
        }
    }
    async fn delete_raw(&self, service: &str, node: &str) {
        let client = self.raw().await;
        client
            .delete(&format!("/{service}/{node}"), None)
            .await
            .unwrap_or_else(|err| panic!("delete /{service}/{node}: {err}"));
    }
    async fn stored(&self, service: &str) -> Vec<SocketAddr> {
        let client = self.zk.client(None).await;
        let children = match client.list_children(&format!("/{service}")).await {
            Ok(children) => children,
            Err(zookeeper_client::Error::NoNode) => Vec::new(),
            Err(err) => panic!("list /{service}: {err}"),
        };
        sorted_addrs(children, &format!("/{service}"))
    }
    fn server_addr(&self) -> SocketAddr {
        self.zk
            .connect_string()
            .parse()
            .expect("the fixture's connect string is one ip:port")
    }
    /// A 3 s session and the default backoff, as the other proxied registries.
    fn connect_through(&self, addr: SocketAddr) -> Arc<dyn Registry> {
        let config = ZookeeperConfig::new(addr.to_string()).session_timeout(EXPIRY);
        Arc::new(ZookeeperRegistry::new(config).expect("zookeeper registry"))
    }
    /// While the server is away the client library reconnects within the session, and the
    /// registry's sentinel probes every 200 ms: no attempt fails in the registry's count, so no
    /// backoff grows to wait out.
    fn counts_failed_attempts(&self) -> bool {
        false
    }
    /// Before the sentinel ran in its own task, about half of such restarts missed (4.68 s):
    /// three rounds catch it.
    fn wiped_restarts(&self) -> usize {
        3
    }
    /// The new session is there within 1 s (the first node back); the margin is the
    /// recreation of the batch's ~100 nodes (0.3-0.6 s measured on a debug build with two busy
    /// loops and a release build running beside the test on two cores).
    fn back_after_wipe_within(&self) -> Duration {
        Duration::from_secs(2)
    }
    fn wipe(&mut self) {
        self.zk.wipe();
    }
    async fn outage(&mut self) {
        *self.raw.get_mut() = None;
        self.zk.stop();
    }
    async fn recover(&mut self) {
        self.zk.restart().await;
    }
    fn stores_warmup(&self) -> bool {
        false
    }
    fn example(&self) -> Option<Example> {
        Some(Example {
            binary: "zookeeper",
            env: vec![
                ("ZOOKEEPER_ENDPOINTS", self.zk.connect_string()),
                ("ZOOKEEPER_SESSION_TIMEOUT", EXPIRY.as_secs().to_string()),
            ],
            gone_within: EXPIRY + Duration::from_secs(1),
        })
    }
    /// Alone this took 0.06 ms to 440 ms (6 runs on 2026-12-02); once, beside other tests and
    /// a JVM starting, 1.62 s. What the bound catches is waiting out the backoff (6.4 s by
    /// then), not a slow machine.
    fn registers_after_outage_within(&self) -> Duration {
        Duration::from_secs(2)
    }
    fn user(&self) -> Option<&'static str> {
        self.user.then_some(CREDENTIALS.0)
    }
    /// ZooKeeper's digest scheme never checks a password: a wrong one is just another identity.
    /// It cannot take over alice's node, and the error names the user without calling it a
    /// credentials problem (the parent lets other identities create their own nodes).
    fn check_wrong_password(&self, text: &str, error: Option<&RegistryError>) {
        assert!(
            text.contains("alice") && text.contains("NoAuth") || text.contains("another identity"),
            "[zookeeper] {text}"
        );
        if let Some(error) = error {
            assert!(
                matches!(error, RegistryError::Backend { .. }),
                "[zookeeper] NoAuth on another identity's node is not a credentials error: {error}"
            );
        }
    }
}
