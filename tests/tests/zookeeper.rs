//! The ZooKeeper backend against a real ZooKeeper started by the fixture.
#![cfg(feature = "zookeeper")]

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use service_registry::zookeeper::{ZookeeperConfig, ZookeeperDiscovery, ZookeeperRegistry};
use service_registry::{service, Discovery, Info, Registry, RegistryError, ServiceStatus};
use tests::child::{spawn_example, terminate};
use tests::fixtures::zookeeper::ZooKeeper;
use tests::running::Running;
use tests::{echo, poll};
use zookeeper_client::{Acls, Client, CreateMode};

#[service(name = "zk.echo", weight = 30, tag(idc = "hz"))]
pub struct ZkEcho;

#[service(name = "zk.other")]
pub struct ZkOther;

const OURS: [&str; 2] = ["zk.echo", "zk.other"];

fn config(zk: &ZooKeeper) -> ZookeeperConfig {
    ZookeeperConfig::new(zk.connect_string()).session_timeout(Duration::from_secs(4))
}

/// The children of `/{service}` (empty when the parent does not exist).
async fn children(client: &Client, service: &str) -> Vec<String> {
    match client.list_children(&format!("/{service}")).await {
        Ok(mut children) => {
            children.sort();
            children
        }
        Err(zookeeper_client::Error::NoNode) => Vec::new(),
        Err(err) => panic!("list /{service}: {err}"),
    }
}

#[tokio::test]
async fn reads_what_kitex_writes_and_skips_garbage() {
    let zk = ZooKeeper::start().await;
    let raw = zk.client(None).await;
    let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
    raw.create("/go.svc", b"", &persistent).await.unwrap();
    for (name, data) in [
        ("127.0.0.1:1", &br#"{"Weight":10,"Tags":{"idc":"xxx"}}"#[..]),
        ("127.0.0.1:2", br#"{"Weight":0,"Tags":null}"#),
        ("fd00::1:3", br#"{"Weight":5,"Tags":{},"Extra":true}"#),
        ("127.0.0.1:4", b"{broken"),
        ("no-port", br#"{"Weight":5}"#),
    ] {
        raw.create(&format!("/go.svc/{name}"), data, &persistent)
            .await
            .unwrap();
    }
    let discovery = ZookeeperDiscovery::new(config(&zk));
    // In address order (one host here: port order).
    let found = discovery.resolve("go.svc").await.unwrap();
    let summary: Vec<(u16, u32, usize)> = found
        .iter()
        .map(|i| (i.addr.port(), i.weight, i.tags.len()))
        .collect();
    assert_eq!(summary, [(1, 10, 1), (2, 10, 0), (3, 5, 0)]);
    assert!(discovery.resolve("absent.svc").await.unwrap().is_empty());
}

#[tokio::test]
async fn example_exits_zero_on_sigterm_and_removes_its_nodes() {
    let zk = ZooKeeper::start().await;
    let (mut child, registered) =
        spawn_example("zookeeper", &[("ZOOKEEPER_ENDPOINTS", zk.connect_string())]).await;
    let raw = zk.client(None).await;
    assert_eq!(children(&raw, &registered[0].0).await.len(), 1);
    terminate(&child);
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    for (service, _) in &registered {
        assert!(
            children(&raw, service).await.is_empty(),
            "{service} still has nodes after exit"
        );
    }
}

#[tokio::test]
async fn forced_session_expiry_recreates_the_nodes_within_two_seconds() {
    let zk = ZooKeeper::start().await;
    // The client learns that its session was taken over at its next ping (a third of the session
    // timeout), so the timeout here is 3 s.
    let registry =
        ZookeeperRegistry::new(config(&zk).session_timeout(Duration::from_secs(3))).unwrap();
    let running = Running::start(registry.clone(), &OURS).await;
    running.registered(Duration::from_secs(10)).await;
    let session = registry.session().expect("a live session");
    let old_id = session.id();

    // Another client takes over the session and closes it: the server expires it. Our client
    // may win the session back first (then the thief's close is refused as "session moved"), so
    // the takeover is repeated until the session really ends.
    let servers = zk.connect_string();
    let raw = zk.client(None).await;
    let mut expired = None;
    for _ in 0..10 {
        let connect = Client::connector()
            .with_session(session.clone())
            .with_session_timeout(Duration::from_secs(3))
            .connect(&servers);
        let Ok(Ok(thief)) = tokio::time::timeout(Duration::from_secs(3), connect).await else {
            continue;
        };
        drop(thief);
        let closed = Instant::now();
        while closed.elapsed() < Duration::from_secs(2) {
            if registry.session().is_none_or(|s| s.id() != old_id) {
                expired = Some(closed);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if expired.is_some() {
            break;
        }
    }
    let expired = expired.expect("the session was taken over and closed");
    let back = expired.elapsed();
    let recreated = poll::until(
        Duration::from_secs(2),
        "nodes recreated within 2 s",
        || async {
            let owner_ok = match raw.get_data(&format!("/zk.echo/{}", running.addr)).await {
                Ok((_, stat)) => registry
                    .session()
                    .is_some_and(|s| s.id().0 == stat.ephemeral_owner),
                Err(_) => false,
            };
            let other = !children(&raw, "zk.other").await.is_empty();
            (owner_ok && other).then(|| expired.elapsed())
        },
    )
    .await;
    println!("session expired: new session after {back:?}, nodes recreated after {recreated:?}");
    running.registered(Duration::from_secs(2)).await;
    running.stop().await;
    registry.close().await;
}

#[tokio::test]
async fn zookeeper_restart_brings_the_nodes_back_while_the_service_answers() {
    let mut zk = ZooKeeper::start().await;
    let registry = ZookeeperRegistry::new(config(&zk)).unwrap();
    let running = Running::start(registry.clone(), &OURS).await;
    running.registered(Duration::from_secs(10)).await;
    // A watcher opened before the outage must follow the service after it.
    let discovery = ZookeeperDiscovery::new(config(&zk));
    let mut watch = discovery.watch("zk.echo").await.unwrap();
    assert_eq!(watch.next().await.unwrap().all.len(), 1);

    zk.stop();
    // Down past the session timeout, so the session cannot survive.
    let outage_end = Instant::now() + Duration::from_secs(6);
    while Instant::now() < outage_end {
        assert_eq!(echo::call(running.addr, "up?").await.unwrap(), "up?");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = running.status.snapshot();
    assert!(
        status
            .values()
            .all(|s| matches!(s, ServiceStatus::Retrying { .. })),
        "{status:?}"
    );
    zk.restart().await;
    let answering = Instant::now();
    let raw = zk.client(None).await;
    let back = poll::until(
        Duration::from_secs(15),
        "nodes back after the restart",
        || async {
            let echo_back = children(&raw, "zk.echo").await == vec![running.addr.to_string()];
            let other_back = children(&raw, "zk.other").await == vec![running.addr.to_string()];
            (echo_back && other_back).then(|| answering.elapsed())
        },
    )
    .await;
    println!("nodes back {back:?} after ZooKeeper answered");
    running.registered(Duration::from_secs(5)).await;
    // The nodes must belong to the registry's new session (a node of the old, expired session
    // would vanish any moment).
    let session = registry.session().expect("a live session").id().0;
    for service in OURS {
        let (_, stat) = raw
            .get_data(&format!("/{service}/{}", running.addr))
            .await
            .unwrap();
        assert_eq!(
            stat.ephemeral_owner, session,
            "{service} not owned by the new session"
        );
    }
    running.stop().await;
    // The removal after the restart reaches the watcher (changes seen during the outage and
    // recovery may come first).
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let change = watch.next().await.expect("the watch must not end");
            if change.all.is_empty() && !change.removed.is_empty() {
                return;
            }
        }
    })
    .await
    .expect("the watcher saw the removal after the restart");
    registry.close().await;
}

/// What the registry writes is exactly Kitex's (path, data, an ephemeral node under a persistent
/// one); nodes written with a digest user are world-readable and nobody else may delete or
/// overwrite them. (Registering, resolving, watching and a graceful stop on every backend:
/// `conformance::register_resolve_watch_and_graceful_stop`; a wrong password on every backend:
/// `conformance::zookeeper_auth::wrong_password_is_a_clear_error_and_the_service_keeps_serving`.)
#[tokio::test]
async fn writes_kitex_nodes_that_a_digest_acl_protects() {
    let zk = ZooKeeper::start().await;
    let owner = ZookeeperRegistry::new(config(&zk).user("alice", "right")).unwrap();
    let mut info = Info::new("zk.secure", "127.0.0.1:7001".parse().unwrap());
    info.tags.insert("idc".into(), "hz".into());
    owner.register(&info).await.unwrap();
    let path = "/zk.secure/127.0.0.1:7001";

    // Anyone may read (Kitex clients without credentials still resolve) exactly Kitex's path
    // and data, on an ephemeral node under a persistent service node...
    let anonymous = zk.client(None).await;
    let (data, stat) = anonymous.get_data(path).await.unwrap();
    assert_eq!(data, br#"{"Weight":10,"Tags":{"idc":"hz"}}"#);
    assert_ne!(
        stat.ephemeral_owner, 0,
        "the instance node must be ephemeral"
    );
    let (_, parent) = anonymous.get_data("/zk.secure").await.unwrap();
    assert_eq!(
        parent.ephemeral_owner, 0,
        "the service node must be persistent"
    );
    let found = ZookeeperDiscovery::new(config(&zk))
        .resolve("zk.secure")
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    // ...but nobody else may delete or overwrite.
    let mallory = zk.client(Some("mallory:other")).await;
    assert!(matches!(
        mallory.delete(path, None).await,
        Err(zookeeper_client::Error::NoAuth)
    ));
    assert!(matches!(
        mallory.set_data(path, b"x", None).await,
        Err(zookeeper_client::Error::NoAuth)
    ));
    assert!(matches!(
        anonymous.delete(path, None).await,
        Err(zookeeper_client::Error::NoAuth)
    ));

    owner.deregister(&info).await.unwrap();
    assert!(anonymous
        .list_children("/zk.secure")
        .await
        .unwrap()
        .is_empty());
    owner.close().await;
}

#[tokio::test]
async fn many_registrations_and_idempotent_calls() {
    let zk = ZooKeeper::start().await;
    let registry = ZookeeperRegistry::new(config(&zk)).unwrap();
    let infos: Vec<Info> = (0..300)
        .map(|i| {
            Info::new(
                format!("zk.many{}", i % 30),
                format!("127.0.0.1:{}", 20000 + i).parse().unwrap(),
            )
        })
        .collect();
    let calls: Vec<_> = infos
        .iter()
        .map(|info| {
            let registry = registry.clone();
            let info = info.clone();
            tokio::spawn(async move { registry.register(&info).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let raw = zk.client(None).await;
    let mut total = 0;
    for i in 0..30 {
        total += children(&raw, &format!("zk.many{i}")).await.len();
    }
    assert_eq!(total, 300);
    registry.register(&infos[0]).await.unwrap();
    registry.deregister(&infos[0]).await.unwrap();
    registry.deregister(&infos[0]).await.unwrap();
    assert!(matches!(
        registry
            .register(&Info::new("a/b", "127.0.0.1:1".parse().unwrap()))
            .await,
        Err(RegistryError::InvalidInfo { .. })
    ));
    registry.close().await;
    let mut left = 0;
    for i in 0..30 {
        left += children(&raw, &format!("zk.many{i}")).await.len();
    }
    assert_eq!(left, 0, "close deletes every node");
}

#[tokio::test]
async fn connect_string_chroot_and_root_prefix_are_honoured() {
    let zk = ZooKeeper::start().await;
    let raw = zk.client(None).await;
    raw.create(
        "/apps",
        b"",
        &CreateMode::Persistent.with_acls(Acls::anyone_all()),
    )
    .await
    .unwrap();
    let chrooted = ZookeeperConfig::new(format!("{}/apps", zk.connect_string())).root("/kitex");
    let registry = ZookeeperRegistry::new(chrooted.clone()).unwrap();
    let info = Info::new("zk.rooted", "127.0.0.1:7201".parse().unwrap());
    registry.register(&info).await.unwrap();
    let (data, _) = raw
        .get_data("/apps/kitex/zk.rooted/127.0.0.1:7201")
        .await
        .unwrap();
    assert_eq!(data, br#"{"Weight":10,"Tags":{}}"#);
    let found = ZookeeperDiscovery::new(chrooted)
        .resolve("zk.rooted")
        .await
        .unwrap();
    assert_eq!(found[0].addr, info.addr);
    registry.close().await;
}

/// A `tracing` writer into a shared buffer, to read what the library logged.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

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
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Issue 18, defect 1: the digest password never shows: not in the config's or the registry's
/// `Debug`, not in an error (a refused identity), not in the status, not in any log line at
/// any level (the library's and the ZooKeeper client's). The user is named.
#[tokio::test]
async fn the_digest_password_never_shows_in_debug_errors_status_or_logs() {
    const RIGHT: &str = "pw-R1ght-4f8e";
    const WRONG: &str = "pw-Wr0ng-9c1d";
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // The test's runtime is current-thread: every task of the registries logs on this thread.
    let _logging = tracing::subscriber::set_default(subscriber);

    let zk = ZooKeeper::start().await;
    let owner_config = config(&zk).user("alice", RIGHT);
    let owner = ZookeeperRegistry::new(owner_config.clone()).unwrap();
    let running = Running::start(owner.clone(), &OURS).await;
    running.registered(Duration::from_secs(10)).await;
    let info = Info::new("zk.secret", "127.0.0.1:7101".parse().unwrap());
    owner.register(&info).await.unwrap();

    // Another password is another identity: refused on alice's node.
    let wrong_config = config(&zk).user("alice", WRONG);
    let wrong = ZookeeperRegistry::new(wrong_config.clone()).unwrap();
    let err = wrong.register(&info).await.unwrap_err();
    let discovery = ZookeeperDiscovery::new(wrong_config.clone());
    let found = discovery.resolve("zk.secret").await.unwrap();
    assert_eq!(found.len(), 1);

    let shown = [
        ("config Debug", format!("{owner_config:?}")),
        ("config Debug (pretty)", format!("{wrong_config:#?}")),
        ("registry Debug", format!("{owner:?} {wrong:?}")),
        ("discovery Debug", format!("{discovery:?}")),
        ("error Display", err.to_string()),
        ("error Debug", format!("{err:?}")),
        (
            "health",
            format!(
                "{:?} {:?}",
                *owner.health().unwrap().borrow(),
                *wrong.health().unwrap().borrow()
            ),
        ),
        ("status", format!("{:?}", running.status.snapshot())),
    ];
    running.stop().await;
    wrong.close().await;
    owner.close().await;
    let logs = captured.text();
    assert!(!logs.is_empty(), "nothing was logged");
    for (what, text) in shown.iter().chain([&("logs", logs)]) {
        for secret in [RIGHT, WRONG] {
            assert!(!text.contains(secret), "{what} shows the password: {text}");
        }
    }
    assert!(
        shown[0].1.contains("alice"),
        "the user is named: {}",
        shown[0].1
    );
    assert!(
        shown[4].1.contains("alice"),
        "the error names the user: {}",
        shown[4].1
    );
}
