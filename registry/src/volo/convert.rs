//! This crate's [`Instance`] as Volo's `Instance`, and back.
//!
//! Volo's instance has an address, a weight and string tags. The start time and warm-up period
//! that drive this crate's warm-up ramp travel in two reserved tags ([`START_TIME_TAG`],
//! [`WARMUP_TAG`]), written only for an instance that warms up, and stripped again on the way
//! back so tag filters never see them.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use volo::discovery::Instance as VoloInstance;
use volo::net::Address;

use crate::discovery::{Instance, Instances};
use crate::info::{DEFAULT_WEIGHT, MAX_WEIGHT, MIN_WEIGHT};

/// The reserved Volo tag that carries an instance's start time (milliseconds since the Unix
/// epoch), written by [`VoloDiscover`](super::VoloDiscover) for an instance with a warm-up.
///
/// ```
/// assert_eq!(service_registry::volo::START_TIME_TAG, "service-registry.start-time-ms");
/// ```
pub const START_TIME_TAG: &str = "service-registry.start-time-ms";

/// The reserved Volo tag that carries an instance's warm-up period in milliseconds.
///
/// ```
/// assert_eq!(service_registry::volo::WARMUP_TAG, "service-registry.warmup-ms");
/// ```
pub const WARMUP_TAG: &str = "service-registry.warmup-ms";

/// Volo's view of `instance`.
pub(crate) fn to_volo(instance: &Instance) -> VoloInstance {
    let mut tags: HashMap<Cow<'static, str>, Cow<'static, str>> = instance
        .tags
        .iter()
        .map(|(k, v)| (Cow::Owned(k.clone()), Cow::Owned(v.clone())))
        .collect();
    if !instance.warmup.is_zero() {
        if let Some(started) = instance.start_time {
            let since_epoch = started.duration_since(UNIX_EPOCH).unwrap_or_default();
            tags.insert(
                Cow::Borrowed(START_TIME_TAG),
                Cow::Owned(since_epoch.as_millis().to_string()),
            );
            tags.insert(
                Cow::Borrowed(WARMUP_TAG),
                Cow::Owned(instance.warmup.as_millis().to_string()),
            );
        }
    }
    VoloInstance {
        address: Address::Ip(instance.addr),
        weight: instance.weight,
        tags,
    }
}

/// Volo's view of every instance, reusing the `Arc` of an instance that did not change.
///
/// `previous` is what `instances` was converted to before, in the same address order; an
/// instance `changed` says is new or different is converted again, any other reuses its old
/// view (one walk over both, no search).
pub(crate) fn to_volo_all(
    instances: &Instances,
    previous: &[Arc<VoloInstance>],
    changed: impl Fn(&std::net::SocketAddr) -> bool,
) -> Vec<Arc<VoloInstance>> {
    let mut old = previous.iter().peekable();
    instances
        .iter()
        .map(|instance| {
            let ip = |view: &&Arc<VoloInstance>| match &view.address {
                Address::Ip(addr) => Some(*addr),
                _ => None,
            };
            // Skip the views of instances that went away (they sort before this one).
            while old
                .next_if(|view| ip(view).is_none_or(|addr| addr < instance.addr))
                .is_some()
            {}
            match old.next_if(|view| ip(view) == Some(instance.addr)) {
                Some(view) if !changed(&instance.addr) => Arc::clone(view),
                _ => Arc::new(to_volo(instance)),
            }
        })
        .collect()
}

/// This crate's view of a Volo instance; `None` for an address that is not IP (a Unix socket),
/// which the balancer cannot hold.
pub(crate) fn from_volo(instance: &VoloInstance) -> Option<Instance> {
    let Address::Ip(addr) = &instance.address else {
        return None;
    };
    let mut tags = BTreeMap::new();
    let (mut start_ms, mut warmup_ms) = (None, None);
    for (key, value) in &instance.tags {
        match key.as_ref() {
            START_TIME_TAG => start_ms = value.parse::<u64>().ok(),
            WARMUP_TAG => warmup_ms = value.parse::<u64>().ok(),
            _ => {
                tags.insert(key.to_string(), value.to_string());
            }
        }
    }
    let (start_time, warmup) = match (start_ms, warmup_ms) {
        (Some(start), Some(warmup)) => (
            UNIX_EPOCH.checked_add(Duration::from_millis(start)),
            Duration::from_millis(warmup),
        ),
        _ => (None, Duration::ZERO),
    };
    // Volo's own weights start at 0 (never picked by its balancer) and have no upper bound;
    // this crate's weights are 1..=MAX_WEIGHT, and 0 reads as the default, as in a registry.
    let weight = match instance.weight {
        0 => DEFAULT_WEIGHT,
        w => w.clamp(MIN_WEIGHT, MAX_WEIGHT),
    };
    Some(Instance {
        addr: *addr,
        weight,
        tags,
        start_time,
        warmup,
        payload_codec: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Info;

    #[test]
    fn warmup_and_tags_survive_the_round_trip() {
        let mut info = Info::new("s", "127.0.0.1:9".parse().unwrap());
        info.tags.insert("idc".into(), "hz".into());
        info.warmup = Duration::from_secs(30);
        info.weight = 40;
        let ours = Instance::from(&info);
        let volo = to_volo(&ours);
        assert_eq!(volo.tags.len(), 3);
        let back = from_volo(&volo).unwrap();
        assert_eq!(back.tags, ours.tags);
        assert_eq!(back.weight, 40);
        assert_eq!(back.warmup, Duration::from_secs(30));
        let start = ours.start_time.unwrap().duration_since(UNIX_EPOCH).unwrap();
        let got = back.start_time.unwrap().duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(got.as_millis(), start.as_millis());
    }

    #[test]
    fn no_warmup_writes_no_reserved_tag() {
        let ours = Instance::from(&Info::new("s", "127.0.0.1:9".parse().unwrap()));
        assert!(to_volo(&ours).tags.is_empty());
    }

    #[test]
    fn volo_weights_map_into_range() {
        let volo = |weight| VoloInstance {
            address: Address::Ip("127.0.0.1:1".parse().unwrap()),
            weight,
            tags: HashMap::new(),
        };
        assert_eq!(from_volo(&volo(0)).unwrap().weight, DEFAULT_WEIGHT);
        assert_eq!(from_volo(&volo(1)).unwrap().weight, 1);
        assert_eq!(from_volo(&volo(u32::MAX)).unwrap().weight, MAX_WEIGHT);
    }
}
