use service_registry::service;

#[service(name = "echo")]
pub fn echo() {}

fn main() {}
