//! The client connection of a network discovery ([`SharedClient`]), which every call of that
//! discovery and its clones shares.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::future::{BoxFuture, FutureExt, Shared};

use crate::registry::RegistryError;

type Connecting<C> = Shared<BoxFuture<'static, Result<C, Arc<RegistryError>>>>;

enum Slot<C> {
    Empty,
    Connecting { epoch: u64, done: Connecting<C> },
    Ready { epoch: u64, client: C },
}

struct Inner<C> {
    slot: Slot<C>,
    epochs: u64,
}

/// A client connection shared by every call of one discovery: concurrent callers share one
/// connect in flight, which runs in its own task, so none waits longer than that one
/// connect, and a caller that gives up does not stall the others.
pub(crate) struct SharedClient<C> {
    inner: Arc<Mutex<Inner<C>>>,
}

impl<C> Clone for SharedClient<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<C> Default for SharedClient<C> {
    fn default() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                slot: Slot::Empty,
                epochs: 0,
            })),
        }
    }
}

fn lock<C>(inner: &Mutex<Inner<C>>) -> MutexGuard<'_, Inner<C>> {
    // Every update is one assignment: a poisoned lock is still consistent.
    inner.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl<C: Clone + Send + Sync + 'static> SharedClient<C> {
    /// The connected client and its epoch (for [`forget`](Self::forget)): the cached one
    /// when `usable`, else the result of the connect in flight, else of a new `connect`.
    pub(crate) async fn get<F>(
        &self,
        usable: impl Fn(&C) -> bool,
        connect: impl FnOnce() -> F,
    ) -> Result<(C, u64), RegistryError>
    where
        F: Future<Output = Result<C, RegistryError>> + Send + 'static,
    {
        let (epoch, done) = {
            let mut inner = lock(&self.inner);
            match &inner.slot {
                Slot::Ready { epoch, client } if usable(client) => {
                    return Ok((client.clone(), *epoch));
                }
                Slot::Connecting { epoch, done } => (*epoch, done.clone()),
                _ => {
                    inner.epochs += 1;
                    let epoch = inner.epochs;
                    let done = self.spawn_connect(epoch, connect());
                    inner.slot = Slot::Connecting {
                        epoch,
                        done: done.clone(),
                    };
                    (epoch, done)
                }
            }
        };
        match done.await {
            Ok(client) => Ok((client, epoch)),
            Err(err) => Err(RegistryError::clone(&err)),
        }
    }

    fn spawn_connect(
        &self,
        epoch: u64,
        connect: impl Future<Output = Result<C, RegistryError>> + Send + 'static,
    ) -> Connecting<C> {
        let shared = self.inner.clone();
        let task = tokio::spawn(async move {
            let result = connect.await.map_err(Arc::new);
            let mut inner = lock(&shared);
            if matches!(inner.slot, Slot::Connecting { epoch: e, .. } if e == epoch) {
                inner.slot = match &result {
                    Ok(client) => Slot::Ready {
                        epoch,
                        client: client.clone(),
                    },
                    Err(_) => Slot::Empty,
                };
            }
            result
        });
        async move {
            task.await.unwrap_or_else(|err| {
                Err(Arc::new(RegistryError::Backend {
                    backend: "discovery",
                    source: crate::registry::shared(format!("the connect task failed: {err}")),
                }))
            })
        }
        .boxed()
        .shared()
    }

    /// Drops the client of `epoch` (it failed), so the next call connects again; a newer
    /// client is kept. (A ZooKeeper client reconnects by itself; only its end counts, which
    /// `usable` sees.)
    #[cfg_attr(not(any(feature = "etcd", feature = "nacos")), allow(dead_code))]
    pub(crate) fn forget(&self, epoch: u64) {
        let mut inner = lock(&self.inner);
        if matches!(inner.slot, Slot::Ready { epoch: e, .. } if e == epoch) {
            inner.slot = Slot::Empty;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    fn unavailable() -> RegistryError {
        RegistryError::Unavailable {
            backend: "test",
            endpoint: "nowhere".into(),
            source: crate::registry::shared("no"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_connect() {
        let client: SharedClient<u32> = SharedClient::default();
        let connects = Arc::new(AtomicUsize::new(0));
        let calls = (0..8).map(|_| {
            let client = client.clone();
            let connects = connects.clone();
            tokio::spawn(async move {
                client
                    .get(
                        |_| true,
                        move || async move {
                            connects.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            Err::<u32, _>(unavailable())
                        },
                    )
                    .await
            })
        });
        let started = tokio::time::Instant::now();
        for result in futures_util::future::join_all(calls).await {
            assert!(result.unwrap().is_err());
        }
        assert_eq!(connects.load(Ordering::SeqCst), 1);
        assert_eq!(started.elapsed(), Duration::from_secs(1));

        // The failure is not cached: the next call connects again, and keeps the client.
        let (value, epoch) = client.get(|_| true, || async { Ok(7) }).await.unwrap();
        assert_eq!(value, 7);
        let (again, _) = client.get(|_| true, || async { Ok(8) }).await.unwrap();
        assert_eq!(again, 7);
        // A client that is no longer usable, or forgotten, is replaced.
        let (fresh, _) = client.get(|c| *c != 7, || async { Ok(9) }).await.unwrap();
        assert_eq!(fresh, 9);
        client.forget(epoch); // an older epoch: kept
        assert_eq!(
            client.get(|_| true, || async { Ok(10) }).await.unwrap().0,
            9
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_gives_up_does_not_stall_the_connect() {
        let client: SharedClient<u32> = SharedClient::default();
        let slow = || async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(5)
        };
        let gave_up =
            tokio::time::timeout(Duration::from_millis(100), client.get(|_| true, slow)).await;
        assert!(gave_up.is_err());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let started = tokio::time::Instant::now();
        let (value, _) = client.get(|_| true, || async { Ok(6) }).await.unwrap();
        assert_eq!((value, started.elapsed()), (5, Duration::ZERO));
    }
}
