use service_registry::service;

#[service(name = "echo")]
pub trait Echo {}

fn main() {}
