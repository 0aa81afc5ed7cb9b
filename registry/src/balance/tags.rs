//! What a rebuild routes each instance by (priority level, in the caller's zone or not, lane),
//! read from its tags in one walk, and carried over from the snapshot before for every instance
//! that is still the same shared `Arc<Instance>`: a change of one instance in a large set reads
//! the tags of that one.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::carry::same_address;
use super::lane::Lanes;
use super::locality::{level, Locality};
use crate::discovery::Instance;

/// The tags a balancer with a locality or lanes routes by: fixed for its life.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Keys<'a> {
    priority: Option<&'a str>,
    /// The zone tag's key and the caller's own value.
    zone: Option<(&'a str, &'a str)>,
    lane: Option<&'a str>,
}

impl<'a> Keys<'a> {
    /// `None` without a locality and without lanes: nothing is read then. (A locality may
    /// route by no tag and still needs every instance read, as level 0 and not local.)
    pub(crate) fn new(locality: Option<&'a Locality>, lanes: Option<&'a Lanes>) -> Option<Self> {
        if locality.is_none() && lanes.is_none() {
            return None;
        }
        Some(Self {
            priority: locality.and_then(|l| l.priority_key.as_deref()),
            zone: locality
                .and_then(|l| l.zone.as_ref())
                .map(|(key, own)| (key.as_str(), own.as_str())),
            lane: lanes.map(|l| l.key.as_str()),
        })
    }

    /// `lanes`: the lane names read so far in this rebuild, so that each is allocated once.
    fn read(&self, instance: &Instance, lanes: &mut Vec<Arc<str>>) -> Read {
        let [priority, zone, lane] = values(
            &instance.tags,
            &[self.priority, self.zone.map(|(key, _)| key), self.lane],
        );
        Read {
            level: self.priority.map_or(0, |_| level(priority)),
            local: self
                .zone
                .is_some_and(|(_, own)| zone.is_some_and(|z| z == own)),
            lane: lane.map(|lane| match lanes.iter().find(|known| ***known == *lane) {
                Some(known) => known.clone(),
                None => {
                    let new: Arc<str> = Arc::from(lane);
                    lanes.push(new.clone());
                    new
                }
            }),
        }
    }
}

/// What one instance is routed by.
#[derive(Clone, Debug)]
pub(crate) struct Read {
    /// Its priority level (0 without a priority tag).
    pub(crate) level: u64,
    /// True when it is in the caller's zone.
    pub(crate) local: bool,
    /// Its lane, when lanes are on and it has one.
    pub(crate) lane: Option<Arc<str>>,
}

/// The [`Read`] of every one of `instances` (sorted by address; empty without `keys`):
/// `previous`'s read of the same `Arc` (previous instances and their reads, sorted by
/// address), or a walk of its tags.
pub(crate) fn read_all(
    instances: &[Arc<Instance>],
    keys: Option<Keys<'_>>,
    previous: Option<(&[Arc<Instance>], &[Read])>,
) -> Vec<Read> {
    let Some(keys) = keys else {
        return Vec::new();
    };
    let (old, reads) = match previous {
        Some((old, reads)) if old.len() == reads.len() => (old, reads),
        _ => (&[][..], &[][..]),
    };
    // A fleet has a few lanes: a list, searched from the start.
    let mut lanes: Vec<Arc<str>> = Vec::new();
    instances
        .iter()
        .zip(same_address(instances, old))
        .map(|(instance, j)| match j {
            Some(j) if Arc::ptr_eq(&old[j], instance) => reads[j].clone(),
            _ => keys.read(instance, &mut lanes),
        })
        .collect()
}

/// The values of `keys` (`None`: not asked) among `tags`, in one walk. A tag's key is compared
/// by length before its bytes, so a walk compares bytes at most once per tag and key.
fn values<'t, const N: usize>(
    tags: &'t BTreeMap<String, String>,
    keys: &[Option<&str>; N],
) -> [Option<&'t str>; N] {
    let mut found = [None; N];
    for (key, value) in tags {
        for (slot, wanted) in found.iter_mut().zip(keys) {
            if let Some(wanted) = wanted {
                if wanted.len() == key.len() && *wanted == key.as_str() {
                    *slot = Some(value.as_str());
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Info;

    fn tagged(port: u16, tags: &[(&str, &str)]) -> Arc<Instance> {
        let mut info = Info::new("s", format!("127.0.0.1:{port}").parse().unwrap());
        for (k, v) in tags {
            info.tags.insert(k.to_string(), v.to_string());
        }
        Arc::new(Instance::from(&info))
    }

    #[test]
    fn finds_each_asked_key_and_nothing_else() {
        let tags: BTreeMap<String, String> = [("idc", "hz"), ("lane", "canary"), ("lan", "x")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(
            values(&tags, &[Some("lane"), None, Some("idc"), Some("priority")]),
            [Some("canary"), None, Some("hz"), None]
        );
        assert_eq!(values(&tags, &[Some("la")]), [None]);
        assert_eq!(values(&BTreeMap::new(), &[Some("idc")]), [None]);
    }

    #[test]
    fn a_locality_without_tags_still_routes() {
        // Only the panic threshold and the overprovisioning set: every instance is read as
        // level 0, not local, and picks go on.
        let balancer = crate::balance::Balancer::builder(crate::balance::Strategy::WeightedRandom)
            .locality(Locality::new().panic_threshold(0.3))
            .build([
                (*tagged(1, &[])).clone(),
                (*tagged(2, &[("idc", "hz")])).clone(),
            ]);
        assert!(balancer.pick().is_some());
    }

    #[test]
    fn reads_carry_over_only_for_the_same_shared_instance() {
        let locality = Locality::new().zone("idc", "hz").priority_tag("priority");
        let lanes = Lanes::new("lane");
        let keys = Keys::new(Some(&locality), Some(&lanes));
        let a = tagged(1, &[("idc", "hz"), ("priority", "1"), ("lane", "canary")]);
        let b = tagged(2, &[("idc", "sh")]);
        let before = vec![a.clone(), b.clone()];
        let reads = read_all(&before, keys, None);
        assert_eq!((reads[0].level, reads[0].local), (1, true));
        assert_eq!(reads[0].lane.as_deref(), Some("canary"));
        assert_eq!(
            (reads[1].level, reads[1].local, reads[1].lane.clone()),
            (0, false, None)
        );

        // `b` re-registered in the caller's zone (a new Arc at the same address): read anew;
        // `a` is the same Arc: its read (and its lane's allocation) carried over.
        let b2 = tagged(2, &[("idc", "hz")]);
        let after = vec![a, b2];
        let next = read_all(&after, keys, Some((&before, &reads)));
        assert!(next[1].local);
        assert!(Arc::ptr_eq(
            next[0].lane.as_ref().unwrap(),
            reads[0].lane.as_ref().unwrap()
        ));
        assert!(read_all(&after, Keys::new(None, None), None).is_empty());
    }
}
