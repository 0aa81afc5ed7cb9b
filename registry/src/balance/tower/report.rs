//! [`Reporting`]: one instance's service, reporting every call's outcome to the
//! [`Balancer`] for outlier ejection, with errors turned into [`CallError`]s that name the
//! instance.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower::{BoxError, Layer, Service};

use super::call::Call;
use super::error::{is_connect_error, CallError};
use crate::balance::{Balancer, Outcome};

/// Decides which results count against an instance.
///
/// [`AnyError`] (the default) counts every error; a closure
/// `Fn(Result<&Res, &BoxError>) -> Outcome` can count error responses (an HTTP 503) too, or
/// leave out errors that are the caller's own (a gRPC `NotFound`). Connection failures count
/// whatever the classifier says.
///
/// ```
/// use service_registry::balance::Outcome;
/// use service_registry::balance::tower::{AnyError, Classify};
/// let boom: tower::BoxError = "boom".into();
/// assert_eq!(Classify::<()>::classify(&AnyError, Err(&boom)), Outcome::Failure);
/// let status = |result: Result<&u16, &tower::BoxError>| match result {
///     Ok(code) if *code >= 500 => Outcome::Failure,
///     Ok(_) => Outcome::Success,
///     Err(_) => Outcome::Failure,
/// };
/// assert_eq!(status.classify(Ok(&503)), Outcome::Failure);
/// ```
pub trait Classify<Res> {
    /// The outcome of one call.
    fn classify(&self, result: Result<&Res, &BoxError>) -> Outcome;
}

/// The default [`Classify`]: every error is a failure of the instance, every response a
/// success.
///
/// See [`Classify`] for an example.
#[derive(Clone, Copy, Debug, Default)]
pub struct AnyError;

impl<Res> Classify<Res> for AnyError {
    fn classify(&self, result: Result<&Res, &BoxError>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}

impl<Res, F> Classify<Res> for F
where
    F: Fn(Result<&Res, &BoxError>) -> Outcome,
{
    fn classify(&self, result: Result<&Res, &BoxError>) -> Outcome {
        self(result)
    }
}

/// Wraps one instance's service in [`Reporting`]: for stacks that pick instances some other
/// way (for example `tower::balance::p2c` over [`discover`](super::discover)) but should still
/// feed the balancer's outlier ejection.
///
/// ```
/// use std::convert::Infallible;
/// use service_registry::balance::{Balancer, Strategy};
/// use service_registry::balance::tower::{Call, ReportLayer};
/// use service_registry::{Info, Instance};
/// use tower::{Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let addr = "127.0.0.1:7001".parse().unwrap();
/// let balancer = Balancer::builder(Strategy::WeightedRandom).build([Instance::from(&Info::new("echo", addr))]);
/// let echo = tower::service_fn(|line: String| async move { Ok::<_, Infallible>(line) });
/// let service = ReportLayer::new(balancer, addr).layer(echo);
/// assert_eq!(service.oneshot(Call::new("hi".to_string())).await.unwrap(), "hi");
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ReportLayer<C = AnyError> {
    balancer: Balancer,
    addr: SocketAddr,
    classify: C,
}

impl ReportLayer {
    /// Reports to `balancer` for the instance at `addr`, counting every error.
    ///
    /// See [`ReportLayer`] for an example.
    pub fn new(balancer: Balancer, addr: SocketAddr) -> Self {
        Self {
            balancer,
            addr,
            classify: AnyError,
        }
    }
}

impl<C> ReportLayer<C> {
    /// Judges results with `classify` instead.
    ///
    /// See [`Classify`] for an example of a classifier.
    pub fn classify<C2>(self, classify: C2) -> ReportLayer<C2> {
        ReportLayer {
            balancer: self.balancer,
            addr: self.addr,
            classify,
        }
    }
}

impl<S, C: Clone> Layer<S> for ReportLayer<C> {
    type Service = Reporting<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Reporting::new(
            inner,
            self.balancer.clone(),
            self.addr,
            self.classify.clone(),
        )
    }
}

/// One instance's service, taking [`Call`]s: calls the inner service with the bare request,
/// [reports](Balancer::report) each outcome for its address, and fails with a [`CallError`]
/// naming it (`Unreachable` when the inner service is not ready or the connection was never
/// made, `Failed` when the classifier counts the error, `Rejected` otherwise). Made by
/// [`ReportLayer`], and by [`Balanced`](super::Balanced) for every instance it calls.
pub struct Reporting<S, C = AnyError> {
    inner: S,
    balancer: Balancer,
    addr: SocketAddr,
    classify: C,
}

impl<S: Clone, C: Clone> Clone for Reporting<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            balancer: self.balancer.clone(),
            addr: self.addr,
            classify: self.classify.clone(),
        }
    }
}

impl<S, C> std::fmt::Debug for Reporting<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporting")
            .field("addr", &self.addr)
            .finish()
    }
}

impl<S, C> Reporting<S, C> {
    pub(crate) fn new(inner: S, balancer: Balancer, addr: SocketAddr, classify: C) -> Self {
        Self {
            inner,
            balancer,
            addr,
            classify,
        }
    }
}

/// The boxed future of a call through [`Reporting`] or [`Balanced`](super::Balanced).
pub(crate) type CallFuture<Res> = Pin<Box<dyn Future<Output = Result<Res, CallError>> + Send>>;

impl<S, C, R> Service<Call<R>> for Reporting<S, C>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    C: Classify<S::Response> + Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = CallError;
    type Future = CallFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        match self.inner.poll_ready(cx) {
            Poll::Ready(Err(err)) => {
                self.balancer.report(self.addr, Outcome::Failure);
                Poll::Ready(Err(CallError::Unreachable {
                    addr: self.addr,
                    source: err.into(),
                }))
            }
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, call: Call<R>) -> Self::Future {
        // In flight (for least request) from here until the outcome is reported, or the call
        // is dropped.
        let in_flight = self.balancer.start(self.addr);
        let future = self.inner.call(call.into_request());
        let (balancer, addr, classify) = (self.balancer.clone(), self.addr, self.classify.clone());
        Box::pin(async move {
            let result = future.await.map_err(Into::into);
            drop(in_flight);
            judge(&balancer, addr, &classify, result)
        })
    }
}

/// Reports `result` and turns its error into a [`CallError`].
fn judge<Res, C: Classify<Res>>(
    balancer: &Balancer,
    addr: SocketAddr,
    classify: &C,
    result: Result<Res, BoxError>,
) -> Result<Res, CallError> {
    match result {
        Ok(response) => {
            balancer.report(addr, classify.classify(Ok(&response)));
            Ok(response)
        }
        Err(source) if is_connect_error(&*source) => {
            balancer.report(addr, Outcome::Failure);
            Err(CallError::Unreachable { addr, source })
        }
        Err(source) => match classify.classify(Err(&source)) {
            Outcome::Failure => {
                balancer.report(addr, Outcome::Failure);
                Err(CallError::Failed { addr, source })
            }
            Outcome::Success => {
                balancer.report(addr, Outcome::Success);
                Err(CallError::Rejected { addr, source })
            }
        },
    }
}
