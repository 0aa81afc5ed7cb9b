//! The rollout scenarios of `tests::rollout` (readiness, health check, out of service, live
//! changes, several registries), one test per (backend, scenario). Memory has no server to take
//! away, so `one_registry_down_never_delays_another` runs on etcd, ZooKeeper and Nacos only.

// The scenarios register `linked.alpha`, defined in this library.
use linked_services as _;
use tests::conformance::Harness;
use tests::rollout;

macro_rules! rollout {
    ($backend:ident = $start:expr; $($scenario:ident),+ $(,)?) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test]
                async fn $scenario() {
                    let mut backend = $start;
                    rollout::$scenario(&mut backend).await;
                    backend.finish().await;
                }
            )+
        }
    };
}

rollout! {
    memory = Harness::memory();
    readiness_gates_registration,
    health_check_withdraws_and_restores,
    http_health_check_follows_the_answer,
    take_out_and_put_back_while_serving,
    live_changes_are_updates,
}

#[cfg(feature = "etcd")]
rollout! {
    etcd = Harness::etcd().await;
    readiness_gates_registration,
    health_check_withdraws_and_restores,
    http_health_check_follows_the_answer,
    take_out_and_put_back_while_serving,
    live_changes_are_updates,
    one_registry_down_never_delays_another,
}

#[cfg(feature = "zookeeper")]
rollout! {
    zookeeper = Harness::zookeeper().await;
    readiness_gates_registration,
    health_check_withdraws_and_restores,
    http_health_check_follows_the_answer,
    take_out_and_put_back_while_serving,
    live_changes_are_updates,
    one_registry_down_never_delays_another,
}

#[cfg(feature = "nacos")]
rollout! {
    nacos = Harness::nacos().await;
    readiness_gates_registration,
    health_check_withdraws_and_restores,
    http_health_check_follows_the_answer,
    take_out_and_put_back_while_serving,
    // rnacos keeps an instance's first metadata: weight only (see the scenario's docs).
    live_weight_change_is_an_update,
    one_registry_down_never_delays_another,
}
