//! Run-time changes to what `#[service]` declared (Kitex's `WithRegistryInfo`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::info::Info;

/// Values that replace or extend an [`Info`] before it is registered.
///
/// Given to [`RegistrarBuilder::override_all`](crate::RegistrarBuilder::override_all) (every
/// service) or [`RegistrarBuilder::override_service`](crate::RegistrarBuilder::override_service)
/// (one service, applied after the global one). Tags are merged key by key; every other field
/// replaces the declared value when set.
///
/// ```
/// use std::time::Duration;
/// use service_registry::{Info, InfoOverride};
///
/// let o = InfoOverride::new().weight(50).tag("cluster", "green").warmup(Duration::from_secs(5));
/// let mut info = Info::new("echo", "127.0.0.1:1".parse().unwrap());
/// o.apply(&mut info);
/// assert_eq!(info.weight, 50);
/// assert_eq!(info.tags["cluster"], "green");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InfoOverride {
    pub(crate) weight: Option<u32>,
    pub(crate) payload_codec: Option<String>,
    pub(crate) warmup: Option<Duration>,
    pub(crate) tags: BTreeMap<String, String>,
    pub(crate) addr: Option<SocketAddr>,
}

impl InfoOverride {
    /// An override that changes nothing.
    ///
    /// ```
    /// assert_eq!(service_registry::InfoOverride::new(), Default::default());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the weight; [`Registrar`](crate::Registrar) refuses to build with a weight
    /// outside [`MIN_WEIGHT`](crate::MIN_WEIGHT)..=[`MAX_WEIGHT`](crate::MAX_WEIGHT).
    ///
    /// ```
    /// let o = service_registry::InfoOverride::new().weight(3);
    /// # let _ = o;
    /// ```
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = Some(weight);
        self
    }

    /// Replaces the payload codec.
    ///
    /// ```
    /// let o = service_registry::InfoOverride::new().payload_codec("thrift");
    /// # let _ = o;
    /// ```
    pub fn payload_codec(mut self, codec: impl Into<String>) -> Self {
        self.payload_codec = Some(codec.into());
        self
    }

    /// Replaces the warm-up period.
    ///
    /// ```
    /// let o = service_registry::InfoOverride::new().warmup(std::time::Duration::from_secs(1));
    /// # let _ = o;
    /// ```
    pub fn warmup(mut self, warmup: Duration) -> Self {
        self.warmup = Some(warmup);
        self
    }

    /// Adds or replaces one tag (taken literally: no `${VAR}` expansion).
    ///
    /// ```
    /// let o = service_registry::InfoOverride::new().tag("idc", "sh");
    /// # let _ = o;
    /// ```
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Registers this exact address instead of the advertised listen address.
    ///
    /// ```
    /// let o = service_registry::InfoOverride::new().addr("10.1.2.3:80".parse().unwrap());
    /// # let _ = o;
    /// ```
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = Some(addr);
        self
    }

    /// Applies this override to `info`.
    ///
    /// See [`InfoOverride`] for an example.
    pub fn apply(&self, info: &mut Info) {
        if let Some(weight) = self.weight {
            info.weight = weight;
        }
        if let Some(codec) = &self.payload_codec {
            info.payload_codec = Some(codec.clone());
        }
        if let Some(warmup) = self.warmup {
            info.warmup = warmup;
        }
        info.tags
            .extend(self.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(addr) = self.addr {
            info.addr = addr;
        }
    }
}
