use service_registry::service;

#[service(name = "echo", tag(idc = "hz"), tag(cluster = "blue", idc = "sh"))]
pub struct Echo;

fn main() {}
