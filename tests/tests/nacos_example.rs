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
