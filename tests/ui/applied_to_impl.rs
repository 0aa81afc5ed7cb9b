use service_registry::service;

pub struct Echo;

#[service(name = "echo")]
impl Echo {}

fn main() {}
