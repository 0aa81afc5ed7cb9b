//! Services defined in a library: they reach a binary's registrar once the binary links this
//! crate (`use linked_services as _;`).

use service_registry::service;

/// A service declared in a library crate.
#[service(name = "linked.alpha", weight = 7, tag(origin = "library"))]
pub struct Alpha;

/// A second one, an enum.
#[service(name = "linked.beta")]
pub enum Beta {
    /// The only variant.
    Only,
}

/// A service that warms up: its instances carry a two-second warm-up.
#[service(name = "linked.warm", warmup = "2s")]
pub struct Warm;
