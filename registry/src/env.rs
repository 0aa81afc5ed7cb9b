//! Every environment variable this crate reads, and the one rule it reads them by.
//!
//! # The rule
//!
//! 1. **Code is what it says.** `EtcdConfig::new`, `ZookeeperConfig::new`,
//!    `NacosConfig::new`, their setters and the [`Registrar`](crate::Registrar) builder's
//!    options never read the environment: a value set in code is the value used.
//! 2. **`from_env` reads the backend's variables, once.** `EtcdConfig::from_env()`,
//!    `ZookeeperConfig::from_env()` and `NacosConfig::from_env()` read the variables of their
//!    backend when they are called and return `Result<Self, EnvError>`. A variable that is
//!    unset or empty takes the default; a variable that is set to a bad value is an
//!    [`EnvError`] that names it. A setter called on the result wins over the variable (it is
//!    written later), so `EtcdConfig::from_env()?.lease_ttl(..)` uses the code's TTL.
//! 3. **Operator knobs of the registrar win over code, and say so.**
//!    [`RegistrarBuilder::build`](crate::RegistrarBuilder::build) reads [`DRAIN_DELAY_ENV`],
//!    [`ADVERTISE_ADDR_ENV`], [`KITEX_IP_ENV`] and [`KITEX_PORT_ENV`], so an operator can
//!    change a deployment without a rebuild. When one of them replaces a value given to the
//!    builder, `build` logs a `warn` naming the variable and both values. A bad value is
//!    [`RegistrarError::Env`](crate::RegistrarError::Env), naming the variable.
//! 4. **Tag templates read what they name.** `#[service(tag(idc = "${IDC:-hz}"))]` reads `IDC`
//!    when the registrar is built, because the code asked for it
//!    ([`RegistrarError::MissingTagVariable`](crate::RegistrarError::MissingTagVariable) names
//!    a missing one).
//!
//! Nothing else in the crate reads the environment.
//!
//! ```
//! use service_registry::env::{EnvError, DRAIN_DELAY_ENV};
//! let err = EnvError::Invalid {
//!     variable: DRAIN_DELAY_ENV,
//!     value: "soon".into(),
//!     expected: "a duration such as `6s`, `500ms`, `2m` or whole seconds",
//! };
//! assert!(err.to_string().contains("SERVICE_REGISTRY_DRAIN_DELAY = `soon`"));
//! ```

use std::env::VarError;

// ---- Registrar operator knobs (read by `RegistrarBuilder::build`, win over the builder) ----

/// Sets the advertised address (`ip:port`, `[ipv6]:port` or a bare IP, whose port is the
/// listen port); wins over [`RegistrarBuilder::advertise_addr`](crate::RegistrarBuilder::advertise_addr)
/// and over [`KITEX_IP_ENV`] / [`KITEX_PORT_ENV`].
pub const ADVERTISE_ADDR_ENV: &str = "SERVICE_REGISTRY_ADVERTISE_ADDR";
/// Kitex's variable for the IP to register (as `kitex-contrib/registry-etcd` reads it): replaces
/// the IP of the builder's or the listen address unless [`ADVERTISE_ADDR_ENV`] is set.
pub const KITEX_IP_ENV: &str = "KITEX_IP_TO_REGISTRY";
/// Kitex's variable for the port to register: replaces the port of the builder's or the listen
/// address unless [`ADVERTISE_ADDR_ENV`] is set.
pub const KITEX_PORT_ENV: &str = "KITEX_PORT_TO_REGISTRY";
/// Sets the drain delay, a duration in [`humantime`]'s grammar (`6s`, `1500ms`, `2m`, `1m30s`;
/// `0` for none), the grammar of `#[service(warmup = ..)]` too; wins over
/// [`RegistrarBuilder::drain_delay`](crate::RegistrarBuilder::drain_delay).
pub const DRAIN_DELAY_ENV: &str = "SERVICE_REGISTRY_DRAIN_DELAY";

// ---- etcd (read by `EtcdConfig::from_env` only) ----

/// The etcd endpoints, comma-separated (default `http://127.0.0.1:2379`).
pub const ETCD_ENDPOINTS_ENV: &str = "ETCD_ENDPOINTS";
/// The etcd lease TTL in whole seconds, at least 2; wins over [`KITEX_ETCD_LEASE_TTL_ENV`].
pub const ETCD_LEASE_TTL_ENV: &str = "REGISTRY_LEASE_TTL";
/// Kitex's variable for the etcd lease TTL in seconds (`kitex-contrib/registry-etcd`), read when
/// [`ETCD_LEASE_TTL_ENV`] is not set.
pub const KITEX_ETCD_LEASE_TTL_ENV: &str = "KITEX_ETCD_REGISTRY_LEASE_TTL";

// ---- ZooKeeper (read by `ZookeeperConfig::from_env` only) ----

/// The ZooKeeper connect string, `host:port[,host:port...][/chroot]` (default `127.0.0.1:2181`).
pub const ZOOKEEPER_ENDPOINTS_ENV: &str = "ZOOKEEPER_ENDPOINTS";
/// The ZooKeeper session timeout in whole seconds, above 0 (default 10).
pub const ZOOKEEPER_SESSION_TIMEOUT_ENV: &str = "ZOOKEEPER_SESSION_TIMEOUT";

// ---- Nacos (read by `NacosConfig::from_env` only) ----

/// Kitex's variable for the Nacos host (`kitex-contrib/registry-nacos`, `nacos/env.go`);
/// default `127.0.0.1`. A cluster's nodes as a comma list, each `host` or `host:http_port`
/// (`10.0.0.5,10.0.0.6:8849`), as Nacos' own `serverAddr` takes them.
pub const NACOS_SERVER_ADDR_ENV: &str = "serverAddr";
/// Kitex's variable for the Nacos HTTP port (default `8848`). The gRPC port is this + 1000
/// (Nacos' convention) unless [`NACOS_GRPC_PORT_ENV`] says otherwise.
pub const NACOS_SERVER_PORT_ENV: &str = "serverPort";
/// Kitex's variable for the Nacos namespace id; default empty (Nacos' `public`).
pub const NACOS_NAMESPACE_ENV: &str = "namespace";
/// Kitex's variable for extra metadata on every Nacos instance: `k1=v1,k2=v2`.
pub const KITEX_NACOS_TAGS_ENV: &str = "KITEX_NACOS_ENV_TAGS";
/// The Nacos gRPC port when it is not the HTTP port + 1000 (not a Kitex variable).
pub const NACOS_GRPC_PORT_ENV: &str = "NACOS_GRPC_PORT";
/// The Nacos user name (not a Kitex variable: Kitex passes credentials in code); needs
/// [`NACOS_PASSWORD_ENV`].
pub const NACOS_USERNAME_ENV: &str = "NACOS_USERNAME";
/// The password for [`NACOS_USERNAME_ENV`]; needs it.
pub const NACOS_PASSWORD_ENV: &str = "NACOS_PASSWORD";

/// An environment variable that is set but cannot be used. Its value is shown, except for a
/// password, which never is.
///
/// ```
/// use service_registry::env::{EnvError, NACOS_PASSWORD_ENV, NACOS_USERNAME_ENV};
/// let err = EnvError::Missing { variable: NACOS_PASSWORD_ENV, required_by: NACOS_USERNAME_ENV };
/// assert_eq!(
///     err.to_string(),
///     "environment variable NACOS_USERNAME is set but NACOS_PASSWORD is not; set both or neither"
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    /// The value does not parse.
    #[error("environment variable {variable} = `{value}` is not {expected}; fix it or unset it")]
    Invalid {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
        /// What it should be.
        expected: &'static str,
    },
    /// The value is not UTF-8.
    #[error("environment variable {variable} is not valid UTF-8; fix it or unset it")]
    NotUnicode {
        /// The variable.
        variable: &'static str,
    },
    /// A variable that only works together with another is set without it.
    #[error(
        "environment variable {required_by} is set but {variable} is not; set both or neither"
    )]
    Missing {
        /// The variable that is missing.
        variable: &'static str,
        /// The variable that needs it.
        required_by: &'static str,
    },
}

/// Reads one variable, as `std::env::var` does.
type Lookup = Box<dyn Fn(&str) -> Result<String, VarError>>;

/// Where variables are read from: the process environment, or (in unit tests) a fixed list,
/// so that parsing is tested without touching the process environment.
pub(crate) struct Vars {
    lookup: Lookup,
}

impl Vars {
    /// The process environment.
    pub(crate) fn process() -> Self {
        Self {
            lookup: Box::new(|name| std::env::var(name)),
        }
    }

    /// Exactly these variables.
    #[cfg(test)]
    pub(crate) fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self {
            lookup: Box::new(move |name| {
                pairs
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
                    .ok_or(VarError::NotPresent)
            }),
        }
    }

    /// The value of `variable`; unset and empty (or blank) both mean `None`.
    pub(crate) fn get(&self, variable: &'static str) -> Result<Option<String>, EnvError> {
        match (self.lookup)(variable) {
            Ok(value) if value.trim().is_empty() => Ok(None),
            Ok(value) => Ok(Some(value)),
            Err(VarError::NotPresent) => Ok(None),
            Err(VarError::NotUnicode(_)) => Err(EnvError::NotUnicode { variable }),
        }
    }

    /// The value of `variable` through `parse` (which sees it trimmed); `None` from `parse` is
    /// an [`EnvError::Invalid`] saying `expected`.
    pub(crate) fn parse<T>(
        &self,
        variable: &'static str,
        expected: &'static str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<Option<T>, EnvError> {
        let Some(value) = self.get(variable)? else {
            return Ok(None);
        };
        match parse(value.trim()) {
            Some(parsed) => Ok(Some(parsed)),
            None => Err(EnvError::Invalid {
                variable,
                value,
                expected,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_unset_and_a_bad_value_names_its_variable() {
        let vars = Vars::from_pairs(&[("A", "  "), ("B", " 7 "), ("C", "x")]);
        assert_eq!(vars.get("A").unwrap(), None);
        assert_eq!(vars.get("Z").unwrap(), None);
        let number = |v: &str| v.parse::<u32>().ok();
        assert_eq!(vars.parse("B", "a number", number).unwrap(), Some(7));
        let err = vars.parse("C", "a number", number).unwrap_err();
        assert_eq!(
            err,
            EnvError::Invalid {
                variable: "C",
                value: "x".into(),
                expected: "a number"
            }
        );
        assert!(err.to_string().contains("C = `x` is not a number"), "{err}");
    }
}
