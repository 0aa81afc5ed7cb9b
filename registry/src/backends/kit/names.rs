//! Service names a key-value or tree backend can store as one path segment.

use crate::info::Info;
use crate::registry::RegistryError;

/// Refuses service names that cannot be one path segment.
pub(crate) fn check_service_name(info: &Info, backend: &str) -> Result<(), RegistryError> {
    if info.service_name.is_empty() || info.service_name.contains('/') {
        return Err(RegistryError::InvalidInfo {
            service: info.service_name.clone(),
            reason: format!("a {backend} service name must be non-empty and must not contain `/`"),
        });
    }
    Ok(())
}
