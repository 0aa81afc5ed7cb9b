//! What a service is ([`EndpointBasicInfo`], fixed at compile time by `#[service]`) and what gets
//! registered ([`Info`], built at run time with the real address).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crate::tags::StaticTag;

/// The default instance weight, as in Kitex (`discovery.DefaultWeight`).
///
/// ```
/// assert_eq!(service_registry::DEFAULT_WEIGHT, 10);
/// ```
pub const DEFAULT_WEIGHT: u32 = 10;

/// The smallest weight an instance may have. `#[service(weight = ..)]` is checked against it at
/// compile time, [`InfoOverride::weight`](crate::InfoOverride::weight) when the
/// [`Registrar`](crate::Registrar) is built.
///
/// ```
/// use service_registry::{service, Endpoint, MIN_WEIGHT};
///
/// #[service(name = "lightest", weight = 1)]
/// struct Lightest;
///
/// assert_eq!(Lightest::INFO.weight, MIN_WEIGHT);
/// ```
pub const MIN_WEIGHT: u32 = 1;

/// The largest weight an instance may have, as in Kitex. `#[service(weight = ..)]` is checked
/// against it at compile time, [`InfoOverride::weight`](crate::InfoOverride::weight) when the
/// [`Registrar`](crate::Registrar) is built.
///
/// ```
/// use service_registry::{service, InfoOverride, Registrar, RegistrarError, MAX_WEIGHT};
///
/// #[service(name = "heaviest", weight = 10000)]
/// struct Heaviest;
///
/// let too_heavy = Registrar::builder()
///     .listen_addr("127.0.0.1:8080".parse().unwrap())
///     .only(["heaviest"])
///     .override_service("heaviest", InfoOverride::new().weight(MAX_WEIGHT + 1))
///     .build();
/// assert!(matches!(too_heavy, Err(RegistrarError::InvalidWeight { weight: 10001, .. })));
/// ```
pub const MAX_WEIGHT: u32 = 10_000;

/// A weight as a registry stores it (Go `int`), read the way Kitex does: anything below 1
/// means [`DEFAULT_WEIGHT`]; anything above [`MAX_WEIGHT`] (any writer can store one) reads as
/// `MAX_WEIGHT`, so one bad value can never cost a client more than a valid one.
#[cfg(any(feature = "etcd", feature = "zookeeper"))]
pub(crate) fn weight_or_default(stored: i64) -> u32 {
    if stored < 1 {
        return DEFAULT_WEIGHT;
    }
    u32::try_from(stored.min(i64::from(MAX_WEIGHT))).unwrap_or(MAX_WEIGHT)
}

/// Everything `#[service(...)]` declares about a service, as compile-time data.
///
/// The attribute emits one of these per annotated type, reachable as `<T as Endpoint>::INFO`.
/// It is the analogue of Kitex's `rpcinfo.EndpointBasicInfo` given to `WithServerBasicInfo`.
///
/// ```
/// use service_registry::{service, Endpoint};
///
/// #[service(name = "echo", weight = 20, tag(idc = "hz"))]
/// struct Echo;
///
/// assert_eq!(Echo::INFO.service_name, "echo");
/// assert_eq!(Echo::INFO.weight, 20);
/// assert_eq!(Echo::INFO.tags[0].key, "idc");
/// assert!(Echo::INFO.type_name.ends_with("Echo"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointBasicInfo {
    /// The service name under which instances are registered.
    pub service_name: &'static str,
    /// The instance weight ([`MIN_WEIGHT`]..=[`MAX_WEIGHT`]; default [`DEFAULT_WEIGHT`]).
    pub weight: u32,
    /// The payload codec (`thrift`, `protobuf`, `grpc`, `json`, ...), if declared.
    pub payload_codec: Option<&'static str>,
    /// How long a new instance takes to reach its full weight (zero: at once).
    pub warmup: Duration,
    /// Declared tags; values may refer to environment variables.
    pub tags: &'static [StaticTag],
    /// The annotated type's path (`module::Type`), for diagnostics.
    pub type_name: &'static str,
    /// The source file of the annotated type.
    pub file: &'static str,
    /// The line of the annotated type.
    pub line: u32,
}

/// Implemented by `#[service]` for the annotated type, so `Echo::INFO` works.
///
/// ```
/// use service_registry::{service, Endpoint, EndpointBasicInfo};
///
/// #[service(name = "greeter")]
/// enum Greeter { Hello }
///
/// fn describe<T: Endpoint>() -> &'static str { T::INFO.service_name }
/// assert_eq!(describe::<Greeter>(), "greeter");
/// ```
pub trait Endpoint {
    /// The compile-time description of this service.
    const INFO: EndpointBasicInfo;
}

/// One `#[service]` collected through `inventory`.
///
/// Every annotated type submits one entry; [`ServiceEntry::all`] lists what the final binary
/// links. A library that only defines services is linked only when the binary refers to it, so
/// write `use my_services as _;` in the binary (see the crate docs).
///
/// ```
/// use service_registry::{endpoint::ServiceEntry, service};
///
/// #[service(name = "listed")]
/// struct Listed;
///
/// assert!(ServiceEntry::all().any(|e| e.info.service_name == "listed"));
/// ```
#[derive(Debug)]
pub struct ServiceEntry {
    /// The service's descriptor.
    pub info: &'static EndpointBasicInfo,
}

impl ServiceEntry {
    /// Wraps a descriptor; used by the code `#[service]` generates.
    ///
    /// ```
    /// use service_registry::{endpoint::ServiceEntry, EndpointBasicInfo};
    /// use std::time::Duration;
    ///
    /// static INFO: EndpointBasicInfo = EndpointBasicInfo {
    ///     service_name: "manual", weight: 10, payload_codec: None, warmup: Duration::ZERO,
    ///     tags: &[], type_name: "Manual", file: file!(), line: line!(),
    /// };
    /// let entry = ServiceEntry::new(&INFO);
    /// assert_eq!(entry.info.service_name, "manual");
    /// ```
    pub const fn new(info: &'static EndpointBasicInfo) -> Self {
        Self { info }
    }

    /// Every service linked into this binary, in no particular order.
    ///
    /// ```
    /// let names: Vec<_> = service_registry::endpoint::ServiceEntry::all().map(|e| e.info.service_name).collect();
    /// # let _ = names;
    /// ```
    pub fn all() -> impl Iterator<Item = &'static ServiceEntry> {
        inventory::iter::<ServiceEntry>.into_iter()
    }
}

inventory::collect!(ServiceEntry);

/// What is written to a registry for one service instance (Kitex's `registry.Info`).
///
/// ```
/// use service_registry::Info;
///
/// let info = Info::new("echo", "127.0.0.1:8888".parse().unwrap());
/// assert_eq!(info.weight, service_registry::DEFAULT_WEIGHT);
/// assert!(info.tags.is_empty());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    /// The service name.
    pub service_name: String,
    /// The address clients should dial.
    pub addr: SocketAddr,
    /// The payload codec, if declared.
    pub payload_codec: Option<String>,
    /// The instance weight.
    pub weight: u32,
    /// When this instance started.
    pub start_time: SystemTime,
    /// How long the instance takes to reach full weight after `start_time`.
    pub warmup: Duration,
    /// Resolved tags.
    pub tags: BTreeMap<String, String>,
}

impl Info {
    /// An `Info` with default weight, no tags, no codec, no warm-up, started now.
    ///
    /// ```
    /// let info = service_registry::Info::new("svc", "[::1]:80".parse().unwrap());
    /// assert_eq!(info.addr.port(), 80);
    /// ```
    pub fn new(service_name: impl Into<String>, addr: SocketAddr) -> Self {
        Self {
            service_name: service_name.into(),
            addr,
            payload_codec: None,
            weight: DEFAULT_WEIGHT,
            start_time: SystemTime::now(),
            warmup: Duration::ZERO,
            tags: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // `#[service]` cannot see this crate's constants, so it keeps its own copy of the bounds.
    // These types pin the literals the attribute accepts to the constants; the macro crate's
    // `validate::tests::weight_bounds` checks that `0` and `10001` are rejected.
    #[crate::service(name = "info-tests-weight-min", weight = 1, crate = "crate")]
    struct Lightest;

    #[crate::service(name = "info-tests-weight-max", weight = 10000, crate = "crate")]
    struct Heaviest;

    #[crate::service(name = "info-tests-weight-default", crate = "crate")]
    struct Unweighted;

    #[test]
    fn attribute_and_runtime_agree_on_weights() {
        assert_eq!(Lightest::INFO.weight, MIN_WEIGHT);
        assert_eq!(Heaviest::INFO.weight, MAX_WEIGHT);
        assert_eq!(Unweighted::INFO.weight, DEFAULT_WEIGHT);
        assert!((MIN_WEIGHT..=MAX_WEIGHT).contains(&DEFAULT_WEIGHT));
    }
}
