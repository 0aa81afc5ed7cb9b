use service_registry::service;

#[service(nmae = "echo", weight = 0, warmup = "5x", tag(idc = "${}"), tag(idc = "b"))]
pub struct Echo;

// The item is still emitted, so code using it type-checks and reports nothing more.
fn main() {
    let _ = Echo;
}
