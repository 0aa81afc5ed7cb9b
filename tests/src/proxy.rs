//! A loopback TCP proxy that injects network faults between a client and a real server.
//!
//! Put it in front of etcd or ZooKeeper, point the client at [`FaultProxy::endpoint`], and
//! command it: pass traffic, black-hole it, refuse it, cut every connection with a reset, or
//! delay every chunk. Faults apply to new and existing connections alike. It counts the
//! connections it accepted and the bytes it forwarded each way. Every task it spawns is owned by
//! the proxy and ends when the proxy is dropped (which closes every connection).
//!
//! ```no_run
//! # async fn demo(upstream: std::net::SocketAddr) {
//! use tests::proxy::{Fault, FaultProxy};
//! let proxy = FaultProxy::start(upstream).await;
//! let endpoint = proxy.endpoint(); // give this to the client
//! proxy.set(Fault::Blackhole); // the server seems to hang
//! proxy.set(Fault::Pass);
//! proxy.cut(); // every open connection is reset now
//! # }
//! ```

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// What the proxy does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward both ways (after the configured latency).
    Pass,
    /// Accept connections but never forward or answer: bytes read from either side are dropped
    /// and nothing is written; connections stay open. A connection accepted while black-holed
    /// connects upstream only once traffic passes again.
    Blackhole,
    /// Accept new connections and reset them at once; reset the existing ones.
    Refuse,
}

/// Bytes read but not yet written, per direction; reads pause above this.
const MAX_QUEUED: usize = 1 << 20;
const CHUNK: usize = 16 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What every connection task watches.
#[derive(Clone, Copy, Debug)]
struct Control {
    fault: Fault,
    /// Bumped by [`FaultProxy::cut`]; a connection older than the current value resets.
    cut: u64,
}

/// Settings read by the tasks; holds no sender, so dropping the proxy closes the control channel.
struct Settings {
    latency: Mutex<Duration>,
    upstream: Mutex<SocketAddr>,
    connections: AtomicUsize,
    /// Client connections accepted (and not refused) so far.
    accepted: AtomicU64,
    /// Bytes written upstream so far.
    to_upstream: AtomicU64,
    /// Bytes written to clients so far.
    to_clients: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

fn assert_loopback(addr: SocketAddr) {
    let loopback = match addr.ip() {
        IpAddr::V4(ip) => ip.octets()[0] == 127,
        IpAddr::V6(_) => false,
    };
    assert!(
        loopback,
        "the fault proxy only forwards to 127.0.0.0/8, not to {addr}"
    );
}

/// A loopback TCP proxy with commandable faults; see the [module docs](self).
pub struct FaultProxy {
    addr: SocketAddr,
    control: watch::Sender<Control>,
    settings: Arc<Settings>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on `127.0.0.1:0` and forwards to `upstream` (which must be on 127.0.0.0/8).
    pub async fn start(upstream: SocketAddr) -> Self {
        assert_loopback(upstream);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fault proxy on loopback");
        let addr = listener.local_addr().expect("proxy address");
        let (control, watcher) = watch::channel(Control {
            fault: Fault::Pass,
            cut: 0,
        });
        let settings = Arc::new(Settings {
            latency: Mutex::new(Duration::ZERO),
            upstream: Mutex::new(upstream),
            connections: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            to_upstream: AtomicU64::new(0),
            to_clients: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, watcher, settings.clone()));
        Self {
            addr,
            control,
            settings,
            accept,
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Switches the fault for new and existing connections.
    pub fn set(&self, fault: Fault) {
        self.control.send_modify(|control| control.fault = fault);
    }

    /// The current fault.
    pub fn fault(&self) -> Fault {
        self.control.borrow().fault
    }

    /// Delays every chunk forwarded in each direction by `one_way` (from the moment it was read;
    /// chunks keep their order). Applies to chunks read from now on.
    pub fn set_latency(&self, one_way: Duration) {
        *lock(&self.settings.latency) = one_way;
    }

    /// Resets (RST, `SO_LINGER` 0) every open connection, both the client's and the upstream
    /// one. New connections follow the current [`Fault`].
    pub fn cut(&self) {
        self.control.send_modify(|control| control.cut += 1);
    }

    /// Open client connections (refused ones are never counted).
    pub fn connections(&self) -> usize {
        self.settings.connections.load(Ordering::SeqCst)
    }

    /// Client connections accepted so far, open or closed (refused ones are never counted).
    pub fn accepted(&self) -> u64 {
        self.settings.accepted.load(Ordering::Relaxed)
    }

    /// Bytes forwarded so far: (client → upstream, upstream → client).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.settings.to_upstream.load(Ordering::Relaxed),
            self.settings.to_clients.load(Ordering::Relaxed),
        )
    }

    /// Where connections are forwarded.
    pub fn upstream(&self) -> SocketAddr {
        *lock(&self.settings.upstream)
    }

    /// Forwards new connections (and black-holed ones that pass again) to `addr`, for a server
    /// restarted on another port. Open connections stay with the old upstream; [`cut`](Self::cut)
    /// them to move clients over.
    pub fn set_upstream(&self, addr: SocketAddr) {
        assert_loopback(addr);
        *lock(&self.settings.upstream) = addr;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection task; the
        // closed control channel ends them too, should the runtime be gone.
        self.accept.abort();
    }
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.upstream())
            .field("fault", &self.fault())
            .field("connections", &self.connections())
            .finish()
    }
}

/// Counts an open client connection for as long as it lives.
struct Counted(Arc<Settings>);

impl Counted {
    fn new(settings: &Arc<Settings>) -> Self {
        settings.connections.fetch_add(1, Ordering::SeqCst);
        settings.accepted.fetch_add(1, Ordering::Relaxed);
        Self(settings.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Closes `stream` with a reset instead of a FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn accept_loop(
    listener: TcpListener,
    mut control: watch::Receiver<Control>,
    settings: Arc<Settings>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            changed = control.changed() => {
                if changed.is_err() {
                    return; // the proxy was dropped
                }
            }
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(err) => {
                        tracing::debug!(error = %err, "fault proxy accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let current = *control.borrow();
                if current.fault == Fault::Refuse {
                    reset(stream);
                    continue;
                }
                let counted = Counted::new(&settings);
                connections.spawn(connection(
                    stream,
                    control.clone(),
                    current.cut,
                    settings.clone(),
                    counted,
                ));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// How a connection ends.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Both sides closed normally (or the proxy is gone): drop with FIN.
    Close,
    /// Reset both sides.
    Reset,
}

async fn connection(
    mut client: TcpStream,
    mut control: watch::Receiver<Control>,
    cut: u64,
    settings: Arc<Settings>,
    _counted: Counted,
) {
    let _ = client.set_nodelay(true);
    if control.borrow().fault == Fault::Blackhole {
        match black_hole_unconnected(&mut client, &mut control, cut).await {
            Unconnected::Connect => {}
            Unconnected::Close => return,
            Unconnected::Reset => return reset(client),
        }
    }
    let upstream_addr = *lock(&settings.upstream);
    let mut upstream =
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream_addr)).await {
            Ok(Ok(upstream)) => upstream,
            _ => return reset(client),
        };
    let _ = upstream.set_nodelay(true);
    let end = pump(&mut client, &mut upstream, &mut control, cut, &settings).await;
    if end == End::Reset {
        reset(client);
        reset(upstream);
    }
}

/// How a connection accepted while black-holed leaves the black hole.
enum Unconnected {
    /// Traffic passes again: connect upstream and forward from now on.
    Connect,
    /// The client left, or the proxy is gone.
    Close,
    /// Cut or refused.
    Reset,
}

/// A connection accepted while black-holed: read and drop until traffic passes, the client
/// leaves, or the connection must be reset.
async fn black_hole_unconnected(
    client: &mut TcpStream,
    control: &mut watch::Receiver<Control>,
    cut: u64,
) -> Unconnected {
    let mut buf = vec![0u8; CHUNK];
    loop {
        tokio::select! {
            changed = control.changed() => {
                if changed.is_err() {
                    return Unconnected::Close;
                }
                let current = *control.borrow_and_update();
                if current.cut != cut || current.fault == Fault::Refuse {
                    return Unconnected::Reset;
                }
                if current.fault == Fault::Pass {
                    return Unconnected::Connect;
                }
            }
            read = client.read(&mut buf) => match read {
                Ok(0) => return Unconnected::Close,
                Ok(_) => {} // dropped
                Err(_) => return Unconnected::Reset,
            }
        }
    }
}

/// Bytes read from one side, waiting for their due time to be written to the other.
#[derive(Default)]
struct Direction {
    queue: VecDeque<Chunk>,
    queued: usize,
    /// The reading side reached EOF (or failed while black-holed).
    eof: bool,
    /// The reading side failed: reset the writing side once traffic passes.
    failed: bool,
    /// EOF was forwarded (write half shut down).
    shut: bool,
}

struct Chunk {
    due: Instant,
    data: Vec<u8>,
    written: usize,
}

impl Direction {
    fn room(&self) -> bool {
        self.queued < MAX_QUEUED
    }

    fn push(&mut self, data: &[u8], latency: Duration) {
        self.queued += data.len();
        self.queue.push_back(Chunk {
            due: Instant::now() + latency,
            data: data.to_vec(),
            written: 0,
        });
    }

    fn clear(&mut self) {
        self.queue.clear();
        self.queued = 0;
    }

    fn advance(&mut self, n: usize) {
        if let Some(front) = self.queue.front_mut() {
            front.written += n;
            self.queued -= n;
            if front.written == front.data.len() {
                self.queue.pop_front();
            }
        }
    }
}

/// Writes (part of) the first chunk once it is due. Cancel-safe: nothing is written unless it
/// completes. Only polled when the queue is not empty.
async fn write_due(writer: &mut WriteHalf<'_>, queue: &VecDeque<Chunk>) -> io::Result<usize> {
    let Some(chunk) = queue.front() else {
        return std::future::pending().await;
    };
    tokio::time::sleep_until(chunk.due).await;
    match writer.write(&chunk.data[chunk.written..]).await? {
        0 => Err(io::ErrorKind::WriteZero.into()),
        n => Ok(n),
    }
}

/// Reads into `buf`; cancel-safe.
async fn read(reader: &mut ReadHalf<'_>, buf: &mut [u8]) -> io::Result<usize> {
    reader.read(buf).await
}

async fn pump(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    control: &mut watch::Receiver<Control>,
    cut: u64,
    settings: &Settings,
) -> End {
    let current = *control.borrow_and_update();
    if current.cut != cut || current.fault == Fault::Refuse {
        return End::Reset;
    }
    let mut fault = current.fault;
    let (mut client_read, mut client_write) = client.split();
    let (mut upstream_read, mut upstream_write) = upstream.split();
    // `up`: client → upstream; `down`: upstream → client.
    let mut up = Direction::default();
    let mut down = Direction::default();
    let mut client_buf = vec![0u8; CHUNK];
    let mut upstream_buf = vec![0u8; CHUNK];
    loop {
        if fault == Fault::Pass {
            for (direction, writer) in [
                (&mut up, &mut upstream_write),
                (&mut down, &mut client_write),
            ] {
                if direction.failed {
                    return End::Reset;
                }
                if direction.eof && direction.queue.is_empty() && !direction.shut {
                    let _ = writer.shutdown().await;
                    direction.shut = true;
                }
            }
            if up.shut && down.shut {
                return End::Close;
            }
        }
        let passing = fault == Fault::Pass;
        tokio::select! {
            changed = control.changed() => {
                if changed.is_err() {
                    return End::Close; // the proxy was dropped
                }
                let current = *control.borrow_and_update();
                if current.cut != cut || current.fault == Fault::Refuse {
                    return End::Reset;
                }
                if current.fault == Fault::Blackhole {
                    up.clear();
                    down.clear();
                }
                fault = current.fault;
            }
            read = read(&mut client_read, &mut client_buf), if !up.eof && up.room() => {
                match read {
                    Ok(0) if passing => up.eof = true,
                    // A client that leaves a black hole leaves for good.
                    Ok(0) => return End::Close,
                    Ok(n) if passing => up.push(&client_buf[..n], *lock(&settings.latency)),
                    Ok(_) => {}
                    Err(_) => return End::Reset,
                }
            }
            read = read(&mut upstream_read, &mut upstream_buf), if !down.eof && down.room() => {
                match read {
                    Ok(0) => down.eof = true,
                    Ok(n) if passing => down.push(&upstream_buf[..n], *lock(&settings.latency)),
                    Ok(_) => {}
                    Err(_) if passing => return End::Reset,
                    Err(_) => {
                        down.eof = true;
                        down.failed = true;
                    }
                }
            }
            written = write_due(&mut upstream_write, &up.queue), if passing && !up.queue.is_empty() => {
                match written {
                    Ok(n) => {
                        settings.to_upstream.fetch_add(n as u64, Ordering::Relaxed);
                        up.advance(n);
                    }
                    Err(_) => return End::Reset,
                }
            }
            written = write_due(&mut client_write, &down.queue), if passing && !down.queue.is_empty() => {
                match written {
                    Ok(n) => {
                        settings.to_clients.fetch_add(n as u64, Ordering::Relaxed);
                        down.advance(n);
                    }
                    Err(_) => return End::Reset,
                }
            }
        }
    }
}
