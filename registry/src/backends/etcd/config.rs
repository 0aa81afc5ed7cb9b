//! [`EtcdConfig`]: where etcd is and how to talk to it.

use std::path::Path;
use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

use super::wire::DEFAULT_PREFIX;
use crate::backoff::Backoff;
use crate::env::{
    EnvError, Vars, ETCD_ENDPOINTS_ENV, ETCD_LEASE_TTL_ENV, KITEX_ETCD_LEASE_TTL_ENV,
};

/// Why an [`EtcdConfig`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdConfigError {
    /// No endpoint was given.
    #[error("no etcd endpoints: give at least one, e.g. `http://127.0.0.1:2379`")]
    NoEndpoints,
    /// The lease TTL is too short to keep alive.
    #[error("lease TTL {0}s is too short; use at least 2 seconds")]
    TtlTooShort(i64),
    /// A setting that must be at least 1 was given 0.
    #[error("`EtcdConfig::{setting}` is 0; give at least 1")]
    Zero {
        /// The setter (`max_batch_ops`).
        setting: &'static str,
    },
    /// A TLS file could not be read.
    #[error("cannot read TLS file {path}: {source}")]
    TlsFile {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The registry's background task needs a Tokio runtime.
    #[error("EtcdRegistry must be built inside a Tokio runtime (its lease task is spawned there)")]
    NoRuntime,
}

/// Connection settings shared by [`EtcdRegistry`](super::EtcdRegistry) and
/// [`EtcdDiscovery`](super::EtcdDiscovery).
///
/// ```
/// use std::time::Duration;
/// use service_registry::etcd::EtcdConfig;
///
/// let config = EtcdConfig::new(["http://127.0.0.1:2379", "http://127.0.0.1:22379"])
///     .prefix("hertz/registry-etcd")
///     .lease_ttl(Duration::from_secs(10))
///     .connect_timeout(Duration::from_secs(2))
///     .user("svc", "secret");
/// assert_eq!(config.endpoints().len(), 2);
/// // `Debug` names the user, never the password (nor a TLS key).
/// assert!(!format!("{config:?}").contains("secret"));
/// ```
#[derive(Clone)]
pub struct EtcdConfig {
    pub(crate) endpoints: Vec<String>,
    pub(crate) prefix: String,
    pub(crate) lease_ttl: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) user: Option<(String, String)>,
    pub(crate) tls: Option<TlsOptions>,
    pub(crate) backoff: Backoff,
    pub(crate) max_txn_ops: usize,
    pub(crate) close_timeout: Duration,
    pub(crate) resolve_from_watch: bool,
}

/// Redacted by hand, as `reqwest` and `sqlx` do for their connection options: the user is
/// shown, the password and the TLS material are not.
impl std::fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("lease_ttl", &self.lease_ttl)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("user", &self.user.as_ref().map(|(user, _)| user))
            .field("password", &self.user.as_ref().map(|_| REDACTED))
            .field("tls", &self.tls.as_ref().map(|_| REDACTED))
            .field("backoff", &self.backoff)
            .field("max_txn_ops", &self.max_txn_ops)
            .field("close_timeout", &self.close_timeout)
            .field("resolve_from_watch", &self.resolve_from_watch)
            .finish()
    }
}

/// What `Debug` shows for a secret.
const REDACTED: &str = "<redacted>";

impl EtcdConfig {
    /// Settings for these endpoints (`http://host:port`, or `https://` with [`tls`](Self::tls)),
    /// with Kitex's prefix `kitex/registry-etcd`, a 15 s lease, and 128 operations per
    /// transaction (etcd's default `--max-txn-ops`).
    ///
    /// ```
    /// let c = service_registry::etcd::EtcdConfig::new(["http://127.0.0.1:2379"]);
    /// assert_eq!(c.endpoints(), ["http://127.0.0.1:2379"]);
    /// ```
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: DEFAULT_PREFIX.to_string(),
            lease_ttl: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            user: None,
            tls: None,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(2)),
            max_txn_ops: 128,
            close_timeout: Duration::from_secs(2),
            resolve_from_watch: true,
        }
    }

    /// Whether [`EtcdDiscovery::resolve`](super::EtcdDiscovery) answers from a live watch of
    /// the same service in the same discovery, while that watch is in sync (default `true`).
    /// Turn it off when a resolve must see a write another client made a moment before (read
    /// your writes): every resolve is then a range read.
    ///
    /// ```
    /// let c = service_registry::etcd::EtcdConfig::new(["http://127.0.0.1:2379"])
    ///     .resolve_from_watch(false);
    /// # let _ = c;
    /// ```
    pub fn resolve_from_watch(mut self, enabled: bool) -> Self {
        self.resolve_from_watch = enabled;
        self
    }

    /// Settings from the environment (see [`env`](crate::env) for the rule): the endpoints
    /// from `ETCD_ENDPOINTS` (comma-separated; default `http://127.0.0.1:2379`) and the lease
    /// TTL from `REGISTRY_LEASE_TTL`, else Kitex's `KITEX_ETCD_REGISTRY_LEASE_TTL` (whole
    /// seconds, at least 2; default 15). A variable set to a bad value is an [`EnvError`]
    /// naming it. Setters called on the result win over the variables.
    ///
    /// ```
    /// # fn main() -> Result<(), service_registry::env::EnvError> {
    /// let config = service_registry::etcd::EtcdConfig::from_env()?;
    /// assert!(!config.endpoints().is_empty());
    /// # Ok(()) }
    /// ```
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_vars(&Vars::process())
    }

    pub(crate) fn from_vars(vars: &Vars) -> Result<Self, EnvError> {
        let endpoints = vars
            .parse(
                ETCD_ENDPOINTS_ENV,
                "a comma-separated list of endpoints such as `http://127.0.0.1:2379`",
                |value| {
                    let list: Vec<String> = value
                        .split(',')
                        .map(str::trim)
                        .filter(|e| !e.is_empty())
                        .map(str::to_string)
                        .collect();
                    (!list.is_empty()).then_some(list)
                },
            )?
            .unwrap_or_else(|| vec!["http://127.0.0.1:2379".to_string()]);
        let mut config = Self::new(endpoints);
        for variable in [ETCD_LEASE_TTL_ENV, KITEX_ETCD_LEASE_TTL_ENV] {
            let ttl = vars.parse(variable, "a whole number of seconds, at least 2", |value| {
                value.parse::<u64>().ok().filter(|s| *s >= 2)
            })?;
            if let Some(seconds) = ttl {
                config.lease_ttl = Duration::from_secs(seconds);
                break;
            }
        }
        Ok(config)
    }

    /// The endpoints.
    ///
    /// See [`EtcdConfig`] for an example.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The key prefix (default `kitex/registry-etcd`; Hertz uses `hertz/registry-etcd`).
    /// ```
    /// let c = service_registry::etcd::EtcdConfig::new(["http://127.0.0.1:2379"]).prefix("hertz/registry-etcd");
    /// # let _ = c;
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().trim_end_matches('/').to_string();
        self
    }

    /// The lease TTL (default 15 s, in whole seconds, at least 2). A crashed process's
    /// registrations disappear this long after its last keep-alive. No variable overrides it
    /// ([`from_env`](Self::from_env) reads `REGISTRY_LEASE_TTL` into the config it returns).
    ///
    /// ```
    /// let c = service_registry::etcd::EtcdConfig::new(["http://127.0.0.1:2379"])
    ///     .lease_ttl(std::time::Duration::from_secs(10));
    /// # let _ = c;
    /// ```
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// How long connecting to an endpoint may take (default 3 s).
    ///
    /// ```
    /// let c = service_registry::etcd::EtcdConfig::new(["http://127.0.0.1:2379"])
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
    /// let c = service_registry::etcd::EtcdConfig::new(["http://127.0.0.1:2379"])
    ///     .request_timeout(std::time::Duration::from_secs(1));
    /// # let _ = c;
    /// ```
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Authenticate as `user` with `password`.
    ///
    /// Over `http://` endpoints the password, and the token etcd hands back, travel in clear
    /// text: anyone on the path can read them. Use `https://` endpoints with [`tls`](Self::tls)
    /// where the network is not trusted. A registry or discovery built with credentials and a
    /// plain-text endpoint says so once, as a warning in the logs.
    ///
    /// ```
    /// let c = service_registry::etcd::EtcdConfig::new(["http://127.0.0.1:2379"]).user("svc", "secret");
    /// # let _ = c;
    /// ```
    pub fn user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((user.into(), password.into()));
        self
    }

    /// Use TLS: `ca_pem` verifies the server; `client` is an optional (certificate, key) pair,
    /// all PEM. Endpoints must be `https://`.
    ///
    /// ```
    /// let config = service_registry::etcd::EtcdConfig::new(["https://127.0.0.1:2379"])
    ///     .tls(b"-----BEGIN CERTIFICATE-----...".to_vec(), None);
    /// # let _ = config;
    /// ```
    pub fn tls(mut self, ca_pem: Vec<u8>, client: Option<(Vec<u8>, Vec<u8>)>) -> Self {
        let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(ca_pem));
        if let Some((cert, key)) = client {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        self.tls = Some(tls);
        self
    }

    /// [`tls`](Self::tls) from PEM files.
    ///
    /// ```
    /// let err = service_registry::etcd::EtcdConfig::new(["https://127.0.0.1:2379"])
    ///     .tls_files("/nonexistent/ca.pem", None::<(&str, &str)>)
    ///     .unwrap_err();
    /// assert!(err.to_string().contains("/nonexistent/ca.pem"));
    /// ```
    pub fn tls_files(
        self,
        ca: impl AsRef<Path>,
        client: Option<(impl AsRef<Path>, impl AsRef<Path>)>,
    ) -> Result<Self, EtcdConfigError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| EtcdConfigError::TlsFile {
                path: path.display().to_string(),
                source,
            })
        };
        let ca = read(ca.as_ref())?;
        let client = match client {
            Some((cert, key)) => Some((read(cert.as_ref())?, read(key.as_ref())?)),
            None => None,
        };
        Ok(self.tls(ca, client))
    }

    /// The retry schedule for lost leases and connections (default 100 ms doubling to 2 s).
    ///
    /// ```
    /// use std::time::Duration;
    /// let c = service_registry::etcd::EtcdConfig::new(["http://127.0.0.1:2379"])
    ///     .backoff(service_registry::Backoff::new(Duration::from_millis(50), Duration::from_secs(1)));
    /// # let _ = c;
    /// ```
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The most operations one request (a transaction) may carry (default 128, etcd's
    /// `--max-txn-ops`). When etcd's limit is lower, the registry learns it from the first
    /// refusal and keeps to it. 0 is refused when the registry is built
    /// ([`EtcdConfigError::Zero`]).
    ///
    /// ```
    /// let c = service_registry::etcd::EtcdConfig::new(["http://127.0.0.1:2379"]).max_batch_ops(64);
    /// # let _ = c;
    /// ```
    pub fn max_batch_ops(mut self, ops: usize) -> Self {
        self.max_txn_ops = ops;
        self
    }

    /// Renamed [`max_batch_ops`](Self::max_batch_ops), the name every backend uses.
    #[deprecated(since = "0.1.0", note = "renamed `max_batch_ops`")]
    pub fn max_txn_ops(self, ops: usize) -> Self {
        self.max_batch_ops(ops)
    }

    /// How long [`close`](super::EtcdRegistry::close) may take in all (default 2 s). Whatever
    /// it could not delete in time expires with the lease.
    ///
    /// ```
    /// let c = service_registry::etcd::EtcdConfig::new(["http://127.0.0.1:2379"])
    ///     .close_timeout(std::time::Duration::from_secs(1));
    /// # let _ = c;
    /// ```
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// The TTL in whole seconds, as configured.
    pub(crate) fn effective_ttl(&self) -> Result<i64, EtcdConfigError> {
        let ttl = i64::try_from(self.lease_ttl.as_secs()).unwrap_or(i64::MAX);
        if ttl < 2 {
            return Err(EtcdConfigError::TtlTooShort(ttl));
        }
        Ok(ttl)
    }

    pub(crate) fn endpoint_list(&self) -> String {
        self.endpoints.join(",")
    }

    pub(crate) fn connect_options(&self) -> ConnectOptions {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            .with_keep_alive_while_idle(true);
        if let Some((user, password)) = &self.user {
            // Tokens expire (`--auth-token-ttl`, 300 s by default): authenticate again when
            // etcd says so, and retry the call.
            options = options
                .with_user(user.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        if let Some(tls) = &self.tls {
            options = options.with_tls(tls.clone());
        }
        options
    }

    /// Logs once (the caller is a constructor) when credentials would go over plain text.
    pub(crate) fn warn_if_plain_text_credentials(&self, what: &'static str) {
        let Some((user, _)) = &self.user else { return };
        let plain: Vec<&str> = self
            .endpoints
            .iter()
            .filter(|e| !e.starts_with("https://"))
            .map(String::as_str)
            .collect();
        if !plain.is_empty() {
            tracing::warn!(
                what,
                user = user.as_str(),
                endpoints = ?plain,
                "etcd credentials in plain text: the password of user `{user}` and its token go \
                 unencrypted over these endpoints; use https:// endpoints with `EtcdConfig::tls`"
            );
        }
    }

    pub(crate) fn check(&self) -> Result<(), EtcdConfigError> {
        if self.endpoints.is_empty() {
            return Err(EtcdConfigError::NoEndpoints);
        }
        if self.max_txn_ops == 0 {
            return Err(EtcdConfigError::Zero {
                setting: "max_batch_ops",
            });
        }
        self.effective_ttl().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_the_user_and_hides_the_password_and_tls_keys() {
        let config = EtcdConfig::new(["https://127.0.0.1:2379"])
            .user("svc", "pa55-word")
            .tls(
                b"CA".to_vec(),
                Some((b"CERT".to_vec(), b"KEY-BYTES".to_vec())),
            );
        let shown = format!("{config:?} {config:#?}");
        assert!(shown.contains("svc"), "{shown}");
        assert!(!shown.contains("pa55-word"), "{shown}");
        assert!(!shown.contains("KEY-BYTES"), "{shown}");
        assert!(shown.contains(REDACTED), "{shown}");
    }

    #[test]
    fn from_env_reads_its_variables_and_a_bad_value_names_the_variable() {
        let vars = Vars::from_pairs(&[
            (ETCD_ENDPOINTS_ENV, " http://a:1, ,http://b:2 "),
            (KITEX_ETCD_LEASE_TTL_ENV, "9"),
        ]);
        let config = EtcdConfig::from_vars(&vars).unwrap();
        assert_eq!(config.endpoints(), ["http://a:1", "http://b:2"]);
        assert_eq!(config.lease_ttl, Duration::from_secs(9));

        let ours_first =
            Vars::from_pairs(&[(ETCD_LEASE_TTL_ENV, "4"), (KITEX_ETCD_LEASE_TTL_ENV, "9")]);
        let config = EtcdConfig::from_vars(&ours_first).unwrap();
        assert_eq!(config.lease_ttl, Duration::from_secs(4));

        for (variable, value) in [
            (ETCD_LEASE_TTL_ENV, "ten"),
            (ETCD_LEASE_TTL_ENV, "1"),
            (KITEX_ETCD_LEASE_TTL_ENV, "-3"),
            (ETCD_ENDPOINTS_ENV, " , "),
        ] {
            let err = EtcdConfig::from_vars(&Vars::from_pairs(&[(variable, value)])).unwrap_err();
            assert!(
                matches!(&err, EnvError::Invalid { variable: v, .. } if *v == variable),
                "{variable}={value}: {err}"
            );
            assert!(err.to_string().contains(variable), "{err}");
        }
        let defaults = EtcdConfig::from_vars(&Vars::from_pairs(&[])).unwrap();
        assert_eq!(defaults.endpoints(), ["http://127.0.0.1:2379"]);
        assert_eq!(defaults.lease_ttl, Duration::from_secs(15));
    }

    #[test]
    fn zero_batch_size_is_refused() {
        let config = EtcdConfig::new(["http://127.0.0.1:2379"]).max_batch_ops(0);
        assert!(matches!(
            config.check(),
            Err(EtcdConfigError::Zero {
                setting: "max_batch_ops"
            })
        ));
        assert!(config.max_batch_ops(1).check().is_ok());
    }
}
