//! A watched service feeding tonic's `Channel::balance_channel`.

use futures_util::StreamExt;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};

use crate::discovery::{Discovery, DiscoveryError, Instance};

/// A tonic `Channel` balancing (tonic's power of two choices) over every instance of
/// `service`, kept current by `Discovery::watch`: instances that appear are inserted, ones that
/// go are removed. `endpoint` builds each instance's `Endpoint` (timeouts, TLS, ...); the
/// channel's key is the instance address. The watch ends when the channel is dropped.
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
        while let Some(change) = changes.next().await {
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
