//! A volo-thrift client that finds the echo only through `VoloDiscover` (etcd or Nacos) and
//! balances with this crate's `Balancer` (`VoloBalance`, outcomes reported by `ReportLayer`).
//! volo-thrift's default discover finds nothing, so the client is given both.
//!
//! ```text
//! ETCD_ENDPOINTS=http://127.0.0.1:2379 cargo run -p examples --features volo,etcd --example volo_echo_client
//! ```
//!
//! Makes `CALLS` calls (default 10), one per `INTERVAL_MS` (default 100), and prints
//! `reply from <server>: echo <n>` for each (or `failed: <error>`), then `calls <n> failed <m>`.

use std::error::Error;
use std::time::Duration;

use examples::volo_common::{discovery_from_env, echo, ECHO};
use service_registry::volo::{ReportLayer, VoloBalance, VoloDiscover};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    examples::init_logging();
    let discover = VoloDiscover::new(discovery_from_env()?);
    let balance = VoloBalance::default();
    let client = echo::EchoClientBuilder::new(ECHO)
        .load_balance(balance.clone())
        .discover(discover)
        .retry_count(1)
        .layer_inner(ReportLayer::new(balance))
        .build();
    let (calls, interval) = (env_number("CALLS", 10), env_number("INTERVAL_MS", 100));
    let mut failed = 0;
    for n in 0..calls {
        let request = echo::EchoRequest {
            message: format!("echo {n}").into(),
        };
        match client.echo(request).await {
            Ok(reply) => println!("reply from {}: {}", reply.server, reply.message),
            Err(err) => {
                failed += 1;
                println!("failed: {err}");
            }
        }
        tokio::time::sleep(Duration::from_millis(interval)).await;
    }
    println!("calls {calls} failed {failed}");
    Ok(())
}
