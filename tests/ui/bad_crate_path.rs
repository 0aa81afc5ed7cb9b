use service_registry::service;

// Generic arguments are not a crate path.
#[service(name = "echo", crate = "service_registry<u8>")]
pub struct Echo;

// Neither is text that does not parse as a path.
#[service(name = "other", crate = "a b")]
pub struct Other;

// Nor something that is not a string.
#[service(name = "third", crate = service_registry)]
pub struct Third;

fn main() {}
