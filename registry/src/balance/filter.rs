//! Tag filters: pick only among instances whose tags match.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::discovery::Instance;

/// Keeps instances whose tags include every `key = value` given, and only those: a hard
/// constraint. To prefer a zone and spill over to others as it loses health, use
/// [`Locality`](super::Locality) instead; to route calls by a lane they carry, with a
/// fallback, [`Lanes`](super::Lanes).
///
/// ```
/// use std::sync::Arc;
/// use service_registry::{balance::TagFilter, Info, Instance};
///
/// let mut hz = Info::new("s", "127.0.0.1:1".parse().unwrap());
/// hz.tags.insert("idc".into(), "hz".into());
/// let sh = Info::new("s", "127.0.0.1:2".parse().unwrap());
/// let all = vec![Arc::new(Instance::from(&hz)), Arc::new(Instance::from(&sh))];
///
/// let filter = TagFilter::new().require("idc", "hz");
/// assert_eq!(filter.apply(&all).len(), 1);
/// let strict = TagFilter::new().require("idc", "bj");
/// assert!(strict.apply(&all).is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TagFilter {
    required: BTreeMap<String, String>,
}

impl TagFilter {
    /// A filter that keeps everything.
    ///
    /// See [`TagFilter`] for an example.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires `key = value`.
    ///
    /// See [`TagFilter`] for an example.
    pub fn require(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.required.insert(key.into(), value.into());
        self
    }

    /// True when this filter admits every instance.
    pub(crate) fn admits_all(&self) -> bool {
        self.required.is_empty()
    }

    /// The instances this filter admits.
    ///
    /// See [`TagFilter`] for an example.
    pub fn apply(&self, instances: &[Arc<Instance>]) -> Vec<Arc<Instance>> {
        instances
            .iter()
            .filter(|i| self.required.iter().all(|(k, v)| i.tags.get(k) == Some(v)))
            .cloned()
            .collect()
    }
}
