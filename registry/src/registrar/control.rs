//! [`ControlHandle`]: take services out of rotation and change what they advertise, live.

use crate::info::{Info, MAX_WEIGHT, MIN_WEIGHT};

use super::desired::DesiredSet;
use super::error::RegistrarError;
use super::overrides::InfoOverride;
use super::status::StatusHandle;

/// Changes the registrations of a running [`Registrar`](crate::Registrar) without stopping the
/// server, as Spring's `ServiceRegistry.setStatus` does; cheap to clone, for an admin endpoint.
///
/// Every change takes effect in the background in every registry: taking a service out
/// deregisters it (status [`OutOfService`](crate::ServiceStatus::OutOfService)) while the
/// server keeps serving; putting it back registers it again; a new weight or tag re-registers
/// it with the new [`Info`], which watchers see as an update of the instance, not as a removal
/// and an addition. A new address ([`InfoOverride::addr`]) is registered first and the old one
/// removed after it; until every address this process registered is removed (retried with the
/// backoff, and at shutdown), none is forgotten. An update the registry refuses leaves the
/// registration as the registry last accepted it, and the status says
/// [`Retrying`](crate::ServiceStatus::Retrying) with the refusal until it is accepted. Follow
/// the effect through [`status`](Self::status).
///
/// ```
/// use service_registry::{service, Discovery, MemoryRegistry, Registrar, ServiceStatus};
///
/// #[service(name = "control-doc", weight = 10)]
/// struct Doc;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = MemoryRegistry::new();
/// let registrar = Registrar::builder()
///     .registry(registry.clone())
///     .listen_addr("127.0.0.1:7070".parse()?)
///     .only(["control-doc"])
///     .build()?;
/// let control = registrar.control();
/// let status = control.status();
/// let server = tokio::spawn(registrar.serve(|shutdown| async move {
///     shutdown.await;
///     Ok::<_, std::io::Error>(())
/// }));
/// status.wait_for(|s| s["control-doc"] == ServiceStatus::Registered).await;
///
/// control.set_weight("control-doc", 50)?;
/// control.take_out("control-doc")?;
/// status.wait_for(|s| s["control-doc"] == ServiceStatus::OutOfService).await;
/// assert!(registry.resolve("control-doc").await?.is_empty());
///
/// control.put_back("control-doc")?;
/// status.wait_for(|s| s["control-doc"] == ServiceStatus::Registered).await;
/// assert_eq!(registry.resolve("control-doc").await?[0].weight, 50);
/// # server.abort();
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ControlHandle {
    desired: DesiredSet,
    status: StatusHandle,
}

impl ControlHandle {
    pub(crate) fn new(desired: DesiredSet, status: StatusHandle) -> Self {
        Self { desired, status }
    }

    fn unknown(&self, service: &str) -> RegistrarError {
        RegistrarError::UnknownService {
            name: service.to_string(),
            known: self.desired.names().cloned().collect(),
        }
    }

    fn change(
        &self,
        service: &str,
        change: impl FnOnce(&mut super::desired::Desired),
    ) -> Result<(), RegistrarError> {
        if self.desired.update(service, change) {
            Ok(())
        } else {
            Err(self.unknown(service))
        }
    }

    /// The registrations' status (the same as [`Registrar::status`](crate::Registrar::status)).
    ///
    /// See [`ControlHandle`] for an example.
    pub fn status(&self) -> StatusHandle {
        self.status.clone()
    }

    /// What `service` registers now, with every live change applied.
    ///
    /// ```
    /// # use service_registry::{service, MemoryRegistry, Registrar};
    /// # #[service(name = "control-info-doc", weight = 10)] struct Doc;
    /// # let registrar = Registrar::builder().registry(MemoryRegistry::new())
    /// #     .listen_addr("127.0.0.1:9".parse().unwrap()).only(["control-info-doc"]).build().unwrap();
    /// let control = registrar.control();
    /// control.set_tag("control-info-doc", "color", "blue").unwrap();
    /// assert_eq!(control.info("control-info-doc").unwrap().tags["color"], "blue");
    /// ```
    pub fn info(&self, service: &str) -> Option<Info> {
        self.desired.get(service).map(|d| d.info)
    }

    /// Whether `service` is in rotation (not taken out by [`take_out`](Self::take_out)).
    ///
    /// ```
    /// # use service_registry::{service, MemoryRegistry, Registrar};
    /// # #[service(name = "control-in-doc")] struct Doc;
    /// # let registrar = Registrar::builder().registry(MemoryRegistry::new())
    /// #     .listen_addr("127.0.0.1:9".parse().unwrap()).only(["control-in-doc"]).build().unwrap();
    /// let control = registrar.control();
    /// control.take_out_all();
    /// assert_eq!(control.in_service("control-in-doc"), Some(false));
    /// ```
    pub fn in_service(&self, service: &str) -> Option<bool> {
        self.desired.get(service).map(|d| d.in_service)
    }

    /// Takes `service` out of rotation: it is deregistered everywhere while the server keeps
    /// serving, until [`put_back`](Self::put_back).
    ///
    /// See [`ControlHandle`] for an example.
    pub fn take_out(&self, service: &str) -> Result<(), RegistrarError> {
        self.change(service, |d| d.in_service = false)
    }

    /// Puts `service` back into rotation (registered again once it is ready and healthy).
    ///
    /// See [`ControlHandle`] for an example.
    pub fn put_back(&self, service: &str) -> Result<(), RegistrarError> {
        self.change(service, |d| d.in_service = true)
    }

    /// Takes every service out of rotation.
    ///
    /// See [`in_service`](Self::in_service) for an example.
    pub fn take_out_all(&self) {
        self.desired.update_all(|d| d.in_service = false);
    }

    /// Puts every service back into rotation.
    ///
    /// ```
    /// # use service_registry::{service, MemoryRegistry, Registrar};
    /// # #[service(name = "control-all-doc")] struct Doc;
    /// # let registrar = Registrar::builder().registry(MemoryRegistry::new())
    /// #     .listen_addr("127.0.0.1:9".parse().unwrap()).only(["control-all-doc"]).build().unwrap();
    /// let control = registrar.control();
    /// control.take_out_all();
    /// control.put_back_all();
    /// assert_eq!(control.in_service("control-all-doc"), Some(true));
    /// ```
    pub fn put_back_all(&self) {
        self.desired.update_all(|d| d.in_service = true);
    }

    /// Changes the weight `service` registers with.
    ///
    /// See [`ControlHandle`] for an example.
    pub fn set_weight(&self, service: &str, weight: u32) -> Result<(), RegistrarError> {
        self.update(service, InfoOverride::new().weight(weight))
    }

    /// Adds or replaces one tag of `service`.
    ///
    /// See [`info`](Self::info) for an example.
    pub fn set_tag(
        &self,
        service: &str,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<(), RegistrarError> {
        self.update(service, InfoOverride::new().tag(key, value))
    }

    /// Removes one tag of `service` (nothing happens if it has no such tag).
    ///
    /// ```
    /// # use service_registry::{service, MemoryRegistry, Registrar};
    /// # #[service(name = "control-tag-doc", tag(idc = "hz"))] struct Doc;
    /// # let registrar = Registrar::builder().registry(MemoryRegistry::new())
    /// #     .listen_addr("127.0.0.1:9".parse().unwrap()).only(["control-tag-doc"]).build().unwrap();
    /// let control = registrar.control();
    /// control.remove_tag("control-tag-doc", "idc").unwrap();
    /// assert!(control.info("control-tag-doc").unwrap().tags.is_empty());
    /// ```
    pub fn remove_tag(&self, service: &str, key: &str) -> Result<(), RegistrarError> {
        self.change(service, |d| {
            d.info.tags.remove(key);
        })
    }

    /// Applies an [`InfoOverride`] to what `service` registers (weights are checked as at build
    /// time).
    ///
    /// ```
    /// # use service_registry::{service, InfoOverride, MemoryRegistry, Registrar, RegistrarError};
    /// # #[service(name = "control-update-doc")] struct Doc;
    /// # let registrar = Registrar::builder().registry(MemoryRegistry::new())
    /// #     .listen_addr("127.0.0.1:9".parse().unwrap()).only(["control-update-doc"]).build().unwrap();
    /// let control = registrar.control();
    /// let err = control.update("control-update-doc", InfoOverride::new().weight(0)).unwrap_err();
    /// assert!(matches!(err, RegistrarError::InvalidWeight { .. }));
    /// ```
    pub fn update(&self, service: &str, o: InfoOverride) -> Result<(), RegistrarError> {
        if let Some(weight) = o.weight {
            if !(MIN_WEIGHT..=MAX_WEIGHT).contains(&weight) {
                return Err(RegistrarError::InvalidWeight {
                    service: service.to_string(),
                    weight,
                });
            }
        }
        self.change(service, |d| o.apply(&mut d.info))
    }
}
