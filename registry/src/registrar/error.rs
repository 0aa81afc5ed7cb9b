//! What can stop the registrar from starting, or end it.

use thiserror::Error;

use crate::info::{MAX_WEIGHT, MIN_WEIGHT};
use crate::registry::BoxError;

/// Why [`Registrar`](crate::Registrar) could not be built or its server failed.
///
/// ```
/// use service_registry::{Registrar, RegistrarError};
/// let err = Registrar::builder().listen_addr("127.0.0.1:0".parse().unwrap()).build().unwrap_err();
/// assert!(matches!(err, RegistrarError::UnboundListenAddr(_)));
/// ```
///
/// Registry failures are not here: the registrar retries them forever and reports them through
/// [`StatusHandle`](crate::StatusHandle).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RegistrarError {
    /// Two linked `#[service]` types use the same name.
    #[error("service name `{name}` is declared twice: by `{first_type}` at {first_location} and by `{second_type}` at {second_location}; rename one or register only one with `Registrar::builder().only(..)`")]
    DuplicateService {
        /// The shared name.
        name: String,
        /// The first type declaring it.
        first_type: String,
        /// `file:line` of the first type.
        first_location: String,
        /// The second type declaring it.
        second_type: String,
        /// `file:line` of the second type.
        second_location: String,
    },
    /// `only(..)` or `override_service(..)` named a service that no linked type declares.
    #[error("service `{name}` is not declared by any linked #[service] type (linked: {known:?}); if it lives in a library, add `use that_library as _;` to the binary")]
    UnknownService {
        /// The name given.
        name: String,
        /// The names that are linked.
        known: Vec<String>,
    },
    /// Nothing to register.
    #[error("no #[service] types are linked into this binary; annotate a type, or add `use that_library as _;` for services defined in a library")]
    NoServices,
    /// A tag value refers to an environment variable that is not set.
    #[error("service `{service}`: tag `{tag}` needs environment variable `{variable}`, which is not set; set it or give a default as `${{{variable}:-default}}`")]
    MissingTagVariable {
        /// The service.
        service: String,
        /// The tag key.
        tag: String,
        /// The unset variable.
        variable: String,
    },
    /// An override gives a weight outside
    /// [`MIN_WEIGHT`](crate::MIN_WEIGHT)..=[`MAX_WEIGHT`](crate::MAX_WEIGHT).
    #[error("override for service `{service}` sets weight {weight}; weights must be {MIN_WEIGHT}..={MAX_WEIGHT}")]
    InvalidWeight {
        /// The service.
        service: String,
        /// The weight given.
        weight: u32,
    },
    /// `listen_addr` was not given.
    #[error(
        "no listen address: call `.listen_addr(listener.local_addr()?)` after binding the listener"
    )]
    MissingListenAddr,
    /// The listen address has port 0, so the listener was not bound yet.
    #[error(
        "listen address {0} has port 0; bind the listener first and pass `listener.local_addr()?`"
    )]
    UnboundListenAddr(std::net::SocketAddr),
    /// The advertised address could not be parsed.
    #[error(
        "{source_name} = `{value}` is not valid; write `ip:port`, `[ipv6]:port` or a bare IP for an address, an IP for KITEX_IP_TO_REGISTRY, a port number for KITEX_PORT_TO_REGISTRY"
    )]
    InvalidAdvertiseAddr {
        /// The text given.
        value: String,
        /// Where it came from.
        source_name: &'static str,
    },
    /// A duration in an environment variable could not be parsed.
    #[error("{source_name} = `{value}` is not a duration; write `6s`, `500ms`, `2m` or a whole number of seconds")]
    InvalidDuration {
        /// The text given.
        value: String,
        /// Where it came from.
        source_name: &'static str,
    },
    /// Two registries were given the same name, or an empty one.
    #[error(
        "registry name `{name}` is empty or used twice; give each `named_registry` its own name"
    )]
    DuplicateRegistry {
        /// The name.
        name: String,
    },
    /// The host's interface list could not be read to resolve `0.0.0.0` / `::`.
    #[error("cannot list this host's network interfaces to resolve the advertised address: {0}; set SERVICE_REGISTRY_ADVERTISE_ADDR")]
    InterfaceList(#[source] std::io::Error),
    /// The server future returned an error (after the services were deregistered).
    #[error("the server failed: {0}")]
    Server(#[source] BoxError),
}
