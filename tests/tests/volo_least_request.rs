//! Least request through the Volo adapter (issue 20): the `ReportLayer` of a volo-grpc client
//! counts each call in flight to its instance, which `Strategy::LeastRequest` picks by. Four
//! greeters registered through the `Registrar`, one answering each call after 50 ms; 16
//! callers, each waiting for its reply, make 100 calls apiece through one client. Weighted
//! random on the same greeters, side by side, is the control.
#![cfg(feature = "volo")]

mod volo_support;

use std::sync::Arc;
use std::time::Duration;

use service_registry::balance::{Balancer, Strategy};
use service_registry::volo::{VoloBalance, VoloDiscover};
use service_registry::{Discovery, MemoryRegistry, Registry};
use volo_support::{client_over, hello, start_greeter, start_slow_greeter, SERVICE};

const DRAIN: Duration = Duration::from_millis(100);
const SLOW: Duration = Duration::from_millis(50);
const CALLERS: usize = 16;
const CALLS_EACH: usize = 100;

/// The share of `CALLERS × CALLS_EACH` calls through a client with `strategy` that the
/// greeter at `slow` answered.
async fn slow_share(registry: &MemoryRegistry, slow: &str, strategy: Strategy) -> f64 {
    let discovery: Arc<dyn Discovery> = Arc::new(registry.clone());
    let balance = VoloBalance::new(Balancer::builder(strategy));
    let (client, _) = client_over(VoloDiscover::new(discovery), SERVICE, balance);
    let mut callers = Vec::new();
    for _ in 0..CALLERS {
        let client = client.clone();
        let slow = slow.to_string();
        callers.push(tokio::spawn(async move {
            let mut to_slow = 0usize;
            for _ in 0..CALLS_EACH {
                let by = hello(&client).await.expect("every call succeeds");
                to_slow += usize::from(by == slow);
            }
            to_slow
        }));
    }
    let mut to_slow = 0;
    for caller in callers {
        to_slow += caller.await.unwrap();
    }
    to_slow as f64 / (CALLERS * CALLS_EACH) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_volo_least_request_sends_few_calls_to_a_slow_instance() {
    let registry = MemoryRegistry::new();
    let shared: Arc<dyn Registry> = Arc::new(registry.clone());
    let slow = start_slow_greeter(shared.clone(), DRAIN, SLOW).await;
    let mut greeters = vec![slow];
    for _ in 0..3 {
        greeters.push(start_greeter(shared.clone(), DRAIN).await);
    }
    let slow_addr = greeters[0].addr.to_string();
    let least = slow_share(&registry, &slow_addr, Strategy::LeastRequest).await;
    let random = slow_share(&registry, &slow_addr, Strategy::WeightedRandom).await;
    eprintln!(
        "slow greeter's share of {} calls: least request {:.2} %, weighted random {:.2} %",
        CALLERS * CALLS_EACH,
        least * 100.0,
        random * 100.0
    );
    // Both draws on the slow one: 1/16 = 6.25 %, and little more once it holds calls.
    assert!(least < 0.12, "least request: {:.2} %", least * 100.0);
    assert!(random > 0.18, "weighted random: {:.2} %", random * 100.0);
    for greeter in greeters {
        greeter.stop().await;
    }
}
