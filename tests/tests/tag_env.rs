//! `${VAR}` in tag values: resolved at registration time; missing variables are named.

use service_registry::{service, MemoryRegistry, Registrar, RegistrarError};

#[service(
    name = "env.svc",
    tag(idc = "${TAG_ENV_TEST_IDC}"),
    tag(rack = "r-${TAG_ENV_TEST_RACK:-0}")
)]
pub struct EnvService;

fn build() -> Result<Registrar, RegistrarError> {
    Registrar::builder()
        .registry(MemoryRegistry::new())
        .listen_addr("127.0.0.1:7".parse().unwrap())
        .build()
}

// One test, so the environment is changed by one thread only.
#[test]
fn variables_resolve_at_registration_and_missing_ones_are_named() {
    std::env::remove_var("TAG_ENV_TEST_IDC");
    let err = build().unwrap_err();
    let RegistrarError::MissingTagVariable {
        service,
        tag,
        variable,
    } = &err
    else {
        panic!("expected MissingTagVariable, got {err}");
    };
    assert_eq!(
        (service.as_str(), tag.as_str(), variable.as_str()),
        ("env.svc", "idc", "TAG_ENV_TEST_IDC")
    );
    assert!(err.to_string().contains("TAG_ENV_TEST_IDC"));

    std::env::set_var("TAG_ENV_TEST_IDC", "sh");
    let registrar = build().unwrap();
    assert_eq!(registrar.infos()[0].tags["idc"], "sh");
    assert_eq!(registrar.infos()[0].tags["rack"], "r-0");

    std::env::set_var("TAG_ENV_TEST_RACK", "7");
    assert_eq!(build().unwrap().infos()[0].tags["rack"], "r-7");

    std::env::set_var("SERVICE_REGISTRY_ADVERTISE_ADDR", "[fd00::5]");
    let registrar = build().unwrap();
    assert_eq!(registrar.infos()[0].addr, "[fd00::5]:7".parse().unwrap());
    std::env::set_var("SERVICE_REGISTRY_ADVERTISE_ADDR", "not an address");
    let err = build().unwrap_err();
    assert!(
        matches!(
            &err,
            RegistrarError::Env(service_registry::env::EnvError::Invalid {
                variable: "SERVICE_REGISTRY_ADVERTISE_ADDR",
                ..
            })
        ),
        "{err}"
    );
    std::env::remove_var("SERVICE_REGISTRY_ADVERTISE_ADDR");
}
