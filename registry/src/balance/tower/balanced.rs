//! [`Balanced`]: a tower service over every instance of a service, picking with a
//! [`Balancer`].

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tower::{BoxError, Service};

use super::call::Call;
use super::error::CallError;
use super::report::{AnyError, CallFuture, Classify, Reporting};
use crate::balance::{consistent_hash, Balancer};
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
/// use service_registry::balance::{Balancer, Strategy};
/// use service_registry::balance::tower::{Balanced, Call, RetryPolicy};
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
pub struct Balanced<M, S, C = AnyError, K = NoKey, L = NoLane> {
    balancer: Balancer,
    make: Arc<M>,
    services: Arc<Mutex<HashMap<SocketAddr, S>>>,
    classify: C,
    key: K,
    lane: L,
}

impl<M, S, C: Clone, K: Clone, L: Clone> Clone for Balanced<M, S, C, K, L> {
    fn clone(&self) -> Self {
        Self {
            balancer: self.balancer.clone(),
            make: self.make.clone(),
            services: self.services.clone(),
            classify: self.classify.clone(),
            key: self.key.clone(),
            lane: self.lane.clone(),
        }
    }
}

/// Gives the hash key of a request, for a [`Balanced`] service over a
/// [`Strategy::ConsistentHash`](crate::balance::Strategy::ConsistentHash) balancer: any
/// `Fn(&R) -> impl Hash` is one ([`Balanced::with_hash_key`]); [`NoKey`] (the default) gives
/// none.
pub trait HashKey<R> {
    /// The key's hash for `request`, `None` for no key.
    fn hash_key(&self, request: &R) -> Option<u64>;
}

/// The default [`HashKey`]: no key. A [`Balanced`] service over a hashing balancer without a
/// key extractor fails every call with [`CallError::NoHashKey`] rather than pick at random.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoKey;

impl<R> HashKey<R> for NoKey {
    fn hash_key(&self, _: &R) -> Option<u64> {
        None
    }
}

impl<R, F, H> HashKey<R> for F
where
    F: Fn(&R) -> H,
    H: Hash,
{
    fn hash_key(&self, request: &R) -> Option<u64> {
        Some(consistent_hash::hash(self(request)))
    }
}

/// Gives the lane of a request, for a [`Balanced`] service over a balancer with
/// [`Lanes`](crate::balance::Lanes): any `Fn(&R) -> Option<&str>` is one
/// ([`Balanced::with_lane`]); [`NoLane`] (the default) gives none.
pub trait LaneOf<R> {
    /// The lane `request` is for, `None` for the base lane.
    fn lane_of<'r>(&self, request: &'r R) -> Option<&'r str>;
}

/// The default [`LaneOf`]: every call is for the base lane.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoLane;

impl<R> LaneOf<R> for NoLane {
    fn lane_of<'r>(&self, _: &'r R) -> Option<&'r str> {
        None
    }
}

impl<R, F> LaneOf<R> for F
where
    F: for<'r> Fn(&'r R) -> Option<&'r str>,
{
    fn lane_of<'r>(&self, request: &'r R) -> Option<&'r str> {
        self(request)
    }
}

impl<M, S, C, K, L> std::fmt::Debug for Balanced<M, S, C, K, L> {
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
            key: NoKey,
            lane: NoLane,
        }
    }
}

impl<M, S, C, K, L> Balanced<M, S, C, K, L> {
    /// Judges results with `classify`: which errors (or responses) count against an instance.
    ///
    /// See [`Classify`] for an example of a classifier.
    pub fn classify<C2>(self, classify: C2) -> Balanced<M, S, C2, K, L> {
        Balanced {
            balancer: self.balancer,
            make: self.make,
            services: self.services,
            classify,
            key: self.key,
            lane: self.lane,
        }
    }

    /// Picks by the hash of `key(&request)` (for a
    /// [`Strategy::ConsistentHash`](crate::balance::Strategy::ConsistentHash) balancer: the
    /// same key reaches the same instance while the set is stable; other strategies ignore
    /// it). Without it, calls through a hashing balancer fail with [`CallError::NoHashKey`].
    /// A retried call goes to an instance it has not tried.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use service_registry::balance::{Balancer, Strategy};
    /// use service_registry::balance::tower::{Balanced, Call};
    /// use service_registry::{Info, Instance};
    /// use tower::ServiceExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let set = [1, 2, 3].map(|p| Instance::from(&Info::new("s", format!("127.0.0.1:{p}").parse().unwrap())));
    /// let balancer = Balancer::builder(Strategy::ConsistentHash).build(set);
    /// let service = Balanced::new(balancer, |instance| {
    ///     let addr = instance.addr;
    ///     tower::service_fn(move |_user: String| async move { Ok::<_, Infallible>(addr) })
    /// })
    /// .with_hash_key(|user: &String| user.clone());
    /// let first = service.clone().oneshot(Call::new("user-42".to_string())).await.unwrap();
    /// let again = service.oneshot(Call::new("user-42".to_string())).await.unwrap();
    /// assert_eq!(first, again);
    /// # }
    /// ```
    pub fn with_hash_key<K2>(self, key: K2) -> Balanced<M, S, C, K2, L> {
        Balanced {
            balancer: self.balancer,
            make: self.make,
            services: self.services,
            classify: self.classify,
            key,
            lane: self.lane,
        }
    }

    /// Sends each call to the lane `lane(&request)` names (for a balancer with
    /// [`Lanes`](crate::balance::Lanes): its instances of that lane, or where the lane's
    /// fallback says when it has none that can take the call; `None`: the base lane). A
    /// retried call stays in its lane. The lane can come from anything the request carries:
    /// a field, a header, a request extension.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use service_registry::balance::{Balancer, Lanes, Strategy};
    /// use service_registry::balance::tower::{Balanced, Call};
    /// use service_registry::{Info, Instance};
    /// use tower::ServiceExt;
    ///
    /// struct Request { lane: Option<String> }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let stable = Info::new("s", "127.0.0.1:1".parse().unwrap());
    /// let mut canary = Info::new("s", "127.0.0.1:2".parse().unwrap());
    /// canary.tags.insert("lane".into(), "canary".into());
    /// let balancer = Balancer::builder(Strategy::WeightedRandom)
    ///     .lanes(Lanes::new("lane"))
    ///     .build([Instance::from(&stable), Instance::from(&canary)]);
    /// let service = Balanced::new(balancer, |instance| {
    ///     let addr = instance.addr;
    ///     tower::service_fn(move |_: Request| async move { Ok::<_, Infallible>(addr) })
    /// })
    /// .with_lane(|request: &Request| request.lane.as_deref());
    /// let to_canary = Request { lane: Some("canary".into()) };
    /// assert_eq!(service.clone().oneshot(Call::new(to_canary)).await.unwrap(), canary.addr);
    /// let plain = Request { lane: None };
    /// assert_eq!(service.oneshot(Call::new(plain)).await.unwrap(), stable.addr);
    /// # }
    /// ```
    pub fn with_lane<R, L2>(self, lane: L2) -> Balanced<M, S, C, K, L2>
    where
        L2: for<'r> Fn(&'r R) -> Option<&'r str>,
    {
        Balanced {
            balancer: self.balancer,
            make: self.make,
            services: self.services,
            classify: self.classify,
            key: self.key,
            lane,
        }
    }

    /// The balancer it picks with.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use service_registry::balance::{Balancer, Strategy};
    /// use service_registry::balance::tower::Balanced;
    /// let balancer = Balancer::builder(Strategy::WeightedRandom).build([]);
    /// let service = Balanced::new(balancer, |_| tower::service_fn(|()| async { Ok::<_, Infallible>(()) }));
    /// assert!(service.balancer().instances().is_empty());
    /// ```
    pub fn balancer(&self) -> &Balancer {
        &self.balancer
    }
}

impl<M, S: Clone, C, K, L> Balanced<M, S, C, K, L>
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

impl<M, S, C, K, L, R> Service<Call<R>> for Balanced<M, S, C, K, L>
where
    K: HashKey<R>,
    L: LaneOf<R>,
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
        let key = self.key.hash_key(call.request());
        let hashes = self.balancer.hashes();
        if hashes && key.is_none() {
            return Box::pin(std::future::ready(Err(CallError::NoHashKey)));
        }
        let lane = self.lane.lane_of(call.request());
        let first = || match key {
            Some(key) if hashes => self.balancer.pick_by_hash(lane, key),
            _ => self.balancer.pick_in_lane(lane),
        };
        let picked = if call.tried().is_empty() {
            first()
        } else {
            // Every pickable instance failed it already: the policy's retry limit decides.
            self.balancer
                .pick_avoiding_in(lane, call.tried())
                .or_else(first)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Strategy;
    use crate::Info;
    use std::convert::Infallible;
    use tower::ServiceExt;

    fn set(n: u16) -> Vec<Instance> {
        (1..=n)
            .map(|p| Instance::from(&Info::new("s", SocketAddr::from(([127, 0, 0, 1], p)))))
            .collect()
    }

    type Reply = tower::util::BoxCloneService<u64, SocketAddr, Infallible>;

    fn reply(instance: &Instance) -> Reply {
        let addr = instance.addr;
        Reply::new(tower::service_fn(move |_: u64| {
            std::future::ready(Ok::<_, Infallible>(addr))
        }))
    }

    /// Replies with the address of the instance that took the call.
    fn by_addr(balancer: Balancer) -> Balanced<fn(&Instance) -> Reply, Reply> {
        Balanced::new(balancer, reply as fn(&Instance) -> Reply)
    }

    /// Trap 1 of issue 20: under tower, a hashing balancer used to pick with a random key.
    #[tokio::test]
    async fn under_tower_the_same_key_always_reaches_the_same_instance() {
        let balancer = Balancer::builder(Strategy::ConsistentHash).build(set(8));
        let service = by_addr(balancer.clone()).with_hash_key(|user: &u64| *user);
        let mut reached: HashMap<u64, SocketAddr> = HashMap::new();
        for round in 0..20 {
            for user in 0..50u64 {
                let addr = service.clone().oneshot(Call::new(user)).await.unwrap();
                let first = *reached.entry(user).or_insert(addr);
                assert_eq!(addr, first, "user {user} moved in round {round}");
                assert_eq!(addr, balancer.pick_by_key(user).unwrap().addr);
            }
        }
        let distinct: std::collections::HashSet<_> = reached.values().collect();
        assert!(distinct.len() > 1, "50 keys all on one of 8 instances");
    }

    #[tokio::test]
    async fn a_hashing_balancer_without_a_key_fails_instead_of_randomizing() {
        let balancer = Balancer::builder(Strategy::ConsistentHash).build(set(8));
        assert!(balancer.pick().is_none(), "pick() without a key");
        let err = by_addr(balancer).oneshot(Call::new(7)).await.unwrap_err();
        assert!(matches!(err, CallError::NoHashKey), "{err}");
        // Other strategies ignore a key extractor and need none.
        let random = Balancer::builder(Strategy::WeightedRandom).build(set(2));
        assert!(by_addr(random.clone()).oneshot(Call::new(1)).await.is_ok());
        let keyed = by_addr(random).with_hash_key(|k: &u64| *k);
        assert!(keyed.oneshot(Call::new(1)).await.is_ok());
    }

    /// Least request under tower: the in-flight counts come from the calls themselves.
    #[tokio::test]
    async fn under_tower_least_request_sends_few_calls_to_an_instance_that_does_not_answer() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        type Hanging = tower::util::BoxCloneService<u64, (), Infallible>;
        let run = |strategy: Strategy| async move {
            let to_slow = Arc::new(AtomicUsize::new(0));
            let counted = to_slow.clone();
            let balancer = Balancer::builder(strategy).build(set(4));
            let service = Balanced::new(balancer, move |instance: &Instance| {
                let slow = instance.addr.port() == 1;
                let counted = counted.clone();
                Hanging::new(tower::service_fn(move |_: u64| {
                    let counted = counted.clone();
                    async move {
                        if slow {
                            counted.fetch_add(1, Ordering::Relaxed);
                            std::future::pending::<()>().await;
                        }
                        Ok::<_, Infallible>(())
                    }
                }))
            });
            let mut calls = Vec::new();
            for i in 0..400 {
                calls.push(tokio::spawn(service.clone().oneshot(Call::new(i))));
                tokio::task::yield_now().await;
            }
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            calls.iter().for_each(tokio::task::JoinHandle::abort);
            to_slow.load(Ordering::Relaxed)
        };
        let least = run(Strategy::LeastRequest).await;
        let random = run(Strategy::WeightedRandom).await;
        eprintln!(
            "to the hanging instance, of 400: least request {least}, weighted random {random}"
        );
        // Once it holds calls, the hanging one wins only when both candidates are it (1/16).
        assert!(
            least < 40,
            "least request: {least} of 400 to the hanging instance"
        );
        assert!(random > 60, "weighted random: {random} of 400");
    }
}
