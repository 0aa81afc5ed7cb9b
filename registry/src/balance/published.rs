//! [`Published`]: a balancer's current [`Snapshot`], swapped in by rebuilds and read by every
//! pick, with a per-thread view that makes a read cost no atomic read-modify-write.
//!
//! A pick that loads the snapshot through `arc-swap` pays two locked instructions (its debt
//! slot is claimed and paid back), and they were most of a pick's cost: 4 locked instructions
//! per Volo call against 4 for Volo's own balancer, which has no snapshot at all. Here each
//! swap takes a new number from one process-wide counter, and each thread keeps the snapshot it
//! last read of a few balancers with the number it had then: while the number is unchanged
//! (a plain load), the thread reads its own copy of the `Arc`. A new number (any swap) sends the
//! next read on that thread to `arc-swap` once. Numbers are never reused, so a view can only
//! match the balancer whose swap made it.
//!
//! The cost: each thread holds a reference to at most [`VIEWS`] snapshots (the last read of a
//! few balancers), so a snapshot that was swapped out, or whose balancer is gone, is freed when
//! that thread next reads another balancer in the same view or ends.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use super::snapshot::Snapshot;

/// How many balancers each thread keeps a view of (a balancer maps to one view, by address).
const VIEWS: usize = 8;

/// The number of the next swap, process-wide; 0 means "no view".
static NEXT_NUMBER: AtomicU64 = AtomicU64::new(1);

#[cfg(test)]
thread_local! {
    /// How many reads on this thread missed the views and loaded directly.
    static DIRECT_LOADS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

thread_local! {
    /// This thread's views, and the random source of its picks.
    static THREAD_VIEWS: RefCell<Views> = RefCell::new(Views {
        slots: [const { None }; VIEWS],
        rng: fastrand::Rng::new(),
    });
}

/// A thread's views: the number of the swap each was read at and the snapshot; and the random
/// source its picks use (one thread-local access serves both).
struct Views {
    slots: [Option<(u64, Arc<Snapshot>)>; VIEWS],
    rng: fastrand::Rng,
}

/// A balancer's current snapshot.
#[derive(Debug)]
pub(crate) struct Published {
    current: ArcSwap<Snapshot>,
    /// The number of the swap that stored `current` (set after it, with `Release`).
    number: AtomicU64,
}

impl Published {
    pub(crate) fn new(snapshot: Snapshot) -> Self {
        Self {
            current: ArcSwap::from_pointee(snapshot),
            number: AtomicU64::new(NEXT_NUMBER.fetch_add(1, Ordering::Relaxed)),
        }
    }

    /// The current snapshot, through `arc-swap` (for rebuilds and rare reads).
    pub(crate) fn load(&self) -> Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The current snapshot, owned.
    pub(crate) fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Swaps in `snapshot`: every thread's next read sees it.
    pub(crate) fn store(&self, snapshot: Arc<Snapshot>) {
        self.current.store(snapshot);
        self.number.store(
            NEXT_NUMBER.fetch_add(1, Ordering::Relaxed),
            Ordering::Release,
        );
    }

    /// `read` applied to the current snapshot (or one swapped out a moment ago, as with any
    /// load) and this thread's random source, from this thread's view while no swap happened
    /// since it was taken.
    #[inline]
    pub(crate) fn with<R>(&self, read: impl FnOnce(&Arc<Snapshot>, &mut fastrand::Rng) -> R) -> R {
        // Read before the snapshot: a view is never labelled newer than what it holds.
        let number = self.number.load(Ordering::Acquire);
        let slot = self.slot();
        let mut read = Some(read);
        let viewed = THREAD_VIEWS.try_with(|views| {
            // Taken already when `read` picks from another balancer in it: load directly.
            let mut views = views.try_borrow_mut().ok()?;
            let Views { slots, rng } = &mut *views;
            let view = &mut slots[slot];
            if !matches!(view, Some((seen, _)) if *seen == number) {
                *view = Some((number, self.current.load_full()));
            }
            let (_, snapshot) = view.as_ref()?;
            let read = read.take()?;
            Some(read(snapshot, rng))
        });
        if let Ok(Some(result)) = viewed {
            return result;
        }
        match read.take() {
            // The thread's views are taken or gone (the thread is ending).
            Some(read) => {
                #[cfg(test)]
                DIRECT_LOADS.with(|n| n.set(n.get() + 1));
                read(&self.current.load_full(), &mut fastrand::Rng::new())
            }
            // `read` is taken only right before it is called, and then its result returned.
            None => unreachable!("a snapshot read ran without returning"),
        }
    }

    /// The view this balancer uses on every thread.
    #[inline]
    fn slot(&self) -> usize {
        let address = self as *const Self as usize;
        // Fibonacci hashing of the address: the top bits, spread.
        (address.wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as usize) >> (usize::BITS - 3)) % VIEWS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::{Balancer, Strategy};
    use crate::{Info, Instance};

    fn set(ports: &[u16]) -> Vec<Instance> {
        ports
            .iter()
            .map(|p| Instance::from(&Info::new("s", format!("127.0.0.1:{p}").parse().unwrap())))
            .collect()
    }

    #[test]
    fn a_swap_is_seen_by_the_next_read_on_every_thread() {
        // More balancers than views, so views are shared and replaced.
        let balancers: Vec<Balancer> = (0..(VIEWS as u16 * 3))
            .map(|n| Balancer::builder(Strategy::SmoothRoundRobin).build(set(&[n + 1])))
            .collect();
        for round in 0..5u16 {
            for (n, balancer) in balancers.iter().enumerate() {
                let port = 1000 * (round + 1) + n as u16;
                balancer.update(set(&[port])).unwrap();
                assert_eq!(balancer.pick().unwrap().addr.port(), port, "this thread");
                let other = balancer.clone();
                std::thread::spawn(move || other.pick().unwrap().addr.port())
                    .join()
                    .map(|seen| assert_eq!(seen, port, "another thread"))
                    .unwrap();
            }
            for (n, balancer) in balancers.iter().enumerate() {
                let port = 1000 * (round + 1) + n as u16;
                assert_eq!(
                    balancer.pick().unwrap().addr.port(),
                    port,
                    "after the others"
                );
            }
        }
    }

    #[test]
    fn a_read_inside_a_read_loads_directly() {
        let outer = Balancer::builder(Strategy::SmoothRoundRobin).build(set(&[1]));
        let inner = Balancer::builder(Strategy::SmoothRoundRobin).build(set(&[2]));
        let mut rng = fastrand::Rng::with_seed(1);
        let before = DIRECT_LOADS.with(|n| n.get());
        let ports = outer.pick_in_lane_then(None, &mut rng, |picked| {
            (picked.addr.port(), inner.pick().unwrap().addr.port())
        });
        assert_eq!(ports, Some((1, 2)));
        let direct = DIRECT_LOADS.with(|n| n.get()) - before;
        assert_eq!(direct, 1, "the inner read loaded directly");
        // Both views are still right afterwards.
        assert_eq!(outer.pick().unwrap().addr.port(), 1);
        assert_eq!(inner.pick().unwrap().addr.port(), 2);
    }

    #[test]
    fn a_hash_pick_on_a_non_hashing_balancer_reads_the_view_once() {
        let balancer = Balancer::builder(Strategy::SmoothRoundRobin).build(set(&[1, 2]));
        let before = DIRECT_LOADS.with(|n| n.get());
        for _ in 0..10 {
            assert!(balancer.pick_by_hash(None, 42).is_some());
        }
        assert_eq!(DIRECT_LOADS.with(|n| n.get()), before, "no nested read");
    }
}
