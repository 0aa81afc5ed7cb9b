//! [`RegistrarBuilder`]: collects the services and options, then builds a [`Registrar`].

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::backends::memory::MemoryRegistry;
use crate::backoff::Backoff;
use crate::info::{EndpointBasicInfo, Info, ServiceEntry, MAX_WEIGHT, MIN_WEIGHT};
use crate::registry::Registry;
use crate::tags::resolve_tags;

use super::advertise::{advertised_addr, ADVERTISE_ADDR_ENV};
use super::error::RegistrarError;
use super::overrides::InfoOverride;
use super::status::StatusBoard;
use super::Registrar;

pub(crate) type ShutdownFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Options of a [`Registrar`]; start with [`Registrar::builder`].
///
/// ```
/// use std::time::Duration;
/// use service_registry::{service, Backoff, InfoOverride, MemoryRegistry, Registrar};
///
/// #[service(name = "builder-doc", tag(idc = "hz"))]
/// struct Doc;
///
/// let registrar = Registrar::builder()
///     .registry(MemoryRegistry::new())
///     .listen_addr("127.0.0.1:8080".parse().unwrap())
///     .only(["builder-doc"])
///     .override_all(InfoOverride::new().tag("cluster", "blue"))
///     .override_service("builder-doc", InfoOverride::new().weight(40))
///     .backoff(Backoff::new(Duration::from_millis(50), Duration::from_secs(5)))
///     .build()
///     .unwrap();
/// let info = &registrar.infos()[0];
/// assert_eq!(info.weight, 40);
/// assert_eq!(info.tags["idc"], "hz");
/// assert_eq!(info.tags["cluster"], "blue");
/// ```
#[must_use = "call .build() and then .serve(..)"]
pub struct RegistrarBuilder {
    registry: Option<Arc<dyn Registry>>,
    listen_addr: Option<SocketAddr>,
    advertise_addr: Option<SocketAddr>,
    only: Option<Vec<String>>,
    override_all: InfoOverride,
    overrides: BTreeMap<String, InfoOverride>,
    backoff: Backoff,
    register_timeout: Duration,
    deregister_timeout: Duration,
    grace_period: Duration,
    shutdown: Option<ShutdownFuture>,
}

impl Default for RegistrarBuilder {
    fn default() -> Self {
        Self {
            registry: None,
            listen_addr: None,
            advertise_addr: None,
            only: None,
            override_all: InfoOverride::default(),
            overrides: BTreeMap::new(),
            backoff: Backoff::default(),
            register_timeout: Duration::from_secs(10),
            deregister_timeout: Duration::from_secs(5),
            grace_period: Duration::from_secs(10),
            shutdown: None,
        }
    }
}

impl RegistrarBuilder {
    /// The registry to register into (Kitex's `WithRegistry`). Default:
    /// [`MemoryRegistry::global`].
    ///
    /// ```
    /// let b = service_registry::Registrar::builder().registry(service_registry::MemoryRegistry::new());
    /// # let _ = b;
    /// ```
    pub fn registry(mut self, registry: impl Registry) -> Self {
        self.registry = Some(Arc::new(registry));
        self
    }

    /// The registry, already shared.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use service_registry::{MemoryRegistry, Registrar, Registry};
    /// let shared: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    /// let builder = Registrar::builder().shared_registry(shared);
    /// # let _ = builder;
    /// ```
    pub fn shared_registry(mut self, registry: Arc<dyn Registry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// The bound listener's address (`listener.local_addr()?`). Required.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// let b = service_registry::Registrar::builder().listen_addr(listener.local_addr()?);
    /// # let _ = b; Ok(()) }
    /// ```
    pub fn listen_addr(mut self, addr: SocketAddr) -> Self {
        self.listen_addr = Some(addr);
        self
    }

    /// The address to register instead of the listen address. The environment variable
    /// `SERVICE_REGISTRY_ADVERTISE_ADDR` (`ip:port`, `[ipv6]:port` or a bare IP) wins over this.
    ///
    /// ```
    /// let b = service_registry::Registrar::builder().advertise_addr("[fd00::1]:8080".parse().unwrap());
    /// # let _ = b;
    /// ```
    pub fn advertise_addr(mut self, addr: SocketAddr) -> Self {
        self.advertise_addr = Some(addr);
        self
    }

    /// Registers only these services (by name) instead of every linked one.
    ///
    /// ```
    /// let b = service_registry::Registrar::builder().only(["echo", "billing.invoice"]);
    /// # let _ = b;
    /// ```
    pub fn only<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.only = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// An override applied to every service.
    ///
    /// ```
    /// use service_registry::{InfoOverride, Registrar};
    /// let b = Registrar::builder().override_all(InfoOverride::new().tag("env", "prod"));
    /// # let _ = b;
    /// ```
    pub fn override_all(mut self, o: InfoOverride) -> Self {
        self.override_all = o;
        self
    }

    /// An override for one service, applied after [`override_all`](Self::override_all).
    ///
    /// ```
    /// use service_registry::{InfoOverride, Registrar};
    /// let b = Registrar::builder().override_service("echo", InfoOverride::new().weight(50));
    /// # let _ = b;
    /// ```
    pub fn override_service(mut self, service: impl Into<String>, o: InfoOverride) -> Self {
        self.overrides.insert(service.into(), o);
        self
    }

    /// The retry schedule for failed registrations (default 200 ms doubling to 30 s, jittered).
    ///
    /// ```
    /// use std::time::Duration;
    /// use service_registry::{Backoff, Registrar};
    /// let b = Registrar::builder().backoff(Backoff::new(Duration::from_millis(50), Duration::from_secs(5)));
    /// # let _ = b;
    /// ```
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How long one register call may take before it counts as failed (default 10 s).
    ///
    /// ```
    /// let b = service_registry::Registrar::builder().register_timeout(std::time::Duration::from_secs(3));
    /// # let _ = b;
    /// ```
    pub fn register_timeout(mut self, timeout: Duration) -> Self {
        self.register_timeout = timeout;
        self
    }

    /// How long deregistration at shutdown may take in all (default 5 s).
    ///
    /// ```
    /// let b = service_registry::Registrar::builder().deregister_timeout(std::time::Duration::from_secs(1));
    /// # let _ = b;
    /// ```
    pub fn deregister_timeout(mut self, timeout: Duration) -> Self {
        self.deregister_timeout = timeout;
        self
    }

    /// How long the server may take to stop after its shutdown signal before it is dropped
    /// (default 10 s).
    ///
    /// ```
    /// let b = service_registry::Registrar::builder().grace_period(std::time::Duration::from_secs(30));
    /// # let _ = b;
    /// ```
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace_period = grace;
        self
    }

    /// Shut down when this future completes, instead of on SIGINT/SIGTERM.
    ///
    /// ```
    /// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// let b = service_registry::Registrar::builder().shutdown_signal(async { let _ = stopped.await; });
    /// # let _ = (b, stop);
    /// ```
    pub fn shutdown_signal(mut self, signal: impl Future<Output = ()> + Send + 'static) -> Self {
        self.shutdown = Some(Box::pin(signal));
        self
    }

    /// Collects the services, resolves the address and tags, and checks everything that can be
    /// checked before serving.
    ///
    /// ```
    /// use service_registry::{Registrar, RegistrarError};
    /// let err = Registrar::builder().build().unwrap_err();
    /// assert!(matches!(err, RegistrarError::MissingListenAddr));
    /// ```
    pub fn build(self) -> Result<Registrar, RegistrarError> {
        let listen = self.listen_addr.ok_or(RegistrarError::MissingListenAddr)?;
        if listen.port() == 0 {
            return Err(RegistrarError::UnboundListenAddr(listen));
        }
        let entries = select(
            ServiceEntry::all().map(|e| e.info).collect(),
            self.only.as_deref(),
        )?;
        for name in self.overrides.keys() {
            if !entries.iter().any(|e| e.service_name == name) {
                return Err(unknown(name, &entries));
            }
        }
        let env_addr = std::env::var(ADVERTISE_ADDR_ENV).ok();
        let addr = advertised_addr(listen, self.advertise_addr, env_addr)?;
        let start_time = SystemTime::now();
        let infos = entries
            .iter()
            .map(|entry| {
                let mut info = base_info(entry, addr, start_time)?;
                self.override_all.apply(&mut info);
                if let Some(o) = self.overrides.get(entry.service_name) {
                    o.apply(&mut info);
                }
                if !(MIN_WEIGHT..=MAX_WEIGHT).contains(&info.weight) {
                    return Err(RegistrarError::InvalidWeight {
                        service: info.service_name,
                        weight: info.weight,
                    });
                }
                Ok(info)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let registry = self
            .registry
            .unwrap_or_else(|| Arc::new(MemoryRegistry::global().clone()));
        let board = StatusBoard::new(infos.iter().map(|i| i.service_name.clone()));
        Ok(Registrar {
            registry,
            infos,
            board,
            backoff: self.backoff,
            register_timeout: self.register_timeout,
            deregister_timeout: self.deregister_timeout,
            grace_period: self.grace_period,
            shutdown: self.shutdown,
        })
    }
}

fn unknown(name: &str, entries: &[&'static EndpointBasicInfo]) -> RegistrarError {
    let mut known: Vec<String> = entries.iter().map(|e| e.service_name.to_string()).collect();
    known.sort();
    RegistrarError::UnknownService {
        name: name.to_string(),
        known,
    }
}

/// Applies `only`, then refuses duplicate names among what is left.
fn select(
    mut all: Vec<&'static EndpointBasicInfo>,
    only: Option<&[String]>,
) -> Result<Vec<&'static EndpointBasicInfo>, RegistrarError> {
    // inventory's order depends on link order; sort so errors and registration are stable.
    all.sort_by_key(|e| (e.service_name, e.file, e.line));
    if let Some(only) = only {
        for name in only {
            if !all.iter().any(|e| e.service_name == name) {
                return Err(unknown(name, &all));
            }
        }
        all.retain(|e| only.iter().any(|n| n == e.service_name));
    }
    if all.is_empty() {
        return Err(RegistrarError::NoServices);
    }
    let mut seen: HashMap<&str, &EndpointBasicInfo> = HashMap::new();
    for entry in &all {
        if let Some(first) = seen.insert(entry.service_name, entry) {
            return Err(RegistrarError::DuplicateService {
                name: entry.service_name.to_string(),
                first_type: first.type_name.to_string(),
                first_location: format!("{}:{}", first.file, first.line),
                second_type: entry.type_name.to_string(),
                second_location: format!("{}:{}", entry.file, entry.line),
            });
        }
    }
    Ok(all)
}

fn base_info(
    entry: &EndpointBasicInfo,
    addr: SocketAddr,
    start_time: SystemTime,
) -> Result<Info, RegistrarError> {
    let tags =
        resolve_tags(entry.tags).map_err(|(tag, missing)| RegistrarError::MissingTagVariable {
            service: entry.service_name.to_string(),
            tag: tag.to_string(),
            variable: missing.variable,
        })?;
    Ok(Info {
        service_name: entry.service_name.to_string(),
        addr,
        payload_codec: entry.payload_codec.map(str::to_string),
        weight: entry.weight,
        start_time,
        warmup: entry.warmup,
        tags,
        skip_listen_addr: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &'static str, line: u32) -> &'static EndpointBasicInfo {
        Box::leak(Box::new(EndpointBasicInfo {
            service_name: name,
            weight: 10,
            payload_codec: None,
            warmup: Duration::ZERO,
            tags: &[],
            type_name: "T",
            file: "f.rs",
            line,
        }))
    }

    #[test]
    fn duplicates_name_both_locations() {
        let err = select(vec![entry("a", 1), entry("a", 2)], None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("f.rs:1") && text.contains("f.rs:2"), "{text}");
    }

    #[test]
    fn only_filters_and_checks_names() {
        let got = select(vec![entry("a", 1), entry("b", 2)], Some(&["b".to_string()])).unwrap();
        assert_eq!(got.len(), 1);
        let err = select(vec![entry("a", 1)], Some(&["zzz".to_string()])).unwrap_err();
        assert!(matches!(err, RegistrarError::UnknownService { .. }));
    }

    #[test]
    fn invalid_weight_names_the_bounds() {
        let err = RegistrarError::InvalidWeight {
            service: "svc".into(),
            weight: 0,
        };
        assert_eq!(
            err.to_string(),
            "override for service `svc` sets weight 0; weights must be 1..=10000"
        );
    }

    #[test]
    fn duplicates_outside_the_subset_are_ignored() {
        let got = select(
            vec![entry("a", 1), entry("a", 2), entry("b", 3)],
            Some(&["b".to_string()]),
        );
        assert_eq!(got.unwrap().len(), 1);
    }
}
