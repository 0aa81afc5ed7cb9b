//! The drain on shutdown (issue 11): after SIGTERM a service leaves discovery at once but keeps
//! serving for the drain delay, so neither a watching client nor one that re-resolves every 5 s
//! (as Kitex's Go resolvers do) sees a failed call.
#![cfg(feature = "etcd")]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use service_registry::etcd::{EtcdConfig, EtcdDiscovery};
use service_registry::Discovery;
use tests::child::{spawn_example, terminate};
use tests::fixtures::etcd::Etcd;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const SERVICE: &str = "example.echo";
const CALL_EVERY: Duration = Duration::from_millis(10);
const RESOLVE_EVERY: Duration = Duration::from_secs(5);

/// One echo call to an example process on a new connection.
async fn call(addr: SocketAddr) -> Result<(), String> {
    let attempt = async {
        let stream = TcpStream::connect(addr).await?;
        let (read, mut write) = stream.into_split();
        write.write_all(b"ping\n").await?;
        let mut line = String::new();
        BufReader::new(read).read_line(&mut line).await?;
        Ok::<_, std::io::Error>(line)
    };
    match tokio::time::timeout(Duration::from_secs(2), attempt).await {
        Ok(Ok(line)) if line == "example.echo says ping\n" => Ok(()),
        Ok(Ok(line)) => Err(format!("{addr} answered {line:?}")),
        Ok(Err(err)) => Err(format!("{addr}: {err}")),
        Err(_) => Err(format!("{addr}: no answer within 2 s")),
    }
}

#[derive(Debug, Default)]
struct Calls {
    made: u64,
    failed: Vec<String>,
    /// Calls to the leaving instance after its SIGTERM that it answered.
    answered_while_draining: u64,
}

/// Calls round robin over the addresses in `view` every 10 ms until aborted.
fn caller(
    view: Arc<Mutex<Vec<SocketAddr>>>,
    leaving: SocketAddr,
    terminated: Arc<Mutex<Option<Instant>>>,
    calls: Arc<Mutex<Calls>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CALL_EVERY);
        let mut next = 0usize;
        loop {
            tick.tick().await;
            let addrs = view.lock().unwrap().clone();
            if addrs.is_empty() {
                continue;
            }
            let addr = addrs[next % addrs.len()];
            next += 1;
            let result = call(addr).await;
            let draining = addr == leaving && terminated.lock().unwrap().is_some();
            let mut calls = calls.lock().unwrap();
            calls.made += 1;
            match result {
                Ok(()) if draining => calls.answered_while_draining += 1,
                Ok(()) => {}
                Err(err) => calls.failed.push(err),
            }
        }
    })
}

/// Two example processes serve `example.echo`; one gets SIGTERM right after the polling client
/// resolved, so that client keeps calling it for almost 5 s.
async fn shut_down_under_traffic(drain: &str) -> (Calls, Calls, Duration, Duration) {
    let etcd = Etcd::start().await;
    let env = |drain: &str| {
        vec![
            ("ETCD_ENDPOINTS", etcd.endpoint()),
            ("REGISTRY_LEASE_TTL", "10".to_string()),
            ("SERVICE_REGISTRY_DRAIN_DELAY", drain.to_string()),
        ]
    };
    let (_staying, staying_at) = spawn_example("etcd", &env("0")).await;
    let (mut leaving, leaving_at) = spawn_example("etcd", &env(drain)).await;
    let addr_of = |registered: &[(String, SocketAddr)]| {
        registered
            .iter()
            .find(|(s, _)| s == SERVICE)
            .map(|(_, a)| *a)
            .unwrap()
    };
    let (staying_addr, leaving_addr) = (addr_of(&staying_at), addr_of(&leaving_at));
    let discovery = EtcdDiscovery::new(EtcdConfig::new([etcd.endpoint()]));
    let terminated: Arc<Mutex<Option<Instant>>> = Arc::default();

    // The watching client: its view follows the watch.
    let watched: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
    let removed_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mut stream = discovery.watch(SERVICE).await.unwrap();
    let watcher = tokio::spawn({
        let (watched, removed_at) = (watched.clone(), removed_at.clone());
        async move {
            while let Some(change) = stream.next().await {
                *watched.lock().unwrap() = change.all.iter().map(|i| i.addr).collect();
                if change.removed.iter().any(|i| i.addr == leaving_addr) {
                    *removed_at.lock().unwrap() = Some(Instant::now());
                }
            }
        }
    });
    // The polling client: resolves every 5 s and uses that list in between. Its own discovery:
    // one shared with the watching client would answer its resolves from that watch.
    let polled: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
    let resolved = Arc::new(tokio::sync::Notify::new());
    let poller = tokio::spawn({
        let discovery = EtcdDiscovery::new(EtcdConfig::new([etcd.endpoint()]));
        let (polled, resolved) = (polled.clone(), resolved.clone());
        async move {
            loop {
                if let Ok(instances) = discovery.resolve(SERVICE).await {
                    *polled.lock().unwrap() = instances.iter().map(|i| i.addr).collect();
                    resolved.notify_one();
                }
                tokio::time::sleep(RESOLVE_EVERY).await;
            }
        }
    });
    tests::poll::until(Duration::from_secs(10), "both instances seen", || async {
        let both = |v: &Arc<Mutex<Vec<SocketAddr>>>| {
            let v = v.lock().unwrap();
            v.contains(&staying_addr) && v.contains(&leaving_addr)
        };
        (both(&watched) && both(&polled)).then_some(())
    })
    .await;

    let watching_calls: Arc<Mutex<Calls>> = Arc::default();
    let polling_calls: Arc<Mutex<Calls>> = Arc::default();
    let callers = [
        caller(
            watched.clone(),
            leaving_addr,
            terminated.clone(),
            watching_calls.clone(),
        ),
        caller(
            polled.clone(),
            leaving_addr,
            terminated.clone(),
            polling_calls.clone(),
        ),
    ];
    // SIGTERM just after a resolve: the polling client holds the leaving address ~5 s more.
    resolved.notified().await;
    let began = Instant::now();
    *terminated.lock().unwrap() = Some(began);
    terminate(&leaving);
    let exit = tokio::time::timeout(Duration::from_secs(30), leaving.wait())
        .await
        .expect("the leaving process exits within 30 s")
        .unwrap();
    let exited_after = began.elapsed();
    assert!(exit.success(), "{exit:?}");
    // Traffic goes on until the polling client has re-resolved since the exit.
    let polls_after_exit = async {
        resolved.notified().await;
    };
    tokio::time::timeout(RESOLVE_EVERY * 2, polls_after_exit)
        .await
        .expect("the polling client resolves again");
    tokio::time::sleep(CALL_EVERY * 20).await;
    for task in callers.iter().chain([&watcher, &poller]) {
        task.abort();
    }
    let removed_after = removed_at
        .lock()
        .unwrap()
        .map(|at| at.duration_since(began))
        .expect("the watching client saw the removal");
    let take = |c: &Arc<Mutex<Calls>>| std::mem::take(&mut *c.lock().unwrap());
    (
        take(&watching_calls),
        take(&polling_calls),
        removed_after,
        exited_after,
    )
}

#[tokio::test]
async fn sigterm_under_traffic_fails_no_call_for_watching_and_polling_clients() {
    let (watching, polling, removed_after, exited_after) = shut_down_under_traffic("6s").await;
    eprintln!(
        "removed from the watch {removed_after:?} after SIGTERM, exited after {exited_after:?}; watching client {} calls, {} failed; polling client {} calls, {} failed, {} answered while draining",
        watching.made,
        watching.failed.len(),
        polling.made,
        polling.failed.len(),
        polling.answered_while_draining
    );
    assert!(
        watching.failed.is_empty(),
        "watching client: {:?}",
        watching.failed
    );
    assert!(
        polling.failed.is_empty(),
        "polling client: {:?}",
        polling.failed
    );
    // The test means something only if the polling client did call the leaving instance after
    // its SIGTERM, and the instance left discovery at once.
    assert!(
        polling.answered_while_draining > 50,
        "{}",
        polling.answered_while_draining
    );
    assert!(removed_after < Duration::from_secs(1), "{removed_after:?}");
    assert!(exited_after >= Duration::from_secs(6), "{exited_after:?}");
}
