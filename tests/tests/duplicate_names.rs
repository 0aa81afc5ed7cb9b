//! Two types declaring one service name: the registrar refuses to start and names both.

use service_registry::{service, MemoryRegistry, Registrar, RegistrarError};

#[service(name = "dup.svc")]
pub struct First;

#[service(name = "dup.svc")]
pub struct Second;

#[test]
fn duplicate_names_are_refused_naming_both_types_and_places() {
    let err = Registrar::builder()
        .registry(MemoryRegistry::new())
        .listen_addr("127.0.0.1:7".parse().unwrap())
        .build()
        .unwrap_err();
    let RegistrarError::DuplicateService {
        name,
        first_type,
        first_location,
        second_type,
        second_location,
    } = &err
    else {
        panic!("expected DuplicateService, got {err}");
    };
    assert_eq!(name, "dup.svc");
    assert_eq!(first_type, "duplicate_names::First");
    assert_eq!(second_type, "duplicate_names::Second");
    assert!(
        first_location.ends_with("duplicate_names.rs:6"),
        "{first_location}"
    );
    assert!(
        second_location.ends_with("duplicate_names.rs:9"),
        "{second_location}"
    );
    let text = err.to_string();
    assert!(text.contains("First") && text.contains("Second"), "{text}");
}
