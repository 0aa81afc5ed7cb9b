use service_registry::service;

#[service(name = "echo", weight)]
pub struct Echo;

fn main() {}
