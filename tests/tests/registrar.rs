//! The registrar against real TCP listeners and the in-memory registry.

use std::time::Duration;

use futures_util::StreamExt;
use service_registry::{
    service, Backoff, Discovery, Endpoint, HealthCheck, Info, InfoOverride, MemoryRegistry,
    Registrar, RegistrarError, Registry, RegistryError, ServiceStatus,
};
use tests::registries::{Event, Flaky, Recording};
use tests::running::Running;
use tests::{echo, poll};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

// Links the library so its #[service] types reach this binary's inventory.
use linked_services as _;

#[service(
    name = "reg.echo",
    weight = 20,
    payload_codec = "json",
    warmup = "1m30s",
    tag(idc = "hz")
)]
pub struct EchoService;

#[service(
    name = "reg.other",
    tag(cluster = "blue"),
    tag(zone = "${REG_TEST_UNSET_ZONE:-z1}")
)]
pub enum OtherService {
    A,
}

const OURS: [&str; 2] = ["reg.echo", "reg.other"];

fn all_registered(status: &std::collections::BTreeMap<String, ServiceStatus>) -> bool {
    status.values().all(|s| *s == ServiceStatus::Registered)
}

#[test]
fn descriptor_is_reachable_from_the_type() {
    let info = EchoService::INFO;
    assert_eq!(info.service_name, "reg.echo");
    assert_eq!(info.weight, 20);
    assert_eq!(info.payload_codec, Some("json"));
    assert_eq!(info.warmup, Duration::from_secs(90));
    assert_eq!(info.type_name, "registrar::EchoService");
    assert!(info.file.ends_with("registrar.rs"), "{}", info.file);
    let source = include_str!("registrar.rs");
    let expected_line = source
        .lines()
        .position(|l| l == "pub struct EchoService;")
        .unwrap()
        + 1;
    assert_eq!(
        info.line as usize, expected_line,
        "the line of the type, not of the attribute"
    );
    assert_eq!(
        OtherService::INFO.weight,
        10,
        "default weight is Kitex's 10"
    );
}

#[tokio::test]
async fn registers_every_linked_service_after_bind_then_deregisters_before_close() {
    let registry = Recording::default();
    let running = Running::start_with(|b| b.registry(registry.clone())).await;
    let addr = running.addr;
    let linked: Vec<&str> = {
        let mut v: Vec<_> = service_registry::endpoint::ServiceEntry::all()
            .map(|e| e.info.service_name)
            .collect();
        v.sort();
        v
    };
    assert!(
        linked.contains(&"linked.alpha") && linked.contains(&"linked.beta"),
        "library services must be linked: {linked:?}"
    );
    let status = running.status.clone();

    let done = status.wait_for(all_registered).await.unwrap();
    assert_eq!(done.keys().map(String::as_str).collect::<Vec<_>>(), linked);
    for name in &linked {
        let found = registry.inner.resolve(name).await.unwrap();
        assert_eq!(found.len(), 1, "{name}");
        assert_eq!(found[0].addr, addr);
    }
    let alpha = &registry.inner.resolve("linked.alpha").await.unwrap()[0];
    assert_eq!(alpha.weight, 7);
    assert_eq!(alpha.tags["origin"], "library");

    running.stop().await;

    let events = registry.events();
    let registers: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, Event::Register { .. }))
        .collect();
    assert_eq!(registers.len(), linked.len());
    assert!(
        events.iter().all(|e| matches!(
            e,
            Event::Register {
                server_answered: true,
                ..
            } | Event::Deregister {
                server_answered: true,
                ..
            }
        )),
        "the server must answer during every register and deregister call: {events:?}"
    );
    let last_register = events
        .iter()
        .rposition(|e| matches!(e, Event::Register { .. }))
        .unwrap();
    let first_deregister = events
        .iter()
        .position(|e| matches!(e, Event::Deregister { .. }))
        .unwrap();
    assert!(last_register < first_deregister);
    for name in &linked {
        assert!(
            registry.inner.resolve(name).await.unwrap().is_empty(),
            "{name} still registered"
        );
    }
    assert!(
        echo::call(addr, "x").await.is_err(),
        "the listener must be closed once serve returns"
    );
    let final_status = status.snapshot();
    assert!(
        final_status
            .values()
            .all(|s| *s == ServiceStatus::Deregistered),
        "{final_status:?}"
    );
}

#[tokio::test]
async fn infos_carry_attribute_runtime_data_and_overrides() {
    let elsewhere = "127.0.0.9:9999".parse().unwrap();
    let running = Running::start_with(|b| {
        b.registry(MemoryRegistry::new())
            .only(OURS)
            .override_all(
                InfoOverride::new()
                    .tag("cluster", "green")
                    .tag("env", "prod"),
            )
            .override_service(
                "reg.echo",
                InfoOverride::new()
                    .weight(55)
                    .payload_codec("thrift")
                    .warmup(Duration::from_secs(2)),
            )
            .override_service("reg.other", InfoOverride::new().addr(elsewhere))
    })
    .await;
    let infos = &running.infos;
    assert_eq!(infos.len(), 2);
    let echo_info = &infos[0];
    assert_eq!(echo_info.service_name, "reg.echo");
    assert_eq!(echo_info.addr, running.addr);
    assert_eq!(echo_info.weight, 55);
    assert_eq!(echo_info.payload_codec.as_deref(), Some("thrift"));
    assert_eq!(echo_info.warmup, Duration::from_secs(2));
    assert_eq!(echo_info.tags["idc"], "hz");
    assert_eq!(echo_info.tags["cluster"], "green");
    let age = std::time::SystemTime::now()
        .duration_since(echo_info.start_time)
        .unwrap();
    assert!(age < Duration::from_secs(60));

    let other = &infos[1];
    assert_eq!(other.addr, elsewhere);
    assert_eq!(
        other.tags["cluster"], "green",
        "global override replaces the declared tag"
    );
    assert_eq!(other.tags["zone"], "z1", "unset variable takes its default");
    assert_eq!(other.tags["env"], "prod");
    assert_eq!(other.payload_codec, None);
    running.stop().await;
}

#[tokio::test]
async fn bad_options_are_refused_before_serving() {
    let err = Running::try_start_with(|b| b.registry(MemoryRegistry::new()).only(["nope"]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistrarError::UnknownService { ref name, .. } if name == "nope"),
        "{err}"
    );
    // Running always sets a bound listen address; these two leave it out or unbound.
    let err = Registrar::builder()
        .registry(MemoryRegistry::new())
        .build()
        .unwrap_err();
    assert!(matches!(err, RegistrarError::MissingListenAddr), "{err}");
    let err = Registrar::builder()
        .registry(MemoryRegistry::new())
        .listen_addr("127.0.0.1:0".parse().unwrap())
        .build()
        .unwrap_err();
    assert!(matches!(err, RegistrarError::UnboundListenAddr(_)), "{err}");
    let err = Running::try_start_with(|b| {
        b.registry(MemoryRegistry::new())
            .only(OURS)
            .override_service("reg.echo", InfoOverride::new().weight(0))
    })
    .await
    .unwrap_err();
    assert!(
        matches!(err, RegistrarError::InvalidWeight { weight: 0, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn no_silent_traps_a_second_override_for_one_service_is_an_error() {
    // A second override for the same service replaced the first without a word.
    let err = Running::try_start_with(|b| {
        b.registry(MemoryRegistry::new())
            .only(OURS)
            .override_service("reg.echo", InfoOverride::new().weight(20))
            .override_service("reg.other", InfoOverride::new().weight(30))
            .override_service("reg.echo", InfoOverride::new().tag("idc", "sh"))
    })
    .await
    .unwrap_err();
    assert!(
        matches!(&err, RegistrarError::DuplicateOverride { service } if service == "reg.echo"),
        "{err}"
    );
    assert!(err.to_string().contains("reg.echo"), "{err}");
}

#[tokio::test]
async fn no_silent_traps_a_zero_threshold_or_interval_is_an_error() {
    // A zero threshold counted as 1; a zero interval checked without a pause.
    for (check, setting) in [
        (
            HealthCheck::tcp().failure_threshold(0),
            "HealthCheck::failure_threshold",
        ),
        (
            HealthCheck::tcp().success_threshold(0),
            "HealthCheck::success_threshold",
        ),
        (
            HealthCheck::tcp().interval(Duration::ZERO),
            "HealthCheck::interval",
        ),
    ] {
        let err = Running::try_start_with(|b| {
            b.registry(MemoryRegistry::new())
                .only(OURS)
                .health_check(check)
        })
        .await
        .unwrap_err();
        assert!(
            matches!(&err, RegistrarError::Zero { setting: s } if *s == setting),
            "{setting}: {err}"
        );
    }
}

/// A memory registry that logs every call, `close` included, in one list.
#[derive(Clone, Default)]
struct Closing {
    inner: MemoryRegistry,
    calls: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Closing {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    fn log(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
}

#[async_trait::async_trait]
impl Registry for Closing {
    async fn register(&self, info: &Info) -> Result<(), RegistryError> {
        self.log(format!("register {}", info.service_name));
        self.inner.register(info).await
    }
    async fn deregister(&self, info: &Info) -> Result<(), RegistryError> {
        self.log(format!("deregister {}", info.service_name));
        self.inner.deregister(info).await
    }
    async fn close(&self) {
        self.log("close".into());
    }
}

#[tokio::test]
async fn serve_closes_every_registry_once_after_deregistering() {
    let (first, second) = (Closing::default(), Closing::default());
    let running = Running::start_with(|b| {
        b.registry(first.clone())
            .registry(second.clone())
            .only(["reg.echo"])
    })
    .await;
    running
        .status
        .clone()
        .wait_for(all_registered)
        .await
        .unwrap();
    running.stop().await;
    for registry in [&first, &second] {
        assert_eq!(
            registry.calls(),
            ["register reg.echo", "deregister reg.echo", "close"]
        );
    }

    // A server that ends on its own: deregistered, then closed all the same.
    let registry = Closing::default();
    let running = Running::serve_with(
        |b| b.registry(registry.clone()).only(["reg.echo"]),
        |listener, _shutdown| async move {
            drop(listener);
            Ok::<_, std::io::Error>(())
        },
    )
    .await;
    running.stop().await;
    let calls = registry.calls();
    assert_eq!(calls.last().map(String::as_str), Some("close"), "{calls:?}");
    assert_eq!(
        calls.iter().filter(|c| *c == "close").count(),
        1,
        "{calls:?}"
    );
}

#[tokio::test]
async fn a_shared_registry_is_closed_only_by_its_last_holder() {
    let registry = Closing::default();
    let shared: std::sync::Arc<dyn Registry> = std::sync::Arc::new(registry.clone());
    let start = |shared: std::sync::Arc<dyn Registry>| {
        Running::start_with(move |b| b.shared_registry(shared).only(["reg.echo"]))
    };
    let first = start(shared.clone()).await;
    let second = start(shared.clone()).await;
    for running in [&first, &second] {
        running
            .status
            .clone()
            .wait_for(all_registered)
            .await
            .unwrap();
    }
    first.stop().await;
    assert!(
        !registry.calls().contains(&"close".to_string()),
        "closed under a registrar still serving: {:?}",
        registry.calls()
    );
    drop(shared);
    second.stop().await;
    let calls = registry.calls();
    assert_eq!(calls.last().map(String::as_str), Some("close"), "{calls:?}");
    assert_eq!(
        calls.iter().filter(|c| *c == "close").count(),
        1,
        "{calls:?}"
    );
}

/// Serves `reg.echo` on a flaky registry, retrying with `backoff`.
async fn serve_echo_retrying(registry: &Flaky, backoff: Backoff) -> Running {
    Running::start_with(|b| {
        b.registry(registry.clone())
            .only(["reg.echo"])
            .backoff(backoff)
    })
    .await
}

#[tokio::test]
async fn failing_registry_is_retried_until_registered_while_the_server_answers() {
    let registry = Flaky::new(6);
    let running = serve_echo_retrying(
        &registry,
        Backoff::new(Duration::from_millis(20), Duration::from_millis(200)),
    )
    .await;
    let (addr, status) = (running.addr, &running.status);

    // While registration keeps failing, the status says so and the server answers.
    let retrying = status
        .wait_for(|s| matches!(s.get("reg.echo"), Some(ServiceStatus::Retrying { attempt, .. }) if *attempt >= 2))
        .await
        .unwrap();
    let Some(ServiceStatus::Retrying { last_error, .. }) = retrying.get("reg.echo") else {
        unreachable!()
    };
    assert!(last_error.contains("injected failure"), "{last_error}");
    assert_eq!(echo::call(addr, "still up").await.unwrap(), "still up");

    poll::until(
        Duration::from_secs(10),
        "registration after retries",
        || async { (status.get("reg.echo") == Some(ServiceStatus::Registered)).then_some(()) },
    )
    .await;
    assert_eq!(
        registry.calls(),
        7,
        "6 failures, then one success, then no more calls"
    );
    assert_eq!(registry.inner.resolve("reg.echo").await.unwrap().len(), 1);
    assert_eq!(echo::call(addr, "after").await.unwrap(), "after");
    running.stop().await;
    assert!(registry.inner.resolve("reg.echo").await.unwrap().is_empty());
}

#[tokio::test]
async fn shutdown_while_still_retrying_stops_retrying() {
    let registry = Flaky::new(u32::MAX);
    let running = serve_echo_retrying(
        &registry,
        Backoff::new(Duration::from_millis(5), Duration::from_millis(20)),
    )
    .await;
    running
        .status
        .wait_for(|s| matches!(s.get("reg.echo"), Some(ServiceStatus::Retrying { .. })))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), running.stop())
        .await
        .expect("serve must return promptly");
    // serve awaits the aborted registration tasks before it returns, so the count is final.
    let calls = registry.calls();
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        registry.calls(),
        calls,
        "no register call after serve returned"
    );
}

#[tokio::test]
async fn watch_sees_the_service_come_and_go() {
    let registry = MemoryRegistry::new();
    let mut watch = registry.watch("reg.other").await.unwrap();
    assert!(watch.next().await.unwrap().all.is_empty());

    let mut running = Running::start_with(|b| b.registry(registry.clone()).only(OURS)).await;

    let added = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(added.added.len(), 1);
    assert_eq!(added.added[0].addr, running.addr);
    assert_eq!(added.added[0].tags["cluster"], "blue");
    let instance = &added.added[0];
    assert_eq!(echo::call(instance.addr, "found").await.unwrap(), "found");

    running.signal_stop();
    let removed = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(removed.removed.len(), 1);
    assert!(removed.all.is_empty());
    running.stop().await;
}

#[tokio::test]
async fn server_that_stops_on_its_own_is_deregistered_and_its_error_returned() {
    let registry = MemoryRegistry::new();
    let (fail, failed) = oneshot::channel::<()>();
    // The running registrar's shutdown signal stays pending until `join` returns.
    let running = Running::serve_with(
        |b| b.registry(registry.clone()).only(["reg.echo"]),
        |listener, _shutdown| async move {
            let _keep = listener;
            let _ = failed.await;
            Err(std::io::Error::other("disk on fire"))
        },
    )
    .await;
    running.status.wait_for(all_registered).await.unwrap();
    fail.send(()).unwrap();
    let err = running.join().await.unwrap_err();
    assert!(matches!(err, RegistrarError::Server(_)), "{err}");
    assert!(err.to_string().contains("disk on fire"));
    assert!(registry.resolve("reg.echo").await.unwrap().is_empty());
}

#[tokio::test]
async fn server_ignoring_shutdown_is_dropped_after_the_grace_period() {
    let running = Running::serve_with(
        |b| {
            b.registry(MemoryRegistry::new())
                .only(["reg.echo"])
                .grace_period(Duration::from_millis(200))
        },
        |listener, _ignored| echo::serve(listener, std::future::pending()),
    )
    .await;
    let addr = running.addr;
    poll::until(Duration::from_secs(5), "server up", || async {
        echo::call(addr, "a").await.ok()
    })
    .await;
    tokio::time::timeout(Duration::from_secs(5), running.stop())
        .await
        .expect("grace period bounds shutdown");
}

#[tokio::test]
async fn unspecified_listen_address_is_advertised_as_this_hosts_address() {
    // Binds every interface but only dials loopback; the advertised address is compared with
    // the interface list, never dialled. Running listens on loopback only, so this registrar is
    // built by hand and never served.
    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let registrar = Registrar::builder()
        .registry(MemoryRegistry::new())
        .listen_addr(listener.local_addr().unwrap())
        .only(["reg.echo"])
        .build()
        .unwrap();
    let advertised = registrar.infos()[0].addr;
    assert_eq!(advertised.port(), port);
    assert!(advertised.is_ipv4());
    assert!(!advertised.ip().is_unspecified());
    let interfaces: Vec<std::net::IpAddr> = if_addrs::get_if_addrs()
        .unwrap()
        .iter()
        .map(|i| i.ip())
        .collect();
    assert!(
        interfaces.contains(&advertised.ip()),
        "{advertised} is not an address of this host: {interfaces:?}"
    );
}

/// `HealthCheck::tcp` connects to the advertised address: a listener that answers keeps the
/// service registered; an address nobody listens on withdraws it.
#[tokio::test]
async fn tcp_health_check_probes_the_advertised_address() {
    let check = || {
        service_registry::HealthCheck::tcp()
            .interval(Duration::from_millis(50))
            .failure_threshold(2)
    };
    let registry = service_registry::MemoryRegistry::new();
    let up = Running::start_with(|b| {
        b.registry(registry.clone())
            .only(["reg.echo"])
            .health_check(check())
    })
    .await;
    up.registered(Duration::from_secs(5)).await;

    // A port that was just bound and released: nothing listens there.
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let down = Running::start_with(|b| {
        b.registry(service_registry::MemoryRegistry::new())
            .only(["reg.echo"])
            .advertise_addr(dead)
            .health_check(check())
    })
    .await;
    poll::until(Duration::from_secs(5), "withdrawn as unhealthy", || async {
        match down.status.get("reg.echo") {
            Some(ServiceStatus::Unhealthy { reason }) if reason.contains("cannot connect") => {
                Some(())
            }
            _ => None,
        }
    })
    .await;
    // Many checks later the reachable one is still registered.
    assert_eq!(up.status.get("reg.echo"), Some(ServiceStatus::Registered));
    assert_eq!(registry.resolve("reg.echo").await.unwrap().len(), 1);
    down.stop().await;
    up.stop().await;
}
