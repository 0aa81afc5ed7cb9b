//! A line echo server over TCP that stops on a shutdown future (or, spawned as a [`Server`], when
//! dropped), and its client; a paced variant ([`serve_paced`]) for servers that take time and
//! have a limited number of workers, with a client that keeps its connections open
//! ([`Connections`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

/// Accepts on `listener` and echoes every line back, until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    accept(listener, shutdown, None).await
}

/// An echo server spawned on a loopback port; it stops when dropped.
#[derive(Debug)]
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    _task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Binds `127.0.0.1:0` and serves there.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an echo server on loopback");
        let addr = listener.local_addr().expect("echo server address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            _task: task,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// How a [`serve_paced`] server answers: each line holds one of `workers` slots for `delay`
/// before its echo is written, so the server works on at most `workers` lines at a time (over
/// all its connections) and a line that finds every slot taken waits for one, oldest first.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    pub delay: Duration,
    pub workers: usize,
}

/// [`serve`], answering at `pace`.
pub async fn serve_paced(
    listener: TcpListener,
    pace: Pace,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(pace.workers));
    accept(listener, shutdown, Some((slots, pace.delay))).await
}

async fn accept(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    pace: Option<(Arc<Semaphore>, Duration)>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => {
                let (socket, _) = accepted?;
                let pace = pace.clone();
                tokio::spawn(async move {
                    if pace.is_some() {
                        let _ = socket.set_nodelay(true);
                    }
                    let (read, mut write) = socket.into_split();
                    let mut lines = BufReader::new(read).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        // Holds a worker slot until the echo is written.
                        let _slot = match &pace {
                            Some((slots, delay)) => {
                                let Ok(slot) = slots.clone().acquire_owned().await else {
                                    break;
                                };
                                tokio::time::sleep(*delay).await;
                                Some(slot)
                            }
                            None => None,
                        };
                        if write.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
            }
        }
    }
}

/// Sends one line to the echo server at `addr` and returns the reply (2 s limit).
pub async fn call(addr: SocketAddr, message: &str) -> std::io::Result<String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(format!("{message}\n").as_bytes()).await?;
        let mut reply = String::new();
        BufReader::new(stream).read_line(&mut reply).await?;
        Ok(reply.trim_end().to_string())
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "echo call timed out"))?
}

/// Kept-open connections to one echo server: a call takes an idle one (or connects) and puts
/// it back after its reply, so there are as many connections as calls were ever in flight at
/// once, and a call costs no connect. A connection that failed is dropped. Clones share the
/// connections.
#[derive(Clone, Debug)]
pub struct Connections {
    addr: SocketAddr,
    idle: Arc<Mutex<Vec<BufReader<TcpStream>>>>,
}

impl Connections {
    /// No connection yet to the server at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            idle: Arc::default(),
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<BufReader<TcpStream>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends one line and returns the reply (no time limit: put one around it).
    pub async fn call(&self, message: &str) -> std::io::Result<String> {
        let idle = self.idle().pop();
        let mut stream = match idle {
            Some(stream) => stream,
            None => {
                let stream = TcpStream::connect(self.addr).await?;
                stream.set_nodelay(true)?;
                BufReader::new(stream)
            }
        };
        stream
            .get_mut()
            .write_all(format!("{message}\n").as_bytes())
            .await?;
        let mut reply = String::new();
        if stream.read_line(&mut reply).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.idle().push(stream);
        Ok(reply.trim_end().to_string())
    }
}
