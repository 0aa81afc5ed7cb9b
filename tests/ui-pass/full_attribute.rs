use service_registry::{service, Endpoint};

#[service(
    name = "billing.invoice",
    weight = 40,
    payload_codec = "protobuf",
    warmup = "30s",
    tag(idc = "${IDC:-hz}", cluster = "blue"),
    tag("k8s.zone" = "a", r#type = "rpc"),
)]
pub struct Invoices {
    pub open: u32,
}

#[service(name = "echo")]
pub enum Echo {
    Ping,
}

mod reexport {
    pub use service_registry as sr;
}

#[service(name = "renamed_root", crate = "reexport::sr")]
pub struct Renamed;

fn main() {
    assert_eq!(Invoices::INFO.weight, 40);
    assert_eq!(Invoices::INFO.tags.len(), 4);
    assert_eq!(Invoices::INFO.tags[2].key, "k8s.zone");
    assert_eq!(Invoices::INFO.tags[3].key, "type");
    assert_eq!(Echo::INFO.weight, 10);
    assert_eq!(Renamed::INFO.service_name, "renamed_root");
    let _ = (Invoices { open: 0 }.open, Echo::Ping, Renamed);
}
