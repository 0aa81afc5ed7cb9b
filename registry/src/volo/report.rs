//! [`ReportLayer`]: call outcomes of a Volo client into its [`VoloBalance`], for outlier
//! ejection.

use volo::context::Context;
use volo::loadbalance::error::Retryable;
use volo::net::Address;
use volo::{FastStr, Layer, Service};

use super::VoloBalance;
use crate::balance::Outcome;

/// A Volo client layer that reports each call's outcome to the [`VoloBalance`] that picked its
/// instance, so consecutive failures eject it ([`OutlierDetection`](crate::balance::OutlierDetection)),
/// and counts the call as in flight to that instance while it runs, which is what
/// [`Strategy::LeastRequest`](crate::balance::Strategy::LeastRequest) picks by.
///
/// Add it with the client builder's `layer_inner` (inner layers run after the load balancer,
/// once the callee's address is set). A call counts as failed when its error is one Volo
/// retries ([`Retryable`]: a transport error for thrift; `Unavailable`, `Internal`,
/// `Cancelled`, `ResourceExhausted` for gRPC), so an application error never ejects an
/// instance.
///
/// ```
/// use service_registry::volo::{ReportLayer, VoloBalance};
/// let balance = VoloBalance::default();
/// let layer = ReportLayer::new(balance.clone());
/// // volo_grpc::client::ClientBuilder::new("echo").load_balance(balance).layer_inner(layer)
/// # let _ = layer;
/// ```
#[derive(Clone, Debug)]
pub struct ReportLayer {
    balance: VoloBalance<FastStr>,
}

impl ReportLayer {
    /// Reports into `balance` (keyed by the callee's service name, as
    /// [`VoloDiscover`](super::VoloDiscover) keys it).
    ///
    /// See [`ReportLayer`] for an example.
    pub fn new(balance: VoloBalance<FastStr>) -> Self {
        Self { balance }
    }
}

impl<S> Layer<S> for ReportLayer {
    type Service = Reporting<S>;

    fn layer(self, inner: S) -> Reporting<S> {
        Reporting {
            inner,
            balance: self.balance,
        }
    }
}

/// The service [`ReportLayer`] builds.
#[derive(Clone, Debug)]
pub struct Reporting<S> {
    inner: S,
    balance: VoloBalance<FastStr>,
}

impl<Cx, Req, S> Service<Cx, Req> for Reporting<S>
where
    Cx: Context + Send + 'static,
    Req: Send + 'static,
    S: Service<Cx, Req> + Send + Sync,
    S::Error: Retryable,
{
    type Response = S::Response;
    type Error = S::Error;

    async fn call(&self, cx: &mut Cx, req: Req) -> Result<S::Response, S::Error> {
        let callee = cx.rpc_info().callee();
        let target = match &callee.address {
            Some(Address::Ip(addr)) => self
                .balance
                .balancer(&callee.service_name)
                .map(|balancer| (balancer, *addr)),
            _ => None,
        };
        // In flight (for least request) from here until the outcome is reported, or the call
        // is dropped.
        let in_flight = target
            .as_ref()
            .map(|(balancer, addr)| balancer.start(*addr));
        let result = self.inner.call(cx, req).await;
        drop(in_flight);
        if let Some((balancer, addr)) = target {
            let outcome = match &result {
                Err(err) if err.retryable() => Outcome::Failure,
                _ => Outcome::Success,
            };
            balancer.report(addr, outcome);
        }
        result
    }
}
