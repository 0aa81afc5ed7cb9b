//! What can go wrong talking to Nacos, and how it reads as a [`RegistryError`].

use std::sync::Arc;

use crate::registry::RegistryError;

const BACKEND: &str = "nacos";

/// A failed call to Nacos. The registry and discovery wrap it in
/// [`RegistryError`] / [`DiscoveryError`](crate::DiscoveryError) as their source.
///
/// ```
/// use service_registry::nacos::NacosError;
/// let err = NacosError::Unauthenticated {
///     user: "nacos".into(),
///     server: "127.0.0.1:8848".into(),
///     reason: "unknown user!".into(),
/// };
/// assert_eq!(
///     err.to_string(),
///     "Nacos at 127.0.0.1:8848 refused the credentials of user `nacos` (unknown user!); check the user name and password"
/// );
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum NacosError {
    /// Nacos could not be reached, or did not answer in time.
    #[error("cannot reach Nacos at {server}: {reason}; check that it runs and that the gRPC port (HTTP port + 1000 by default) is reachable")]
    Unreachable {
        /// `host:port` tried.
        server: String,
        /// What happened.
        reason: String,
    },
    /// The connection was lost or the server no longer knows it (restarted, or it timed the
    /// connection out); everything is registered again on a new one.
    #[error("the connection to Nacos at {server} was lost: {reason}")]
    Lost {
        /// `host:port`.
        server: String,
        /// What happened.
        reason: String,
    },
    /// A request got no answer within the request timeout; the connection it went over is
    /// given up (everything is registered again on a new one).
    #[error("{what} to Nacos at {server} got no answer within {limit:?}")]
    TimedOut {
        /// `host:port`.
        server: String,
        /// What was asked.
        what: String,
        /// The limit.
        limit: std::time::Duration,
    },
    /// Nacos refused the user name or password, or requires a login and none is configured.
    #[error("Nacos at {server} refused the credentials of user `{user}` ({reason}); check the user name and password")]
    Unauthenticated {
        /// The user presented.
        user: String,
        /// `host:port` of the login.
        server: String,
        /// What Nacos said.
        reason: String,
    },
    /// Nacos rejected a request as invalid (Java Nacos' code 400, or a gRPC error such as a
    /// message over the server's size limit): it would be rejected again.
    #[error("Nacos at {server} rejected {what} as invalid: {reason}")]
    Rejected {
        /// `host:port`.
        server: String,
        /// What was asked.
        what: String,
        /// What Nacos said.
        reason: String,
    },
    /// An answer that cannot be used: a login answer that is not Nacos' JSON, holds no token,
    /// or is over its size cap. The text says what is wrong, never what the answer held (a
    /// login answer may hold a token).
    #[error("Nacos at {server} sent an unusable answer to {what}: {reason}")]
    BadAnswer {
        /// `host:port`.
        server: String,
        /// What was asked.
        what: String,
        /// What is wrong with the answer.
        reason: String,
    },
    /// Nacos answered a request with an error of its own.
    #[error("Nacos at {server} refused {what}: code {code}: {message}")]
    Refused {
        /// `host:port`.
        server: String,
        /// What was asked.
        what: String,
        /// Nacos' error code.
        code: u16,
        /// Nacos' message.
        message: String,
    },
    /// Nacos' answer was larger than this client decodes (10 MiB, as the Java client): a
    /// service with too many instances or too much metadata. The connection is unaffected;
    /// the same request fails the same way until the service is smaller.
    #[error("the answer of Nacos at {server} to {what} is too large: {reason}")]
    TooLarge {
        /// `host:port`.
        server: String,
        /// What was asked.
        what: String,
        /// How large it was, and the limit.
        reason: String,
    },
}

impl NacosError {
    /// Whether this is about the connection (retry on a new one) rather than the request.
    pub(crate) fn is_connection(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. } | Self::Lost { .. } | Self::TimedOut { .. }
        )
    }

    /// Whether nothing more can be written on this connection: it is gone, or the server no
    /// longer accepts our credentials. Either way a new connection (and login) is needed; the
    /// instances themselves are not at fault.
    pub(crate) fn is_fatal(&self) -> bool {
        self.is_connection() || matches!(self, Self::Unauthenticated { .. })
    }

    /// Whether the request itself is at fault and would be rejected again (a validation
    /// error); everything else may succeed on a later attempt.
    pub(crate) fn is_invalid(&self) -> bool {
        matches!(self, Self::Rejected { .. })
    }

    /// The registry-side reading.
    pub(crate) fn into_registry(self) -> RegistryError {
        match &self {
            Self::Unreachable { server, .. } | Self::Lost { server, .. } => {
                RegistryError::Unavailable {
                    backend: BACKEND,
                    endpoint: server.clone(),
                    source: Arc::new(self),
                }
            }
            Self::TimedOut { server, limit, .. } => RegistryError::Timeout {
                backend: BACKEND,
                endpoint: Some(server.clone()),
                service: None,
                timeout: *limit,
            },
            Self::Unauthenticated { user, server, .. } => RegistryError::Unauthenticated {
                backend: BACKEND,
                endpoint: server.clone(),
                user: user.clone(),
                source: Arc::new(self),
            },
            Self::Refused { .. }
            | Self::Rejected { .. }
            | Self::BadAnswer { .. }
            | Self::TooLarge { .. } => RegistryError::Backend {
                backend: BACKEND,
                source: Arc::new(self),
            },
        }
    }
}

impl From<NacosError> for RegistryError {
    fn from(err: NacosError) -> Self {
        err.into_registry()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_what_the_registrar_understands() {
        let lost = NacosError::Lost {
            server: "h:1".into(),
            reason: "stream ended".into(),
        };
        assert!(lost.is_connection());
        assert!(matches!(
            RegistryError::from(lost),
            RegistryError::Unavailable { .. }
        ));
        let auth = NacosError::Unauthenticated {
            user: "u".into(),
            server: "h:1".into(),
            reason: "unknown user!".into(),
        };
        assert!(!auth.is_connection());
        assert!(
            auth.is_fatal(),
            "credentials refused: log in again, keep the instances"
        );
        let err = RegistryError::from(auth);
        assert!(matches!(&err, RegistryError::Unauthenticated { user, .. } if user == "u"));
        assert!(err.to_string().contains("`u`"), "{err}");
    }
}
