//! [`NacosConfig`]: where Nacos is, which namespace, group and cluster, and how to log in.

use std::collections::BTreeMap;
use std::time::Duration;

use super::server::{grpc_port_of, NacosServer, Rotation};
use crate::backoff::Backoff;
use crate::env::{
    EnvError, Vars, KITEX_NACOS_TAGS_ENV, NACOS_GRPC_PORT_ENV, NACOS_NAMESPACE_ENV,
    NACOS_PASSWORD_ENV, NACOS_SERVER_ADDR_ENV, NACOS_SERVER_PORT_ENV, NACOS_USERNAME_ENV,
};

/// Kitex's default group.
pub const DEFAULT_GROUP: &str = "DEFAULT_GROUP";
/// Kitex's default cluster.
pub const DEFAULT_CLUSTER: &str = "DEFAULT";

/// Why a [`NacosConfig`] could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NacosConfigError {
    /// The host is empty.
    #[error("no Nacos server address: set one, e.g. `127.0.0.1` (or `serverAddr`)")]
    NoServer,
    /// The HTTP port leaves no room for the gRPC port at + 1000, and no gRPC port was given.
    #[error("HTTP port {http_port} + 1000 is over 65535: give the gRPC port with `NacosConfig::grpc_port` (or NACOS_GRPC_PORT for `from_env`)")]
    NoGrpcPort {
        /// The HTTP port.
        http_port: u16,
    },
    /// The registry's background task needs a Tokio runtime.
    #[error(
        "NacosRegistry must be built inside a Tokio runtime (its connection task is spawned there)"
    )]
    NoRuntime,
}

/// Connection settings shared by [`NacosRegistry`](super::NacosRegistry) and
/// [`NacosDiscovery`](super::NacosDiscovery).
///
/// ```
/// use std::time::Duration;
/// use service_registry::nacos::NacosConfig;
///
/// let config = NacosConfig::new("127.0.0.1", 8848)
///     .namespace("dev")
///     .group("DEFAULT_GROUP")
///     .cluster("DEFAULT")
///     .user("nacos", "secret")
///     .request_timeout(Duration::from_secs(3));
/// assert_eq!(config.grpc_addr(), "127.0.0.1:9848");
/// // `Debug` shows the user, never the password.
/// assert!(!format!("{config:?}").contains("secret"));
/// ```
///
/// # Credentials go in plain text
///
/// The login (`POST /nacos/v1/auth/login` on the HTTP port) and every gRPC request after it
/// (which carries the access token) are sent unencrypted: this crate speaks neither HTTPS nor
/// gRPC over TLS to Nacos (r-nacos serves neither). With a [`user`](Self::user) configured,
/// anyone on the path can read the password and the token. Keep Nacos on a trusted network (or
/// loopback, behind a local TLS tunnel); a registry or discovery built with a user says so
/// once in the log (a `warn`).
#[derive(Clone)]
pub struct NacosConfig {
    pub(crate) host: String,
    pub(crate) http_port: u16,
    pub(crate) grpc_port: u16,
    pub(crate) namespace: String,
    pub(crate) group: String,
    pub(crate) cluster: String,
    pub(crate) user: Option<(String, String)>,
    pub(crate) extra_metadata: BTreeMap<String, String>,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) backoff: Backoff,
    pub(crate) close_timeout: Duration,
    pub(crate) concurrency: usize,
    pub(crate) resolve_from_watch: bool,
    pub(crate) max_request_size: usize,
    /// The cluster's other nodes, after the one above.
    pub(crate) more: Vec<NacosServer>,
    pub(crate) rotation: Rotation,
}

impl std::fmt::Debug for NacosConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // By hand: the password never shows, only whether there is one.
        let user = self
            .user
            .as_ref()
            .map(|(user, _)| format!("{user} (password: <redacted>)"));
        f.debug_struct("NacosConfig")
            .field("host", &self.host)
            .field("http_port", &self.http_port)
            .field("grpc_port", &self.grpc_port)
            .field("namespace", &self.namespace)
            .field("group", &self.group)
            .field("cluster", &self.cluster)
            .field("user", &user)
            .field("extra_metadata", &self.extra_metadata)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("heartbeat", &self.heartbeat)
            .field("backoff", &self.backoff)
            .field("close_timeout", &self.close_timeout)
            .field("concurrency", &self.concurrency)
            .field("resolve_from_watch", &self.resolve_from_watch)
            .field("max_request_size", &self.max_request_size)
            .field("more_servers", &self.more)
            .finish()
    }
}

impl NacosConfig {
    /// Settings for Nacos at `host`, HTTP port `http_port` (gRPC on `http_port + 1000`; above
    /// 64535 set [`grpc_port`](Self::grpc_port), or the registry refuses the settings), with
    /// Kitex's defaults: namespace `public`, group `DEFAULT_GROUP`, cluster `DEFAULT`.
    ///
    /// ```
    /// let c = service_registry::nacos::NacosConfig::new("10.0.0.5", 8848);
    /// assert_eq!(c.http_addr(), "10.0.0.5:8848");
    /// ```
    pub fn new(host: impl Into<String>, http_port: u16) -> Self {
        Self {
            host: host.into(),
            http_port,
            grpc_port: grpc_port_of(http_port),
            namespace: String::new(),
            group: DEFAULT_GROUP.to_string(),
            cluster: DEFAULT_CLUSTER.to_string(),
            user: None,
            extra_metadata: BTreeMap::new(),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            heartbeat: Duration::from_secs(5),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(2)),
            close_timeout: Duration::from_secs(2),
            concurrency: 64,
            resolve_from_watch: true,
            max_request_size: DEFAULT_MAX_REQUEST_SIZE,
            more: Vec::new(),
            rotation: Rotation::default(),
        }
    }

    /// Another node of the same Nacos cluster. A registry or discovery connects to one node at
    /// a time; when that connection is lost (or a node does not answer while connecting) it
    /// moves on to the next node, re-registers everything it holds there and re-subscribes its
    /// watches.
    ///
    /// ```
    /// use service_registry::nacos::{NacosConfig, NacosServer};
    ///
    /// let config = NacosConfig::new("10.0.0.5", 8848)
    ///     .add_server(NacosServer::new("10.0.0.6", 8848))
    ///     .add_server(NacosServer::new("10.0.0.7", 8848));
    /// let nodes: Vec<String> = config.servers().iter().map(|n| n.http_addr()).collect();
    /// assert_eq!(nodes, ["10.0.0.5:8848", "10.0.0.6:8848", "10.0.0.7:8848"]);
    /// ```
    pub fn add_server(mut self, server: NacosServer) -> Self {
        self.more.push(server);
        self
    }

    /// Every node: the one given to [`new`](Self::new) first, then those added.
    ///
    /// See [`add_server`](Self::add_server) for an example.
    pub fn servers(&self) -> Vec<NacosServer> {
        let first = NacosServer {
            host: self.host.clone(),
            http_port: self.http_port,
            grpc_port: self.grpc_port,
        };
        std::iter::once(first)
            .chain(self.more.iter().cloned())
            .collect()
    }

    /// The node the last connection made with these settings (or a clone of them) went to.
    pub(crate) fn last_server(&self) -> Option<NacosServer> {
        self.rotation
            .last()
            .and_then(|index| self.servers().get(index).cloned())
    }

    /// These settings aimed at node `index` of [`servers`](Self::servers) alone (its
    /// connection, login and addresses), sharing the rotation with `self`.
    pub(crate) fn at(&self, index: usize) -> Self {
        let mut config = self.clone();
        if let Some(node) = self.servers().get(index) {
            config.host = node.host.clone();
            config.http_port = node.http_port;
            config.grpc_port = node.grpc_port;
        }
        config.more.clear();
        config
    }

    /// The largest registration request the servers accept, in bytes (default 10 MiB, Nacos'
    /// `nacos.remote.server.grpc.sdk.max-inbound-message-size`, which is also the most this
    /// crate's discovery decodes in one answer). A registration whose instance would not fit
    /// is refused here, before it is sent: an update keeps the value registered before it
    /// (a service holding an instance that large could not be read by anyone). r-nacos sets
    /// no limit of its own; raise this only together with the servers' setting.
    ///
    /// ```
    /// let c = service_registry::nacos::NacosConfig::new("127.0.0.1", 8848)
    ///     .max_request_size(16 << 20);
    /// # let _ = c;
    /// ```
    pub fn max_request_size(mut self, bytes: usize) -> Self {
        self.max_request_size = bytes.max(MIN_REQUEST_SIZE);
        self
    }

    /// Whether [`NacosDiscovery::resolve`](super::NacosDiscovery) answers from a live watch of
    /// the same service in the same discovery, while that watch is in sync (default `true`),
    /// as the etcd and ZooKeeper discoveries do. Turn it off when a resolve must see a write
    /// another client made a moment before: every resolve is then a query.
    ///
    /// ```
    /// let c = service_registry::nacos::NacosConfig::new("127.0.0.1", 8848)
    ///     .resolve_from_watch(false);
    /// # let _ = c;
    /// ```
    pub fn resolve_from_watch(mut self, enabled: bool) -> Self {
        self.resolve_from_watch = enabled;
        self
    }

    /// Settings from the environment (see [`env`](crate::env) for the rule), Kitex's
    /// variables first: `serverAddr` (default `127.0.0.1`; a comma list names a cluster's
    /// nodes, each `host` or `host:http_port`, see [`add_server`](Self::add_server)),
    /// `serverPort` (default 8848),
    /// `namespace` (default empty: `public`) and `KITEX_NACOS_ENV_TAGS` (`k=v,k=v`, added to
    /// every instance's metadata); plus `NACOS_GRPC_PORT` (default `serverPort + 1000`) and
    /// `NACOS_USERNAME` with `NACOS_PASSWORD`. A variable set to a bad value is an
    /// [`EnvError`] naming it: a port that is not one, a `serverPort` whose gRPC port would be
    /// over 65535 without `NACOS_GRPC_PORT`, a tag without `=`, a user without a password (or
    /// the reverse). Kitex skips bad tags and falls back to 8848 instead. Setters called on
    /// the result win over the variables.
    ///
    /// ```
    /// let config = service_registry::nacos::NacosConfig::from_env().unwrap();
    /// assert!(!config.http_addr().is_empty());
    /// ```
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_vars(&Vars::process())
    }

    pub(crate) fn from_vars(vars: &Vars) -> Result<Self, EnvError> {
        const PORT: &str = "a port number (1-65535)";
        let port = |value: &str| value.parse::<u16>().ok().filter(|p| *p > 0);
        let hosts = vars
            .get(NACOS_SERVER_ADDR_ENV)?
            .unwrap_or_else(|| "127.0.0.1".to_string());
        let http_port = vars
            .parse(NACOS_SERVER_PORT_ENV, PORT, port)?
            .unwrap_or(8848);
        let grpc = vars.parse(NACOS_GRPC_PORT_ENV, PORT, port)?;
        let mut nodes = parse_server_list(&hosts, http_port, grpc)?.into_iter();
        let first = nodes.next().ok_or_else(|| EnvError::Invalid {
            variable: NACOS_SERVER_ADDR_ENV,
            value: hosts.clone(),
            expected: SERVER_LIST,
        })?;
        let mut config = Self::new(first.host, first.http_port).grpc_port(first.grpc_port);
        config.more = nodes.collect();
        if let Some(namespace) = vars.get(NACOS_NAMESPACE_ENV)? {
            config.namespace = namespace;
        }
        match (vars.get(NACOS_USERNAME_ENV)?, vars.get(NACOS_PASSWORD_ENV)?) {
            (Some(user), Some(password)) => config.user = Some((user, password)),
            (Some(_), None) => {
                return Err(EnvError::Missing {
                    variable: NACOS_PASSWORD_ENV,
                    required_by: NACOS_USERNAME_ENV,
                })
            }
            (None, Some(_)) => {
                return Err(EnvError::Missing {
                    variable: NACOS_USERNAME_ENV,
                    required_by: NACOS_PASSWORD_ENV,
                })
            }
            (None, None) => {}
        }
        if let Some(tags) = vars.parse(
            KITEX_NACOS_TAGS_ENV,
            "`key=value` pairs separated by commas",
            parse_tags,
        )? {
            config.extra_metadata = tags;
        }
        Ok(config)
    }

    /// `host:http_port`, where the HTTP open API (and login) answers.
    ///
    /// See [`NacosConfig::new`] for an example.
    pub fn http_addr(&self) -> String {
        format!("{}:{}", self.host, self.http_port)
    }

    /// The servers' endpoints, as `EtcdConfig::endpoints` and `ZookeeperConfig::endpoints`
    /// list theirs: for each node ([`servers`](Self::servers)), the HTTP address (login, open
    /// API), then the gRPC address.
    ///
    /// ```
    /// use service_registry::nacos::{NacosConfig, NacosServer};
    /// let c = NacosConfig::new("10.0.0.5", 8848);
    /// assert_eq!(c.endpoints(), ["10.0.0.5:8848", "10.0.0.5:9848"]);
    /// let c = c.add_server(NacosServer::new("10.0.0.6", 8848));
    /// assert_eq!(c.endpoints().len(), 4);
    /// ```
    pub fn endpoints(&self) -> Vec<String> {
        self.servers()
            .iter()
            .flat_map(|node| [node.http_addr(), node.grpc_addr()])
            .collect()
    }

    /// `host:grpc_port`, where the 2.x gRPC API answers.
    ///
    /// See [`NacosConfig`] for an example.
    pub fn grpc_addr(&self) -> String {
        format!("{}:{}", self.host, self.grpc_port)
    }

    /// The gRPC port, when it is not the HTTP port + 1000.
    ///
    /// ```
    /// let c = service_registry::nacos::NacosConfig::new("127.0.0.1", 8848).grpc_port(7000);
    /// assert_eq!(c.grpc_addr(), "127.0.0.1:7000");
    /// ```
    pub fn grpc_port(mut self, port: u16) -> Self {
        self.grpc_port = port;
        self
    }

    /// The namespace id (default empty, which Nacos reads as `public`).
    ///
    /// ```
    /// let c = service_registry::nacos::NacosConfig::new("127.0.0.1", 8848).namespace("dev");
    /// # let _ = c;
    /// ```
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The group (default `DEFAULT_GROUP`, as Kitex's `WithGroup`).
    ///
    /// ```
    /// let c = service_registry::nacos::NacosConfig::new("127.0.0.1", 8848).group("ORDERS");
    /// # let _ = c;
    /// ```
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// The cluster (default `DEFAULT`, as Kitex's `WithCluster`). Discovery reads this
    /// cluster only, as Kitex's resolver does.
    ///
    /// ```
    /// let c = service_registry::nacos::NacosConfig::new("127.0.0.1", 8848).cluster("HZ");
    /// # let _ = c;
    /// ```
    pub fn cluster(mut self, cluster: impl Into<String>) -> Self {
        self.cluster = cluster.into();
        self
    }

    /// Log in as `user` with `password` (Nacos' `/nacos/v1/auth/login`; the token is sent
    /// with every request and renewed before it expires). Both go unencrypted: see
    /// [Credentials go in plain text](NacosConfig#credentials-go-in-plain-text). The password
    /// shows in no `Debug` output, error, status or log.
    ///
    /// ```
    /// let c = service_registry::nacos::NacosConfig::new("127.0.0.1", 8848).user("nacos", "nacos");
    /// # let _ = c;
    /// ```
    pub fn user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((user.into(), password.into()));
        self
    }

    /// Metadata added to every instance registered (Kitex's `KITEX_NACOS_ENV_TAGS`); an
    /// instance's own tags win over it.
    ///
    /// ```
    /// let c = service_registry::nacos::NacosConfig::new("127.0.0.1", 8848)
    ///     .extra_metadata([("env", "prod")]);
    /// # let _ = c;
    /// ```
    pub fn extra_metadata<I, K, V>(mut self, metadata: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.extra_metadata = metadata
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self
    }

    /// How long connecting may take (default 3 s).
    ///
    /// ```
    /// let c = service_registry::nacos::NacosConfig::new("127.0.0.1", 8848)
    ///     .connect_timeout(std::time::Duration::from_secs(1));
    /// # let _ = c;
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one request may take (default 5 s).
    ///
    /// ```
    /// let c = service_registry::nacos::NacosConfig::new("127.0.0.1", 8848)
    ///     .request_timeout(std::time::Duration::from_secs(2));
    /// # let _ = c;
    /// ```
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How often the connection is checked with a `HealthCheckRequest` (default 5 s, as the
    /// Java client). A check that fails or gets no answer within the request timeout counts
    /// as a lost connection: everything is registered again on a new one.
    ///
    /// ```
    /// let c = service_registry::nacos::NacosConfig::new("127.0.0.1", 8848)
    ///     .heartbeat(std::time::Duration::from_secs(2));
    /// # let _ = c;
    /// ```
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every.max(Duration::from_millis(100));
        self
    }

    /// The retry schedule for a lost connection (default 100 ms doubling to 2 s).
    ///
    /// ```
    /// use std::time::Duration;
    /// let c = service_registry::nacos::NacosConfig::new("127.0.0.1", 8848)
    ///     .backoff(service_registry::Backoff::new(Duration::from_millis(50), Duration::from_secs(1)));
    /// # let _ = c;
    /// ```
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How long [`close`](super::NacosRegistry::close) may take (default 2 s); whatever is
    /// left goes when the connection closes.
    ///
    /// ```
    /// let c = service_registry::nacos::NacosConfig::new("127.0.0.1", 8848)
    ///     .close_timeout(std::time::Duration::from_secs(1));
    /// # let _ = c;
    /// ```
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// The user name, or a placeholder when none is configured (for error messages).
    pub(crate) fn user_name(&self) -> String {
        self.user
            .as_ref()
            .map(|(user, _)| user.clone())
            .unwrap_or_else(|| "(none: no user configured)".to_string())
    }

    /// Says once, in the log, that the credentials go unencrypted (when a user is configured).
    /// Called once per registry and per discovery, when it is built.
    pub(crate) fn warn_plain_text_credentials(&self) {
        if let Some((user, _)) = &self.user {
            tracing::warn!(
                user = %user,
                server = %self.http_addr(),
                grpc = %self.grpc_addr(),
                "the Nacos password and access token of this user go over plain text (no TLS): \
                 anyone on the path can read them; keep Nacos on a trusted network"
            );
        }
    }

    /// Checks the settings of a registry (and says once when its credentials go unencrypted).
    pub(crate) fn check(&self) -> Result<(), NacosConfigError> {
        for node in self.servers() {
            if node.host.trim().is_empty() {
                return Err(NacosConfigError::NoServer);
            }
            if node.grpc_port == 0 {
                return Err(NacosConfigError::NoGrpcPort {
                    http_port: node.http_port,
                });
            }
        }
        self.warn_plain_text_credentials();
        Ok(())
    }
}

/// What `serverAddr` holds.
/// Nacos' default `nacos.remote.server.grpc.sdk.max-inbound-message-size`.
pub(crate) const DEFAULT_MAX_REQUEST_SIZE: usize = 10 << 20;
/// The least [`NacosConfig::max_request_size`] takes: room for an instance with its metadata.
const MIN_REQUEST_SIZE: usize = 64 << 10;
/// What a registration request carries beside the instance (its envelope and metadata).
pub(crate) const REQUEST_OVERHEAD: usize = 1 << 10;

const SERVER_LIST: &str = "hosts separated by commas, each `host`, `host:port` or `[v6]:port`";

/// `serverAddr`'s comma list: `host`, `host:port` or `[v6]:port` each (a bare IPv6 address
/// needs its brackets); `port` is the HTTP port, `default_port` where none is given; the gRPC
/// port is `grpc`, else the HTTP port + 1000.
fn parse_server_list(
    text: &str,
    default_port: u16,
    grpc: Option<u16>,
) -> Result<Vec<NacosServer>, EnvError> {
    let mut nodes = Vec::new();
    for item in text.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        let invalid = |expected| EnvError::Invalid {
            variable: NACOS_SERVER_ADDR_ENV,
            value: item.to_string(),
            expected,
        };
        let (host, http_port, explicit) = match item.rsplit_once(':') {
            Some((host, port))
                if (!host.is_empty() && !host.contains(':')) || host.ends_with(']') =>
            {
                let port = port.parse::<u16>().ok().filter(|p| *p > 0);
                (host, port.ok_or_else(|| invalid(SERVER_LIST))?, true)
            }
            _ => (item, default_port, false),
        };
        let node = NacosServer::new(host, http_port);
        let node = match grpc {
            Some(grpc) => node.grpc_port(grpc),
            None if node.grpc_port == 0 => {
                // Name the variable the port came from.
                return Err(EnvError::Invalid {
                    variable: if explicit {
                        NACOS_SERVER_ADDR_ENV
                    } else {
                        NACOS_SERVER_PORT_ENV
                    },
                    value: if explicit {
                        item.to_string()
                    } else {
                        http_port.to_string()
                    },
                    expected:
                        "a port with room for the gRPC port at + 1000 (or set NACOS_GRPC_PORT)",
                });
            }
            None => node,
        };
        nodes.push(node);
    }
    Ok(nodes)
}

/// Kitex's `parseTags` format, `k1=v1,k2=v2`; `None` when a part does not have exactly one
/// `=` (Kitex skips such parts), or its key is empty.
fn parse_tags(text: &str) -> Option<BTreeMap<String, String>> {
    text.split(',')
        .map(|part| {
            let mut pieces = part.split('=');
            match (pieces.next(), pieces.next(), pieces.next()) {
                (Some(k), Some(v), None) if !k.trim().is_empty() => {
                    Some((k.to_string(), v.to_string()))
                }
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_list_names_every_node_with_its_own_or_the_default_port() {
        let nodes =
            parse_server_list(" 10.0.0.5, 10.0.0.6:18848,[::1]:7000,,", 8848, None).unwrap();
        let addrs: Vec<_> = nodes
            .iter()
            .map(|n| (n.http_addr(), n.grpc_addr()))
            .collect();
        assert_eq!(
            addrs,
            [
                ("10.0.0.5:8848".to_string(), "10.0.0.5:9848".to_string()),
                ("10.0.0.6:18848".to_string(), "10.0.0.6:19848".to_string()),
                ("[::1]:7000".to_string(), "[::1]:8000".to_string()),
            ]
        );
        let nodes = parse_server_list("a,b:1", 8848, Some(9000)).unwrap();
        assert!(nodes.iter().all(|n| n.grpc_port == 9000));
        assert!(matches!(
            parse_server_list("a:http", 8848, None),
            Err(EnvError::Invalid {
                variable: NACOS_SERVER_ADDR_ENV,
                ..
            })
        ));
        assert!(matches!(
            parse_server_list("a:65000", 8848, None),
            Err(EnvError::Invalid {
                variable: NACOS_SERVER_ADDR_ENV,
                ..
            })
        ));
        assert!(parse_server_list(" , ", 8848, None).unwrap().is_empty());
    }

    #[test]
    fn a_node_of_the_cluster_alone_keeps_every_other_setting() {
        let config = NacosConfig::new("a", 1000)
            .namespace("dev")
            .add_server(NacosServer::new("b", 2000).grpc_port(2001));
        assert_eq!(config.servers().len(), 2);
        let b = config.at(1);
        assert_eq!(
            (b.http_addr(), b.grpc_addr()),
            ("b:2000".into(), "b:2001".into())
        );
        assert_eq!(b.namespace, "dev");
        assert_eq!(b.servers().len(), 1);
        assert!(NacosConfig::new("a", 1)
            .add_server(NacosServer::new("b", 65000))
            .check()
            .is_err());
    }

    #[test]
    fn from_env_takes_a_cluster_as_a_comma_list() {
        let vars = Vars::from_pairs(&[
            (NACOS_SERVER_ADDR_ENV, "10.0.0.5, 10.0.0.6:18848"),
            (NACOS_SERVER_PORT_ENV, "8849"),
        ]);
        let config = NacosConfig::from_vars(&vars).unwrap();
        let nodes: Vec<_> = config.servers().iter().map(|n| n.http_addr()).collect();
        assert_eq!(nodes, ["10.0.0.5:8849", "10.0.0.6:18848"]);
        let err = NacosConfig::from_vars(&Vars::from_pairs(&[(NACOS_SERVER_ADDR_ENV, ",")]));
        assert!(err.unwrap_err().to_string().contains(NACOS_SERVER_ADDR_ENV));
    }

    #[test]
    fn tags_parse_as_kitex_writes_them_and_a_bad_part_is_refused() {
        let tags = parse_tags("env=prod,idc=hz").unwrap();
        assert_eq!(tags.len(), 2);
        assert_eq!(tags["env"], "prod");
        assert_eq!(tags["idc"], "hz");
        assert_eq!(parse_tags("env=prod,bad"), None);
        assert_eq!(parse_tags("a=b=c"), None);
        assert_eq!(parse_tags("=v"), None);
    }

    #[test]
    fn from_env_reads_its_variables_and_a_bad_value_names_the_variable() {
        let vars = Vars::from_pairs(&[
            (NACOS_SERVER_ADDR_ENV, " 10.0.0.5 "),
            (NACOS_SERVER_PORT_ENV, "18848"),
            (NACOS_NAMESPACE_ENV, "dev"),
            (NACOS_USERNAME_ENV, "nacos"),
            (NACOS_PASSWORD_ENV, "pw-9f1"),
            (KITEX_NACOS_TAGS_ENV, "env=prod"),
        ]);
        let config = NacosConfig::from_vars(&vars).unwrap();
        assert_eq!(config.endpoints(), ["10.0.0.5:18848", "10.0.0.5:19848"]);
        assert_eq!(config.namespace, "dev");
        assert_eq!(config.user_name(), "nacos");
        assert_eq!(config.extra_metadata["env"], "prod");

        for (pairs, named) in [
            (
                &[(NACOS_SERVER_PORT_ENV, "http")][..],
                NACOS_SERVER_PORT_ENV,
            ),
            (
                &[(NACOS_SERVER_PORT_ENV, "65000")][..],
                NACOS_SERVER_PORT_ENV,
            ),
            (&[(NACOS_GRPC_PORT_ENV, "0")][..], NACOS_GRPC_PORT_ENV),
            (&[(KITEX_NACOS_TAGS_ENV, "env")][..], KITEX_NACOS_TAGS_ENV),
            (&[(NACOS_USERNAME_ENV, "nacos")][..], NACOS_PASSWORD_ENV),
            (&[(NACOS_PASSWORD_ENV, "pw-9f1")][..], NACOS_USERNAME_ENV),
        ] {
            let err = NacosConfig::from_vars(&Vars::from_pairs(pairs)).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(named), "{pairs:?}: {text}");
            assert!(!text.contains("pw-9f1"), "{text}");
        }
        let room = Vars::from_pairs(&[
            (NACOS_SERVER_PORT_ENV, "65000"),
            (NACOS_GRPC_PORT_ENV, "9848"),
        ]);
        assert_eq!(
            NacosConfig::from_vars(&room).unwrap().grpc_addr(),
            "127.0.0.1:9848"
        );
    }

    #[test]
    fn an_http_port_without_room_for_the_grpc_port_is_an_error() {
        let c = NacosConfig::new("h", 65000);
        assert!(matches!(
            c.check(),
            Err(NacosConfigError::NoGrpcPort { http_port: 65000 })
        ));
        assert!(c.clone().grpc_port(9848).check().is_ok());
        assert!(NacosConfig::new("h", 64535).check().is_ok());
    }

    #[test]
    fn debug_shows_the_user_and_never_the_password() {
        let c = NacosConfig::new("h", 8848).user("admin", "pw-7c1e");
        let text = format!("{c:?} {c:#?}");
        assert!(!text.contains("pw-7c1e"), "{text}");
        assert!(text.contains("admin (password: <redacted>)"), "{text}");
        assert!(format!("{:?}", NacosConfig::new("h", 1)).contains("user: None"));
    }

    #[test]
    fn grpc_port_follows_the_http_port() {
        let c = NacosConfig::new("h", 18848);
        assert_eq!(c.grpc_addr(), "h:19848");
        assert_eq!(c.group, DEFAULT_GROUP);
        assert_eq!(c.cluster, DEFAULT_CLUSTER);
    }
}
