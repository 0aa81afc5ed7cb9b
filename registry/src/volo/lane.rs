//! [`Lane`]: the callee tag that names a Volo call's lane.

/// The lane of a Volo call, for a [`VoloBalance`](super::VoloBalance) whose balancer has
/// [`Lanes`](crate::balance::Lanes): a key of the callee endpoint's `faststr_tags` (Volo's
/// per-call map that the load balancer receives with the `Endpoint`), whose value is the lane.
/// The call goes to the instances tagged with that lane, and by the lanes' fallback
/// ([`LaneFallback`](crate::balance::LaneFallback): the base lane, every instance, or none)
/// when the lane has none that can take it; a retry (volo-thrift's `retry_count`) stays in
/// the lane until it is exhausted, then follows the fallback, as under tower. A call without
/// the tag goes to the base lane (the instances without the lane tag).
///
/// Set it per call with the generated client's `with_callopt` (volo-grpc and volo-thrift
/// alike), or in a client layer from anything the request carries:
///
/// ```text
/// let mut opt = volo_grpc::client::CallOpt::default();      // volo_thrift::client::CallOpt
/// opt.callee_faststr_tags.insert::<Lane>("canary".into());
/// let reply = client.clone().with_callopt(opt).say_hello(request).await?;
///
/// // or, in a volo::Service layer (outside the load balancer: `.layer_outer(..)`):
/// cx.rpc_info_mut().callee_mut().insert_faststr::<Lane>(lane);
/// ```
///
/// What the balance sees, without a client:
///
/// ```
/// use service_registry::balance::{Balancer, Lanes, Strategy};
/// use service_registry::volo::{Lane, VoloBalance, VoloDiscover};
/// use service_registry::{Info, MemoryRegistry, Registry};
/// use volo::context::Endpoint;
/// use volo::loadbalance::LoadBalance;
/// use volo::net::Address;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let registry = MemoryRegistry::new();
/// let stable = Info::new("echo", "127.0.0.1:7000".parse().unwrap());
/// let mut canary = Info::new("echo", "127.0.0.1:7001".parse().unwrap());
/// canary.tags.insert("lane".into(), "canary".into());
/// registry.register(&stable).await.unwrap();
/// registry.register(&canary).await.unwrap();
///
/// let discover = VoloDiscover::new(registry.clone());
/// let balance = VoloBalance::new(Balancer::builder(Strategy::WeightedRandom).lanes(Lanes::new("lane")));
///
/// let mut to_canary = Endpoint::new("echo".into());
/// to_canary.insert_faststr::<Lane>("canary".into());
/// let mut picker = balance.get_picker(&to_canary, &discover).await.unwrap();
/// assert_eq!(picker.next(), Some(Address::Ip(canary.addr)));
/// // A retry has no other canary, and falls back to the base lane.
/// assert_eq!(picker.next(), Some(Address::Ip(stable.addr)));
///
/// // A call without a lane never reaches the canary.
/// let plain = Endpoint::new("echo".into());
/// for _ in 0..100 {
///     let mut picker = balance.get_picker(&plain, &discover).await.unwrap();
///     assert_eq!(picker.next(), Some(Address::Ip(stable.addr)));
/// }
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lane;
