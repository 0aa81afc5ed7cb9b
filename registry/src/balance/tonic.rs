//! A watched service feeding tonic's `Channel::balance_channel`.

use futures_util::StreamExt;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};

use crate::discovery::{Discovery, DiscoveryError, Instance};

/// A tonic `Channel` balancing (tonic's power of two choices) over every instance of
/// `service`, kept current by `Discovery::watch`: instances that appear are inserted, ones that
/// go are removed. `endpoint` builds each instance's `Endpoint` (timeouts, TLS, ...); the
/// channel's key is the instance address. The watch, and the task feeding the channel, end as
/// soon as the channel (every clone of it) is dropped.
///
/// ```
/// use std::time::Duration;
/// use service_registry::{balance::balance_channel, Info, MemoryRegistry, Registry};
/// use tonic::transport::Endpoint;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let registry = MemoryRegistry::new();
/// registry.register(&Info::new("greeter", "127.0.0.1:50051".parse().unwrap())).await.unwrap();
/// let channel = balance_channel(&registry, "greeter", |instance| {
///     Endpoint::from_shared(format!("http://{}", instance.addr))
///         .map(|e| e.connect_timeout(Duration::from_secs(1)))
///         .ok()
/// })
/// .await
/// .unwrap();
/// // `channel` goes into any generated client: GreeterClient::new(channel).
/// # let _ = channel;
/// # }
/// ```
pub async fn balance_channel<D, F>(
    discovery: &D,
    service: &str,
    mut endpoint: F,
) -> Result<Channel, DiscoveryError>
where
    D: Discovery + ?Sized,
    F: FnMut(&Instance) -> Option<Endpoint> + Send + 'static,
{
    let mut changes = discovery.watch(service).await?;
    let (channel, tx) = Channel::balance_channel(1024);
    let service = service.to_string();
    tokio::spawn(async move {
        loop {
            let change = tokio::select! {
                // The channel (every clone of it) is gone.
                () = tx.closed() => return,
                change = changes.next() => change,
            };
            let Some(change) = change else { return };
            for gone in &change.removed {
                if tx.send(Change::Remove(gone.addr)).await.is_err() {
                    return;
                }
            }
            for new in change.added.iter().chain(&change.updated) {
                let Some(ep) = endpoint(new) else {
                    tracing::warn!(service, addr = %new.addr, "no endpoint for this instance; left out");
                    continue;
                };
                if tx.send(Change::Insert(new.addr, ep)).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(channel)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::{Info, MemoryRegistry, Registry};

    fn alive() -> usize {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    }

    async fn within_a_second(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn the_feeding_task_ends_when_the_channel_is_dropped() {
        let registry = MemoryRegistry::new();
        registry
            .register(&Info::new("greeter", "127.0.0.1:50051".parse().unwrap()))
            .await
            .unwrap();
        let baseline = alive();
        let endpoints = Arc::new(AtomicUsize::new(0));
        let counter = endpoints.clone();
        let channel = balance_channel(&registry, "greeter", move |instance| {
            counter.fetch_add(1, Ordering::SeqCst);
            Endpoint::from_shared(format!("http://{}", instance.addr)).ok()
        })
        .await
        .unwrap();
        assert!(alive() > baseline, "a task feeds the channel");
        // Once the snapshot has gone into the channel, the task waits for the next change.
        within_a_second("the snapshot was not fed to the channel", || {
            endpoints.load(Ordering::SeqCst) == 1
        })
        .await;
        drop(channel);
        within_a_second("a task outlived the channel by 1 s", || alive() == baseline).await;
    }
}
