use service_registry::service;

#[service(name = "echo", tag(idc = "${IDC:-hz"))]
pub struct Echo;

fn main() {}
