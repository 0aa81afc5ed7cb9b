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

use super::advertise::{advertised_addr, AdvertiseEnv};
use super::checks::{poll_until_ready, BoxFuture, CheckOutcome, HealthCheck};
use super::desired::DesiredSet;
use super::drain::{drain_delay_from_env, DEFAULT_DRAIN_DELAY};
use super::error::RegistrarError;
use super::lifecycle::NamedRegistry;
use super::overrides::InfoOverride;
use super::status::{ServiceStatus, StatusBoard};
use super::Registrar;
use crate::env::{Vars, DRAIN_DELAY_ENV};

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
/// let info = registrar.infos()[0].clone();
/// assert_eq!(info.weight, 40);
/// assert_eq!(info.tags["idc"], "hz");
/// assert_eq!(info.tags["cluster"], "blue");
/// ```
#[must_use = "call .build() and then .serve(..)"]
pub struct RegistrarBuilder {
    registries: Vec<(Option<String>, Arc<dyn Registry>)>,
    listen_addr: Option<SocketAddr>,
    advertise_addr: Option<SocketAddr>,
    only: Option<Vec<String>>,
    override_all: InfoOverride,
    overrides: BTreeMap<String, InfoOverride>,
    /// The first service given to `override_service` twice.
    duplicate_override: Option<String>,
    backoff: Backoff,
    register_timeout: Duration,
    deregister_timeout: Duration,
    grace_period: Duration,
    /// `None`: not set in code (the default applies).
    drain_delay: Option<Duration>,
    shutdown: Option<ShutdownFuture>,
    readiness: Option<BoxFuture<()>>,
    health_check: Option<HealthCheck>,
}

impl Default for RegistrarBuilder {
    fn default() -> Self {
        Self {
            registries: Vec::new(),
            listen_addr: None,
            advertise_addr: None,
            only: None,
            override_all: InfoOverride::default(),
            overrides: BTreeMap::new(),
            duplicate_override: None,
            backoff: Backoff::default(),
            register_timeout: Duration::from_secs(10),
            deregister_timeout: Duration::from_secs(5),
            grace_period: Duration::from_secs(10),
            drain_delay: None,
            shutdown: None,
            readiness: None,
            health_check: None,
        }
    }
}

impl RegistrarBuilder {
    /// A registry to register into (Kitex's `WithRegistry`). Call it again to register into
    /// several registries at once (migrating from etcd to ZooKeeper, or two datacenters): each
    /// registry is kept independently, so one that is down never delays the others. Its name in
    /// status, logs and metrics is [`Registry::name`] (`memory`, `etcd`, `zookeeper`; a second
    /// registry of the same name gets `#2`). Default when none is given:
    /// [`MemoryRegistry::global`], the process-wide in-memory registry, which only this
    /// process can read (the quickstart and tests use it); [`build`](Self::build) says so in
    /// a `warn`, since a server meant for others to find needs a real registry here.
    ///
    /// At the end of [`serve`](Registrar::serve) the registrar calls
    /// [`Registry::close`] on every registry it was given, so there is no need to keep a
    /// clone just to close it.
    ///
    /// ```
    /// let b = service_registry::Registrar::builder().registry(service_registry::MemoryRegistry::new());
    /// # let _ = b;
    /// ```
    pub fn registry(mut self, registry: impl Registry) -> Self {
        self.registries.push((None, Arc::new(registry)));
        self
    }

    /// A registry, already shared (see [`registry`](Self::registry)), e.g. one registry for
    /// several registrars of one process. [`serve`](crate::Registrar::serve) closes it only
    /// when nothing else holds it any more; while another holder is left (another registrar
    /// still serving, a client), it stays open. A cloned backend handle given to
    /// [`registry`](Self::registry) is closed by `serve` like any owned one: share it with this
    /// method to keep it open.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use service_registry::{MemoryRegistry, Registrar, Registry};
    /// let shared: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    /// let builder = Registrar::builder().shared_registry(shared);
    /// # let _ = builder;
    /// ```
    pub fn shared_registry(mut self, registry: Arc<dyn Registry>) -> Self {
        self.registries.push((None, registry));
        self
    }

    /// A registry under a name of your choosing (shown in status, logs and metrics); names must
    /// be unique.
    ///
    /// ```
    /// use service_registry::{MemoryRegistry, Registrar};
    /// let b = Registrar::builder()
    ///     .named_registry("old-etcd", MemoryRegistry::new())
    ///     .named_registry("new-zk", MemoryRegistry::new());
    /// # let _ = b;
    /// ```
    pub fn named_registry(mut self, name: impl Into<String>, registry: impl Registry) -> Self {
        self.registries
            .push((Some(name.into()), Arc::new(registry)));
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

    /// The address to register instead of the listen address. Environment variables (operator
    /// knobs, see [`env`](crate::env)) win over this, with a `warn` in the log, in this order: `SERVICE_REGISTRY_ADVERTISE_ADDR` (`ip:port`, `[ipv6]:port` or a bare
    /// IP) replaces the whole address; otherwise Kitex's `KITEX_IP_TO_REGISTRY` replaces the IP
    /// and `KITEX_PORT_TO_REGISTRY` the port of this address (or of the listen address).
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

    /// An override for one service, applied after [`override_all`](Self::override_all). One
    /// per service: a second call for the same service makes [`build`](Self::build) fail with
    /// [`RegistrarError::DuplicateOverride`] (merge them into one override instead).
    ///
    /// ```
    /// use service_registry::{InfoOverride, Registrar};
    /// let b = Registrar::builder().override_service("echo", InfoOverride::new().weight(50));
    /// # let _ = b;
    /// ```
    pub fn override_service(mut self, service: impl Into<String>, o: InfoOverride) -> Self {
        let service = service.into();
        if self.overrides.contains_key(&service) && self.duplicate_override.is_none() {
            self.duplicate_override = Some(service.clone());
        }
        self.overrides.insert(service, o);
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

    /// How long to keep serving after the services are deregistered and before the server is
    /// told to stop, so clients that learn of the removal late stop sending first (default
    /// 6 s). Kitex's Go resolvers re-resolve every 5 s and never watch, so a Kitex client can
    /// keep calling a removed instance for up to 5 s; 6 s covers that with a second to spare,
    /// and with the 10 s [`grace_period`](Self::grace_period) stays well inside Kubernetes'
    /// 30 s termination grace. Clients of this crate watch and stop within milliseconds. The
    /// drain is skipped when nothing was registered, and cut short by a second SIGINT/SIGTERM
    /// (which, while the deregistration is still waited for, also cuts that short: what is left
    /// expires with its lease or session).
    /// The environment variable `SERVICE_REGISTRY_DRAIN_DELAY` (`6s`, `500ms`, `0`), an operator
    /// knob (see [`env`](crate::env)), wins over this; [`build`](Self::build) then logs a
    /// `warn` with both values.
    ///
    /// ```
    /// let b = service_registry::Registrar::builder().drain_delay(std::time::Duration::from_secs(2));
    /// # let _ = b;
    /// ```
    pub fn drain_delay(mut self, delay: Duration) -> Self {
        self.drain_delay = Some(delay);
        self
    }

    /// Registers nothing until `ready` completes (caches warm, database reachable); the
    /// services show [`ServiceStatus::WaitingForReady`] meanwhile. If `ready` panics it can never
    /// complete: the services show [`ServiceStatus::Failed`] with the panic message and are never
    /// registered, while the server keeps serving. Default: ready as soon as
    /// [`serve`](Registrar::serve) starts, i.e. once the listener is bound.
    ///
    /// ```
    /// let (warm, warmed) = tokio::sync::oneshot::channel::<()>();
    /// let b = service_registry::Registrar::builder().ready_when(async { let _ = warmed.await; });
    /// # let _ = (b, warm);
    /// ```
    pub fn ready_when(mut self, ready: impl Future<Output = ()> + Send + 'static) -> Self {
        self.readiness = Some(Box::pin(ready));
        self
    }

    /// Registers nothing until `check` passes (`true` or `Ok(())`), calling it every `interval`.
    /// A call that panics counts as "not ready yet" (logged with the panic message), as `false`
    /// does, and `check` is called again.
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = service_registry::Registrar::builder()
    ///     .ready_check(Duration::from_millis(200), || async { std::path::Path::new("/tmp").exists() });
    /// # let _ = b;
    /// ```
    pub fn ready_check<F, Fut>(self, interval: Duration, check: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: CheckOutcome,
    {
        self.ready_when(poll_until_ready(interval, check))
    }

    /// Checks health while serving: failing services are withdrawn from the registries and come
    /// back when the check passes (see [`HealthCheck`]). Default: no check.
    ///
    /// ```
    /// use service_registry::{HealthCheck, Registrar};
    /// let b = Registrar::builder().health_check(HealthCheck::http("/healthz"));
    /// # let _ = b;
    /// ```
    pub fn health_check(mut self, check: HealthCheck) -> Self {
        self.health_check = Some(check);
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
        if let Some(service) = self.duplicate_override {
            return Err(RegistrarError::DuplicateOverride { service });
        }
        if let Some(check) = &self.health_check {
            check.validate()?;
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
        let vars = Vars::process();
        let addr = advertised_addr(listen, self.advertise_addr, AdvertiseEnv::read(&vars)?)?;
        let drain_delay = match (drain_delay_from_env(&vars)?, self.drain_delay) {
            (Some(from_env), Some(code)) => {
                if from_env != code {
                    tracing::warn!(
                        variable = DRAIN_DELAY_ENV,
                        drain_delay = ?from_env,
                        code = ?code,
                        "{DRAIN_DELAY_ENV} replaces the drain delay given to the builder"
                    );
                }
                from_env
            }
            (Some(from_env), None) => from_env,
            (None, code) => code.unwrap_or(DEFAULT_DRAIN_DELAY),
        };
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
        let registries = name_registries(self.registries)?;
        let registry_names: Vec<String> = registries.iter().map(|r| r.name.clone()).collect();
        let initial = if self.readiness.is_some() {
            ServiceStatus::WaitingForReady
        } else {
            ServiceStatus::Registering
        };
        let board = StatusBoard::new(
            infos.iter().map(|i| i.service_name.clone()),
            &registry_names,
            initial,
        );
        let desired = DesiredSet::new(&infos, self.readiness.is_none());
        Ok(Registrar {
            registries,
            desired,
            board,
            advertised: addr,
            backoff: self.backoff,
            register_timeout: self.register_timeout,
            deregister_timeout: self.deregister_timeout,
            grace_period: self.grace_period,
            drain_delay,
            shutdown: self.shutdown,
            readiness: self.readiness,
            health_check: self.health_check,
        })
    }
}

/// Gives every registry its name: the one given, else [`Registry::name`] (`#2`, `#3` for
/// repeats); the global [`MemoryRegistry`] when none was given.
fn name_registries(
    given: Vec<(Option<String>, Arc<dyn Registry>)>,
) -> Result<Vec<NamedRegistry>, RegistrarError> {
    let given = if given.is_empty() {
        tracing::warn!(
            "no registry given: registering into the process-wide MemoryRegistry::global(), \
             which only this process can read; give `.registry(..)` (etcd, ZooKeeper, Nacos) \
             for clients elsewhere to find this server"
        );
        vec![(
            None,
            Arc::new(MemoryRegistry::global().clone()) as Arc<dyn Registry>,
        )]
    } else {
        given
    };
    let mut named: Vec<NamedRegistry> = Vec::with_capacity(given.len());
    let taken = |named: &[NamedRegistry], name: &str| named.iter().any(|r| r.name == name);
    for (explicit, registry) in &given {
        if let Some(name) = explicit {
            if taken(&named, name) || name.is_empty() {
                return Err(RegistrarError::DuplicateRegistry { name: name.clone() });
            }
            named.push(NamedRegistry {
                name: name.clone(),
                registry: registry.clone(),
            });
        }
    }
    for (explicit, registry) in given {
        if explicit.is_some() {
            continue;
        }
        let base = registry.name();
        let mut name = base.clone();
        let mut n = 1;
        while taken(&named, &name) {
            n += 1;
            name = format!("{base}#{n}");
        }
        named.push(NamedRegistry { name, registry });
    }
    Ok(named)
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
