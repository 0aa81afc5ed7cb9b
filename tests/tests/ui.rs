//! Compile-fail snapshots: one file per mistake class in `tests/ui/`, and passing uses in
//! `tests/ui-pass/`. Regenerate with `TRYBUILD=overwrite` and read every snapshot.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/*.rs");
    t.pass("ui-pass/*.rs");
}
