use service_registry::service;

#[service(weight = 5)]
pub struct Echo;

fn main() {}
