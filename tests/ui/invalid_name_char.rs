use service_registry::service;

#[service(name = "billing/invoice")]
pub struct Echo;

fn main() {}
