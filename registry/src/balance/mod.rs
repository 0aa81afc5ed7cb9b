//! Client-side load balancing over a live instance set: weighted random (alias table), smooth
//! weighted round-robin (precomputed cycle) and consistent hashing (indexed hash ring), each
//! O(1) per pick, with warm-up and tag filters set up front by [`Balancer::builder`]; adapters
//! for `tower` (feature `tower`) and tonic's `Channel::balance_channel` (feature `tonic`).

mod balancer;
mod consistent_hash;
mod filter;
mod round_robin;
#[cfg(feature = "tonic")]
mod tonic;
#[cfg(feature = "tower")]
mod tower;
mod warmup;
mod weighted_random;

#[cfg(feature = "tonic")]
pub use self::tonic::balance_channel;
#[cfg(feature = "tower")]
pub use self::tower::{discover, ServiceDiscover};
pub use balancer::{Balancer, BalancerBuilder, Strategy};
pub use filter::TagFilter;
pub use warmup::{effective_weight, DEFAULT_MIN_FRACTION};
