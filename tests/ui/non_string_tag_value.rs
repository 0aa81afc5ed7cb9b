use service_registry::service;

#[service(name = "echo", tag(shard = 3))]
pub struct Echo;

fn main() {}
