//! `tower` pieces (feature `tower`).
//!
//! - [`discover`]: a watched service as a `tower::discover::Discover`, for
//!   `tower::balance::p2c::Balance` (tower picks; no ejection, no steering of retries).
//! - [`Balanced`]: a `Service<Call<R>>` that picks with a [`Balancer`](super::Balancer)
//!   (its strategy, filters and outlier ejection), calls that instance's service and
//!   [reports](super::Balancer::report) the outcome; a retried [`Call`] goes to an instance
//!   it has not tried.
//! - [`ReportLayer`] / [`Reporting`]: the reporting part alone, around one instance's service
//!   (for stacks that pick some other way).
//! - [`RetryPolicy`]: a `tower::retry::Policy` that retries connection failures always and other
//!   instance failures when the call is idempotent, within a retry budget.
//!
//! How they stack, outermost first:
//!
//! ```text
//! Retry<RetryPolicy,                      tower::retry::Retry: a failed attempt is sent again
//!   Balanced<make,                        picks an instance the call has not tried, reports
//!     Timeout<YourPerInstanceService>>>   what `make` builds for each instance (one per address)
//! ```
//!
//! Put per-attempt limits (a timeout) inside `make`, so that a hung instance counts as a
//! failure of that instance and the retry goes elsewhere; an overall deadline goes outside
//! `Retry`.

mod balanced;
mod call;
mod discover;
mod error;
mod report;
mod retry;

pub use balanced::{Balanced, HashKey, LaneOf, NoKey, NoLane};
pub use call::Call;
pub use discover::{discover, ServiceDiscover};
pub use error::{is_connect_error, CallError, RetryClass, RetryableError};
pub use report::{AnyError, Classify, ReportLayer, Reporting};
pub use retry::RetryPolicy;
