//! The Nacos watch when the server's wall clock steps back (an NTP step, a VM restored):
//! r-nacos stamps every push with its wall clock (`lastRefTime`), so every push that follows
//! looks older than the state the watch shows. Here r-nacos runs under libfaketime, its wall
//! clock set by a file the test rewrites.
#![cfg(feature = "nacos")]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use service_registry::nacos::{NacosConfig, NacosDiscovery, NacosRegistry};
use service_registry::{Discovery, Info, Registry, WatchStream};
use tests::fixtures::nacos::{rnacos_binary, Nacos};

/// libfaketime (`apt-get install libfaketime`, which `scripts/test.sh` does). Missing is a
/// test failure, never a skip.
fn libfaketime() -> PathBuf {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
        "/usr/local/lib/faketime/libfaketime.so.1",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .expect("libfaketime is missing: run ./scripts/test.sh, or `apt-get install libfaketime`")
}

fn addrs(instances: &service_registry::Instances) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = instances.iter().map(|i| i.addr).collect();
    out.sort();
    out
}

/// Reads the watch until it shows `want`.
async fn until_shown(watch: &mut WatchStream, want: &[SocketAddr]) {
    let mut latest: Option<Vec<SocketAddr>> = None;
    while latest.as_deref() != Some(want) {
        let change = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .unwrap_or_else(|_| panic!("the watch never showed {want:?}; latest {latest:?}"))
            .expect("the watch ended");
        latest = Some(addrs(&change.all));
    }
}

/// Defect 12 of issue 18 (its Nacos part): a push older than the state shown is not passed
/// over for good; the watch queries the service and shows what the server has.
#[tokio::test]
async fn a_push_older_than_the_state_shown_makes_the_watch_query_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let clock = dir.path().join("clock");
    std::fs::write(&clock, "+0\n").unwrap();
    let wrapper = dir.path().join("rnacos");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec env LD_PRELOAD={} FAKETIME_TIMESTAMP_FILE={} FAKETIME_NO_CACHE=1 \
             FAKETIME_DONT_FAKE_MONOTONIC=1 {} \"$@\"\n",
            libfaketime().display(),
            clock.display(),
            rnacos_binary().display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("755")
        .arg(&wrapper)
        .status()
        .unwrap();
    // The only test in this binary: no other fixture reads the variable.
    std::env::set_var("RNACOS_BIN", &wrapper);
    let nacos = Nacos::start().await;
    let config = NacosConfig::new("127.0.0.1", nacos.http_port).grpc_port(nacos.grpc_port);
    let registry = NacosRegistry::new(config.clone()).unwrap();
    let discovery = NacosDiscovery::new(config);
    let mut watch = discovery.watch("clock.svc").await.unwrap();
    until_shown(&mut watch, &[]).await;
    // Shown by a push: r-nacos has no push for the service pending (it schedules them on its
    // wall clock, and one pending across the step would wait the two minutes out).
    let a = Info::new("clock.svc", "127.0.0.1:7001".parse().unwrap());
    registry.register(&a).await.unwrap();
    until_shown(&mut watch, &[a.addr]).await;

    // The server's wall clock steps back two minutes: the next push is stamped before the
    // subscription's answer.
    std::fs::write(&clock, "-120s\n").unwrap();
    let b = Info::new("clock.svc", "127.0.0.1:7002".parse().unwrap());
    registry.register(&b).await.unwrap();
    until_shown(&mut watch, &[a.addr, b.addr]).await;
    // And the pushes after it are followed again.
    registry.deregister(&a).await.unwrap();
    until_shown(&mut watch, &[b.addr]).await;
    registry.close().await;
}
