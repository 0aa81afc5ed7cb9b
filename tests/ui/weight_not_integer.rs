use service_registry::service;

#[service(name = "echo", weight = "10")]
pub struct Echo;

fn main() {}
