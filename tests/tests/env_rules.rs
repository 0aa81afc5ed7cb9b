//! The environment rule of `service_registry::env`, against the process environment and a real
//! etcd: a value set in code is never beaten by a variable outside `from_env`; `from_env`
//! returns `Result` on every backend and a bad value names its variable; the registrar's
//! operator knobs win over the builder and say so; a registrar without a registry says where its
//! services went.
//!
//! A binary of its own: these tests set process variables (serialized by `ENV`, so no test sees
//! another's) and capture the log with a global subscriber installed before any event.
#![cfg(all(feature = "etcd", feature = "zookeeper", feature = "nacos"))]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use etcd_client::GetOptions;
use service_registry::env::{
    EnvError, DRAIN_DELAY_ENV, ETCD_ENDPOINTS_ENV, ETCD_LEASE_TTL_ENV, KITEX_ETCD_LEASE_TTL_ENV,
    NACOS_SERVER_PORT_ENV, ZOOKEEPER_SESSION_TIMEOUT_ENV,
};
use service_registry::etcd::{EtcdConfig, EtcdRegistry};
use service_registry::nacos::NacosConfig;
use service_registry::zookeeper::ZookeeperConfig;
use service_registry::{service, Info, Registrar, RegistrarError, Registry};
use tests::fixtures::etcd::Etcd;
use tests::poll;

#[service(name = "env-rules.svc")]
pub struct Svc;

/// Held by every test for its whole run: the process environment is one for all threads.
static ENV: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Everything logged by the process since the first test started.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The global log capture, installed once, before any test logs anything.
fn log() -> &'static Captured {
    static LOG: OnceLock<Captured> = OnceLock::new();
    LOG.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        captured
    })
}

/// The log since `from` (a length of an earlier [`logged`]).
fn logged_since(from: usize) -> String {
    String::from_utf8_lossy(&log().0.lock().unwrap()[from..]).into_owned()
}

fn logged() -> usize {
    log().0.lock().unwrap().len()
}

fn clear(variables: &[&str]) {
    for variable in variables {
        std::env::remove_var(variable);
    }
}

/// The TTL etcd granted the lease of the one key under `kitex/registry-etcd/env-rules.svc/`.
async fn granted_ttl(etcd: &Etcd) -> i64 {
    let lease = poll::until(
        Duration::from_secs(5),
        "the registration's key in etcd",
        || async {
            let mut client = etcd.client().await;
            let response = client
                .get(
                    "kitex/registry-etcd/env-rules.svc/",
                    Some(GetOptions::new().with_prefix()),
                )
                .await
                .ok()?;
            response.kvs().first().map(|kv| kv.lease())
        },
    )
    .await;
    let mut client = etcd.client().await;
    client
        .lease_time_to_live(lease, None)
        .await
        .unwrap()
        .granted_ttl()
}

/// Registers one instance through `config`, reads the lease TTL etcd granted, and closes.
async fn ttl_granted_for(etcd: &Etcd, config: EtcdConfig) -> i64 {
    let registry = EtcdRegistry::new(config).unwrap();
    let info = Info::new("env-rules.svc", "127.0.0.1:7001".parse().unwrap());
    registry.register(&info).await.unwrap();
    let ttl = granted_ttl(etcd).await;
    registry.close().await;
    ttl
}

#[tokio::test]
async fn a_lease_ttl_set_in_code_is_not_beaten_by_the_variable_outside_from_env() {
    log();
    let _env = ENV.lock().await;
    let etcd = Etcd::start().await;
    std::env::set_var(ETCD_LEASE_TTL_ENV, "40");
    std::env::set_var(KITEX_ETCD_LEASE_TTL_ENV, "50");
    std::env::set_var(ETCD_ENDPOINTS_ENV, etcd.endpoint());

    // Code only: the variables are not read.
    let code = EtcdConfig::new(etcd.endpoints()).lease_ttl(Duration::from_secs(5));
    assert_eq!(ttl_granted_for(&etcd, code).await, 5);

    // from_env reads them (ours before Kitex's) ...
    let from_env = EtcdConfig::from_env().unwrap();
    assert_eq!(from_env.endpoints(), [etcd.endpoint()]);
    assert_eq!(ttl_granted_for(&etcd, from_env).await, 40);
    // ... and a setter called on its result wins.
    let overridden = EtcdConfig::from_env()
        .unwrap()
        .lease_ttl(Duration::from_secs(6));
    assert_eq!(ttl_granted_for(&etcd, overridden).await, 6);

    clear(&[
        ETCD_LEASE_TTL_ENV,
        KITEX_ETCD_LEASE_TTL_ENV,
        ETCD_ENDPOINTS_ENV,
    ]);
}

#[tokio::test]
async fn from_env_is_a_result_on_every_backend_and_a_bad_value_names_its_variable() {
    log();
    let _env = ENV.lock().await;
    let names = |err: EnvError, variable: &str| {
        let text = err.to_string();
        assert!(text.contains(variable), "{text}");
    };

    std::env::set_var(ETCD_LEASE_TTL_ENV, "ten");
    names(EtcdConfig::from_env().unwrap_err(), ETCD_LEASE_TTL_ENV);
    clear(&[ETCD_LEASE_TTL_ENV]);

    // Was silently ignored (the default 10 s applied).
    std::env::set_var(ZOOKEEPER_SESSION_TIMEOUT_ENV, "ten");
    names(
        ZookeeperConfig::from_env().unwrap_err(),
        ZOOKEEPER_SESSION_TIMEOUT_ENV,
    );
    std::env::set_var(ZOOKEEPER_SESSION_TIMEOUT_ENV, "4");
    let config = ZookeeperConfig::from_env().unwrap();
    assert!(
        format!("{config:?}").contains("session_timeout: 4s"),
        "{config:?}"
    );
    clear(&[ZOOKEEPER_SESSION_TIMEOUT_ENV]);

    std::env::set_var(NACOS_SERVER_PORT_ENV, "http");
    names(NacosConfig::from_env().unwrap_err(), NACOS_SERVER_PORT_ENV);
    clear(&[NACOS_SERVER_PORT_ENV]);

    // Not UTF-8: an error naming the variable, not "unset".
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let bad = std::ffi::OsStr::from_bytes(b"\xff\xfe");
        std::env::set_var(ZOOKEEPER_SESSION_TIMEOUT_ENV, bad);
        let err = ZookeeperConfig::from_env().unwrap_err();
        assert!(
            matches!(err, EnvError::NotUnicode { variable } if variable == ZOOKEEPER_SESSION_TIMEOUT_ENV),
            "{err}"
        );
        clear(&[ZOOKEEPER_SESSION_TIMEOUT_ENV]);
    }

    assert!(EtcdConfig::from_env().is_ok());
    assert!(ZookeeperConfig::from_env().is_ok());
    assert!(NacosConfig::from_env().is_ok());
}

fn registrar(drain: Option<Duration>) -> Result<Registrar, RegistrarError> {
    let builder = Registrar::builder()
        .registry(service_registry::MemoryRegistry::new())
        .listen_addr("127.0.0.1:7".parse().unwrap())
        .only(["env-rules.svc"]);
    match drain {
        Some(delay) => builder.drain_delay(delay),
        None => builder,
    }
    .build()
}

#[tokio::test]
async fn an_operator_knob_wins_over_the_builder_and_says_so() {
    log();
    let _env = ENV.lock().await;
    std::env::set_var(DRAIN_DELAY_ENV, "250ms");
    let from = logged();
    let built = registrar(Some(Duration::from_secs(3))).unwrap();
    assert_eq!(built.drain_delay(), Duration::from_millis(250));
    let text = logged_since(from);
    assert!(
        text.lines()
            .any(|l| l.contains("WARN") && l.contains(DRAIN_DELAY_ENV) && l.contains("3s")),
        "{text}"
    );
    // Without a value in code there is nothing to replace: no warning.
    let from = logged();
    assert_eq!(
        registrar(None).unwrap().drain_delay(),
        Duration::from_millis(250)
    );
    assert!(!logged_since(from).contains(DRAIN_DELAY_ENV));

    std::env::set_var(DRAIN_DELAY_ENV, "soon");
    let err = registrar(None).unwrap_err();
    assert!(
        matches!(
            &err,
            RegistrarError::Env(EnvError::Invalid { variable, value, .. })
                if *variable == DRAIN_DELAY_ENV && value == "soon"
        ),
        "{err}"
    );
    clear(&[DRAIN_DELAY_ENV]);
    assert_eq!(
        registrar(Some(Duration::from_secs(3)))
            .unwrap()
            .drain_delay(),
        Duration::from_secs(3)
    );
}

#[tokio::test]
async fn a_registrar_without_a_registry_says_it_registers_into_the_process_memory_registry() {
    log();
    let _env = ENV.lock().await;
    let from = logged();
    Registrar::builder()
        .listen_addr("127.0.0.1:7".parse().unwrap())
        .only(["env-rules.svc"])
        .build()
        .unwrap();
    let text = logged_since(from);
    assert!(
        text.lines()
            .any(|l| l.contains("WARN") && l.contains("MemoryRegistry::global()")),
        "{text}"
    );
    let from = logged();
    registrar(None).unwrap();
    assert!(!logged_since(from).contains("MemoryRegistry::global()"));
}
