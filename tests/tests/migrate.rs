//! The `migrate` example against real etcd and ZooKeeper: one process registered in both, a
//! merged client view with one instance per address, and SIGTERM removes it from both.
#![cfg(all(feature = "etcd", feature = "zookeeper"))]

use std::time::Duration;

use etcd_client::GetOptions;
use tests::child::{example_command, next_line, registered_at, spawn_lines, terminate};
use tests::fixtures::etcd::Etcd;
use tests::fixtures::zookeeper::ZooKeeper;

async fn etcd_keys(etcd: &Etcd) -> usize {
    let mut client = etcd.client().await;
    client
        .get(
            "kitex/registry-etcd/",
            Some(GetOptions::new().with_prefix()),
        )
        .await
        .unwrap()
        .kvs()
        .len()
}

async fn zk_children(zk: &ZooKeeper, service: &str) -> usize {
    let client = zk.client(None).await;
    match client.list_children(&format!("/{service}")).await {
        Ok(children) => children.len(),
        Err(_) => 0,
    }
}

#[tokio::test]
async fn migrate_example_registers_in_both_and_reads_them_as_one() {
    let etcd = Etcd::start().await;
    let zk = ZooKeeper::start().await;
    let (mut child, mut lines) = spawn_lines(
        example_command("migrate")
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("ETCD_ENDPOINTS", etcd.endpoint())
            .env("ZOOKEEPER_ENDPOINTS", zk.connect_string())
            .env("SERVICE_REGISTRY_DRAIN_DELAY", "0"),
    );
    let (mut registered, mut merged_one) = (Vec::new(), false);
    while registered.len() < 2 || !merged_one {
        let line = next_line(&mut lines).await;
        if line.starts_with("registered ") {
            registered.push(registered_at(&line));
        } else if line == "merged view of example.echo: 1 instance(s)" {
            merged_one = true;
        } else {
            assert!(line.starts_with("merged view of example.echo: "), "{line}");
            panic!("the merged view must list the one instance once: {line}");
        }
    }
    assert_eq!(etcd_keys(&etcd).await, 2);
    assert_eq!(zk_children(&zk, "example.echo").await, 1);
    assert_eq!(zk_children(&zk, "example.shout").await, 1);

    terminate(&child);
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    assert_eq!(etcd_keys(&etcd).await, 0);
    assert_eq!(zk_children(&zk, "example.echo").await, 0);
}
