//! What the etcd backend does with credentials and with refusals that can pass (issue 18): a
//! full database, a user allowed one service prefix, two processes advertising one address.
//! Each against a real etcd started by the fixture, with the limits or the roles the case needs.
#![cfg(feature = "etcd")]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{
    AlarmAction, AlarmOptions, AlarmType, Client, DeleteOptions, GetOptions, Permission,
};
use service_registry::etcd::{EtcdConfig, EtcdRegistry};
use service_registry::{Backoff, Health, Info, Registry};
use tests::fixtures::etcd::{Etcd, EtcdOptions};
use tests::poll;
use tests::proxy::FaultProxy;

const PREFIX: &str = "kitex/registry-etcd";

fn info(service: &str, port: u16) -> Info {
    Info::new(service, SocketAddr::from(([127, 0, 0, 1], port)))
}

fn key(info: &Info) -> String {
    format!("{PREFIX}/{}/{}", info.service_name, info.addr)
}

async fn start(extra_args: &[&str]) -> Etcd {
    Etcd::start_with(EtcdOptions {
        members: 1,
        extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    })
    .await
}

fn config(endpoints: Vec<String>) -> EtcdConfig {
    EtcdConfig::new(endpoints)
        .lease_ttl(Duration::from_secs(3))
        .backoff(Backoff::new(
            Duration::from_millis(50),
            Duration::from_millis(500),
        ))
}

fn etcd_addr(etcd: &Etcd) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], etcd.members[0].client_port))
}

/// A raw client, as root when `root` gives its password.
async fn raw(etcd: &Etcd, root: Option<&str>) -> Client {
    let mut options = etcd.connect_options();
    if let Some(password) = root {
        options = options.with_user("root", password);
    }
    Client::connect(etcd.endpoints(), Some(options))
        .await
        .expect("raw client connects")
}

/// The store's revision now.
async fn revision(client: &mut Client) -> i64 {
    let response = client.get("revision-probe", None).await.expect("raw read");
    response.header().expect("a header").revision()
}

/// The lease `key` is attached to, or `None` when it does not exist.
async fn lease_of(client: &mut Client, key: &str) -> Option<i64> {
    let response = client.get(key, None).await.expect("raw read");
    response.kvs().first().map(|kv| kv.lease())
}

/// Everything the code under test logs while the guard lives (this thread only: the tests that
/// use it run on a current-thread runtime, so the registry's tasks log here too).
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

impl Captured {
    fn start() -> (Self, tracing::subscriber::DefaultGuard) {
        let captured = Self::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

const PLAIN_TEXT_WARNING: &str = "credentials in plain text";

/// Defect 1 and 13: the password is never in `Debug` (of the config, of the registry, of what
/// `config()` hands out), in errors, in the status or in logs; TLS keys are not in `Debug`
/// either. Credentials over `http://` are logged as a warning, once per registry.
#[tokio::test]
async fn credentials_never_show_and_plain_text_is_warned_once_per_registry() {
    const RIGHT: &str = "right-pw-5f1c9e";
    const WRONG: &str = "wrong-pw-8a3d27";
    const KEY_PEM: &str = "PRIVATE-KEY-MATERIAL-77c1";

    let tls = EtcdConfig::new(["https://127.0.0.1:1"]).tls(
        b"CA".to_vec(),
        Some((b"CERT".to_vec(), KEY_PEM.as_bytes().to_vec())),
    );
    let shown = format!("{tls:?} {tls:#?}");
    assert!(!shown.contains(KEY_PEM), "a TLS key in Debug: {shown}");

    let etcd = start(&[]).await;
    etcd.enable_auth(RIGHT).await;
    let (logs, _guard) = Captured::start();

    let bad = EtcdRegistry::new(config(etcd.endpoints()).user("root", WRONG)).unwrap();
    let shown = format!(
        "{:?} {:#?} {:?} {:#?}",
        bad.config(),
        bad.config(),
        bad,
        bad
    );
    assert!(!shown.contains(WRONG), "the password in Debug: {shown}");
    assert!(
        shown.contains("root"),
        "Debug names the user, not the password: {shown}"
    );
    let err = bad
        .register(&info("creds.bad", 7001))
        .await
        .expect_err("a wrong password is refused");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(WRONG), "the password in an error: {shown}");
    let health = bad.health().unwrap().borrow().clone();
    assert!(
        !format!("{health:?}").contains(WRONG),
        "the password in the status: {health:?}"
    );
    bad.close().await;

    let good = EtcdRegistry::new(config(etcd.endpoints()).user("root", RIGHT)).unwrap();
    good.register(&info("creds.good", 7002)).await.unwrap();
    good.deregister(&info("creds.good", 7002)).await.unwrap();
    good.close().await;

    let text = logs.text();
    assert!(
        !text.contains(WRONG),
        "the wrong password in the logs:\n{text}"
    );
    assert!(!text.contains(RIGHT), "the password in the logs:\n{text}");
    let warnings = text.matches(PLAIN_TEXT_WARNING).count();
    assert_eq!(
        warnings, 2,
        "one plain-text warning per registry (two registries):\n{text}"
    );
}

/// Whether `health` reports a write etcd refuses for now.
fn held_back(health: &Health) -> bool {
    matches!(health, Health::Recovering { last_error, .. } if last_error.contains("space exceeded"))
}

/// Defect 4: a full database (`--quota-backend-bytes` reached, the NOSPACE alarm raised) refuses
/// every put for now. The rewrites nobody waits for (a guard restore, a resumed lease) must keep
/// every registration and say it is not written; once space is freed (compact + defrag +
/// `alarm disarm`) every registration comes back, and nothing still present is deleted as an
/// orphan meanwhile.
#[tokio::test]
async fn a_full_database_keeps_every_registration_until_space_is_freed() {
    let etcd = start(&["--quota-backend-bytes=1048576"]).await;
    let proxy = FaultProxy::start(etcd_addr(&etcd)).await;
    let registry = EtcdRegistry::new(
        config(vec![format!("http://{}", proxy.endpoint())]).lease_ttl(Duration::from_secs(5)),
    )
    .unwrap();
    let infos: Vec<Info> = (0..5).map(|i| info("quota.svc", 7900 + i)).collect();
    for i in &infos {
        registry.register(i).await.unwrap();
    }
    let keys: Vec<String> = infos.iter().map(key).collect();
    let mut client = raw(&etcd, None).await;

    // Fill the database until etcd raises its NOSPACE alarm.
    let filler = vec![b'x'; 64 * 1024];
    let mut filled = None;
    for i in 0..1000 {
        if let Err(err) = client
            .put(format!("filler/{i}"), filler.clone(), None)
            .await
        {
            filled = Some(err.to_string());
            break;
        }
    }
    let filled = filled.expect("etcd refuses puts once its quota is reached");
    assert!(filled.contains("database space exceeded"), "{filled}");

    // Someone deletes a key of ours (deletes pass while the alarm is raised): the guard's
    // restore is refused.
    let mut health = registry.health().unwrap();
    client.delete(keys[0].as_str(), None).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(5), health.wait_for(held_back))
        .await
        .map(|_| ())
        .map_err(|_| health.borrow().clone());
    // The connection is cut twice: each time the lease is resumed and every key put again,
    // refused each time.
    for _ in 0..2 {
        health.borrow_and_update();
        proxy.cut();
        tokio::time::timeout(Duration::from_secs(5), health.changed())
            .await
            .expect("the registry notices the cut")
            .unwrap();
        poll::until(
            Duration::from_secs(10),
            "the registry back on its lease after the cut",
            || {
                let health = health.borrow().clone();
                let connected = proxy.connections() > 0;
                async move {
                    (connected && (health == Health::Healthy || held_back(&health))).then_some(())
                }
            },
        )
        .await;
    }
    let during = health.borrow().clone();

    // Free the space: delete the filler, compact, defragment, disarm.
    client
        .delete("filler/", Some(DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    let now = revision(&mut client).await;
    client.compact(now, None).await.unwrap();
    client.defragment().await.unwrap();
    let alarms = client
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .unwrap();
    for alarm in alarms.alarms() {
        let mut options = AlarmOptions::new();
        options.with_member(alarm.member_id());
        client
            .alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(options))
            .await
            .unwrap();
    }

    let started = Instant::now();
    let back = poll::within(Duration::from_secs(15), Duration::from_millis(50), || {
        let mut client = client.clone();
        let keys = keys.clone();
        async move {
            let response = client
                .get(
                    format!("{PREFIX}/quota.svc/"),
                    Some(GetOptions::new().with_prefix().with_keys_only()),
                )
                .await
                .ok()?;
            let present: Vec<String> = response
                .kvs()
                .iter()
                .map(|kv| kv.key_str().unwrap().to_string())
                .collect();
            (present == keys).then_some(())
        }
    })
    .await;
    let missing: Vec<String> = {
        let response = client
            .get(
                format!("{PREFIX}/quota.svc/"),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
            .unwrap();
        let present: Vec<String> = response
            .kvs()
            .iter()
            .map(|kv| kv.key_str().unwrap().to_string())
            .collect();
        keys.iter()
            .filter(|k| !present.contains(k))
            .cloned()
            .collect()
    };
    assert!(
        back.is_some(),
        "registrations missing 15 s after space was freed: {missing:?}"
    );
    println!(
        "every registration back {:?} after the alarm was disarmed",
        started.elapsed()
    );
    assert!(
        seen.is_ok(),
        "a refused restore must not leave the registry Healthy; it said {:?}",
        seen.err()
    );
    assert!(
        held_back(&during),
        "while every put is refused the registry must say so, not {during:?}"
    );
    poll::until(
        Duration::from_secs(10),
        "the registry healthy once everything is written",
        || {
            let healthy = *health.borrow() == Health::Healthy;
            async move { healthy.then_some(()) }
        },
    )
    .await;
    registry.close().await;
}

/// Defect 5: etcd with auth, and a user whose role may read and write only
/// `kitex/registry-etcd/svc-a/`. The registry cannot watch the whole prefix: it must not loop
/// on it (etcd's revision stays put while nothing changes), a key it may not write is refused
/// alone (the lease of the rest stays), and deregistering works.
#[tokio::test]
async fn a_user_allowed_one_service_prefix_stays_quiet_and_keeps_its_lease() {
    let etcd = start(&[]).await;
    let mut root = raw(&etcd, None).await;
    root.user_add("root", "root-pw", None).await.unwrap();
    root.user_grant_role("root", "root").await.unwrap();
    root.role_add("svc-a-rw").await.unwrap();
    root.role_grant_permission(
        "svc-a-rw",
        Permission::read_write(format!("{PREFIX}/svc-a/")).with_prefix(),
    )
    .await
    .unwrap();
    root.user_add("svc-a-user", "svc-a-pw", None).await.unwrap();
    root.user_grant_role("svc-a-user", "svc-a-rw")
        .await
        .unwrap();
    root.auth_enable().await.unwrap();
    let mut root = raw(&etcd, Some("root-pw")).await;

    let registry =
        EtcdRegistry::new(config(etcd.endpoints()).user("svc-a-user", "svc-a-pw")).unwrap();
    let a = info("svc-a", 7801);
    registry.register(&a).await.unwrap();
    let lease = lease_of(&mut root, &key(&a))
        .await
        .expect("svc-a registered");

    // A key the user may not write fails alone.
    let b = info("svc-b", 7802);
    let refused = tokio::time::timeout(Duration::from_secs(10), registry.register(&b))
        .await
        .expect("svc-b's register answers within 10 s");
    assert!(refused.is_err(), "svc-b is not the user's to write");
    println!("svc-b: {}", refused.unwrap_err());

    let before = revision(&mut root).await;
    // The window the revision is measured over (the scenario, not a wait for a condition).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let grew = revision(&mut root).await - before;
    println!("etcd's revision grew by {grew} in 5 s");
    assert!(grew <= 2, "etcd's revision grew by {grew} in 5 s");
    assert_eq!(
        lease_of(&mut root, &key(&a)).await,
        Some(lease),
        "svc-a's lease was lost over a key of svc-b"
    );
    assert_eq!(*registry.health().unwrap().borrow(), Health::Healthy);

    // The prefix the user may watch is still guarded: a key deleted behind its back returns.
    root.delete(key(&a), None).await.unwrap();
    poll::until(
        Duration::from_secs(3),
        "svc-a's key restored by the per-service guard",
        || {
            let mut root = root.clone();
            let key = key(&a);
            async move { lease_of(&mut root, &key).await.map(|_| ()) }
        },
    )
    .await;

    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(3), registry.deregister(&a))
        .await
        .expect("deregister answers within 3 s")
        .expect("deregister succeeds");
    println!("deregister took {:?}", started.elapsed());
    assert_eq!(
        lease_of(&mut root, &key(&a)).await,
        None,
        "svc-a's key stayed"
    );
    registry.close().await;
}
