use service_registry::service;

#[service(name = "echo", weight = 1, name = "echo2")]
pub struct Echo;

fn main() {}
