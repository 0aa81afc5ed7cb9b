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
    /// An operator knob (see [`env`](crate::env)) is set to a value that cannot be used; the
    /// error names the variable.
    #[error(transparent)]
    Env(#[from] crate::env::EnvError),
    /// A setting that must be at least 1 was given 0 (a zero would disable what it counts).
    #[error("`{setting}` is 0; give at least 1")]
    Zero {
        /// The setting, as the method that set it is named (`HealthCheck::failure_threshold`).
        setting: &'static str,
    },
    /// `override_service` was called twice for the same service.
    #[error(
        "`override_service(\"{service}\", ..)` is given twice; merge the two overrides into one"
    )]
    DuplicateOverride {
        /// The service.
        service: String,
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
