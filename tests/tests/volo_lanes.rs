//! Request routing by lane through the Volo adapter (issue 20): volo-grpc greeters registered
//! through the `Registrar`, two without a lane tag and one tagged `lane = canary`; a volo-grpc
//! client over `VoloDiscover` + `VoloBalance` with `Lanes` sends a call that carries
//! `Lane = canary` in its callee tags (`with_callopt`) to the canary, a call without one to
//! the base lane, and a call for a lane nobody serves where the fallback says.
#![cfg(feature = "volo")]

mod volo_support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use examples::volo_common::greeter;
use service_registry::balance::{Balancer, LaneFallback, Lanes, Strategy};
use service_registry::volo::{Lane, VoloBalance, VoloDiscover};
use service_registry::{Discovery, InfoOverride, MemoryRegistry, Registry};
use volo::FastStr;
use volo_support::{client_over, holds, start_greeter_with, Running, SERVICE};

const DRAIN: Duration = Duration::from_secs(1);
const LIMIT: Duration = Duration::from_secs(10);

/// Two base greeters and a canary, registered in one memory registry.
struct Fleet {
    registry: MemoryRegistry,
    base: Vec<Running>,
    canary: Running,
}

async fn fleet() -> Fleet {
    let registry = MemoryRegistry::new();
    let shared: Arc<dyn Registry> = Arc::new(registry.clone());
    let mut base = Vec::new();
    for _ in 0..2 {
        base.push(start_greeter_with(shared.clone(), DRAIN, InfoOverride::new()).await);
    }
    let canary = start_greeter_with(shared, DRAIN, InfoOverride::new().tag("lane", "canary")).await;
    Fleet {
        registry,
        base,
        canary,
    }
}

impl Fleet {
    fn base_addrs(&self) -> Vec<String> {
        self.base.iter().map(|r| r.addr.to_string()).collect()
    }

    /// A client whose balance routes by tag `lane` with `fallback`.
    fn client(&self, fallback: LaneFallback) -> (greeter::GreeterClient, VoloBalance<FastStr>) {
        let discovery: Arc<dyn Discovery> = Arc::new(self.registry.clone());
        let balance = VoloBalance::new(
            Balancer::builder(Strategy::WeightedRandom)
                .lanes(Lanes::new("lane").fallback(fallback)),
        )
        // A lane with nothing to pick fails at once instead of waiting for an instance.
        .wait_for_instance(Duration::ZERO);
        client_over(VoloDiscover::new(discovery), SERVICE, balance)
    }
}

/// One call for `lane` (`None`: no lane tag); the answering server's address.
async fn hello_in(client: &greeter::GreeterClient, lane: Option<&str>) -> Result<String, String> {
    let request = greeter::HelloRequest {
        name: FastStr::from_static_str("volo"),
    };
    let mut opt = volo_grpc::client::CallOpt::default();
    if let Some(lane) = lane {
        opt.callee_faststr_tags.insert::<Lane>(FastStr::new(lane));
    }
    let call = client.clone().with_callopt(opt).say_hello(request);
    match tokio::time::timeout(Duration::from_secs(5), call).await {
        Ok(Ok(reply)) => Ok(reply.into_inner().server.to_string()),
        Ok(Err(status)) => Err(status.to_string()),
        Err(_) => Err("no reply within 5 s".into()),
    }
}

#[tokio::test]
async fn volo_calls_reach_their_lane_and_plain_calls_stay_on_the_base_lane() {
    let fleet = fleet().await;
    let (client, _) = fleet.client(LaneFallback::Base);
    let (base, canary) = (fleet.base_addrs(), fleet.canary.addr.to_string());
    let mut plain: HashMap<String, usize> = HashMap::new();
    for _ in 0..200 {
        assert_eq!(hello_in(&client, Some("canary")).await.unwrap(), canary);
        let by = hello_in(&client, None).await.unwrap();
        assert!(base.contains(&by), "a plain call reached {by}");
        *plain.entry(by).or_default() += 1;
        // A lane nobody serves falls back to the base lane.
        let blue = hello_in(&client, Some("blue")).await.unwrap();
        assert!(base.contains(&blue), "lane blue reached {blue}");
    }
    // Both base instances share the plain calls.
    assert!(plain.values().all(|n| *n > 50), "{plain:?}");
    assert_eq!(fleet.canary.served(), 200);
}

#[tokio::test]
async fn volo_lane_fallbacks_all_and_fail() {
    let fleet = fleet().await;
    let (to_all, _) = fleet.client(LaneFallback::All);
    let mut reached = std::collections::HashSet::new();
    for _ in 0..300 {
        reached.insert(hello_in(&to_all, Some("blue")).await.unwrap());
    }
    assert_eq!(reached.len(), 3, "lane blue falls back to every instance");

    let (strict, _) = fleet.client(LaneFallback::Fail);
    let err = hello_in(&strict, Some("blue")).await.unwrap_err();
    eprintln!("lane blue with LaneFallback::Fail: {err}");
    assert_eq!(
        hello_in(&strict, Some("canary")).await.unwrap(),
        fleet.canary.addr.to_string()
    );
    assert!(fleet
        .base_addrs()
        .contains(&hello_in(&strict, None).await.unwrap()));
}

/// A lane carried in `metainfo` (as Kitex's `metainfo.WithPersistentValue` carries it): the
/// balance reads it when the callee has no `Lane` tag; the tag wins when both are there.
#[tokio::test]
async fn volo_calls_carrying_a_lane_in_metainfo_reach_it() {
    use metainfo::{Forward, MetaInfo, METAINFO};
    let fleet = fleet().await;
    let discovery: Arc<dyn Discovery> = Arc::new(fleet.registry.clone());
    let balance =
        VoloBalance::new(Balancer::builder(Strategy::WeightedRandom).lanes(Lanes::new("lane")))
            .lane_from_metainfo("lane");
    let (client, _) = client_over(VoloDiscover::new(discovery), SERVICE, balance);
    let (base, canary) = (fleet.base_addrs(), fleet.canary.addr.to_string());
    let in_scope = |persistent: bool, lane: Option<&'static str>| {
        let client = client.clone();
        let mut info = MetaInfo::default();
        if persistent {
            info.set_persistent("lane", "canary");
        } else {
            info.set_transient("lane", "canary");
        }
        METAINFO.scope(std::cell::RefCell::new(info), async move {
            hello_in(&client, lane).await
        })
    };
    for _ in 0..50 {
        assert_eq!(in_scope(true, None).await.unwrap(), canary, "persistent");
        assert_eq!(in_scope(false, None).await.unwrap(), canary, "transient");
        // The callee tag names the lane first: `blue` has nobody, and falls back to the base.
        let blue = in_scope(true, Some("blue")).await.unwrap();
        assert!(base.contains(&blue), "a blue call reached {blue}");
        // Outside a metainfo scope: the base lane.
        let plain = hello_in(&client, None).await.unwrap();
        assert!(base.contains(&plain), "a plain call reached {plain}");
    }
    assert_eq!(fleet.canary.served(), 100);
}

/// A canary that leaves: once the client has seen it go, canary calls fall back to the base
/// lane, and no call fails on the way (the registrar deregisters it before it stops serving).
#[tokio::test]
async fn volo_canary_calls_fall_back_once_the_canary_leaves() {
    let fleet = fleet().await;
    let (client, balance) = fleet.client(LaneFallback::Base);
    let canary = fleet.canary.addr;
    assert_eq!(
        hello_in(&client, Some("canary")).await.unwrap(),
        canary.to_string()
    );
    let stopping = tokio::spawn(fleet.canary.stop());
    let deadline = Instant::now() + LIMIT;
    while holds(&balance, SERVICE, canary) {
        assert!(
            Instant::now() < deadline,
            "the client never saw the canary leave"
        );
        hello_in(&client, Some("canary"))
            .await
            .unwrap_or_else(|err| panic!("a canary call failed while it left: {err}"));
    }
    let base: Vec<String> = fleet.base.iter().map(|r| r.addr.to_string()).collect();
    for _ in 0..100 {
        let by = hello_in(&client, Some("canary")).await.unwrap();
        assert!(
            base.contains(&by),
            "a canary call reached {by} after it left"
        );
    }
    stopping.await.unwrap();
    for running in fleet.base {
        running.stop().await;
    }
}
