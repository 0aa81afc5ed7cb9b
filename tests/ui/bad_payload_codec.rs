use service_registry::service;

#[service(name = "echo", payload_codec = "")]
pub struct Echo;

fn main() {}
