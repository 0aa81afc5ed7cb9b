//! [`RetryPolicy`]: a `tower::retry::Policy` that sends a failed [`Call`] again, to another
//! instance, when that is safe and the retry budget allows.

use std::fmt;
use std::future::Ready;
use std::sync::Arc;
use std::time::Duration;

use tower::retry::budget::{Budget, TpsBudget};
use tower::retry::Policy;

use super::call::Call;
use super::error::{RetryClass, RetryableError};

/// Retries a failed [`Call`] at once, on an instance it has not tried (through
/// [`Balanced`](super::Balanced)):
///
/// - a call that never reached an instance ([`RetryClass::Always`]: connection refused, service
///   not ready) always;
/// - a call an instance may have processed ([`RetryClass::IfIdempotent`]: timed out, reset,
///   an error response counted against the instance) only when the caller marked it
///   [`idempotent`](Call::idempotent);
/// - never more than [`max_retries`](Self::max_retries) times per call (default 2), and only
///   while the retry budget has room: by default retries may add 20 % to the calls made over
///   the last 10 s, plus 10 retries a second (tower's `TpsBudget`, as Finagle and Linkerd
///   budget retries), so that a failing fleet is not hit with a multiple of its load.
///
/// Responses (`Ok`) are never retried. Clones share the budget: make one policy per client,
/// or share a budget between policies with [`budget`](Self::budget).
///
/// With `tower::balance::p2c` over [`discover`](super::discover) instead of `Balanced` the
/// policy works the same, but p2c chooses the instance of the retry itself, so it may be the
/// one that just failed.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use service_registry::balance::{Balancer, Strategy};
/// use service_registry::balance::tower::{Balanced, Call, RetryPolicy};
/// use service_registry::{Info, Instance};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let set = [1, 2].map(|p| Instance::from(&Info::new("s", format!("127.0.0.1:{p}").parse().unwrap())));
/// let balancer = Balancer::builder(Strategy::WeightedRandom).build(set);
/// // Port 1 refuses connections; port 2 answers.
/// let client = ServiceBuilder::new()
///     .retry(RetryPolicy::new())
///     .service(Balanced::new(balancer, |instance| {
///         let port = instance.addr.port();
///         tower::service_fn(move |()| async move {
///             match port {
///                 1 => Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
///                 _ => Ok(port),
///             }
///         })
///     }));
/// for _ in 0..20 {
///     // Not idempotent, but a refused connection never reached the instance.
///     assert_eq!(client.clone().oneshot(Call::new(())).await.unwrap(), 2);
/// }
/// # }
/// ```
#[derive(Clone)]
pub struct RetryPolicy {
    budget: Arc<TpsBudget>,
    max_retries: u32,
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
            max_retries: 2,
        }
    }
}

impl RetryPolicy {
    /// The defaults: at most 2 retries per call; a budget of 20 % of the calls of the last
    /// 10 s plus 10 retries a second.
    ///
    /// See [`RetryPolicy`] for an example.
    pub fn new() -> Self {
        Self::default()
    }

    /// Retries at most `retries` times per call (0: never).
    ///
    /// ```
    /// let policy = service_registry::balance::RetryPolicy::new().max_retries(1);
    /// # let _ = policy;
    /// ```
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Draws retries from `budget` (shared by every policy given the same `Arc`).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use tower::retry::budget::TpsBudget;
    /// // 10 % of the calls of the last 5 s, plus 1 retry a second.
    /// let budget = Arc::new(TpsBudget::new(Duration::from_secs(5), 1, 0.1));
    /// let policy = service_registry::balance::RetryPolicy::new().budget(budget);
    /// # let _ = policy;
    /// ```
    pub fn budget(mut self, budget: Arc<TpsBudget>) -> Self {
        self.budget = budget;
        self
    }
}

impl<R: Clone, Res, E: RetryableError> Policy<Call<R>, Res, E> for RetryPolicy {
    type Future = Ready<()>;

    fn retry(&mut self, call: &mut Call<R>, result: &mut Result<Res, E>) -> Option<Ready<()>> {
        let err = result.as_ref().err()?;
        let safe = match err.retry_class() {
            RetryClass::Always => true,
            RetryClass::IfIdempotent => call.is_idempotent(),
            RetryClass::Never => false,
        };
        if !safe || call.attempt() >= self.max_retries {
            return None;
        }
        if !self.budget.withdraw() {
            tracing::debug!(failed = ?err.failed_instance(), "retry budget exhausted; not retrying");
            return None;
        }
        tracing::debug!(failed = ?err.failed_instance(), attempt = call.attempt() + 1, "retrying on another instance");
        call.failed_on(err.failed_instance());
        Some(std::future::ready(()))
    }

    fn clone_request(&mut self, call: &Call<R>) -> Option<Call<R>> {
        if call.attempt() == 0 {
            // Every first attempt earns the budget its share of retries.
            self.budget.deposit();
        }
        Some(call.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::CallError;

    fn failed(addr: u16) -> Result<(), CallError> {
        Err(CallError::Failed {
            addr: ([127, 0, 0, 1], addr).into(),
            source: "timed out".into(),
        })
    }

    fn first(policy: &mut RetryPolicy) -> Call<()> {
        Policy::<Call<()>, (), CallError>::clone_request(policy, &Call::new(())).unwrap()
    }

    fn unreachable(addr: u16) -> Result<(), CallError> {
        Err(CallError::Unreachable {
            addr: ([127, 0, 0, 1], addr).into(),
            source: "refused".into(),
        })
    }

    #[tokio::test]
    async fn only_safe_failures_are_retried_and_each_one_is_remembered() {
        let mut policy = RetryPolicy::new();
        let mut call = first(&mut policy);
        assert!(policy.retry(&mut call, &mut failed(1)).is_none());
        assert!(policy
            .retry(&mut call, &mut Ok::<(), CallError>(()))
            .is_none());
        assert!(policy.retry(&mut call, &mut unreachable(1)).is_some());
        assert_eq!(call.tried(), [([127, 0, 0, 1], 1).into()]);

        let mut idempotent = Call::new(()).idempotent(true);
        assert!(policy.retry(&mut idempotent, &mut failed(1)).is_some());
        assert!(policy.retry(&mut idempotent, &mut failed(2)).is_some());
        assert_eq!(idempotent.tried().len(), 2);
        assert!(
            policy.retry(&mut idempotent, &mut failed(3)).is_none(),
            "2 retries at most"
        );
        let mut none = Call::new(()).idempotent(true);
        assert!(policy
            .retry(&mut none, &mut Err::<(), _>(CallError::NoInstance))
            .is_none());
    }

    #[tokio::test]
    async fn the_budget_bounds_retries() {
        // No minimum, 10 % of the calls: 100 calls earn 10 retries.
        let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 0, 0.1));
        let mut policy = RetryPolicy::new().budget(budget);
        for _ in 0..100 {
            first(&mut policy);
        }
        let retried = (0..100)
            .filter(|_| {
                let mut call = Call::new(());
                policy.retry(&mut call, &mut unreachable(1)).is_some()
            })
            .count();
        assert!((9..=11).contains(&retried), "{retried} retries");
    }
}
