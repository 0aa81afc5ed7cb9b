use service_registry::service;

#[service(name = "")]
pub struct Echo;

fn main() {}
