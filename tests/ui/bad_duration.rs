use service_registry::service;

#[service(name = "echo", warmup = "30")]
pub struct Echo;

fn main() {}
