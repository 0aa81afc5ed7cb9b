//! The readiness gate and the health check: what decides, besides an operator, whether a
//! running service is in the registry.

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;

use super::desired::DesiredSet;
use super::error::RegistrarError;
use super::lifecycle::panic_text;

/// What a readiness or health check returns: `true`/`Ok(())` passes; `false` or `Err(why)`
/// fails (the text shows in the status).
///
/// ```
/// use service_registry::CheckOutcome;
/// assert_eq!(true.into_outcome(), Ok(()));
/// assert_eq!(Err::<(), _>("db down").into_outcome(), Err("db down".to_string()));
/// ```
pub trait CheckOutcome {
    /// `Ok(())` if the check passed, else why not.
    fn into_outcome(self) -> Result<(), String>;
}

impl CheckOutcome for bool {
    fn into_outcome(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("the check returned false".to_string())
        }
    }
}

impl<E: Display> CheckOutcome for Result<(), E> {
    fn into_outcome(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
type CheckFn = Arc<dyn Fn() -> BoxFuture<Result<(), String>> + Send + Sync>;

/// Polls `check` every `interval` until it passes.
pub(crate) fn poll_until_ready<F, Fut>(interval: Duration, mut check: F) -> BoxFuture<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: CheckOutcome,
{
    Box::pin(async move {
        let mut tries = 0u32;
        loop {
            tries += 1;
            // A check that panics is not ready yet, as one that returns `false`; it is called
            // again (`FnMut`), and the panic shows in the log.
            let outcome = match std::panic::catch_unwind(AssertUnwindSafe(&mut check)) {
                Ok(fut) => AssertUnwindSafe(fut)
                    .catch_unwind()
                    .await
                    .map(CheckOutcome::into_outcome),
                Err(panic) => Err(panic),
            }
            .unwrap_or_else(|panic| {
                let why = format!("the ready check panicked: {}", panic_text(panic));
                tracing::error!(tries, "{why}");
                Err(why)
            });
            match outcome {
                Ok(()) => {
                    tracing::info!(tries, "ready; registering");
                    return;
                }
                Err(why) => {
                    tracing::info!(tries, %why, retry_in = ?interval, "not ready yet")
                }
            }
            tokio::time::sleep(interval).await;
        }
    })
}

#[derive(Clone)]
enum Probe {
    Custom(CheckFn),
    Tcp,
    Http(String),
}

/// A check run while the server runs: after `failure_threshold` failures in a row every
/// service is withdrawn from the registries (status
/// [`Unhealthy`](crate::ServiceStatus::Unhealthy)) while the server keeps serving; after
/// `success_threshold` passes in a row it is registered again.
///
/// Defaults (as a Kubernetes readiness probe, with Consul's TCP-check interval): every 5 s,
/// 2 s timeout per check, 3 failures to withdraw, 1 success to come back. A check that panics
/// has failed, with the panic message as its reason, and checking goes on. The first check runs
/// once the readiness gate has passed.
///
/// ```
/// use std::time::Duration;
/// use service_registry::{HealthCheck, Registrar};
///
/// let check = HealthCheck::new(|| async { Ok::<(), std::io::Error>(()) })
///     .interval(Duration::from_secs(1))
///     .failure_threshold(2);
/// let tcp = HealthCheck::tcp(); // connects to the advertised address
/// let http = HealthCheck::http("/healthz"); // GET, passes on 2xx/3xx
/// let builder = Registrar::builder().health_check(check);
/// # let _ = (tcp, http, builder);
/// ```
#[derive(Clone)]
pub struct HealthCheck {
    probe: Probe,
    pub(crate) interval: Duration,
    timeout: Duration,
    failure_threshold: u32,
    success_threshold: u32,
}

impl std::fmt::Debug for HealthCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let probe = match &self.probe {
            Probe::Custom(_) => "custom".to_string(),
            Probe::Tcp => "tcp".to_string(),
            Probe::Http(path) => format!("http {path}"),
        };
        f.debug_struct("HealthCheck")
            .field("probe", &probe)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("failure_threshold", &self.failure_threshold)
            .field("success_threshold", &self.success_threshold)
            .finish()
    }
}

impl HealthCheck {
    fn with(probe: Probe) -> Self {
        Self {
            probe,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            failure_threshold: 3,
            success_threshold: 1,
        }
    }

    /// Runs `check` (`bool` or `Result<(), impl Display>`).
    ///
    /// See [`HealthCheck`] for an example.
    pub fn new<F, Fut>(check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: CheckOutcome,
    {
        let check = Arc::new(check);
        Self::with(Probe::Custom(Arc::new(move || {
            let check = check.clone();
            Box::pin(async move { check().await.into_outcome() })
        })))
    }

    /// Opens a TCP connection to the advertised address (Consul's TCP check).
    ///
    /// See [`HealthCheck`] for an example.
    pub fn tcp() -> Self {
        Self::with(Probe::Tcp)
    }

    /// Sends `GET path` over HTTP/1.1 to the advertised address; passes on a 2xx or 3xx answer.
    ///
    /// See [`HealthCheck`] for an example.
    pub fn http(path: impl Into<String>) -> Self {
        Self::with(Probe::Http(path.into()))
    }

    /// Time between checks (default 5 s; zero is refused by
    /// [`RegistrarBuilder::build`](crate::RegistrarBuilder::build)).
    ///
    /// See [`HealthCheck`] for an example.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// How long one check may take before it counts as failed (default 2 s).
    ///
    /// ```
    /// let c = service_registry::HealthCheck::tcp().timeout(std::time::Duration::from_millis(500));
    /// # let _ = c;
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Failures in a row that withdraw the services (default 3). 0 is refused by
    /// [`RegistrarBuilder::build`](crate::RegistrarBuilder::build) with
    /// [`RegistrarError::Zero`](crate::RegistrarError::Zero).
    ///
    /// See [`HealthCheck`] for an example.
    pub fn failure_threshold(mut self, n: u32) -> Self {
        self.failure_threshold = n;
        self
    }

    /// Passes in a row that register them again (default 1). 0 is refused by
    /// [`RegistrarBuilder::build`](crate::RegistrarBuilder::build).
    ///
    /// ```
    /// use service_registry::{HealthCheck, Registrar, RegistrarError};
    /// let err = Registrar::builder()
    ///     .listen_addr("127.0.0.1:9".parse().unwrap())
    ///     .health_check(HealthCheck::tcp().success_threshold(0))
    ///     .build()
    ///     .unwrap_err();
    /// assert!(matches!(err, RegistrarError::Zero { setting: "HealthCheck::success_threshold" }));
    /// ```
    pub fn success_threshold(mut self, n: u32) -> Self {
        self.success_threshold = n;
        self
    }

    /// Refuses settings that would disable the check: a zero threshold or interval.
    pub(crate) fn validate(&self) -> Result<(), RegistrarError> {
        let zero = |setting| Err(RegistrarError::Zero { setting });
        if self.failure_threshold == 0 {
            return zero("HealthCheck::failure_threshold");
        }
        if self.success_threshold == 0 {
            return zero("HealthCheck::success_threshold");
        }
        if self.interval.is_zero() {
            return zero("HealthCheck::interval");
        }
        Ok(())
    }

    async fn check_once(&self, addr: SocketAddr) -> Result<(), String> {
        let probe = async {
            match &self.probe {
                // A check that panics failed: its message is the reason shown in the status,
                // and checking goes on.
                Probe::Custom(check) => {
                    let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| check())) {
                        Ok(fut) => AssertUnwindSafe(fut).catch_unwind().await,
                        Err(panic) => Err(panic),
                    };
                    outcome.unwrap_or_else(|panic| {
                        let why = format!("the health check panicked: {}", panic_text(panic));
                        tracing::error!("{why}");
                        Err(why)
                    })
                }
                Probe::Tcp => tokio::net::TcpStream::connect(addr)
                    .await
                    .map(drop)
                    .map_err(|e| format!("cannot connect to {addr}: {e}")),
                Probe::Http(path) => http_get(addr, path).await,
            }
        };
        match tokio::time::timeout(self.timeout, probe).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("the check took longer than {:?}", self.timeout)),
        }
    }

    /// Checks forever, withdrawing and restoring every service in `desired` as the thresholds
    /// say.
    pub(crate) async fn run(self, addr: SocketAddr, desired: DesiredSet) {
        let mut healthy = true;
        let mut streak = 0u32;
        loop {
            let outcome = self.check_once(addr).await;
            match (&outcome, healthy) {
                (Ok(()), true) | (Err(_), false) => streak = 0,
                (Ok(()), false) => {
                    streak += 1;
                    if streak >= self.success_threshold {
                        tracing::info!(passes = streak, "health check passes again; registering");
                        healthy = true;
                        streak = 0;
                        desired.update_all(|d| d.health = Ok(()));
                    }
                }
                (Err(why), true) => {
                    streak += 1;
                    tracing::warn!(failures = streak, %why, "health check failed");
                    if streak >= self.failure_threshold {
                        tracing::warn!(%why, "health check failed {streak} times in a row; withdrawing the services while serving on");
                        healthy = false;
                        streak = 0;
                        let reason = why.clone();
                        desired.update_all(|d| d.health = Err(reason.clone()));
                    }
                }
            }
            tokio::time::sleep(self.interval).await;
        }
    }
}

/// `GET path` over a fresh connection (HTTP/1.1, through hyper); `Ok` for a 2xx or 3xx status.
async fn http_get(addr: SocketAddr, path: &str) -> Result<(), String> {
    let host = addr.to_string();
    let request = crate::http_client::request(http::Method::GET, &host, path);
    let answer = crate::http_client::send(
        &host,
        request,
        bytes::Bytes::new(),
        crate::http_client::ReadBody::Skip,
    )
    .await
    .map_err(|e| format!("GET {path} on {addr} failed: {e}"))?;
    let code = answer.status.as_u16();
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("GET {path} on {addr} answered {code}"))
    }
}
