//! Secrets against a real Nacos (rnacos) with auth: the password shows in no `Debug`, error,
//! status or log, and the log says once per registry or discovery that credentials go
//! unencrypted. A binary of its own: it captures the log with a subscriber of its own, which
//! sees events only from callsites first reached after it was set (tracing caches a callsite's
//! interest), so no other test may reach them first.
#![cfg(feature = "nacos")]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use service_registry::nacos::{NacosConfig, NacosDiscovery, NacosRegistry};
use service_registry::{Backoff, Discovery, Health, Info, Registry};
use tests::fixtures::nacos::{Nacos, NacosOptions};
use tests::proxy::FaultProxy;

const PASSWORD: &str = "pw-S3cr3t-8d41";
const TOKEN: &str = "tok-5f3a9c77e1";

fn assert_no_secret(text: &str) {
    assert!(!text.contains(PASSWORD), "the password shows: {text}");
    assert!(!text.contains(TOKEN), "the token shows: {text}");
}

/// Everything logged on this thread, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How often the plain-text warning was logged.
fn plain_text_warnings(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("WARN") && l.contains("go over plain text"))
        .count()
}

#[tokio::test]
async fn passwords_and_tokens_show_in_no_debug_error_status_or_log_and_plain_text_is_said_once() {
    // A current-thread runtime: every task of the registry logs on this thread.
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let nacos = Nacos::start_with(NacosOptions {
        auth: Some(("admin".into(), PASSWORD.into())),
        ..Default::default()
    })
    .await;
    let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], nacos.grpc_port))).await;
    let good = NacosConfig::new("127.0.0.1", nacos.http_port)
        .grpc_port(proxy.addr().port())
        .user("admin", PASSWORD)
        .heartbeat(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(10))
        .backoff(Backoff::new(
            Duration::from_millis(50),
            Duration::from_millis(500),
        ));

    // A wrong password: the error and the status name the user, never the password tried.
    let wrong =
        NacosRegistry::new(good.clone().user("admin", format!("{PASSWORD}-wrong"))).unwrap();
    let info = Info::new("auth.debug", "127.0.0.1:7001".parse().unwrap());
    let err = wrong.register(&info).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(
        text.contains("refused the credentials of user `admin`"),
        "{text}"
    );
    assert_no_secret(&text);
    let health = wrong.health().unwrap().borrow().clone();
    assert_no_secret(&format!("{health:?}"));
    for shown in [
        format!("{wrong:?}"),
        format!("{:?}", wrong.config()),
        format!("{:#?}", wrong.config()),
    ] {
        assert_no_secret(&shown);
    }
    assert!(format!("{:?}", wrong.config()).contains("admin"));
    wrong.close().await;

    // The right one: registered, found, and its connection replaced once (a second login).
    let registry = NacosRegistry::new(good.clone()).unwrap();
    registry.register(&info).await.unwrap();
    let discovery = NacosDiscovery::new(good.clone());
    assert_eq!(discovery.resolve("auth.debug").await.unwrap().len(), 1);
    assert_no_secret(&format!("{registry:?} {discovery:?}"));
    let mut health = registry.health().unwrap();
    health.borrow_and_update();
    proxy.cut();
    health.changed().await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(15),
        health.wait_for(|h| *h == Health::Healthy),
    )
    .await
    .expect("connected again")
    .unwrap();
    registry.deregister(&info).await.unwrap();
    registry.close().await;

    let log = captured.text();
    assert_no_secret(&log);
    // Said once per registry or discovery built with a user (three here), not per connection
    // or login.
    let logins = log.matches("Nacos connection up").count();
    println!(
        "{} plain-text warnings, {logins} connections up",
        plain_text_warnings(&log)
    );
    assert!(logins >= 2, "the cut made a second connection:\n{log}");
    assert_eq!(plain_text_warnings(&log), 3, "{log}");
}
