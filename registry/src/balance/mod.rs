//! Client-side load balancing over a live instance set: weighted random (alias table), smooth
//! weighted round-robin (precomputed cycle), consistent hashing (indexed hash ring) and least
//! request (power of two choices over calls in flight), each O(1) per pick, with warm-up, tag
//! filters, outlier ejection, zone-aware routing with priority levels and a panic threshold
//! ([`Locality`]), request routing by lane ([`Lanes`]) and deterministic subsetting
//! ([`Subset`]), all set up front by
//! [`Balancer::builder`]; adapters for `tower` in [`balance::tower`](self::tower)
//! (feature `tower`: a `Discover` for `tower::balance`, a balanced service that reports
//! outcomes, and a retry policy that retries on another instance) and tonic's
//! `Channel::balance_channel` (feature `tonic`).

mod balancer;
mod carry;
mod consistent_hash;
mod due;
mod filter;
mod groups;
mod lane;
mod least_request;
mod locality;
mod outlier;
mod published;
mod round_robin;
mod route;
mod snapshot;
mod subset;
mod tags;
#[cfg(feature = "tonic")]
mod tonic;
#[cfg(feature = "tower")]
pub mod tower;
mod warmup;
mod weighted_random;

#[cfg(feature = "tonic")]
pub use self::tonic::balance_channel;
// The tower items were flat in `balance` before they had a module of their own: the old paths
// keep working, out of the docs.
#[cfg(feature = "tower")]
#[doc(hidden)]
pub use self::tower::{
    discover, is_connect_error, AnyError, Balanced, Call, CallError, Classify, HashKey, LaneOf,
    NoKey, NoLane, ReportLayer, Reporting, RetryClass, RetryPolicy, RetryableError,
    ServiceDiscover,
};
pub use balancer::{
    Balancer, BalancerBuilder, InFlight, Strategy, UpdateError, DEFAULT_HOLD_WHEN_EMPTY,
};
pub use filter::TagFilter;
pub use lane::{LaneFallback, Lanes};
pub use locality::{Locality, LocalityError, DEFAULT_OVERPROVISIONING, DEFAULT_PANIC_THRESHOLD};
pub use outlier::{Ejection, Outcome, OutlierDetection};
pub use subset::Subset;
pub use warmup::{effective_weight, DEFAULT_MIN_FRACTION};
