use service_registry::service;

#[service(name = "echo", weight = 10001)]
pub struct Echo;

fn main() {}
