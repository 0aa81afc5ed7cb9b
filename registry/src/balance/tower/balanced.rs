//! [`Balanced`]: a tower service over every instance of a service, picking with a
//! [`Balancer`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tower::{BoxError, Service};

use super::call::Call;
use super::error::CallError;
use super::report::{AnyError, CallFuture, Classify, Reporting};
use crate::balance::Balancer;
use crate::discovery::Instance;

/// A `tower::Service<Call<R>>` over a [`Balancer`]: each call picks an instance (by the
/// balancer's strategy, never an ejected one, and for a retried [`Call`] one it has not tried
/// when there is one), calls that instance's service, built once per address by `make`, and
/// [reports](Balancer::report) the outcome, so that failing instances get ejected. Errors are
/// [`CallError`]s naming the instance; wrap it in `tower::retry::Retry` with a
/// [`RetryPolicy`](super::RetryPolicy) to send failed calls elsewhere.
///
/// Always ready: readiness is the picked instance's, awaited inside the call. Cheap to clone
/// (clones share the per-address services). Services of addresses that left the set are
/// dropped when a new one is made while the cache holds more than twice the set (plus 16).
///
/// ```
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use service_registry::balance::{Balanced, Balancer, Call, RetryPolicy, Strategy};
/// use service_registry::{Info, MemoryRegistry, Registry};
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let registry = MemoryRegistry::new();
/// registry.register(&Info::new("echo", "127.0.0.1:7001".parse().unwrap())).await.unwrap();
/// let balancer = Balancer::builder(Strategy::WeightedRandom).watch(&registry, "echo").await.unwrap();
///
/// let mut client = ServiceBuilder::new()
///     .retry(RetryPolicy::new())
///     .service(Balanced::new(balancer, |instance| {
///         let addr = instance.addr; // a real client connects here (a tonic Channel, ...)
///         ServiceBuilder::new()
///             .timeout(Duration::from_secs(1)) // per attempt: a hung instance is a failure
///             .service_fn(move |line: String| async move { Ok::<_, Infallible>(format!("{addr}: {line}")) })
///     }));
/// let reply = client.ready().await.unwrap().call(Call::new("hi".to_string()).idempotent(true)).await;
/// assert_eq!(reply.unwrap(), "127.0.0.1:7001: hi");
/// # }
/// ```
pub struct Balanced<M, S, C = AnyError> {
    balancer: Balancer,
    make: Arc<M>,
    services: Arc<Mutex<HashMap<SocketAddr, S>>>,
    classify: C,
}

impl<M, S, C: Clone> Clone for Balanced<M, S, C> {
    fn clone(&self) -> Self {
        Self {
            balancer: self.balancer.clone(),
            make: self.make.clone(),
            services: self.services.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<M, S, C> std::fmt::Debug for Balanced<M, S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balanced")
            .field("balancer", &self.balancer)
            .field("services", &lock(&self.services).len())
            .finish()
    }
}

fn lock<S>(services: &Mutex<HashMap<SocketAddr, S>>) -> MutexGuard<'_, HashMap<SocketAddr, S>> {
    // Every update is one insert or a retain: a poisoned map is still consistent.
    services.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl<M, S> Balanced<M, S>
where
    M: Fn(&Instance) -> S,
{
    /// Calls through `balancer`'s picks; `make` builds the service of each instance the first
    /// time it is picked. Every error counts against the instance (see
    /// [`classify`](Self::classify)).
    ///
    /// See [`Balanced`] for an example.
    pub fn new(balancer: Balancer, make: M) -> Self {
        Self {
            balancer,
            make: Arc::new(make),
            services: Arc::default(),
            classify: AnyError,
        }
    }
}

impl<M, S, C> Balanced<M, S, C> {
    /// Judges results with `classify`: which errors (or responses) count against an instance.
    ///
    /// See [`Classify`] for an example of a classifier.
    pub fn classify<C2>(self, classify: C2) -> Balanced<M, S, C2> {
        Balanced {
            balancer: self.balancer,
            make: self.make,
            services: self.services,
            classify,
        }
    }

    /// The balancer it picks with.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use service_registry::balance::{Balanced, Balancer, Strategy};
    /// let balancer = Balancer::builder(Strategy::WeightedRandom).build([]);
    /// let service = Balanced::new(balancer, |_| tower::service_fn(|()| async { Ok::<_, Infallible>(()) }));
    /// assert!(service.balancer().instances().is_empty());
    /// ```
    pub fn balancer(&self) -> &Balancer {
        &self.balancer
    }
}

impl<M, S: Clone, C> Balanced<M, S, C>
where
    M: Fn(&Instance) -> S,
{
    /// The service of `instance`, made on first use.
    fn service_for(&self, instance: &Instance) -> S {
        let mut services = lock(&self.services);
        if let Some(service) = services.get(&instance.addr) {
            return service.clone();
        }
        if services.len() >= 2 * self.balancer.len() + 16 {
            services.retain(|addr, _| self.balancer.contains(*addr));
        }
        let service = (self.make)(instance);
        services.insert(instance.addr, service.clone());
        service
    }
}

impl<M, S, C, R> Service<Call<R>> for Balanced<M, S, C>
where
    M: Fn(&Instance) -> S,
    S: Service<R> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    C: Classify<S::Response> + Clone + Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = CallError;
    type Future = CallFuture<S::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call<R>) -> Self::Future {
        let picked = if call.tried().is_empty() {
            self.balancer.pick()
        } else {
            // Every pickable instance failed it already: the policy's retry limit decides.
            self.balancer
                .pick_avoiding(call.tried())
                .or_else(|| self.balancer.pick())
        };
        let Some(instance) = picked else {
            return Box::pin(std::future::ready(Err(CallError::NoInstance)));
        };
        let mut service = Reporting::new(
            self.service_for(&instance),
            self.balancer.clone(),
            instance.addr,
            self.classify.clone(),
        );
        Box::pin(async move {
            std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
            service.call(call).await
        })
    }
}
