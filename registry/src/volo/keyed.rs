//! One key of a [`VoloBalance`](super::VoloBalance): its [`Balancer`], fed from Volo's
//! changes with the same push-empty protection as [`BalancerBuilder::watch`], and a way for
//! calls to wait until it has an instance.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use volo::discovery::Instance as VoloInstance;

use super::convert::from_volo;
use crate::balance::{Balancer, BalancerBuilder};

/// A key's balancer and what feeding it needs.
pub(crate) struct Keyed {
    pub(crate) balancer: Balancer,
    /// The service, for logs (empty when the key was first seen in a change, not a call).
    service: String,
    /// How long a set that turns empty is kept ([`BalancerBuilder::hold_when_empty`]).
    hold: Duration,
    state: Mutex<State>,
    /// Woken whenever a set is applied: calls waiting for an instance look again.
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Whether the balancer holds instances from discovery (before the tag filter).
    listed: bool,
    /// While an empty set is held: which hold (a later hold is another number).
    held: Option<u64>,
    holds: u64,
}

impl std::fmt::Debug for Keyed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyed")
            .field("service", &self.service)
            .field("balancer", &self.balancer)
            .field("hold", &self.hold)
            .finish_non_exhaustive()
    }
}

impl Keyed {
    /// A key whose balancer starts with `instances`.
    pub(crate) fn new(
        builder: &BalancerBuilder,
        service: &str,
        instances: &[Arc<VoloInstance>],
    ) -> Arc<Self> {
        let hold = builder.held_when_empty();
        Arc::new(Self {
            balancer: builder.clone().build(ours(instances)),
            service: service.to_string(),
            hold,
            state: Mutex::new(State {
                listed: !instances.is_empty(),
                ..State::default()
            }),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a few assignments: a poisoned lock is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Applies the set `all` of a Volo change, as [`BalancerBuilder::watch`] applies a watch's
    /// change: a set that turns empty is held (the last instances stay) until instances are
    /// back or `hold` has passed; any other set is taken as it is.
    pub(crate) fn apply(self: &Arc<Self>, all: &[Arc<VoloInstance>]) {
        let service = &self.service;
        let mut state = self.lock();
        if all.is_empty() && state.listed && !self.hold.is_zero() {
            if state.held.is_none() {
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => {
                        state.holds += 1;
                        state.held = Some(state.holds);
                        tracing::warn!(
                            %service,
                            hold = ?self.hold,
                            "the service turned empty; keeping its last instances until they \
                             are back or the hold is over"
                        );
                        runtime.spawn(release_after(Arc::downgrade(self), state.holds));
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%service, "no runtime to time a hold; emptying at once");
                    }
                }
            } else {
                return;
            }
        }
        if state.held.take().is_some() {
            tracing::info!(
                %service,
                instances = all.len(),
                "instances are back; the hold on the last set is over"
            );
        }
        state.listed = !all.is_empty();
        self.replace(all);
        drop(state);
        self.changed.notify_waiters();
    }

    fn replace(&self, all: &[Arc<VoloInstance>]) {
        // Our balancers are built from sets (never from a watch), so an update is accepted.
        if let Err(err) = self.balancer.update(ours(all)) {
            tracing::warn!(error = %err, "a Volo change was not applied");
        }
    }

    /// Waits until a set is applied (or `deadline`); `false` at the deadline. `ready` is
    /// checked after the waiter is registered, so a set applied meanwhile is never missed.
    pub(crate) async fn wait_for(
        &self,
        deadline: tokio::time::Instant,
        mut ready: impl FnMut() -> bool,
    ) -> bool {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if ready() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return ready();
            }
        }
    }
}

/// Ends hold number `hold` of `keyed` after its time: the balancer empties too, unless
/// instances came back meanwhile.
async fn release_after(keyed: Weak<Keyed>, hold: u64) {
    let Some(time) = keyed.upgrade().map(|k| k.hold) else {
        return;
    };
    tokio::time::sleep(time).await;
    let Some(keyed) = keyed.upgrade() else {
        return;
    };
    let mut state = keyed.lock();
    if state.held != Some(hold) {
        return;
    }
    state.held = None;
    state.listed = false;
    tracing::warn!(
        service = %keyed.service,
        held = ?time,
        "the service is still empty after the hold; the balancer is empty too"
    );
    keyed.replace(&[]);
}

/// This crate's instances from Volo's (non-IP addresses left out).
fn ours(instances: &[Arc<VoloInstance>]) -> Vec<crate::Instance> {
    instances
        .iter()
        .filter_map(|instance| {
            let converted = from_volo(instance);
            if converted.is_none() {
                tracing::debug!(address = %instance.address, "skipping a non-IP Volo instance");
            }
            converted
        })
        .collect()
}
