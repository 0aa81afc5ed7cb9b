//! Generates 500 `#[service]` types for the many-services test (`tests/etcd_many.rs`).

use std::fmt::Write;

fn main() {
    let mut code = String::new();
    for i in 0..500 {
        let _ = writeln!(code, "#[::service_registry::service(name = \"many.svc{i:03}\", tag(n = \"{i}\"))]\npub struct Svc{i:03};");
    }
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    std::fs::write(format!("{out}/many_services.rs"), code).expect("write generated services");
    println!("cargo:rerun-if-changed=build.rs");
}
