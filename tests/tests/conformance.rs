//! The behaviour suite of `tests::conformance`, one test per (backend, scenario): the test
//! `etcd::outage_and_recovery` runs that scenario against a real etcd, and so on.
//!
//! Memory runs every scenario that applies to it: it cannot hold foreign (unreadable) bytes and
//! has no server to take away, so `unreadable_data_is_left_out`, `outage_and_recovery` and
//! `deregistration_during_outage_stays_gone` run on etcd, ZooKeeper and Nacos only, and so does
//! `refused_update_keeps_the_last_accepted_value` (memory has no request size limit).

use tests::conformance::{self, Backend};

macro_rules! conformance {
    ($backend:ident = $start:expr; $($scenario:ident),+ $(,)?) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test]
                async fn $scenario() {
                    let mut backend = $start;
                    conformance::$scenario(&mut backend).await;
                    backend.finish().await;
                }
            )+
        }
    };
}

conformance! {
    memory = conformance::MemoryBackend::new();
    register_then_resolve,
    watch_snapshot_then_changes,
    deregister_removes_at_once,
    register_and_deregister_are_idempotent,
    registrar_address_change_leaves_no_old_address,
}

#[cfg(feature = "etcd")]
conformance! {
    etcd = conformance::EtcdBackend::start().await;
    register_then_resolve,
    watch_snapshot_then_changes,
    deregister_removes_at_once,
    register_and_deregister_are_idempotent,
    unreadable_data_is_left_out,
    outage_and_recovery,
    deregistration_during_outage_stays_gone,
    registrar_address_change_leaves_no_old_address,
    refused_update_keeps_the_last_accepted_value,
}

#[cfg(feature = "zookeeper")]
conformance! {
    zookeeper = conformance::ZookeeperBackend::start().await;
    register_then_resolve,
    watch_snapshot_then_changes,
    deregister_removes_at_once,
    register_and_deregister_are_idempotent,
    unreadable_data_is_left_out,
    outage_and_recovery,
    deregistration_during_outage_stays_gone,
    registrar_address_change_leaves_no_old_address,
    refused_update_keeps_the_last_accepted_value,
}

#[cfg(feature = "nacos")]
conformance! {
    nacos = conformance::NacosBackend::start().await;
    register_then_resolve,
    watch_snapshot_then_changes,
    deregister_removes_at_once,
    register_and_deregister_are_idempotent,
    unreadable_data_is_left_out,
    outage_and_recovery,
    deregistration_during_outage_stays_gone,
    registrar_address_change_leaves_no_old_address,
    refused_update_keeps_the_last_accepted_value,
}
