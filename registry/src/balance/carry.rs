//! Walking a new instance set beside the one before (both sorted by address), to carry over
//! what a snapshot keeps per instance: health records, in-flight counters, tag reads.

use std::sync::Arc;

use crate::discovery::Instance;

/// For each of `instances`, the index in `old` of the instance at the same address, if any. An
/// instance that is the same `Arc` as `old`'s next one (most of a changed set) is matched
/// before any address is compared.
pub(crate) fn same_address<'a>(
    instances: &'a [Arc<Instance>],
    old: &'a [Arc<Instance>],
) -> impl Iterator<Item = Option<usize>> + 'a {
    let mut j = 0;
    instances.iter().map(move |instance| {
        let shared = old.get(j).is_some_and(|o| Arc::ptr_eq(o, instance));
        if !shared {
            while j < old.len() && old[j].addr < instance.addr {
                j += 1;
            }
        }
        let found = shared || old.get(j).is_some_and(|o| o.addr == instance.addr);
        found.then(|| {
            j += 1;
            j - 1
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Info;

    fn at(port: u16) -> Arc<Instance> {
        let info = Info::new("s", format!("127.0.0.1:{port}").parse().unwrap());
        Arc::new(Instance::from(&info))
    }

    #[test]
    fn matches_by_address_shared_or_not() {
        let (a, b, c) = (at(1), at(3), at(5));
        let old = vec![a.clone(), b.clone(), c.clone()];
        // Shared `a`, a new `Arc` for port 3, an address not there before, shared `c`.
        let new = vec![a, at(3), at(4), c];
        let found: Vec<Option<usize>> = same_address(&new, &old).collect();
        assert_eq!(found, [Some(0), Some(1), None, Some(2)]);
        assert_eq!(same_address(&new, &[]).flatten().count(), 0);
    }
}
