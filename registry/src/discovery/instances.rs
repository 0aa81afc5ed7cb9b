//! [`Instances`]: a set of instances, one per address, that is shared rather than copied.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Index;
use std::sync::Arc;

use super::Instance;

/// A set of instances of one service, one per address, in address order.
///
/// It is a persistent map: a clone shares every instance and costs one reference count, and
/// a set with one instance added, changed or removed shares all the others with the set it
/// came from (`O(log n)`, not a copy). So [`Discovery::resolve`](crate::Discovery::resolve)
/// answers from a watch without copying, and a [`Change`](crate::Change) of one instance in a
/// large service carries the whole set without copying it.
///
/// ```
/// use service_registry::{Info, Instance, Instances};
/// let a = Instance::from(&Info::new("s", "127.0.0.1:2".parse().unwrap()));
/// let b = Instance::from(&Info::new("s", "127.0.0.1:1".parse().unwrap()));
/// let set: Instances = vec![a.clone(), b.clone()].into();
/// assert_eq!(set.len(), 2);
/// assert_eq!(set[0], b, "in address order");
/// assert_eq!(set.get(&a.addr), Some(&a));
/// assert_eq!(set, vec![b, a]);
/// let shared = set.clone(); // no instance is copied
/// assert_eq!(shared, set);
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Instances {
    by_addr: imbl::OrdMap<SocketAddr, Arc<Instance>>,
}

impl Instances {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many instances there are.
    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }

    /// The instances, in address order.
    pub fn iter(&self) -> InstancesIter<'_> {
        InstancesIter {
            values: self.by_addr.iter(),
        }
    }

    /// The instances, shared, in address order.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use service_registry::{Info, Instance, Instances};
    /// let set: Instances = vec![Instance::from(&Info::new("s", "127.0.0.1:1".parse().unwrap()))].into();
    /// let first: Arc<Instance> = set.shared().next().unwrap().clone();
    /// assert!(Arc::ptr_eq(&first, set.shared().next().unwrap()), "the same instance, not a copy");
    /// ```
    pub fn shared(&self) -> impl DoubleEndedIterator<Item = &Arc<Instance>> + ExactSizeIterator {
        self.by_addr.values()
    }

    /// The addresses, in order.
    pub fn addrs(&self) -> impl DoubleEndedIterator<Item = SocketAddr> + ExactSizeIterator + '_ {
        self.by_addr.keys().copied()
    }

    /// The instance at `addr`.
    pub fn get(&self, addr: &SocketAddr) -> Option<&Instance> {
        self.by_addr.get(addr).map(|instance| &**instance)
    }

    /// The instance at `addr`, shared.
    pub fn get_shared(&self, addr: &SocketAddr) -> Option<&Arc<Instance>> {
        self.by_addr.get(addr)
    }

    /// True when an instance listens at `addr`.
    pub fn contains(&self, addr: &SocketAddr) -> bool {
        self.by_addr.contains_key(addr)
    }

    /// The instance with the lowest address.
    pub fn first(&self) -> Option<&Instance> {
        self.iter().next()
    }

    /// Puts `instance` in the set (replacing the one at its address); returns the one it
    /// replaced.
    ///
    /// ```
    /// use service_registry::{Info, Instance, Instances};
    /// let mut set = Instances::new();
    /// let a = Instance::from(&Info::new("s", "127.0.0.1:1".parse().unwrap()));
    /// assert!(set.insert(a.clone()).is_none());
    /// assert_eq!(set.remove(&a.addr).as_deref(), Some(&a));
    /// assert!(set.is_empty());
    /// ```
    pub fn insert(&mut self, instance: impl Into<Arc<Instance>>) -> Option<Arc<Instance>> {
        let instance = instance.into();
        self.by_addr.insert(instance.addr, instance)
    }

    /// Takes the instance at `addr` out of the set.
    pub fn remove(&mut self, addr: &SocketAddr) -> Option<Arc<Instance>> {
        self.by_addr.remove(addr)
    }

    /// The instances, copied into a `Vec`.
    pub fn to_vec(&self) -> Vec<Instance> {
        self.iter().cloned().collect()
    }

    /// What `new` added, updated and removed compared with `self`, skipping the parts the two
    /// share.
    pub(crate) fn diff(&self, new: &Self) -> (Self, Self, Self) {
        let (mut added, mut updated, mut removed) = (Self::new(), Self::new(), Self::new());
        for item in self.by_addr.diff(&new.by_addr) {
            match item {
                imbl::ordmap::DiffItem::Add(_, instance) => added.insert(Arc::clone(instance)),
                imbl::ordmap::DiffItem::Update {
                    new: (_, instance), ..
                } => updated.insert(Arc::clone(instance)),
                imbl::ordmap::DiffItem::Remove(_, instance) => removed.insert(Arc::clone(instance)),
            };
        }
        (added, updated, removed)
    }

    /// True when both are the very same set (a clone of one another, not compared).
    pub(crate) fn ptr_eq(&self, other: &Self) -> bool {
        self.by_addr.ptr_eq(&other.by_addr)
    }
}

impl fmt::Debug for Instances {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The `index`-th instance in address order, for tests and small sets (it walks the set:
/// `O(index)`; use [`iter`](Instances::iter) to visit them all). Panics when
/// `index >= len()`, like a slice.
impl Index<usize> for Instances {
    type Output = Instance;

    fn index(&self, index: usize) -> &Instance {
        match self.iter().nth(index) {
            Some(instance) => instance,
            None => panic!(
                "index {index} out of range for a set of {} instances",
                self.len()
            ),
        }
    }
}

impl FromIterator<Instance> for Instances {
    fn from_iter<I: IntoIterator<Item = Instance>>(iter: I) -> Self {
        iter.into_iter().map(Arc::new).collect()
    }
}

impl FromIterator<Arc<Instance>> for Instances {
    fn from_iter<I: IntoIterator<Item = Arc<Instance>>>(iter: I) -> Self {
        Self {
            by_addr: iter
                .into_iter()
                .map(|instance| (instance.addr, instance))
                .collect(),
        }
    }
}

impl From<Vec<Instance>> for Instances {
    fn from(instances: Vec<Instance>) -> Self {
        instances.into_iter().collect()
    }
}

impl<const N: usize> From<[Instance; N]> for Instances {
    fn from(instances: [Instance; N]) -> Self {
        instances.into_iter().collect()
    }
}

impl From<Instance> for Instances {
    fn from(instance: Instance) -> Self {
        [instance].into()
    }
}

impl From<Instances> for Vec<Instance> {
    fn from(instances: Instances) -> Self {
        instances.to_vec()
    }
}

impl<'a> IntoIterator for &'a Instances {
    type Item = &'a Instance;
    type IntoIter = InstancesIter<'a>;

    fn into_iter(self) -> InstancesIter<'a> {
        self.iter()
    }
}

/// The instances of an [`Instances`], in address order ([`Instances::iter`]).
#[derive(Clone)]
pub struct InstancesIter<'a> {
    values: imbl::ordmap::Iter<'a, SocketAddr, Arc<Instance>, imbl::shared_ptr::DefaultSharedPtr>,
}

impl fmt::Debug for InstancesIter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter").field("left", &self.len()).finish()
    }
}

impl<'a> Iterator for InstancesIter<'a> {
    type Item = &'a Instance;

    fn next(&mut self) -> Option<&'a Instance> {
        self.values.next().map(|(_, instance)| &**instance)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.values.size_hint()
    }
}

impl DoubleEndedIterator for InstancesIter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.values.next_back().map(|(_, instance)| &**instance)
    }
}

impl ExactSizeIterator for InstancesIter<'_> {}

/// Owned iteration yields the shared instances, in address order.
impl IntoIterator for Instances {
    type Item = Arc<Instance>;
    type IntoIter = std::iter::Map<
        imbl::ordmap::ConsumingIter<SocketAddr, Arc<Instance>, imbl::shared_ptr::DefaultSharedPtr>,
        fn((SocketAddr, Arc<Instance>)) -> Arc<Instance>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.by_addr.into_iter().map(|(_, instance)| instance)
    }
}

impl PartialEq<Vec<Instance>> for Instances {
    fn eq(&self, other: &Vec<Instance>) -> bool {
        *self == other.as_slice()
    }
}

impl PartialEq<&[Instance]> for Instances {
    fn eq(&self, other: &&[Instance]) -> bool {
        *self == **other
    }
}

impl PartialEq<[Instance]> for Instances {
    fn eq(&self, other: &[Instance]) -> bool {
        // A slice in address order with one instance per address reads as equal.
        self.len() == other.len() && self.iter().zip(other).all(|(a, b)| a == b)
    }
}

impl<const N: usize> PartialEq<[Instance; N]> for Instances {
    fn eq(&self, other: &[Instance; N]) -> bool {
        *self == other[..]
    }
}
