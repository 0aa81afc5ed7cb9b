use service_registry::service;

#[service(name = "echo", tag = "idc")]
pub struct Echo;

fn main() {}
