//! The reliability campaign (`tests::campaign`) with tiny counts, against real etcd,
//! ZooKeeper and Nacos (r-nacos) servers: every must-be-zero counter must be 0. The full campaign is the `campaign`
//! binary (see RELIABILITY.md).
#![cfg(all(feature = "etcd", feature = "zookeeper", feature = "nacos"))]

// The shutdown scenario registers `linked.alpha`, defined in this library.
use linked_services as _;
use tests::campaign::{run, Options, Scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_campaign_keeps_every_must_be_zero_counter_at_zero() {
    let options = Options {
        scenarios: Scenario::ALL.to_vec(),
        ..Options::quick()
    };
    let report = run(&options, |section| println!("{}", section.render())).await;
    println!("{}", report.summary());
    let failures = report.failures();
    assert!(
        failures.is_empty(),
        "must-be-zero counters that are not 0 (the report above has the details):\n{}",
        failures.join("\n")
    );
}
