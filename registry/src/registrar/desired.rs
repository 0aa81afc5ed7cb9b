//! What each service should look like in the registries right now, and why.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

use crate::info::Info;

use super::status::ServiceStatus;

/// The inputs that decide whether a service is registered, and with which [`Info`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Desired {
    /// The data to register (changed live through the control handle).
    pub(crate) info: Info,
    /// The readiness gate has passed.
    pub(crate) ready: bool,
    /// The readiness gate panicked (why): it can never pass, so nothing is registered.
    pub(crate) gate_failed: Option<String>,
    /// The health check's verdict: `Err(reason)` while it fails.
    pub(crate) health: Result<(), String>,
    /// Not taken out of rotation by an operator.
    pub(crate) in_service: bool,
}

/// What a registration task should bring about.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Want {
    /// The registry holds exactly this.
    Registered(Info),
    /// The registry holds nothing; the status to show once that is so.
    Withdrawn(ServiceStatus),
}

impl Desired {
    pub(crate) fn new(info: Info, ready: bool) -> Self {
        Self {
            info,
            ready,
            gate_failed: None,
            health: Ok(()),
            in_service: true,
        }
    }

    /// An operator's decision first, then readiness, then health.
    pub(crate) fn want(&self) -> Want {
        if !self.in_service {
            Want::Withdrawn(ServiceStatus::OutOfService)
        } else if let Some(error) = &self.gate_failed {
            Want::Withdrawn(ServiceStatus::Failed {
                error: error.clone(),
            })
        } else if !self.ready {
            Want::Withdrawn(ServiceStatus::WaitingForReady)
        } else if let Err(reason) = &self.health {
            Want::Withdrawn(ServiceStatus::Unhealthy {
                reason: reason.clone(),
            })
        } else {
            Want::Registered(self.info.clone())
        }
    }
}

/// One [`Desired`] per service, shared by the registrar, its control handle, the readiness gate
/// and the health check.
#[derive(Clone, Debug)]
pub(crate) struct DesiredSet {
    services: Arc<BTreeMap<String, watch::Sender<Desired>>>,
}

impl DesiredSet {
    pub(crate) fn new(infos: &[Info], ready: bool) -> Self {
        let services = infos
            .iter()
            .map(|info| {
                let (tx, _) = watch::channel(Desired::new(info.clone(), ready));
                (info.service_name.clone(), tx)
            })
            .collect();
        Self {
            services: Arc::new(services),
        }
    }

    pub(crate) fn subscribe(&self, service: &str) -> Option<watch::Receiver<Desired>> {
        self.services.get(service).map(watch::Sender::subscribe)
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &String> {
        self.services.keys()
    }

    /// The [`Info`] each service registers now (ordered by service name), the changes made
    /// through the control handle included.
    pub(crate) fn infos(&self) -> Vec<Info> {
        self.services
            .values()
            .map(|tx| tx.borrow().info.clone())
            .collect()
    }

    pub(crate) fn get(&self, service: &str) -> Option<Desired> {
        self.services.get(service).map(|tx| tx.borrow().clone())
    }

    /// Changes one service; `false` if there is no such service. Watchers wake only if
    /// something changed.
    pub(crate) fn update(&self, service: &str, change: impl FnOnce(&mut Desired)) -> bool {
        let Some(tx) = self.services.get(service) else {
            return false;
        };
        tx.send_if_modified(|desired| {
            let before = desired.clone();
            change(desired);
            *desired != before
        });
        true
    }

    /// Changes every service.
    pub(crate) fn update_all(&self, change: impl Fn(&mut Desired)) {
        for name in self.services.keys() {
            self.update(name, &change);
        }
    }
}
