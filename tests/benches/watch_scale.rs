//! Put → watch latency in a large service (issue 22): our watch vs a raw watch of the same
//! service on the same server, while one instance after another changes.
//!
//! ```text
//! cargo bench -p tests --features etcd,zookeeper,nacos --bench watch_scale
//! WATCH_SCALE_SIZES=1000,10000 WATCH_SCALE_BACKENDS=etcd,zookeeper,nacos \
//! WATCH_SCALE_ROUNDS=5 WATCH_SCALE_CHANGES=100 WATCH_SCALE_NACOS_CHANGES=20 \
//!     cargo bench -p tests --features etcd,zookeeper,nacos --bench watch_scale
//! ```
//!
//! For each backend and each size N (`WATCH_SCALE_SIZES`, default `1000,10000`):
//! 1. N instances of one service are written directly in the server in Kitex's format: etcd,
//!    raw puts under `kitex/registry-etcd/<service>/<addr>` (transactions of 128); ZooKeeper,
//!    raw creates of ephemeral `/<service>/<host:port>` nodes holding
//!    `{"Weight":w,"Tags":{..}}` (multi-ops of 500), under a persistent `/<service>`; Nacos,
//!    N registrations through `NacosRegistry` (one gRPC connection, as the registrar makes them).
//! 2. Two watchers follow the service: ours (`EtcdDiscovery` / `ZookeeperDiscovery` /
//!    `NacosDiscovery::watch`) and a raw one: an etcd-client prefix watch; a zookeeper-client
//!    persistent recursive watch on the service node (its event, no read: ours must read the
//!    node's data as well), or with the backend `zookeeper_read` (reported as `zk+read`) the
//!    same watch reading each created or changed node's data before it counts, as any client
//!    must to learn the new weight; a raw Nacos 2.x gRPC client written here (server check, connection
//!    setup, `SubscribeServiceRequest`; a `NotifySubscriberRequest` push counts when its JSON
//!    body has been parsed, which any client must do to learn what changed, and is acked).
//! 3. Writes, one at a time, each touching ONE instance, in groups of three: set its weight,
//!    delete it, add it again. Each write is timed from just before it is sent until each
//!    watcher's notification of it; the next write waits for both. A warm-up of
//!    `WATCH_SCALE_WARMUP` (20) writes is not counted, then `WATCH_SCALE_ROUNDS` (5) rounds of
//!    `WATCH_SCALE_CHANGES` (100) writes (Nacos: `WATCH_SCALE_NACOS_WARMUP`, 5, and
//!    `WATCH_SCALE_NACOS_CHANGES`, 20: r-nacos delays each push by about a second, so there
//!    the ratio is near 1 whatever we do, and `extra` is the figure that shows our cost). Both watchers see the same writes, so each round is
//!    interleaved by construction; a round's figure is the ratio of its p50 (p99), ours / raw,
//!    and the summary is the median [lowest, highest] of the round ratios.
//!
//! `extra` is the median over the round's writes of (ours − raw) for the same write: the time
//! our watch adds on top of the raw notification.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use etcd_client::{Client as EtcdClient, PutOptions, Txn, TxnOp, WatchOptions};
use futures_util::StreamExt;
use service_registry::etcd::{EtcdConfig, EtcdDiscovery};
use service_registry::nacos::{NacosConfig, NacosDiscovery, NacosRegistry};
use service_registry::zookeeper::{ZookeeperConfig, ZookeeperDiscovery};
use service_registry::{Discovery, Info, Registry, WatchStream};
use tests::fixtures::etcd::Etcd;
use tests::fixtures::nacos::Nacos;
use tests::fixtures::zookeeper::ZooKeeper;
use tokio::sync::mpsc::{self, UnboundedReceiver};
use zookeeper_client::{Acls, AddWatchMode, CreateMode, EventType};

/// The longest a watcher may take to report one write before the run is declared broken.
const NOTIFY_LIMIT: Duration = Duration::from_secs(30);

/// A number from the environment, or `default`; a bad value stops the run, naming the variable.
fn env_number(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
        Err(_) => default,
    }
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The address of instance `i`: distinct for i < 62 500.
fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, (i / 250) as u8, (i % 250 + 1) as u8], 8000))
}

const INITIAL_WEIGHT: u32 = 10;

/// One write touching one instance.
#[derive(Clone, Copy, Debug)]
enum Op {
    Weight(usize, u32),
    Delete(usize),
    Add(usize, u32),
}

/// Write `k` of the run: groups of three (weight, delete, add again) on one instance each.
fn op(k: usize, n: usize, weights: &mut [u32]) -> Op {
    let i = (k / 3 * 7919) % n;
    match k % 3 {
        0 => {
            weights[i] = if weights[i] == 20 { 30 } else { 20 };
            Op::Weight(i, weights[i])
        }
        1 => Op::Delete(i),
        _ => Op::Add(i, weights[i]),
    }
}

/// Where the writes go, in each backend's own (Kitex's) format.
enum Writer {
    Etcd(Box<EtcdClient>),
    ZooKeeper(zookeeper_client::Client),
    Nacos(NacosRegistry),
}

fn etcd_key(service: &str, i: usize) -> String {
    format!("kitex/registry-etcd/{service}/{}", addr(i))
}

fn etcd_value(i: usize, weight: u32) -> String {
    format!(
        r#"{{"network":"tcp","address":"{}","weight":{weight},"tags":{{"idc":"hz"}}}}"#,
        addr(i)
    )
}

fn zk_path(service: &str, i: usize) -> String {
    format!("/{service}/{}", addr(i))
}

fn zk_data(weight: u32) -> Vec<u8> {
    format!(r#"{{"Weight":{weight},"Tags":{{"idc":"hz"}}}}"#).into_bytes()
}

fn info(service: &str, i: usize, weight: u32) -> Info {
    let mut info = Info::new(service, addr(i));
    info.weight = weight;
    info.tags.insert("idc".into(), "hz".into());
    info
}

impl Writer {
    async fn preload(&mut self, service: &str, n: usize) {
        match self {
            Writer::Etcd(client) => {
                let indices: Vec<usize> = (0..n).collect();
                for chunk in indices.chunks(128) {
                    let ops: Vec<TxnOp> = chunk
                        .iter()
                        .map(|&i| {
                            TxnOp::put(etcd_key(service, i), etcd_value(i, INITIAL_WEIGHT), None)
                        })
                        .collect();
                    client.txn(Txn::new().and_then(ops)).await.unwrap();
                }
            }
            Writer::ZooKeeper(client) => {
                client
                    .create(
                        &format!("/{service}"),
                        b"",
                        &CreateMode::Persistent.with_acls(Acls::anyone_all()),
                    )
                    .await
                    .unwrap();
                let ephemeral = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
                let indices: Vec<usize> = (0..n).collect();
                for chunk in indices.chunks(500) {
                    let mut writer = client.new_multi_writer();
                    for &i in chunk {
                        writer
                            .add_create(&zk_path(service, i), &zk_data(INITIAL_WEIGHT), &ephemeral)
                            .unwrap();
                    }
                    writer.commit().await.unwrap();
                }
            }
            Writer::Nacos(registry) => {
                let infos: Vec<Info> = (0..n).map(|i| info(service, i, INITIAL_WEIGHT)).collect();
                let results =
                    futures_util::future::join_all(infos.iter().map(|i| registry.register(i)))
                        .await;
                assert!(results.iter().all(Result::is_ok), "a registration failed");
            }
        }
    }

    async fn apply(&mut self, service: &str, op: Op) {
        match (self, op) {
            (Writer::Etcd(client), Op::Weight(i, w) | Op::Add(i, w)) => {
                client
                    .put(etcd_key(service, i), etcd_value(i, w), None::<PutOptions>)
                    .await
                    .unwrap();
            }
            (Writer::Etcd(client), Op::Delete(i)) => {
                client.delete(etcd_key(service, i), None).await.unwrap();
            }
            (Writer::ZooKeeper(client), Op::Weight(i, w)) => {
                client
                    .set_data(&zk_path(service, i), &zk_data(w), None)
                    .await
                    .unwrap();
            }
            (Writer::ZooKeeper(client), Op::Delete(i)) => {
                client.delete(&zk_path(service, i), None).await.unwrap();
            }
            (Writer::ZooKeeper(client), Op::Add(i, w)) => {
                client
                    .create(
                        &zk_path(service, i),
                        &zk_data(w),
                        &CreateMode::Ephemeral.with_acls(Acls::anyone_all()),
                    )
                    .await
                    .unwrap();
            }
            (Writer::Nacos(registry), Op::Weight(i, w) | Op::Add(i, w)) => {
                registry.register(&info(service, i, w)).await.unwrap();
            }
            (Writer::Nacos(registry), Op::Delete(i)) => {
                registry
                    .deregister(&info(service, i, INITIAL_WEIGHT))
                    .await
                    .unwrap();
            }
        }
    }
}

/// Follows our watch: the instant of every change after the first (the snapshot, which must
/// hold all `n`).
async fn follow_ours(mut watch: WatchStream, n: usize) -> UnboundedReceiver<Instant> {
    let first = tokio::time::timeout(Duration::from_secs(120), watch.next())
        .await
        .expect("our watch's first snapshot within 120 s")
        .expect("our watch ended before its snapshot");
    assert_eq!(first.all.len(), n, "our watch's snapshot");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while watch.next().await.is_some() {
            if tx.send(Instant::now()).is_err() {
                return;
            }
        }
    });
    rx
}

async fn raw_etcd(etcd: &Etcd, service: &str) -> UnboundedReceiver<Instant> {
    let mut client = etcd.client().await;
    let mut stream = client
        .watch(
            format!("kitex/registry-etcd/{service}/"),
            Some(WatchOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _keep = client;
        while let Ok(Some(response)) = stream.message().await {
            let at = Instant::now();
            for _ in response.events() {
                let _ = tx.send(at);
            }
        }
    });
    rx
}

/// A raw ZooKeeper watch: a persistent recursive watch on the service node whose events count
/// as they come, or with `read` only after a created or changed node's data has been read
/// (`getData`), as any client must to learn an instance's new weight or tags (a deletion counts
/// at once).
async fn raw_zookeeper(zk: &ZooKeeper, service: &str, read: bool) -> UnboundedReceiver<Instant> {
    let client = zk.client(None).await;
    let mut watcher = client
        .watch(&format!("/{service}"), AddWatchMode::PersistentRecursive)
        .await
        .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let event = watcher.changed().await;
            let changed = matches!(
                event.event_type,
                EventType::NodeCreated | EventType::NodeDataChanged
            );
            if read && changed {
                // A node deleted before the read is still an answer: what was asked is known.
                let _ = client.get_data(&event.path).await;
            }
            let at = Instant::now();
            let counted = changed || matches!(event.event_type, EventType::NodeDeleted);
            let ended = matches!(event.event_type, EventType::Session);
            if ended || (counted && tx.send(at).is_err()) {
                return;
            }
        }
    });
    rx
}

/// A raw Nacos 2.x gRPC subscriber: the protocol's one message type, hand-written for prost
/// with the field numbers of Nacos' `nacos_grpc_service.proto`.
mod raw_nacos {
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    use tokio::sync::mpsc::{self, UnboundedReceiver};
    use tonic::client::Grpc;
    use tonic::transport::Channel;
    use tonic_prost::ProstCodec;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metadata {
        #[prost(string, tag = "3")]
        pub r#type: String,
        #[prost(string, tag = "8")]
        pub client_ip: String,
        #[prost(map = "string, string", tag = "7")]
        pub headers: HashMap<String, String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Payload {
        #[prost(message, optional, tag = "2")]
        pub metadata: Option<Metadata>,
        #[prost(message, optional, tag = "3")]
        pub body: Option<Any>,
    }

    fn payload(kind: &str, body: serde_json::Value) -> Payload {
        Payload {
            metadata: Some(Metadata {
                r#type: kind.to_string(),
                client_ip: "127.0.0.1".to_string(),
                headers: HashMap::new(),
            }),
            body: Some(Any {
                type_url: String::new(),
                value: serde_json::to_vec(&body).unwrap(),
            }),
        }
    }

    async fn request(grpc: &Grpc<Channel>, message: Payload) -> serde_json::Value {
        let mut grpc = grpc.clone();
        grpc.ready().await.unwrap();
        let answer = grpc
            .unary(
                tonic::Request::new(message),
                http::uri::PathAndQuery::from_static("/Request/request"),
                ProstCodec::<Payload, Payload>::default(),
            )
            .await
            .unwrap()
            .into_inner();
        serde_json::from_slice(&answer.body.unwrap_or_default().value).unwrap()
    }

    /// Subscribes to `service` in `DEFAULT_GROUP` of the public namespace; the instant of every
    /// push, once its body is parsed. The subscription's own answer holds `n` instances.
    pub async fn subscribe(grpc_port: u16, service: &str, n: usize) -> UnboundedReceiver<Instant> {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{grpc_port}"))
                .unwrap()
                .tcp_nodelay(true)
                .connect()
                .await
                .unwrap();
        let grpc = Grpc::new(channel).max_decoding_message_size(64 << 20);
        let check = request(
            &grpc,
            payload(
                "ServerCheckRequest",
                serde_json::json!({"module": "internal", "requestId": "1", "headers": {}}),
            ),
        )
        .await;
        assert_eq!(check["resultCode"], 200, "server check: {check}");
        let (outbound, rx) = mpsc::unbounded_channel::<Payload>();
        outbound
            .send(payload(
                "ConnectionSetupRequest",
                serde_json::json!({
                    "module": "internal", "requestId": "2", "headers": {},
                    "clientVersion": "raw-bench", "tenant": "",
                    "labels": {"source": "sdk", "module": "naming"}, "abilityTable": {}
                }),
            ))
            .unwrap();
        let mut stream_grpc = grpc.clone();
        stream_grpc.ready().await.unwrap();
        let mut stream = stream_grpc
            .streaming(
                tonic::Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)),
                http::uri::PathAndQuery::from_static("/BiRequestStream/requestBiStream"),
                ProstCodec::<Payload, Payload>::default(),
            )
            .await
            .unwrap()
            .into_inner();
        let (tx, pushes) = mpsc::unbounded_channel();
        let acks = outbound.clone();
        tokio::spawn(async move {
            while let Ok(Some(message)) = stream.message().await {
                let kind = message
                    .metadata
                    .as_ref()
                    .map(|m| m.r#type.clone())
                    .unwrap_or_default();
                let body: serde_json::Value =
                    serde_json::from_slice(&message.body.unwrap_or_default().value)
                        .unwrap_or_default();
                let at = Instant::now();
                if kind == "NotifySubscriberRequest" && tx.send(at).is_err() {
                    return;
                }
                if let Some(base) = kind.strip_suffix("Request") {
                    let ack = serde_json::json!({
                        "resultCode": 200, "errorCode": 0,
                        "requestId": body["requestId"].as_str().unwrap_or_default()
                    });
                    let _ = acks.send(payload(&format!("{base}Response"), ack));
                }
            }
        });
        // The server registers the stream asynchronously: wait until it knows the connection.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut id = 3;
        loop {
            id += 1;
            let health = request(
                &grpc,
                payload(
                    "HealthCheckRequest",
                    serde_json::json!({"module": "internal", "requestId": id.to_string(), "headers": {}}),
                ),
            )
            .await;
            if health["resultCode"] == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the stream is not known: {health}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let subscribed = request(
            &grpc,
            payload(
                "SubscribeServiceRequest",
                serde_json::json!({
                    "module": "naming", "requestId": (id + 1).to_string(), "headers": {},
                    "namespace": "public", "serviceName": service, "groupName": "DEFAULT_GROUP",
                    "subscribe": true, "clusters": ""
                }),
            ),
        )
        .await;
        let hosts = subscribed["serviceInfo"]["hosts"]
            .as_array()
            .map_or(0, Vec::len);
        assert_eq!(hosts, n, "the raw subscription's answer");
        // Keep the stream's sender (and with it the stream) open for the run.
        std::mem::forget(outbound);
        pushes
    }
}

/// One write's latency for each watcher.
#[derive(Clone, Copy)]
struct Sample {
    ours: Duration,
    raw: Duration,
}

struct Watchers {
    ours: UnboundedReceiver<Instant>,
    raw: UnboundedReceiver<Instant>,
}

impl Watchers {
    /// Forgets notifications nobody waited for (none are expected).
    fn drain(&mut self) -> usize {
        let mut stray = 0;
        while self.ours.try_recv().is_ok() {
            stray += 1;
        }
        while self.raw.try_recv().is_ok() {
            stray += 1;
        }
        stray
    }

    async fn after(&mut self, started: Instant, what: &str) -> Sample {
        let ours = tokio::time::timeout(NOTIFY_LIMIT, self.ours.recv())
            .await
            .unwrap_or_else(|_| panic!("our watch did not report {what} within {NOTIFY_LIMIT:?}"))
            .expect("our watch ended");
        let raw = tokio::time::timeout(NOTIFY_LIMIT, self.raw.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("the raw watch did not report {what} within {NOTIFY_LIMIT:?}")
            })
            .expect("the raw watch ended");
        Sample {
            ours: ours.saturating_duration_since(started),
            raw: raw.saturating_duration_since(started),
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    (
        sorted[sorted.len() / 2],
        sorted[0],
        sorted[sorted.len() - 1],
    )
}

/// The figures of one backend at one size.
struct Summary {
    backend: &'static str,
    n: usize,
    ours_p50: Duration,
    raw_p50: Duration,
    p50: (f64, f64, f64),
    p99: (f64, f64, f64),
    extra_ms: (f64, f64, f64),
}

struct Plan {
    warmup: usize,
    rounds: usize,
    changes: usize,
}

async fn measure(
    backend: &'static str,
    n: usize,
    service: &str,
    writer: &mut Writer,
    watchers: &mut Watchers,
    plan: &Plan,
) -> Summary {
    let mut weights = vec![INITIAL_WEIGHT; n];
    let mut k = 0;
    let mut stray = 0;
    let mut next = async |writer: &mut Writer, watchers: &mut Watchers| {
        let op = op(k, n, &mut weights);
        k += 1;
        stray += watchers.drain();
        let started = Instant::now();
        writer.apply(service, op).await;
        watchers.after(started, &format!("{op:?}")).await
    };
    for _ in 0..plan.warmup {
        next(writer, watchers).await;
    }
    let (mut ours_p50s, mut raw_p50s) = (Vec::new(), Vec::new());
    let (mut p50s, mut p99s, mut extras) = (Vec::new(), Vec::new(), Vec::new());
    for r in 1..=plan.rounds {
        let mut samples = Vec::with_capacity(plan.changes);
        for _ in 0..plan.changes {
            samples.push(next(writer, watchers).await);
        }
        let mut ours: Vec<Duration> = samples.iter().map(|s| s.ours).collect();
        let mut raw: Vec<Duration> = samples.iter().map(|s| s.raw).collect();
        let mut extra: Vec<f64> = samples
            .iter()
            .map(|s| (s.ours.as_secs_f64() - s.raw.as_secs_f64()) * 1e3)
            .collect();
        ours.sort();
        raw.sort();
        extra.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        let (o50, o99) = (percentile(&ours, 0.5), percentile(&ours, 0.99));
        let (r50, r99) = (percentile(&raw, 0.5), percentile(&raw, 0.99));
        let e50 = extra[extra.len() / 2];
        println!(
            "{backend:<9} N={n:<6} round {r}: ours p50 {o50:>9.2?} p99 {o99:>9.2?}   raw p50 {r50:>9.2?} p99 {r99:>9.2?}   ours/raw p50 {:.2} p99 {:.2}   extra p50 {e50:+.2} ms",
            ratio(o50, r50),
            ratio(o99, r99),
        );
        ours_p50s.push(o50);
        raw_p50s.push(r50);
        p50s.push(ratio(o50, r50));
        p99s.push(ratio(o99, r99));
        extras.push(e50);
    }
    if stray > 0 {
        println!("{backend} N={n}: {stray} notifications nobody waited for were dropped");
    }
    ours_p50s.sort();
    raw_p50s.sort();
    Summary {
        backend,
        n,
        ours_p50: ours_p50s[ours_p50s.len() / 2],
        raw_p50: raw_p50s[raw_p50s.len() / 2],
        p50: spread(&p50s),
        p99: spread(&p99s),
        extra_ms: spread(&extras),
    }
}

async fn run_etcd(n: usize, plan: &Plan) -> Summary {
    let etcd = Etcd::start().await;
    let service = format!("scale{n}.svc");
    let mut writer = Writer::Etcd(Box::new(etcd.client().await));
    let started = Instant::now();
    writer.preload(&service, n).await;
    println!("etcd      N={n}: preloaded in {:.1?}", started.elapsed());
    let discovery = EtcdDiscovery::new(EtcdConfig::new(etcd.endpoints()));
    let ours = follow_ours(discovery.watch(&service).await.unwrap(), n).await;
    let raw = raw_etcd(&etcd, &service).await;
    let mut watchers = Watchers { ours, raw };
    measure("etcd", n, &service, &mut writer, &mut watchers, plan).await
}

/// `read`: the raw watcher reads each created or changed node (see [`raw_zookeeper`]).
async fn run_zookeeper(n: usize, plan: &Plan, read: bool) -> Summary {
    let zk = ZooKeeper::start().await;
    let service = format!("scale{n}.svc");
    let mut writer = Writer::ZooKeeper(zk.client(None).await);
    let started = Instant::now();
    writer.preload(&service, n).await;
    println!("zookeeper N={n}: preloaded in {:.1?}", started.elapsed());
    let discovery = ZookeeperDiscovery::new(ZookeeperConfig::new(zk.connect_string()));
    let ours = follow_ours(discovery.watch(&service).await.unwrap(), n).await;
    let raw = raw_zookeeper(&zk, &service, read).await;
    let backend = if read { "zk+read" } else { "zookeeper" };
    let mut watchers = Watchers { ours, raw };
    measure(backend, n, &service, &mut writer, &mut watchers, plan).await
}

async fn run_nacos(n: usize, plan: &Plan) -> Summary {
    let nacos = Nacos::start().await;
    let service = format!("scale{n}.svc");
    let config = NacosConfig::new("127.0.0.1", nacos.http_port).grpc_port(nacos.grpc_port);
    let registry = NacosRegistry::new(config.clone()).unwrap();
    let mut writer = Writer::Nacos(registry.clone());
    let started = Instant::now();
    writer.preload(&service, n).await;
    println!("nacos     N={n}: preloaded in {:.1?}", started.elapsed());
    let discovery = NacosDiscovery::new(config);
    let ours = follow_ours(discovery.watch(&service).await.unwrap(), n).await;
    let raw = raw_nacos::subscribe(nacos.grpc_port, &service, n).await;
    let mut watchers = Watchers { ours, raw };
    let summary = measure("nacos", n, &service, &mut writer, &mut watchers, plan).await;
    registry.close().await;
    summary
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = env_list("WATCH_SCALE_SIZES", "1000,10000")
        .iter()
        .map(|s| {
            s.parse()
                .unwrap_or_else(|_| panic!("WATCH_SCALE_SIZES: {s:?} is not a number"))
        })
        .collect();
    let backends = env_list("WATCH_SCALE_BACKENDS", "etcd,zookeeper,nacos");
    let plan = Plan {
        warmup: env_number("WATCH_SCALE_WARMUP", 20),
        rounds: env_number("WATCH_SCALE_ROUNDS", 5),
        changes: env_number("WATCH_SCALE_CHANGES", 100),
    };
    let nacos_plan = Plan {
        warmup: env_number("WATCH_SCALE_NACOS_WARMUP", 5),
        changes: env_number("WATCH_SCALE_NACOS_CHANGES", 20),
        ..plan
    };
    assert!(plan.rounds > 0 && plan.changes > 0 && nacos_plan.changes > 0);
    println!(
        "sizes {sizes:?}, backends {backends:?}: {} warm-up writes, then {} rounds of {} writes (Nacos: {} and {})",
        plan.warmup, plan.rounds, plan.changes, nacos_plan.warmup, nacos_plan.changes
    );
    let mut summaries = Vec::new();
    for backend in &backends {
        for &n in &sizes {
            let summary = match backend.as_str() {
                "etcd" => run_etcd(n, &plan).await,
                "zookeeper" => run_zookeeper(n, &plan, false).await,
                "zookeeper_read" => run_zookeeper(n, &plan, true).await,
                "nacos" => run_nacos(n, &nacos_plan).await,
                other => panic!("WATCH_SCALE_BACKENDS: unknown backend {other:?}"),
            };
            summaries.push(summary);
        }
    }
    println!(
        "\n## put -> watch, ours / raw: median [lowest, highest] of {} rounds",
        plan.rounds
    );
    println!(
        "{:<9} {:>6}  {:>9}  {:>9}  {:<20}  {:<20}  extra p50 ms",
        "backend", "N", "ours p50", "raw p50", "ratio p50", "ratio p99"
    );
    for s in &summaries {
        println!(
            "{:<9} {:>6}  {:>9.2?}  {:>9.2?}  {:.2} [{:.2}, {:.2}]      {:.2} [{:.2}, {:.2}]      {:+.2} [{:+.2}, {:+.2}]",
            s.backend,
            s.n,
            s.ours_p50,
            s.raw_p50,
            s.p50.0,
            s.p50.1,
            s.p50.2,
            s.p99.0,
            s.p99.1,
            s.p99.2,
            s.extra_ms.0,
            s.extra_ms.1,
            s.extra_ms.2,
        );
    }
}
