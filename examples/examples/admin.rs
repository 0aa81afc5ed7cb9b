//! A service with an admin endpoint, as an operator rolling a fleet runs it: a readiness gate
//! (a simulated warm-up), an HTTP health check, a drain delay, and an admin listener with
//! Prometheus metrics, a JSON view of the registration status, and routes that take the service
//! out of rotation, put it back, and change its weight live.
//!
//! ```text
//! LISTEN_ADDR=127.0.0.1:3000 ADMIN_ADDR=127.0.0.1:3001 cargo run -p examples --example admin
//! curl http://127.0.0.1:3001/status            # {"admin.demo":{"memory":{"state":"registered"}}}
//! curl -X POST http://127.0.0.1:3001/services/admin.demo/out   # out of rotation, still serving
//! curl -X POST http://127.0.0.1:3001/services/admin.demo/in
//! curl -X POST http://127.0.0.1:3001/services/admin.demo/weight/50
//! curl -X POST http://127.0.0.1:3001/health/down   # the health check fails → withdrawn
//! curl http://127.0.0.1:3001/metrics           # service_registry_* in Prometheus text format
//! ```
//!
//! Registers into the in-memory registry, or into etcd when built with `--features etcd` and
//! `ETCD_ENDPOINTS` is set. `WARMUP_MS` (default 300) delays readiness; SIGINT/SIGTERM drains
//! for `SERVICE_REGISTRY_DRAIN_DELAY` (default 6 s) and stops.

use std::error::Error;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use service_registry::{
    service, ControlHandle, HealthCheck, Registrar, RegistrarBuilder, ServiceStatus,
};

/// The demo service.
#[service(name = "admin.demo", weight = 10, tag(proto = "http"))]
pub struct Demo;

#[derive(Clone)]
struct Admin {
    control: ControlHandle,
    prometheus: PrometheusHandle,
    healthy: Arc<AtomicBool>,
}

fn status_json(status: &ServiceStatus) -> serde_json::Value {
    use serde_json::json;
    match status {
        ServiceStatus::WaitingForReady => json!({"state": "waiting_for_ready"}),
        ServiceStatus::Registering => json!({"state": "registering"}),
        ServiceStatus::Registered => json!({"state": "registered"}),
        ServiceStatus::Retrying {
            attempt,
            last_error,
        } => json!({"state": "retrying", "attempt": attempt, "last_error": last_error}),
        ServiceStatus::Unhealthy { reason } => json!({"state": "unhealthy", "reason": reason}),
        ServiceStatus::OutOfService => json!({"state": "out_of_service"}),
        ServiceStatus::Deregistered => json!({"state": "deregistered"}),
        ServiceStatus::Failed { error } => json!({"state": "failed", "error": error}),
        other => json!({"state": format!("{other:?}")}),
    }
}

fn admin_routes(admin: Admin) -> Router {
    let answer = |result: Result<(), service_registry::RegistrarError>| match result {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(err) => (StatusCode::BAD_REQUEST, format!("{err}\n")),
    };
    Router::new()
        .route(
            "/metrics",
            get(|State(a): State<Admin>| async move { a.prometheus.render() }),
        )
        .route(
            "/status",
            get(|State(a): State<Admin>| async move {
                let detail = a.control.status().detail();
                let view: serde_json::Map<String, serde_json::Value> = detail
                    .iter()
                    .map(|(service, per)| {
                        let per: serde_json::Map<_, _> = per
                            .iter()
                            .map(|(registry, s)| (registry.clone(), status_json(s)))
                            .collect();
                        (service.clone(), per.into())
                    })
                    .collect();
                serde_json::Value::Object(view).to_string()
            }),
        )
        .route(
            "/services/{name}/out",
            post(move |State(a): State<Admin>, Path(name): Path<String>| async move {
                answer(a.control.take_out(&name))
            }),
        )
        .route(
            "/services/{name}/in",
            post(move |State(a): State<Admin>, Path(name): Path<String>| async move {
                answer(a.control.put_back(&name))
            }),
        )
        .route(
            "/services/{name}/weight/{weight}",
            post(
                move |State(a): State<Admin>, Path((name, weight)): Path<(String, u32)>| async move {
                    answer(a.control.set_weight(&name, weight))
                },
            ),
        )
        .route(
            "/health/{state}",
            post(|State(a): State<Admin>, Path(state): Path<String>| async move {
                a.healthy.store(state == "up", Ordering::SeqCst);
                "ok\n"
            }),
        )
        .with_state(admin)
}

fn with_registry(builder: RegistrarBuilder) -> Result<RegistrarBuilder, Box<dyn Error>> {
    #[cfg(feature = "etcd")]
    if std::env::var_os("ETCD_ENDPOINTS").is_some() {
        let config = service_registry::etcd::EtcdConfig::from_env()?;
        return Ok(builder.registry(service_registry::etcd::EtcdRegistry::new(config)?));
    }
    Ok(builder.registry(service_registry::MemoryRegistry::global().clone()))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let prometheus = PrometheusBuilder::new().install_recorder()?;
    let listen = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:0".into());
    let admin_addr = std::env::var("ADMIN_ADDR").unwrap_or_else(|_| "127.0.0.1:0".into());
    let warmup: u64 = std::env::var("WARMUP_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let admin_listener = tokio::net::TcpListener::bind(&admin_addr).await?;

    let healthy = Arc::new(AtomicBool::new(true));
    let registrar = with_registry(Registrar::builder())?
        .listen_addr(listener.local_addr()?)
        .only(["admin.demo"])
        // Caches warm, connections open: simulated by a sleep.
        .ready_when(tokio::time::sleep(Duration::from_millis(warmup)))
        .health_check(
            HealthCheck::http("/healthz")
                .interval(Duration::from_millis(500))
                .failure_threshold(2),
        )
        .build()?;
    let admin = Admin {
        control: registrar.control(),
        prometheus,
        healthy: healthy.clone(),
    };
    println!("admin at {}", admin_listener.local_addr()?);
    let advertised = registrar.infos()[0].addr;
    let mut status = registrar.status();
    tokio::spawn(async move {
        while status.get("admin.demo") != Some(ServiceStatus::Registered) {
            if !status.changed().await {
                return;
            }
        }
        println!("registered admin.demo at {advertised}");
    });
    tokio::spawn(async move {
        if let Err(err) = axum::serve(admin_listener, admin_routes(admin)).await {
            tracing::error!(%err, "the admin listener failed");
        }
    });

    let app = Router::new()
        .route("/hello", get(|| async { "hello\n" }))
        .route(
            "/healthz",
            get(move || {
                let healthy = healthy.clone();
                async move {
                    if healthy.load(Ordering::SeqCst) {
                        (StatusCode::OK, "ok\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n")
                    }
                }
            }),
        );
    registrar
        .serve(|shutdown| {
            std::future::IntoFuture::into_future(
                axum::serve(listener, app).with_graceful_shutdown(shutdown),
            )
        })
        .await?;
    println!("deregistered and stopped");
    Ok(())
}
