//! [`ZookeeperConfig`]: where ZooKeeper is and how to talk to it.

use std::time::Duration;

use crate::backoff::Backoff;
use crate::env::{EnvError, Vars, ZOOKEEPER_ENDPOINTS_ENV, ZOOKEEPER_SESSION_TIMEOUT_ENV};

/// Why a [`ZookeeperRegistry`](super::ZookeeperRegistry) could not be created.
///
/// ```
/// use service_registry::zookeeper::{ZookeeperConfig, ZookeeperConfigError, ZookeeperRegistry};
/// let err = ZookeeperRegistry::new(ZookeeperConfig::new("127.0.0.1:2181")).unwrap_err();
/// assert!(matches!(err, ZookeeperConfigError::NoRuntime));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ZookeeperConfigError {
    /// The session task needs a Tokio runtime.
    #[error("ZookeeperRegistry must be created inside a Tokio runtime (its session task is spawned there)")]
    NoRuntime,
    /// The connect string is empty.
    #[error("the ZooKeeper connect string is empty; give `host:port[,host:port][/chroot]`")]
    NoServers,
    /// A setting that must be at least 1 was given 0.
    #[error("`ZookeeperConfig::{setting}` is 0; give at least 1")]
    Zero {
        /// The setter (`max_batch_ops`).
        setting: &'static str,
    },
}

/// Connection settings shared by [`ZookeeperRegistry`](super::ZookeeperRegistry) and
/// [`ZookeeperDiscovery`](super::ZookeeperDiscovery).
///
/// ```
/// use std::time::Duration;
/// use service_registry::zookeeper::ZookeeperConfig;
///
/// let config = ZookeeperConfig::new("127.0.0.1:2181,127.0.0.1:2182/chroot")
///     .session_timeout(Duration::from_secs(6))
///     .user("svc", "secret");
/// assert_eq!(config.connect_string(), "127.0.0.1:2181,127.0.0.1:2182/chroot");
/// assert_eq!(config.endpoints(), ["127.0.0.1:2181", "127.0.0.1:2182"]);
/// // `Debug` names the user, never the password.
/// let shown = format!("{config:?}");
/// assert!(shown.contains("svc") && !shown.contains("secret"));
/// ```
#[derive(Clone)]
pub struct ZookeeperConfig {
    pub(crate) connect: String,
    pub(crate) root: String,
    pub(crate) session_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) auth: Option<(String, String)>,
    pub(crate) backoff: Backoff,
    pub(crate) max_multi_ops: usize,
    pub(crate) close_timeout: Duration,
    pub(crate) resolve_from_watch: bool,
    pub(crate) jute_max_buffer: usize,
}

/// ZooKeeper's default `jute.maxbuffer`: the largest request a server accepts (it drops the
/// connection of a client that sends a larger one).
pub(crate) const DEFAULT_JUTE_MAX_BUFFER: usize = 0xfffff;

/// Written by hand so that the digest password never shows: only the user is named.
impl std::fmt::Debug for ZookeeperConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            connect,
            root,
            session_timeout,
            connect_timeout,
            request_timeout,
            auth,
            backoff,
            max_multi_ops,
            close_timeout,
            resolve_from_watch,
            jute_max_buffer,
        } = self;
        f.debug_struct("ZookeeperConfig")
            .field("connect", connect)
            .field("root", root)
            .field("session_timeout", session_timeout)
            .field("connect_timeout", connect_timeout)
            .field("request_timeout", request_timeout)
            .field("user", &auth.as_ref().map(|(user, _)| Redacted(user)))
            .field("backoff", backoff)
            .field("max_multi_ops", max_multi_ops)
            .field("close_timeout", close_timeout)
            .field("resolve_from_watch", resolve_from_watch)
            .field("jute_max_buffer", jute_max_buffer)
            .finish()
    }
}

/// `user:<redacted>` in `Debug`.
struct Redacted<'a>(&'a str);

impl std::fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{}:<redacted>\"", self.0.escape_debug())
    }
}

impl ZookeeperConfig {
    /// Settings for a connect string (`host:port[,host:port...][/chroot]`), with no root prefix
    /// (Kitex's layout), a 10 s session, and multi-ops of up to 1000 creates (well inside
    /// ZooKeeper's default 1 MiB `jute.maxbuffer` for Kitex-sized nodes).
    pub fn new(connect: impl Into<String>) -> Self {
        Self {
            connect: connect.into(),
            root: String::new(),
            session_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            auth: None,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(2)),
            max_multi_ops: 1000,
            close_timeout: Duration::from_secs(2),
            resolve_from_watch: true,
            jute_max_buffer: DEFAULT_JUTE_MAX_BUFFER,
        }
    }

    /// Whether [`ZookeeperDiscovery::resolve`](super::ZookeeperDiscovery) answers from a live
    /// watch of the same service in the same discovery, while that watch is in sync (default
    /// `true`). Turn it off when a resolve must see a write another client made a moment
    /// before (read your writes): every resolve then lists and reads the service's nodes.
    ///
    /// ```
    /// let c = service_registry::zookeeper::ZookeeperConfig::new("127.0.0.1:2181")
    ///     .resolve_from_watch(false);
    /// # let _ = c;
    /// ```
    pub fn resolve_from_watch(mut self, enabled: bool) -> Self {
        self.resolve_from_watch = enabled;
        self
    }

    /// Settings from the environment (see [`env`](crate::env) for the rule): the connect
    /// string from `ZOOKEEPER_ENDPOINTS` (default `127.0.0.1:2181`) and the session timeout
    /// from `ZOOKEEPER_SESSION_TIMEOUT` (whole seconds above 0; default 10). A variable set to
    /// a bad value is an [`EnvError`] naming it. Setters called on the result win over the
    /// variables.
    ///
    /// ```
    /// # fn main() -> Result<(), service_registry::env::EnvError> {
    /// let config = service_registry::zookeeper::ZookeeperConfig::from_env()?;
    /// assert!(!config.connect_string().is_empty());
    /// # Ok(()) }
    /// ```
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_vars(&Vars::process())
    }

    pub(crate) fn from_vars(vars: &Vars) -> Result<Self, EnvError> {
        let connect = vars
            .get(ZOOKEEPER_ENDPOINTS_ENV)?
            .map_or_else(|| "127.0.0.1:2181".to_string(), |v| v.trim().to_string());
        let mut config = Self::new(connect);
        let timeout = vars.parse(
            ZOOKEEPER_SESSION_TIMEOUT_ENV,
            "a whole number of seconds above 0",
            |value| value.parse::<u64>().ok().filter(|s| *s > 0),
        )?;
        if let Some(seconds) = timeout {
            config.session_timeout = Duration::from_secs(seconds);
        }
        Ok(config)
    }

    /// The connect string, chroot included.
    ///
    /// See [`ZookeeperConfig`] for an example.
    pub fn connect_string(&self) -> &str {
        &self.connect
    }

    /// The servers of the connect string (`host:port`, without the chroot), as
    /// `EtcdConfig::endpoints` and `NacosConfig::endpoints` list theirs.
    ///
    /// See [`ZookeeperConfig`] for an example.
    pub fn endpoints(&self) -> Vec<&str> {
        let servers = self.connect.split('/').next().unwrap_or_default();
        servers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// A root prefix for every path (default none, as Kitex).
    ///
    /// ```
    /// let c = service_registry::zookeeper::ZookeeperConfig::new("127.0.0.1:2181").root("/services");
    /// # let _ = c;
    /// ```
    pub fn root(mut self, root: impl Into<String>) -> Self {
        let root = root.into();
        let trimmed = root.trim_end_matches('/');
        self.root = if trimmed.is_empty() || trimmed.starts_with('/') {
            trimmed.to_string()
        } else {
            format!("/{trimmed}")
        };
        self
    }

    /// The session timeout (default 10 s): a crashed process's nodes vanish this long after its
    /// last heartbeat.
    ///
    /// ```
    /// let c = service_registry::zookeeper::ZookeeperConfig::new("127.0.0.1:2181")
    ///     .session_timeout(std::time::Duration::from_secs(4));
    /// # let _ = c;
    /// ```
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// How long connecting may take (default 3 s).
    ///
    /// ```
    /// let c = service_registry::zookeeper::ZookeeperConfig::new("127.0.0.1:2181")
    ///     .connect_timeout(std::time::Duration::from_secs(1));
    /// # let _ = c;
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Digest authentication as `user:password`. Nodes are then created with an ACL that gives
    /// this identity every permission and everyone else read access, so others cannot delete or
    /// overwrite them while Kitex clients without credentials can still resolve them.
    ///
    /// Named `user` as on `EtcdConfig` and `NacosConfig`.
    ///
    /// ```
    /// let c = service_registry::zookeeper::ZookeeperConfig::new("127.0.0.1:2181").user("svc", "pw");
    /// # let _ = c;
    /// ```
    pub fn user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth = Some((user.into(), password.into()));
        self
    }

    /// Renamed [`user`](Self::user), the name every backend uses.
    #[deprecated(since = "0.1.0", note = "renamed `user`")]
    pub fn digest_auth(self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user(user, password)
    }

    /// The retry schedule for lost sessions (default 100 ms doubling to 2 s).
    ///
    /// ```
    /// use std::time::Duration;
    /// let c = service_registry::zookeeper::ZookeeperConfig::new("127.0.0.1:2181")
    ///     .backoff(service_registry::Backoff::new(Duration::from_millis(50), Duration::from_secs(1)));
    /// # let _ = c;
    /// ```
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How long one request may take (default 5 s).
    ///
    /// ```
    /// let c = service_registry::zookeeper::ZookeeperConfig::new("127.0.0.1:2181")
    ///     .request_timeout(std::time::Duration::from_secs(2));
    /// # let _ = c;
    /// ```
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The most operations one request (a multi-op) may carry (default 1000). 0 is refused when
    /// the registry is built ([`ZookeeperConfigError::Zero`]).
    ///
    /// ```
    /// let c = service_registry::zookeeper::ZookeeperConfig::new("127.0.0.1:2181").max_batch_ops(200);
    /// # let _ = c;
    /// ```
    pub fn max_batch_ops(mut self, ops: usize) -> Self {
        self.max_multi_ops = ops;
        self
    }

    /// Renamed [`max_batch_ops`](Self::max_batch_ops), the name every backend uses.
    #[deprecated(since = "0.1.0", note = "renamed `max_batch_ops`")]
    pub fn max_multi_ops(self, ops: usize) -> Self {
        self.max_batch_ops(ops)
    }

    /// How long [`close`](super::ZookeeperRegistry::close) may take in all (default 2 s).
    /// While ZooKeeper is unreachable close returns at once: the session's expiry removes the
    /// nodes.
    ///
    /// ```
    /// let c = service_registry::zookeeper::ZookeeperConfig::new("127.0.0.1:2181")
    ///     .close_timeout(std::time::Duration::from_secs(1));
    /// # let _ = c;
    /// ```
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// The server's `jute.maxbuffer` in bytes (default 1 MiB − 1, ZooKeeper's default): the
    /// largest request it accepts. A server drops the connection of a client that sends a larger
    /// one, so a registration whose node would not fit is refused here, before it is sent (an
    /// update keeps the value registered before it), and multi-ops are split to fit.
    ///
    /// ```
    /// let c = service_registry::zookeeper::ZookeeperConfig::new("127.0.0.1:2181")
    ///     .jute_max_buffer(4 * 1024 * 1024);
    /// # let _ = c;
    /// ```
    pub fn jute_max_buffer(mut self, bytes: usize) -> Self {
        self.jute_max_buffer = bytes.max(4096);
        self
    }

    /// The most bytes of path and data one request may carry, leaving room for its header and
    /// ACLs.
    pub(crate) fn request_budget(&self) -> usize {
        self.jute_max_buffer.saturating_sub(1024)
    }

    /// Refuses settings a registry cannot work with.
    pub(crate) fn check(&self) -> Result<(), ZookeeperConfigError> {
        if self.connect.trim().is_empty() {
            return Err(ZookeeperConfigError::NoServers);
        }
        if self.max_multi_ops == 0 {
            return Err(ZookeeperConfigError::Zero {
                setting: "max_batch_ops",
            });
        }
        Ok(())
    }

    pub(crate) fn user_name(&self) -> Option<&str> {
        self.auth.as_ref().map(|(user, _)| user.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_names_the_user_but_never_the_password() {
        let config = ZookeeperConfig::new("127.0.0.1:2181").user("team-a", "pw-5up3r-s3cret");
        let shown = format!("{config:?}");
        assert!(!shown.contains("pw-5up3r-s3cret"), "{shown}");
        assert!(shown.contains("team-a:<redacted>"), "{shown}");
        let pretty = format!("{config:#?}");
        assert!(!pretty.contains("pw-5up3r-s3cret"), "{pretty}");
        let plain = format!("{:?}", ZookeeperConfig::new("127.0.0.1:2181"));
        assert!(plain.contains("user: None"), "{plain}");
    }

    #[test]
    fn from_env_reads_its_variables_and_a_bad_value_names_the_variable() {
        let vars = Vars::from_pairs(&[
            (ZOOKEEPER_ENDPOINTS_ENV, " h1:1,h2:2/root "),
            (ZOOKEEPER_SESSION_TIMEOUT_ENV, "4"),
        ]);
        let config = ZookeeperConfig::from_vars(&vars).unwrap();
        assert_eq!(config.connect_string(), "h1:1,h2:2/root");
        assert_eq!(config.endpoints(), ["h1:1", "h2:2"]);
        assert_eq!(config.session_timeout, Duration::from_secs(4));
        for value in ["4s", "0", "-1"] {
            let vars = Vars::from_pairs(&[(ZOOKEEPER_SESSION_TIMEOUT_ENV, value)]);
            let err = ZookeeperConfig::from_vars(&vars).unwrap_err();
            assert!(
                err.to_string().contains("ZOOKEEPER_SESSION_TIMEOUT"),
                "{value}: {err}"
            );
        }
        let defaults = ZookeeperConfig::from_vars(&Vars::from_pairs(&[])).unwrap();
        assert_eq!(defaults.connect_string(), "127.0.0.1:2181");
        assert_eq!(defaults.session_timeout, Duration::from_secs(10));
    }

    #[test]
    fn zero_batch_size_is_refused() {
        let config = ZookeeperConfig::new("127.0.0.1:2181").max_batch_ops(0);
        assert!(matches!(
            config.check(),
            Err(ZookeeperConfigError::Zero {
                setting: "max_batch_ops"
            })
        ));
        assert!(config.max_batch_ops(1).check().is_ok());
    }
}
