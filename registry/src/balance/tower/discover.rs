//! A watched service as a `tower::discover::Discover`, so `tower::balance` can use it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use tower::discover::Change as TowerChange;

use crate::discovery::{Discovery, DiscoveryError, Instance, WatchStream};

/// A `Stream` of `tower::discover::Change<SocketAddr, S>`: `Insert` for every instance that
/// appears or changes (built by `make`), `Remove` for every one that goes. It implements
/// `tower::discover::Discover`, so it feeds `tower::balance::p2c::Balance` directly.
pub struct ServiceDiscover<F, S> {
    changes: WatchStream,
    make: F,
    pending: std::collections::VecDeque<TowerChange<SocketAddr, S>>,
}

impl<F, S> std::fmt::Debug for ServiceDiscover<F, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceDiscover")
            .field("pending", &self.pending.len())
            .finish()
    }
}

/// Watches `service` and turns each instance into a service with `make`.
///
/// ```
/// use std::convert::Infallible;
/// use service_registry::{balance::discover, Info, MemoryRegistry, Registry};
/// use tower::{Service, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let registry = MemoryRegistry::new();
/// registry.register(&Info::new("echo", "127.0.0.1:7001".parse().unwrap())).await.unwrap();
/// let services = discover(&registry, "echo", |instance| {
///     let addr = instance.addr;
///     let service = tower::service_fn(move |request: String| async move { Ok::<_, Infallible>(format!("{addr} got {request}")) });
///     tower::load::Constant::new(service, 1) // p2c compares loads; a real client would use PendingRequests
/// })
/// .await
/// .unwrap();
/// let mut balance = tower::balance::p2c::Balance::new(services);
/// let reply = balance.ready().await.unwrap().call("hi".to_string()).await.unwrap();
/// assert_eq!(reply, "127.0.0.1:7001 got hi");
/// # }
/// ```
pub async fn discover<D, F, S>(
    discovery: &D,
    service: &str,
    make: F,
) -> Result<ServiceDiscover<F, S>, DiscoveryError>
where
    D: Discovery + ?Sized,
    F: FnMut(&Instance) -> S,
{
    Ok(ServiceDiscover {
        changes: discovery.watch(service).await?,
        make,
        pending: Default::default(),
    })
}

impl<F, S> Stream for ServiceDiscover<F, S>
where
    F: FnMut(&Instance) -> S + Unpin,
    S: Unpin,
{
    type Item = Result<TowerChange<SocketAddr, S>, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(change) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(change)));
            }
            match this.changes.as_mut().poll_next(cx) {
                Poll::Ready(Some(change)) => {
                    for gone in &change.removed {
                        this.pending.push_back(TowerChange::Remove(gone.addr));
                    }
                    for new in change.added.iter().chain(&change.updated) {
                        this.pending
                            .push_back(TowerChange::Insert(new.addr, (this.make)(new)));
                    }
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
