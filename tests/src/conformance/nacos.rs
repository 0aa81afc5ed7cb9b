//! Nacos as a [`Backend`]: an r-nacos started by the fixture; clients check the connection every
//! second.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use service_registry::nacos::{NacosConfig, NacosDiscovery, NacosRegistry};
use service_registry::{Discovery, Registry, RegistryError};

use super::{check_unauthenticated, quick_backoff, sorted_addrs, Backend, Example, Harness};
use crate::fixtures::nacos::{Nacos, NacosOptions};

/// The user and password of [`Harness::nacos_with_auth`].
const CREDENTIALS: (&str, &str) = ("admin", "right-password");

/// An r-nacos; with auth on, every client logs in as `admin`.
pub struct NacosBackend {
    pub nacos: Nacos,
    auth: bool,
}

impl Harness {
    /// Starts r-nacos and waits until it answers.
    pub async fn nacos() -> Self {
        Self::new(NacosBackend {
            nacos: Nacos::start().await,
            auth: false,
        })
    }

    /// Starts r-nacos with auth on (user `admin`); every client here logs in as `admin`.
    pub async fn nacos_with_auth() -> Self {
        let nacos = Nacos::start_with(NacosOptions {
            auth: Some((CREDENTIALS.0.into(), CREDENTIALS.1.into())),
            ..Default::default()
        })
        .await;
        Self::new(NacosBackend { nacos, auth: true })
    }
}

impl NacosBackend {
    /// The configuration every client here uses (with `password`, when auth is on).
    pub fn config(&self, password: Option<&str>) -> NacosConfig {
        let config = NacosConfig::new("127.0.0.1", self.nacos.http_port)
            .grpc_port(self.nacos.grpc_port)
            .heartbeat(Duration::from_secs(1))
            .request_timeout(Duration::from_secs(2))
            .backoff(quick_backoff());
        match (self.auth, password) {
            // A login hashes the password, which can take seconds on a busy machine; a login
            // that times out is (rightly) "unreachable", not "refused".
            (true, password) => config
                .request_timeout(Duration::from_secs(10))
                .user(CREDENTIALS.0, password.unwrap_or(CREDENTIALS.1)),
            (false, _) => config,
        }
    }
}

#[async_trait]
impl Backend for NacosBackend {
    fn name(&self) -> &'static str {
        "nacos"
    }
    fn oversized_value(&self) -> usize {
        11 << 20
    }
    fn updates_tags(&self) -> bool {
        false
    }
    fn connect(&self, password: Option<&str>) -> Arc<dyn Registry> {
        Arc::new(NacosRegistry::new(self.config(password)).expect("nacos registry"))
    }
    async fn discovery(&self) -> Arc<dyn Discovery> {
        Arc::new(NacosDiscovery::new(self.config(None)))
    }
    /// Nacos stores structured instances, not bytes: the nearest thing to unreadable data
    /// is an instance Kitex's resolver would not use, which the server still lists.
    /// `node` is its `ip:port`; it is registered through the HTTP open API with weight 0
    /// and `bytes` (lossily) as metadata.
    async fn put_raw(&self, service: &str, node: &str, bytes: &[u8]) {
        let addr: SocketAddr = node.parse().expect("node is ip:port");
        let metadata = serde_json::json!({ "raw": String::from_utf8_lossy(bytes) });
        self.nacos
            .register_http(
                service,
                &addr.ip().to_string(),
                addr.port(),
                0.0,
                &metadata,
                "",
            )
            .await;
    }
    async fn stored(&self, service: &str) -> Vec<SocketAddr> {
        let hosts = self.nacos.list(service).await;
        let nodes = hosts.iter().map(|host| {
            let ip = host["ip"].as_str().unwrap_or_default();
            format!("{ip}:{}", host["port"])
        });
        sorted_addrs(nodes, &format!("the open API's list of {service}"))
    }
    fn server_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.nacos.grpc_port))
    }
    fn connect_through(&self, addr: SocketAddr) -> Arc<dyn Registry> {
        let config = NacosConfig::new("127.0.0.1", self.nacos.http_port)
            .grpc_port(addr.port())
            .heartbeat(Duration::from_secs(1));
        Arc::new(NacosRegistry::new(config).expect("nacos registry"))
    }
    fn reconnections_at_most(&self) -> (Duration, usize) {
        (Duration::from_secs(8), 10)
    }
    fn wipe(&mut self) {
        self.nacos.wipe();
    }
    async fn outage(&mut self) {
        self.nacos.stop();
    }
    async fn recover(&mut self) {
        self.nacos.restart().await;
    }
    fn example(&self) -> Option<Example> {
        Some(Example {
            binary: "nacos",
            env: vec![
                ("serverAddr", "127.0.0.1".to_string()),
                ("serverPort", self.nacos.http_port.to_string()),
                ("NACOS_GRPC_PORT", self.nacos.grpc_port.to_string()),
            ],
            gone_within: Duration::from_secs(5),
        })
    }
    fn unreachable_says(&self) -> &'static str {
        "cannot reach Nacos"
    }
    fn user(&self) -> Option<&'static str> {
        self.auth.then_some(CREDENTIALS.0)
    }
    fn check_wrong_password(&self, text: &str, error: Option<&RegistryError>) {
        let (says, server) = (
            "refused the credentials of user `admin`",
            &self.nacos.http_addr(),
        );
        check_unauthenticated("nacos", (text, error), says, CREDENTIALS.0, server);
    }
}
