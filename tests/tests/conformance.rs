//! The behaviour suite of `tests::conformance`, one test per (backend, scenario): the test
//! `etcd::outage_and_recovery` runs that scenario against a real etcd, and so on.
//!
//! Memory runs every scenario that applies to it: it cannot hold foreign (unreadable) bytes, has
//! no server to take away and no process to kill, so `unreadable_data_is_left_out`,
//! `outage_and_recovery`, `deregistration_during_outage_stays_gone`,
//! `a_service_started_during_an_outage_registers_soon_after_the_server_answers`,
//! `shutdown_while_the_server_is_down_is_quick` and `sigkilled_process_disappears` run on etcd,
//! ZooKeeper and Nacos only, and so does `refused_update_keeps_the_last_accepted_value` (memory
//! has no request size limit). `records_deleted_or_overwritten_by_others_are_restored` and
//! `two_registries_advertising_one_address_do_not_fight` read the server's own records (a key's
//! lease, a node's owner), which only etcd and ZooKeeper have: Nacos lists instances, not
//! records of ours with a holder, so they run on etcd and ZooKeeper.
//! `a_connection_lost_at_once_backs_off` puts the fault proxy between registry and server and
//! counts the registry's new connections: etcd and Nacos (a ZooKeeper session outlives its
//! connections). `everything_is_back_within_a_second_of_a_wiped_server_answering` restarts the
//! server without its data behind the fault proxy: etcd, ZooKeeper and Nacos (memory has no
//! server to restart; its adapter's `Backend::wipe` says so).
//! `wrong_password_is_a_clear_error_and_the_service_keeps_serving`
//! runs on each backend's configuration with credentials (`etcd_auth`, `zookeeper_auth`,
//! `nacos_auth`).

use tests::conformance::{self, Harness};

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
    memory = Harness::memory();
    register_then_resolve,
    watch_snapshot_then_changes,
    deregister_removes_at_once,
    register_and_deregister_are_idempotent,
    registrar_address_change_leaves_no_old_address,
    register_resolve_watch_and_graceful_stop,
}

#[cfg(feature = "etcd")]
conformance! {
    etcd = Harness::etcd().await;
    register_then_resolve,
    watch_snapshot_then_changes,
    deregister_removes_at_once,
    register_and_deregister_are_idempotent,
    unreadable_data_is_left_out,
    outage_and_recovery,
    deregistration_during_outage_stays_gone,
    registrar_address_change_leaves_no_old_address,
    refused_update_keeps_the_last_accepted_value,
    register_resolve_watch_and_graceful_stop,
    sigkilled_process_disappears,
    a_service_started_during_an_outage_registers_soon_after_the_server_answers,
    shutdown_while_the_server_is_down_is_quick,
    a_connection_lost_at_once_backs_off,
    everything_is_back_within_a_second_of_a_wiped_server_answering,
    records_deleted_or_overwritten_by_others_are_restored,
    two_registries_advertising_one_address_do_not_fight,
}

#[cfg(feature = "etcd")]
conformance! {
    etcd_auth = Harness::etcd_with_auth().await;
    wrong_password_is_a_clear_error_and_the_service_keeps_serving,
}

#[cfg(feature = "zookeeper")]
conformance! {
    zookeeper = Harness::zookeeper().await;
    register_then_resolve,
    watch_snapshot_then_changes,
    deregister_removes_at_once,
    register_and_deregister_are_idempotent,
    unreadable_data_is_left_out,
    outage_and_recovery,
    deregistration_during_outage_stays_gone,
    registrar_address_change_leaves_no_old_address,
    refused_update_keeps_the_last_accepted_value,
    register_resolve_watch_and_graceful_stop,
    sigkilled_process_disappears,
    a_service_started_during_an_outage_registers_soon_after_the_server_answers,
    shutdown_while_the_server_is_down_is_quick,
    everything_is_back_within_a_second_of_a_wiped_server_answering,
    records_deleted_or_overwritten_by_others_are_restored,
    two_registries_advertising_one_address_do_not_fight,
}

#[cfg(feature = "zookeeper")]
conformance! {
    zookeeper_auth = Harness::zookeeper_with_user().await;
    wrong_password_is_a_clear_error_and_the_service_keeps_serving,
}

#[cfg(feature = "nacos")]
conformance! {
    nacos = Harness::nacos().await;
    register_then_resolve,
    watch_snapshot_then_changes,
    deregister_removes_at_once,
    register_and_deregister_are_idempotent,
    unreadable_data_is_left_out,
    outage_and_recovery,
    deregistration_during_outage_stays_gone,
    registrar_address_change_leaves_no_old_address,
    refused_update_keeps_the_last_accepted_value,
    register_resolve_watch_and_graceful_stop,
    sigkilled_process_disappears,
    a_service_started_during_an_outage_registers_soon_after_the_server_answers,
    shutdown_while_the_server_is_down_is_quick,
    a_connection_lost_at_once_backs_off,
    everything_is_back_within_a_second_of_a_wiped_server_answering,
}

#[cfg(feature = "nacos")]
conformance! {
    nacos_auth = Harness::nacos_with_auth().await;
    wrong_password_is_a_clear_error_and_the_service_keeps_serving,
}
