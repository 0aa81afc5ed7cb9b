//! The Nacos example run as a user would: `cargo run -p examples --features nacos --example
//! nacos` against a real Nacos (rnacos) started by the fixture.
#![cfg(feature = "nacos")]

use std::time::Duration;

use serde_json::Value;
use tests::child::{spawn_example, terminate};
use tests::fixtures::nacos::Nacos;

#[tokio::test]
async fn example_exits_zero_on_sigterm_and_deregisters() {
    let nacos = Nacos::start().await;
    let (mut server, registered) = spawn_example(
        "nacos",
        &[
            ("serverAddr", "127.0.0.1".to_string()),
            ("serverPort", nacos.http_port.to_string()),
            ("NACOS_GRPC_PORT", nacos.grpc_port.to_string()),
            ("KITEX_NACOS_ENV_TAGS", "env=test".to_string()),
            ("namespace", "dev".to_string()),
            // SIGTERM deregisters, then serves 3 s more with the connection open: what is
            // gone by then was deregistered, not taken along by a closing connection.
            ("SERVICE_REGISTRY_DRAIN_DELAY", "3s".to_string()),
        ],
    )
    .await;
    for (service, addr) in &registered {
        assert!(
            nacos.list(service).await.is_empty(),
            "{service} is in namespace dev only"
        );
        let hosts: Vec<Value> = nacos.list_in("dev", service).await;
        assert_eq!(hosts.len(), 1, "{service}: {hosts:?}");
        assert_eq!(hosts[0]["port"], addr.port());
        assert_eq!(
            hosts[0]["metadata"]["env"], "test",
            "KITEX_NACOS_ENV_TAGS is metadata"
        );
    }
    terminate(&server);
    let terminated = std::time::Instant::now();
    for (service, _) in &registered {
        tests::poll::until(
            Duration::from_secs(2),
            &format!("{service} deregistered"),
            || async { nacos.list_in("dev", service).await.is_empty().then_some(()) },
        )
        .await;
    }
    println!("deregistered {:?} after SIGTERM", terminated.elapsed());
    assert!(
        server.try_wait().unwrap().is_none(),
        "the example must still run (draining) when its instances are gone"
    );
    assert!(
        terminated.elapsed() < Duration::from_secs(3),
        "deregistered only after the drain"
    );
    let exit = tokio::time::timeout(Duration::from_secs(10), server.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        exit.success(),
        "the example must exit 0 on SIGTERM: {exit:?}"
    );
    for (service, _) in &registered {
        assert!(
            nacos.list_in("dev", service).await.is_empty(),
            "{service} must be gone once the example has exited"
        );
    }
}
