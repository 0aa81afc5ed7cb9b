use service_registry::service;

#[service(name = "echo", wieght = 10)]
pub struct Echo;

fn main() {}
