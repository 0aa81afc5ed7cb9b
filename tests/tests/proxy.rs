//! The loopback fault proxy itself, against the line echo server: every fault on new and on
//! existing connections, latency, a moved upstream, and clean-up on drop.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tests::proxy::{Fault, FaultProxy};
use tests::{echo, poll};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// How long a black-holed exchange is given to (wrongly) produce an answer.
const SILENCE: Duration = Duration::from_millis(500);
const LIMIT: Duration = Duration::from_secs(5);

/// An echo server on a free loopback port; it stops accepting when the sender is dropped.
async fn echo_server() -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(echo::serve(listener, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// One client connection kept open across several exchanges.
struct Conn {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Self {
        let stream = tokio::time::timeout(LIMIT, TcpStream::connect(addr))
            .await
            .expect("connect within the limit")
            .expect("connect to the proxy");
        let (read, writer) = stream.into_split();
        Self {
            reader: BufReader::new(read),
            writer,
        }
    }

    async fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write a line");
    }

    /// The next line, `Err` on a socket error, `Ok(None)` on EOF; panics after `limit`.
    async fn next_line(&mut self, limit: Duration) -> std::io::Result<Option<String>> {
        let mut line = String::new();
        let read = tokio::time::timeout(limit, self.reader.read_line(&mut line))
            .await
            .unwrap_or_else(|_| panic!("no line, EOF or error within {limit:?}"));
        match read? {
            0 => Ok(None),
            _ => Ok(Some(line.trim_end().to_string())),
        }
    }

    async fn echo(&mut self, line: &str) -> String {
        self.send(line).await;
        self.next_line(LIMIT)
            .await
            .expect("read the echo")
            .expect("an echo, not EOF")
    }

    /// Asserts that nothing at all (no line, no EOF, no error) arrives within [`SILENCE`].
    async fn assert_silent(&mut self) {
        let mut line = String::new();
        let read = tokio::time::timeout(SILENCE, self.reader.read_line(&mut line)).await;
        assert!(
            read.is_err(),
            "expected silence, got {read:?} with line {line:?}"
        );
    }

    /// Asserts the connection is reset (ECONNRESET) within [`LIMIT`].
    async fn assert_reset(&mut self) {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(LIMIT, self.reader.read_to_end(&mut rest))
            .await
            .expect("the reset arrives within the limit");
        match read {
            Err(err) => assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}"),
            Ok(n) => panic!("expected a reset, got EOF after {n} bytes"),
        }
    }
}

async fn connections(proxy: &FaultProxy, expected: usize) {
    poll::until(
        LIMIT,
        &format!("{expected} proxied connections"),
        || async { (proxy.connections() == expected).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn pass_forwards_both_ways_and_counts_connections() {
    let (upstream, _stop) = echo_server().await;
    let proxy = FaultProxy::start(upstream).await;
    assert_eq!(
        proxy.endpoint(),
        format!("127.0.0.1:{}", proxy.addr().port())
    );
    assert_eq!(proxy.upstream(), upstream);
    assert_eq!(proxy.fault(), Fault::Pass);

    assert_eq!(echo::call(proxy.addr(), "hello").await.unwrap(), "hello");
    connections(&proxy, 0).await;

    let mut a = Conn::open(proxy.addr()).await;
    let mut b = Conn::open(proxy.addr()).await;
    assert_eq!(a.echo("one").await, "one");
    assert_eq!(b.echo("two").await, "two");
    assert_eq!(proxy.connections(), 2);
    // A large message crosses in several chunks, intact.
    let big = "x".repeat(200_000);
    assert_eq!(a.echo(&big).await, big);
    drop(a);
    connections(&proxy, 1).await;
    drop(b);
    connections(&proxy, 0).await;
}

#[tokio::test]
async fn blackhole_accepts_but_never_answers_new_connections() {
    let (upstream, _stop) = echo_server().await;
    let proxy = FaultProxy::start(upstream).await;
    proxy.set(Fault::Blackhole);

    let mut conn = Conn::open(proxy.addr()).await;
    connections(&proxy, 1).await;
    conn.send("lost").await;
    conn.assert_silent().await;
    assert_eq!(
        proxy.connections(),
        1,
        "a black-holed connection stays open"
    );

    // Once traffic passes, the same connection is forwarded (what was sent before is gone).
    proxy.set(Fault::Pass);
    assert_eq!(conn.echo("found").await, "found");
    assert_eq!(echo::call(proxy.addr(), "new").await.unwrap(), "new");
}

#[tokio::test]
async fn blackhole_silences_existing_connections_and_pass_resumes_them() {
    let (upstream, _stop) = echo_server().await;
    let proxy = FaultProxy::start(upstream).await;
    let mut conn = Conn::open(proxy.addr()).await;
    assert_eq!(conn.echo("before").await, "before");

    proxy.set(Fault::Blackhole);
    conn.send("dropped").await;
    conn.assert_silent().await;
    assert_eq!(proxy.connections(), 1);

    proxy.set(Fault::Pass);
    assert_eq!(conn.echo("after").await, "after");
}

#[tokio::test]
async fn blackhole_drops_data_already_in_flight() {
    let (upstream, _stop) = echo_server().await;
    let proxy = FaultProxy::start(upstream).await;
    let mut conn = Conn::open(proxy.addr()).await;
    assert_eq!(conn.echo("warm").await, "warm");
    // The line is held in the proxy by the latency, then black-holed before it is due.
    proxy.set_latency(Duration::from_millis(300));
    conn.send("in flight").await;
    proxy.set(Fault::Blackhole);
    conn.assert_silent().await;
}

#[tokio::test]
async fn refuse_resets_new_connections() {
    let (upstream, _stop) = echo_server().await;
    let proxy = FaultProxy::start(upstream).await;
    proxy.set(Fault::Refuse);

    let mut conn = Conn::open(proxy.addr()).await;
    conn.assert_reset().await;
    assert_eq!(
        proxy.connections(),
        0,
        "refused connections are not counted"
    );
    assert!(echo::call(proxy.addr(), "refused").await.is_err());

    proxy.set(Fault::Pass);
    assert_eq!(echo::call(proxy.addr(), "back").await.unwrap(), "back");
}

#[tokio::test]
async fn refuse_resets_existing_connections() {
    let (upstream, _stop) = echo_server().await;
    let proxy = FaultProxy::start(upstream).await;
    let mut a = Conn::open(proxy.addr()).await;
    let mut b = Conn::open(proxy.addr()).await;
    assert_eq!(a.echo("a").await, "a");
    assert_eq!(b.echo("b").await, "b");

    proxy.set(Fault::Refuse);
    a.assert_reset().await;
    b.assert_reset().await;
    connections(&proxy, 0).await;
}

#[tokio::test]
async fn cut_resets_open_connections_and_new_ones_follow_the_fault() {
    let (upstream, _stop) = echo_server().await;
    let proxy = FaultProxy::start(upstream).await;
    let mut passing = Conn::open(proxy.addr()).await;
    assert_eq!(passing.echo("a").await, "a");
    proxy.set(Fault::Blackhole);
    let mut holed = Conn::open(proxy.addr()).await;
    connections(&proxy, 2).await;

    proxy.cut();
    passing.assert_reset().await;
    holed.assert_reset().await;
    connections(&proxy, 0).await;

    // New connections follow the current fault: still black-holed.
    let mut later = Conn::open(proxy.addr()).await;
    later.send("silence").await;
    later.assert_silent().await;
    proxy.set(Fault::Pass);
    assert_eq!(later.echo("open").await, "open");
    assert_eq!(echo::call(proxy.addr(), "fresh").await.unwrap(), "fresh");
}

#[tokio::test]
async fn latency_delays_each_direction() {
    let (upstream, _stop) = echo_server().await;
    let proxy = FaultProxy::start(upstream).await;
    let mut conn = Conn::open(proxy.addr()).await;
    assert_eq!(conn.echo("warm").await, "warm");

    proxy.set_latency(Duration::from_millis(200));
    let started = Instant::now();
    assert_eq!(conn.echo("slow").await, "slow");
    let slow = started.elapsed();
    assert!(
        slow >= Duration::from_millis(400),
        "a round trip with 200 ms each way took only {slow:?}"
    );

    proxy.set_latency(Duration::ZERO);
    let started = Instant::now();
    assert_eq!(conn.echo("fast").await, "fast");
    let fast = started.elapsed();
    assert!(
        fast < Duration::from_millis(300),
        "a round trip without latency took {fast:?}"
    );
}

#[tokio::test]
async fn latency_keeps_order_and_does_not_serialize_chunks() {
    let (upstream, _stop) = echo_server().await;
    let proxy = FaultProxy::start(upstream).await;
    proxy.set_latency(Duration::from_millis(200));
    let mut conn = Conn::open(proxy.addr()).await;
    let started = Instant::now();
    for i in 0..10 {
        conn.send(&format!("line {i}")).await;
    }
    for i in 0..10 {
        let line = conn.next_line(LIMIT).await.unwrap().unwrap();
        assert_eq!(line, format!("line {i}"));
    }
    // Ten lines in flight at once cost about one round trip, not ten.
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(1500),
        "ten pipelined lines took {elapsed:?}"
    );
}

#[tokio::test]
async fn an_unreachable_upstream_resets_the_client_and_set_upstream_moves_it() {
    let (first, stop_first) = echo_server().await;
    let proxy = FaultProxy::start(first).await;
    assert_eq!(echo::call(proxy.addr(), "first").await.unwrap(), "first");

    // The first server stops accepting: the proxy cannot connect upstream and resets clients.
    drop(stop_first);
    poll::until(LIMIT, "the first echo server to stop accepting", || async {
        TcpStream::connect(first).await.is_err().then_some(())
    })
    .await;
    let mut conn = Conn::open(proxy.addr()).await;
    conn.assert_reset().await;

    let (second, _stop_second) = echo_server().await;
    proxy.set_upstream(second);
    assert_eq!(proxy.upstream(), second);
    assert_eq!(echo::call(proxy.addr(), "second").await.unwrap(), "second");
}

#[tokio::test]
async fn drop_closes_every_connection_and_stops_listening() {
    let (upstream, _stop) = echo_server().await;
    let proxy = FaultProxy::start(upstream).await;
    let addr = proxy.addr();
    let mut passing = Conn::open(addr).await;
    assert_eq!(passing.echo("a").await, "a");
    proxy.set(Fault::Blackhole);
    let mut holed = Conn::open(addr).await;
    connections(&proxy, 2).await;

    drop(proxy);
    for conn in [&mut passing, &mut holed] {
        // Closed: EOF (or a reset), never silence.
        match conn.next_line(LIMIT).await {
            Ok(None) => {}
            Err(err) => assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}"),
            Ok(Some(line)) => panic!("unexpected line {line:?} after the proxy was dropped"),
        }
    }
    poll::until(LIMIT, "the proxy port to refuse connections", || async {
        TcpStream::connect(addr).await.is_err().then_some(())
    })
    .await;
}

#[tokio::test]
#[should_panic(expected = "127.0.0.0/8")]
async fn refuses_to_forward_off_loopback() {
    FaultProxy::start(SocketAddr::from(([10, 0, 0, 1], 2379))).await;
}
