use service_registry::service;

#[service(name = "echo", warmup = "30 seconds")]
pub struct Echo;

fn main() {}
