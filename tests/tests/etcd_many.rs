//! 500 annotated services in one process, registered into real etcd.
#![cfg(feature = "etcd")]

use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use service_registry::etcd::{EtcdConfig, EtcdRegistry};
use service_registry::{Registrar, ServiceStatus};
use tests::echo;
use tests::fixtures::etcd::Etcd;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

include!(concat!(env!("OUT_DIR"), "/many_services.rs"));

#[tokio::test]
async fn five_hundred_services_register_and_deregister() {
    let etcd = Etcd::start().await;
    let registry = EtcdRegistry::new(EtcdConfig::new(etcd.endpoints())).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    // Only the generated services: other #[service] types linked from the test library (the
    // campaign's) are not part of this test.
    let many: Vec<String> = (0..500).map(|i| format!("many.svc{i:03}")).collect();
    let registrar = Registrar::builder()
        .registry(registry.clone())
        .listen_addr(listener.local_addr().unwrap())
        .only(many.iter().map(String::as_str))
        .shutdown_signal(async {
            let _ = stopped.await;
        })
        .build()
        .unwrap();
    assert_eq!(registrar.infos().len(), 500);
    let status = registrar.status();
    let started = Instant::now();
    let task = tokio::spawn(registrar.serve(|shutdown| echo::serve(listener, shutdown)));
    tokio::time::timeout(
        Duration::from_secs(30),
        status.wait_for(|s| s.values().all(|s| *s == ServiceStatus::Registered)),
    )
    .await
    .expect("500 services registered within 30 s");
    println!("500 services registered in {:?}", started.elapsed());

    let mut client = etcd.client().await;
    let count = |c: &mut etcd_client::Client| {
        let mut c = c.clone();
        async move {
            c.get(
                "kitex/registry-etcd/many.",
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .unwrap()
            .count()
        }
    };
    assert_eq!(count(&mut client).await, 500);
    let kv = client
        .get(
            "kitex/registry-etcd/many.svc042/",
            Some(GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    assert!(kv.kvs()[0]
        .value_str()
        .unwrap()
        .contains(r#""tags":{"n":"42"}"#));
    let leases = client.leases().await.unwrap();
    assert_eq!(leases.leases().len(), 1, "one lease for the whole process");

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(count(&mut client).await, 0);
    registry.close().await;
    assert!(
        client.leases().await.unwrap().leases().is_empty(),
        "close revokes the lease"
    );
}
