//! etcd discovery against real etcd: watches end with their owners, large or malformed values
//! affect only themselves, duplicate addresses read as one instance, and a black-holed etcd
//! holds no caller longer than one connect.
#![cfg(feature = "etcd")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, Txn, TxnOp};
use futures_util::StreamExt;
use service_registry::balance::{Balancer, Strategy};
use service_registry::etcd::{EtcdConfig, EtcdDiscovery};
use service_registry::{Change, Discovery};
use tests::fixtures::etcd::Etcd;
use tests::poll;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PREFIX: &str = "kitex/registry-etcd";

fn config(etcd: &Etcd) -> EtcdConfig {
    EtcdConfig::new(etcd.endpoints())
}

/// A value as Kitex's Go registry writes it.
fn kitex_value(addr: &str, weight: i64) -> String {
    format!(r#"{{"network":"tcp","address":"{addr}","weight":{weight},"tags":{{"idc":"hz"}}}}"#)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn addrs(instances: &service_registry::Instances) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = instances.iter().map(|i| i.addr).collect();
    out.sort();
    out
}

/// One gauge from etcd's Prometheus metrics, served on the client URL at `/metrics`.
async fn gauge(etcd: &Etcd, name: &str) -> u64 {
    let port = etcd.members[0].client_port;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to etcd's client port");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut body))
        .await
        .expect("etcd answers /metrics")
        .unwrap();
    let text = String::from_utf8_lossy(&body);
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no `{name}` in etcd's metrics"));
    let value: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    value as u64
}

/// Waits until etcd counts `want` watchers.
async fn watchers_become(etcd: &Etcd, want: u64, within: Duration, what: &str) -> Duration {
    let started = Instant::now();
    poll::until(within, what, || async {
        (gauge(etcd, "etcd_debugging_mvcc_watcher_total").await == want).then_some(())
    })
    .await;
    started.elapsed()
}

#[tokio::test]
async fn dropped_watches_and_balancers_close_their_etcd_watch_within_a_second() {
    let etcd = Etcd::start().await;
    let discovery = EtcdDiscovery::new(config(&etcd));
    assert_eq!(gauge(&etcd, "etcd_debugging_mvcc_watcher_total").await, 0);

    let mut watch = discovery.watch("quiet.svc").await.unwrap();
    assert!(watch.next().await.unwrap().all.is_empty());
    watchers_become(&etcd, 1, Duration::from_secs(5), "the watch to reach etcd").await;
    drop(watch);
    let took = watchers_become(
        &etcd,
        0,
        Duration::from_secs(1),
        "etcd to drop the watch of a dropped stream",
    )
    .await;
    println!("a dropped watch left etcd after {took:?}");

    let balancer = Balancer::builder(Strategy::WeightedRandom)
        .watch(&discovery, "quiet.svc")
        .await
        .unwrap();
    watchers_become(&etcd, 1, Duration::from_secs(5), "the balancer's watch").await;
    let clone = balancer.clone();
    drop(balancer);
    // A clone still owns the watch.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gauge(&etcd, "etcd_debugging_mvcc_watcher_total").await, 1);
    drop(clone);
    let took = watchers_become(
        &etcd,
        0,
        Duration::from_secs(1),
        "etcd to drop the watch of a dropped balancer",
    )
    .await;
    println!("a dropped balancer's watch left etcd after {took:?}");
}

/// Puts `pairs` in as few transactions as etcd's default `--max-txn-ops` (128) allows.
async fn put_all(client: &mut Client, pairs: &[(Vec<u8>, Vec<u8>)]) {
    for chunk in pairs.chunks(128) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|(k, v)| TxnOp::put(k.clone(), v.clone(), None))
            .collect();
        client.txn(Txn::new().and_then(ops)).await.unwrap();
    }
}

#[tokio::test]
async fn large_values_leave_the_rest_of_the_service_readable() {
    let etcd = Etcd::start().await;
    let mut raw = etcd.client().await;
    let service = format!("{PREFIX}/big.svc/");
    // 1.4 MB each: under etcd's 1.5 MiB request limit; three together are over a 4 MiB
    // response, fourteen over 16 MiB.
    let junk = vec![b'x'; 1_400_000];
    for port in [1, 3, 4].into_iter().chain(10..21) {
        raw.put(format!("{service}127.0.0.1:{port}"), junk.clone(), None)
            .await
            .unwrap();
    }
    raw.put(
        format!("{service}127.0.0.1:2"),
        kitex_value("127.0.0.1:2", 10),
        None,
    )
    .await
    .unwrap();

    let discovery = EtcdDiscovery::new(config(&etcd));
    let found = discovery.resolve("big.svc").await.expect("resolve");
    assert_eq!(addrs(&found), [addr("127.0.0.1:2")]);
    let mut watch = discovery.watch("big.svc").await.expect("watch");
    let snapshot = watch.next().await.unwrap();
    assert_eq!(addrs(&snapshot.all), [addr("127.0.0.1:2")]);

    // The watch keeps working: a new instance appears, another large value changes nothing.
    raw.put(
        format!("{service}127.0.0.1:5"),
        kitex_value("127.0.0.1:5", 10),
        None,
    )
    .await
    .unwrap();
    raw.put(format!("{service}127.0.0.1:6"), junk.clone(), None)
        .await
        .unwrap();
    let change = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("a change within 5 s")
        .unwrap();
    assert_eq!(addrs(&change.added), [addr("127.0.0.1:5")]);
    assert_eq!(
        addrs(&change.all),
        [addr("127.0.0.1:2"), addr("127.0.0.1:5")]
    );
}

#[tokio::test]
async fn thousands_of_instances_are_read_in_pages_at_one_revision() {
    const COUNT: u16 = 1500;
    let etcd = Etcd::start().await;
    let mut raw = etcd.client().await;
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (1..=COUNT)
        .map(|port| {
            let a = format!("127.0.0.1:{port}");
            (
                format!("{PREFIX}/many.svc/{a}").into_bytes(),
                kitex_value(&a, 10).into_bytes(),
            )
        })
        .collect();
    put_all(&mut raw, &pairs).await;
    // A neighbour whose name extends ours must not be read as ours.
    raw.put(
        format!("{PREFIX}/many.svc2/127.0.0.1:1"),
        kitex_value("127.0.0.1:1", 10),
        None,
    )
    .await
    .unwrap();

    let discovery = EtcdDiscovery::new(config(&etcd));
    let found = discovery.resolve("many.svc").await.unwrap();
    assert_eq!(found.len(), usize::from(COUNT));
    let mut watch = discovery.watch("many.svc").await.unwrap();
    assert_eq!(watch.next().await.unwrap().all.len(), usize::from(COUNT));
    raw.delete(format!("{PREFIX}/many.svc/127.0.0.1:7"), None)
        .await
        .unwrap();
    let change = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(addrs(&change.removed), [addr("127.0.0.1:7")]);
    assert_eq!(change.all.len(), usize::from(COUNT) - 1);
}

#[tokio::test]
async fn malformed_entries_are_left_out_and_the_rest_served() {
    let etcd = Etcd::start().await;
    let mut raw = etcd.client().await;
    let service = format!("{PREFIX}/odd.svc/");
    let mut non_utf8_key = service.clone().into_bytes();
    non_utf8_key.extend_from_slice(b"\xff\xfe:8");
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (
            format!("{service}127.0.0.1:1").into_bytes(),
            kitex_value("127.0.0.1:1", 10).into_bytes(),
        ),
        // A Go writer keying by host name: the address in the value counts.
        (
            format!("{service}host-a:2").into_bytes(),
            kitex_value("127.0.0.1:2", 20).into_bytes(),
        ),
        (
            format!("{service}127.0.0.1:3").into_bytes(),
            b"{not json".to_vec(),
        ),
        (
            format!("{service}127.0.0.1:4").into_bytes(),
            br#"{"network":"tcp","address":"127.0.0.1:4","weight":"heavy"}"#.to_vec(),
        ),
        (
            format!("{service}127.0.0.1:5").into_bytes(),
            br#"{"network":"tcp","address":5,"weight":1}"#.to_vec(),
        ),
        (
            format!("{service}127.0.0.1:6").into_bytes(),
            br#"[1,2,3]"#.to_vec(),
        ),
        (
            format!("{service}127.0.0.1:7").into_bytes(),
            b"\xff\xfe\x00".to_vec(),
        ),
        (non_utf8_key, kitex_value("127.0.0.1:8", 10).into_bytes()),
        // A key without a port.
        (
            format!("{service}127.0.0.1").into_bytes(),
            kitex_value("127.0.0.1:9", 10).into_bytes(),
        ),
        (
            format!("{service}nested/127.0.0.1:10").into_bytes(),
            kitex_value("127.0.0.1:10", 10).into_bytes(),
        ),
    ];
    put_all(&mut raw, &pairs).await;

    let discovery = EtcdDiscovery::new(config(&etcd));
    let found = discovery.resolve("odd.svc").await.unwrap();
    assert_eq!(addrs(&found), [addr("127.0.0.1:1"), addr("127.0.0.1:2")]);
    let mut watch = discovery.watch("odd.svc").await.unwrap();
    let snapshot = watch.next().await.unwrap();
    assert_eq!(
        addrs(&snapshot.all),
        [addr("127.0.0.1:1"), addr("127.0.0.1:2")]
    );

    // More garbage while watching changes nothing; a valid instance still comes through.
    raw.put(format!("{service}127.0.0.1:11"), "garbage", None)
        .await
        .unwrap();
    raw.put(
        format!("{service}127.0.0.1"),
        kitex_value("127.0.0.1:12", 1),
        None,
    )
    .await
    .unwrap();
    raw.put(
        format!("{service}127.0.0.1:13"),
        kitex_value("127.0.0.1:13", 10),
        None,
    )
    .await
    .unwrap();
    let change = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(addrs(&change.added), [addr("127.0.0.1:13")]);
    assert!(change.updated.is_empty() && change.removed.is_empty());
}

#[tokio::test]
async fn two_keys_for_one_address_are_one_instance() {
    let etcd = Etcd::start().await;
    let mut raw = etcd.client().await;
    let service = format!("{PREFIX}/dup.svc/");
    let same = kitex_value("127.0.0.1:80", 10);
    for key in ["127.0.0.1:80", "127.0.0.1:0080", "localhost:80"] {
        raw.put(format!("{service}{key}"), same.clone(), None)
            .await
            .unwrap();
    }
    let discovery = EtcdDiscovery::new(config(&etcd));
    assert_eq!(
        addrs(&discovery.resolve("dup.svc").await.unwrap()),
        [addr("127.0.0.1:80")]
    );
    let mut watch = discovery.watch("dup.svc").await.unwrap();
    assert_eq!(
        addrs(&watch.next().await.unwrap().all),
        [addr("127.0.0.1:80")]
    );

    // One of the keys goes: the address is still there, so nothing is removed.
    raw.delete(format!("{service}127.0.0.1:0080"), None)
        .await
        .unwrap();
    raw.delete(format!("{service}127.0.0.1:80"), None)
        .await
        .unwrap();
    raw.put(
        format!("{service}127.0.0.1:81"),
        kitex_value("127.0.0.1:81", 10),
        None,
    )
    .await
    .unwrap();
    let change: Change = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap();
    assert!(change.removed.is_empty(), "{change:?}");
    assert_eq!(addrs(&change.added), [addr("127.0.0.1:81")]);
    assert_eq!(
        addrs(&change.all),
        [addr("127.0.0.1:80"), addr("127.0.0.1:81")]
    );

    // The last key for the address goes: now it is removed, once.
    raw.delete(format!("{service}localhost:80"), None)
        .await
        .unwrap();
    let change = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(addrs(&change.removed), [addr("127.0.0.1:80")]);
    assert_eq!(addrs(&change.all), [addr("127.0.0.1:81")]);
}

/// A listener that accepts connections and never answers; the sockets stay open.
async fn black_hole() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (addr, task)
}

#[tokio::test]
async fn concurrent_resolves_against_a_black_hole_wait_one_connect_not_eight() {
    let (hole, task) = black_hole().await;
    for user in [false, true] {
        let mut config = EtcdConfig::new([format!("http://{hole}")])
            .connect_timeout(Duration::from_secs(1))
            .request_timeout(Duration::from_secs(1));
        if user {
            // Authenticating is part of connecting: it waits for an answer.
            config = config.user("root", "secret");
        }
        let discovery = Arc::new(EtcdDiscovery::new(config));
        let started = Instant::now();
        let calls = (0..8).map(|_| {
            let discovery = discovery.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let result = discovery.resolve("any.svc").await;
                (result.is_err(), started.elapsed())
            })
        });
        let results = futures_util::future::join_all(calls).await;
        let total = started.elapsed();
        let each: BTreeMap<usize, Duration> = results
            .into_iter()
            .map(|r| r.unwrap())
            .enumerate()
            .map(|(i, (failed, took))| {
                assert!(failed, "resolve {i} against a black hole succeeded");
                (i, took)
            })
            .collect();
        println!("user={user}: 8 resolves failed after {total:?} in all: {each:?}");
        assert!(
            total < Duration::from_millis(3500),
            "user={user}: 8 concurrent resolves took {total:?} against a black hole \
             (connect 1 s + request 1 s each): callers queue behind one another"
        );
    }
    task.abort();
}

#[tokio::test]
async fn a_watch_on_a_member_that_lost_its_leader_is_dropped_and_reopened() {
    let mut etcd = Etcd::start_cluster().await;
    // Discovery talks to the first member only, as a client stuck on a partitioned member.
    let discovery = EtcdDiscovery::new(EtcdConfig::new([etcd.members[0].endpoint()]).backoff(
        service_registry::Backoff::new(Duration::from_millis(50), Duration::from_millis(500)),
    ));
    let mut watch = discovery.watch("quorum.svc").await.unwrap();
    assert!(watch.next().await.unwrap().all.is_empty());
    watchers_become(&etcd, 1, Duration::from_secs(5), "the watch to reach etcd").await;

    // Without its peers the member has no leader: etcd cancels watches that require one
    // (after three election timeouts), instead of leaving them silently stale.
    etcd.members[1].kill();
    etcd.members[2].kill();
    let took = watchers_become(
        &etcd,
        0,
        Duration::from_secs(20),
        "etcd to cancel the watch of a member without leader",
    )
    .await;
    println!("the leaderless member dropped the watch after {took:?}");

    // Once the quorum is back, the watch is opened again and sees what happened meanwhile.
    etcd.restart().await;
    let mut raw = etcd.client().await;
    raw.put(
        format!("{PREFIX}/quorum.svc/127.0.0.1:1"),
        kitex_value("127.0.0.1:1", 10),
        None,
    )
    .await
    .unwrap();
    let change = tokio::time::timeout(Duration::from_secs(20), watch.next())
        .await
        .expect("the watch came back within 20 s")
        .unwrap();
    assert_eq!(addrs(&change.added), [addr("127.0.0.1:1")]);
}
