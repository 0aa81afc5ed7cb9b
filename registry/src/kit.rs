//! Helpers for authors of a [`Registry`](crate::Registry) or [`Discovery`](crate::Discovery)
//! backend of their own: building the shared error sources the error types carry, and turning
//! two listings of a service into the [`Change`](crate::Change) a watch emits.
//!
//! ```
//! use service_registry::kit::{diff_instances, shared};
//! use service_registry::{Info, Instance, Instances, RegistryError};
//!
//! let err = RegistryError::Backend { backend: "custom", source: shared("disk full") };
//! assert_eq!(err.to_string(), "custom registry call failed: disk full");
//!
//! let a = Instance::from(&Info::new("s", "127.0.0.1:1".parse().unwrap()));
//! let change = diff_instances("s", &Instances::new(), &a.clone().into()).unwrap();
//! assert_eq!(change.added, vec![a]);
//! ```

pub use crate::discovery::diff_instances;
pub use crate::registry::{shared, BoxError, SharedError};
