//! Compile-fail snapshots: one file per mistake class in `tests/ui/`, and passing uses in
//! `tests/ui-pass/`. Regenerate with `TRYBUILD=overwrite cargo test -p tests --test ui` and read
//! every snapshot.
//!
//! trybuild builds its cases with this package's features. With `etcd`/`zookeeper` on, that is
//! a second build of the etcd, ZooKeeper and TLS clients (minutes on two cores), so the snapshots
//! run in the featureless pass of `scripts/test.sh` (`cargo test -p tests --test ui`) and are
//! compiled out of the all-features pass.
#![cfg(not(any(feature = "etcd", feature = "zookeeper", feature = "nacos")))]

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/*.rs");
    t.pass("ui-pass/*.rs");
}
