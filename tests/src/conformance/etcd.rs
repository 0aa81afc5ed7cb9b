//! etcd as a [`Backend`]: a one-member etcd started by the fixture; registries use a 3 s lease.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::GetOptions;
use service_registry::etcd::{EtcdConfig, EtcdDiscovery, EtcdRegistry, DEFAULT_PREFIX};
use service_registry::{Discovery, Registry, RegistryError};

use super::{
    check_unauthenticated, quick_backoff, sorted_addrs, Backend, Example, Harness, Record, EXPIRY,
};
use crate::fixtures::etcd::Etcd;
use crate::poll;

/// The user and password of [`Harness::etcd_with_auth`].
const CREDENTIALS: (&str, &str) = ("root", "right-password");

/// A one-member etcd; with auth on, every client logs in as `root`.
pub struct EtcdBackend {
    pub etcd: Etcd,
    auth: bool,
}

impl Harness {
    /// Starts etcd and waits until it answers.
    pub async fn etcd() -> Self {
        Self::new(EtcdBackend {
            etcd: Etcd::start().await,
            auth: false,
        })
    }

    /// Starts etcd with auth on (user `root`); every client here logs in as `root`.
    pub async fn etcd_with_auth() -> Self {
        let etcd = Etcd::start().await;
        etcd.enable_auth(CREDENTIALS.1).await;
        Self::new(EtcdBackend { etcd, auth: true })
    }
}

impl EtcdBackend {
    /// The configuration every client here uses (with `password`, when auth is on).
    pub fn config(&self, password: Option<&str>) -> EtcdConfig {
        let config = EtcdConfig::new(self.etcd.endpoints())
            .lease_ttl(EXPIRY)
            .backoff(quick_backoff());
        match (self.auth, password) {
            (true, password) => config.user(CREDENTIALS.0, password.unwrap_or(CREDENTIALS.1)),
            (false, _) => config,
        }
    }
}

#[async_trait]
impl Backend for EtcdBackend {
    fn name(&self) -> &'static str {
        "etcd"
    }
    fn connect(&self, password: Option<&str>) -> Arc<dyn Registry> {
        Arc::new(EtcdRegistry::new(self.config(password)).expect("etcd registry"))
    }
    fn connect_with_expiry(&self, expiry: Duration) -> Option<Arc<dyn Registry>> {
        let config = self.config(None).lease_ttl(expiry);
        Some(Arc::new(EtcdRegistry::new(config).expect("etcd registry")))
    }
    async fn discovery(&self) -> Arc<dyn Discovery> {
        Arc::new(EtcdDiscovery::new(self.config(None)))
    }
    async fn put_raw(&self, service: &str, node: &str, bytes: &[u8]) {
        let mut client = self.etcd.client().await;
        client
            .put(format!("{DEFAULT_PREFIX}/{service}/{node}"), bytes, None)
            .await
            .expect("raw put into etcd");
    }
    async fn record(&self, service: &str, node: &str) -> Option<Record> {
        let mut client = self.etcd.client().await;
        let response = client
            .get(format!("{DEFAULT_PREFIX}/{service}/{node}"), None)
            .await
            .expect("raw read from etcd");
        response.kvs().first().map(|kv| Record {
            bytes: kv.value().to_vec(),
            holder: kv.lease(),
            version: kv.mod_revision(),
        })
    }
    async fn delete_raw(&self, service: &str, node: &str) {
        let mut client = self.etcd.client().await;
        client
            .delete(format!("{DEFAULT_PREFIX}/{service}/{node}"), None)
            .await
            .expect("raw delete from etcd");
    }
    async fn stored(&self, service: &str) -> Vec<SocketAddr> {
        let prefix = format!("{DEFAULT_PREFIX}/{service}/");
        // Retries transient errors (a leader election) for up to 5 s.
        let response = poll::until(Duration::from_secs(5), "a read from etcd", || async {
            let mut client = self.etcd.client().await;
            let options = GetOptions::new().with_prefix().with_keys_only();
            client.get(prefix.as_str(), Some(options)).await.ok()
        })
        .await;
        let nodes = response.kvs().iter().map(|kv| {
            let key = kv.key_str().expect("a UTF-8 key");
            key[prefix.len()..].to_string()
        });
        sorted_addrs(nodes, &prefix)
    }
    fn server_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.etcd.members[0].client_port))
    }
    fn connect_through(&self, addr: SocketAddr) -> Arc<dyn Registry> {
        let config = EtcdConfig::new([format!("http://{addr}")]).lease_ttl(EXPIRY);
        Arc::new(EtcdRegistry::new(config).expect("etcd registry"))
    }
    fn reconnections_at_most(&self) -> (Duration, usize) {
        (Duration::from_secs(4), 8)
    }
    async fn writes(&self) -> Option<i64> {
        let mut client = self.etcd.client().await;
        let response = client.get("probe", None).await.expect("raw read from etcd");
        Some(response.header().expect("a response header").revision())
    }
    fn wipe(&mut self) {
        self.etcd.wipe();
    }
    async fn outage(&mut self) {
        self.etcd.stop();
    }
    async fn recover(&mut self) {
        self.etcd.restart().await;
    }
    fn example(&self) -> Option<Example> {
        Some(Example {
            binary: "etcd",
            env: vec![
                ("ETCD_ENDPOINTS", self.etcd.endpoint()),
                ("REGISTRY_LEASE_TTL", EXPIRY.as_secs().to_string()),
            ],
            gone_within: EXPIRY + Duration::from_secs(1),
        })
    }
    fn user(&self) -> Option<&'static str> {
        self.auth.then_some(CREDENTIALS.0)
    }
    fn check_wrong_password(&self, text: &str, error: Option<&RegistryError>) {
        let (says, server) = (
            "rejected the credentials of user `root`",
            &self.etcd.endpoint(),
        );
        check_unauthenticated("etcd", (text, error), says, CREDENTIALS.0, server);
    }
}
