//! Chunking: the writes of the live set cut into transactions etcd accepts (at most its
//! operation limit, and no key twice in one).

use std::collections::BTreeSet;
use std::ops::Range;

/// One write: a put (`Some`) or a delete (`None`).
pub(super) type Op = (String, Option<Vec<u8>>);

/// Splits `range` of `ops` into transactions of at most `max` operations without repeating a
/// key inside one (etcd rejects a transaction that names a key twice).
pub(super) fn chunks(ops: &[Op], range: Range<usize>, max: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = range.start;
    let mut keys = BTreeSet::new();
    for i in range.clone() {
        let key = ops[i].0.as_str();
        if i - start == max || !keys.insert(key) {
            out.push(start..i);
            start = i;
            keys.clear();
            keys.insert(key);
        }
    }
    if start < range.end {
        out.push(start..range.end);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(keys: &[&str]) -> Vec<Op> {
        keys.iter().map(|k| (k.to_string(), None)).collect()
    }

    #[test]
    fn chunks_respect_the_limit_and_unique_keys() {
        let all = ops(&["a", "b", "c", "d", "e"]);
        assert_eq!(chunks(&all, 0..5, 2), [0..2, 2..4, 4..5]);
        assert_eq!(chunks(&all, 1..4, 2), [1..3, 3..4]);
        let repeated = ops(&["a", "b", "a", "c"]);
        assert_eq!(chunks(&repeated, 0..4, 128), [0..2, 2..4]);
        assert!(chunks(&[], 0..0, 128).is_empty());
    }
}
