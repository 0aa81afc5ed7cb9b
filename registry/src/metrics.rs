//! Metrics, through the [`metrics`] facade: nothing is recorded unless the application installs
//! a recorder (for example `metrics-exporter-prometheus`); no exporter is forced on anyone.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `service_registry_registrations` | gauge | `registry`, `state` | services per registration state (`registered`, `retrying`, `out_of_service`, ...) |
//! | `service_registry_register_attempts_total` | counter | `registry`, `service` | register calls made by the registrar |
//! | `service_registry_register_failures_total` | counter | `registry`, `service` | register calls that failed, timed out or panicked |
//! | `service_registry_deregister_attempts_total` | counter | `registry`, `service` | deregister calls |
//! | `service_registry_deregister_failures_total` | counter | `registry`, `service` | deregister calls that failed |
//! | `service_registry_recoveries_total` | counter | `registry` | connection losses the backend recovered from |
//! | `service_registry_recovery_seconds` | histogram | `registry` | from the loss to `Healthy` again |
//! | `service_registry_keepalive_seconds` | histogram | `registry` | keep-alive round trip (etcd lease) |
//! | `service_registry_watch_events_total` | counter | `backend`, `service` | changes delivered to watch channels |
//! | `service_registry_watched_instances` | gauge | `backend`, `service` | instances in the latest state of a watched service |
//!
//! ```
//! # use service_registry::metrics;
//! assert!(metrics::NAMES.contains(&"service_registry_registrations"));
//! ```

use std::time::Duration;

/// Every metric name this crate records.
pub const NAMES: [&str; 10] = [
    REGISTRATIONS,
    REGISTER_ATTEMPTS,
    REGISTER_FAILURES,
    DEREGISTER_ATTEMPTS,
    DEREGISTER_FAILURES,
    RECOVERIES,
    RECOVERY_SECONDS,
    KEEPALIVE_SECONDS,
    WATCH_EVENTS,
    WATCHED_INSTANCES,
];

/// Services per registration state and registry (gauge).
pub const REGISTRATIONS: &str = "service_registry_registrations";
/// Register calls (counter).
pub const REGISTER_ATTEMPTS: &str = "service_registry_register_attempts_total";
/// Failed register calls (counter).
pub const REGISTER_FAILURES: &str = "service_registry_register_failures_total";
/// Deregister calls (counter).
pub const DEREGISTER_ATTEMPTS: &str = "service_registry_deregister_attempts_total";
/// Failed deregister calls (counter).
pub const DEREGISTER_FAILURES: &str = "service_registry_deregister_failures_total";
/// Recovered connection losses (counter).
pub const RECOVERIES: &str = "service_registry_recoveries_total";
/// Recovery durations in seconds (histogram).
pub const RECOVERY_SECONDS: &str = "service_registry_recovery_seconds";
/// Keep-alive round trips in seconds (histogram).
pub const KEEPALIVE_SECONDS: &str = "service_registry_keepalive_seconds";
/// Watch changes (counter).
pub const WATCH_EVENTS: &str = "service_registry_watch_events_total";
/// Instances of a watched service (gauge).
pub const WATCHED_INSTANCES: &str = "service_registry_watched_instances";

/// Every value of the `state` label of [`REGISTRATIONS`].
pub(crate) const STATES: [&str; 8] = [
    "waiting_for_ready",
    "registering",
    "registered",
    "retrying",
    "unhealthy",
    "out_of_service",
    "deregistered",
    "failed",
];

pub(crate) fn call(deregister: bool, registry: &str, service: &str, ok: bool) {
    let (attempts, failures) = if deregister {
        (DEREGISTER_ATTEMPTS, DEREGISTER_FAILURES)
    } else {
        (REGISTER_ATTEMPTS, REGISTER_FAILURES)
    };
    let labels = [
        ("registry", registry.to_string()),
        ("service", service.to_string()),
    ];
    metrics::counter!(attempts, &labels).increment(1);
    if !ok {
        metrics::counter!(failures, &labels).increment(1);
    }
}

pub(crate) fn registrations(registry: &str, state: &'static str, count: usize) {
    metrics::gauge!(REGISTRATIONS, "registry" => registry.to_string(), "state" => state)
        .set(count as f64);
}

pub(crate) fn recovered(registry: &str, took: Duration) {
    metrics::counter!(RECOVERIES, "registry" => registry.to_string()).increment(1);
    metrics::histogram!(RECOVERY_SECONDS, "registry" => registry.to_string())
        .record(took.as_secs_f64());
}

#[cfg(any(feature = "etcd", feature = "nacos"))]
pub(crate) fn keepalive(registry: &'static str, round_trip: Duration) {
    metrics::histogram!(KEEPALIVE_SECONDS, "registry" => registry).record(round_trip.as_secs_f64());
}

pub(crate) fn watch_state(backend: &'static str, service: &str, instances: usize, event: bool) {
    let labels = [
        ("backend", backend.to_string()),
        ("service", service.to_string()),
    ];
    if event {
        metrics::counter!(WATCH_EVENTS, &labels).increment(1);
    }
    metrics::gauge!(WATCHED_INSTANCES, &labels).set(instances as f64);
}
