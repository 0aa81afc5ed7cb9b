use service_registry::service;

#[service(name = echo)]
pub struct Echo;

fn main() {}
