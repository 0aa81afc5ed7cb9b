//! [`CallError`]: why a call through [`Balanced`](super::Balanced) or
//! [`Reporting`](super::Reporting) failed, and what that means for a retry.

use std::error::Error;
use std::net::SocketAddr;

use thiserror::Error;
use tower::BoxError;

/// Why a call failed. Every variant but `NoInstance` names the instance, and keeps the
/// per-instance service's error as its source ([`into_source`](Self::into_source) gives it
/// back, for example a tonic `Status`).
///
/// ```
/// use std::io;
/// use service_registry::balance::tower::CallError;
///
/// let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
/// let err = CallError::Unreachable { addr: "127.0.0.1:1".parse().unwrap(), source: refused.into() };
/// assert_eq!(err.to_string(), "could not reach 127.0.0.1:1: refused");
/// assert_eq!(err.addr(), Some("127.0.0.1:1".parse().unwrap()));
/// ```
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CallError {
    /// The balancer had no instance to pick (none registered, or none left by the filter).
    #[error("no instance to call: the balancer's set is empty")]
    NoInstance,
    /// The balancer hashes ([`Strategy::ConsistentHash`](crate::balance::Strategy)) and the
    /// [`Balanced`](super::Balanced) service has no key for the call: give it one with
    /// `with_hash_key`. Never retried.
    #[error("the balancer hashes, but the call has no hash key (see `Balanced::with_hash_key`)")]
    NoHashKey,
    /// The request never reached the instance: its service was not ready, or the connection
    /// was refused or could not be made. Counted as a failure of the instance; always safe to
    /// retry.
    #[error("could not reach {addr}: {source}")]
    Unreachable {
        /// The instance.
        addr: SocketAddr,
        /// The per-instance service's error.
        #[source]
        source: BoxError,
    },
    /// The instance failed the call (timed out, reset, or an error the classifier counts
    /// against it). The request may have been processed: retried only when idempotent.
    #[error("{addr} failed the call: {source}")]
    Failed {
        /// The instance.
        addr: SocketAddr,
        /// The per-instance service's error.
        #[source]
        source: BoxError,
    },
    /// The instance answered with an error that the classifier does not count against it
    /// (the caller's mistake, say). Never retried.
    #[error("the call to {addr} returned an error: {source}")]
    Rejected {
        /// The instance.
        addr: SocketAddr,
        /// The per-instance service's error.
        #[source]
        source: BoxError,
    },
}

impl CallError {
    /// The instance the call went to, if it got that far.
    ///
    /// See [`CallError`] for an example.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self {
            CallError::NoInstance | CallError::NoHashKey => None,
            CallError::Unreachable { addr, .. }
            | CallError::Failed { addr, .. }
            | CallError::Rejected { addr, .. } => Some(*addr),
        }
    }

    /// The per-instance service's error, if there was one.
    ///
    /// ```
    /// use service_registry::balance::tower::CallError;
    /// let err = CallError::Failed { addr: "127.0.0.1:1".parse().unwrap(), source: "boom".into() };
    /// assert_eq!(err.into_source().unwrap().to_string(), "boom");
    /// ```
    pub fn into_source(self) -> Option<BoxError> {
        match self {
            CallError::NoInstance | CallError::NoHashKey => None,
            CallError::Unreachable { source, .. }
            | CallError::Failed { source, .. }
            | CallError::Rejected { source, .. } => Some(source),
        }
    }
}

/// True when `err`, or an error in its `source` chain, is an I/O error that means a connection
/// was never made (refused, no route, address not available, not connected): the request
/// cannot have reached the server.
///
/// ```
/// use std::io;
/// use service_registry::balance::tower::is_connect_error;
/// let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
/// assert!(is_connect_error(&refused));
/// let reset = io::Error::new(io::ErrorKind::ConnectionReset, "reset");
/// assert!(!is_connect_error(&reset));
/// ```
pub fn is_connect_error(err: &(dyn Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(err) = current {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused
                    | AddrNotAvailable
                    | NotConnected
                    | HostUnreachable
                    | NetworkUnreachable
            ) {
                return true;
            }
        }
        current = err.source();
    }
    false
}

/// Whether a failed attempt may be sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryClass {
    /// The request never reached an instance: retry.
    Always,
    /// The instance may have processed it: retry only an idempotent call.
    IfIdempotent,
    /// Retrying cannot help (no instance, or the caller's own error).
    Never,
}

/// An error [`RetryPolicy`](super::RetryPolicy) can judge: how retryable it is, and which
/// instance failed (so the retry avoids it). Implemented for [`CallError`] and for boxed
/// errors (`tower::BoxError`, what `tower::balance` returns), which are judged by the
/// [`CallError`] inside them or, failing that, by [`is_connect_error`].
///
/// ```
/// use service_registry::balance::tower::{CallError, RetryClass, RetryableError};
/// let err = CallError::Failed { addr: "127.0.0.1:1".parse().unwrap(), source: "timed out".into() };
/// assert_eq!(err.retry_class(), RetryClass::IfIdempotent);
/// let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(err);
/// assert_eq!(boxed.failed_instance(), Some("127.0.0.1:1".parse().unwrap()));
/// ```
pub trait RetryableError {
    /// How retryable the failure is.
    fn retry_class(&self) -> RetryClass;
    /// The instance that failed, when known.
    fn failed_instance(&self) -> Option<SocketAddr>;
}

impl RetryableError for CallError {
    fn retry_class(&self) -> RetryClass {
        match self {
            CallError::Unreachable { .. } => RetryClass::Always,
            CallError::Failed { .. } => RetryClass::IfIdempotent,
            CallError::NoInstance | CallError::NoHashKey | CallError::Rejected { .. } => {
                RetryClass::Never
            }
        }
    }

    fn failed_instance(&self) -> Option<SocketAddr> {
        self.addr()
    }
}

impl RetryableError for BoxError {
    fn retry_class(&self) -> RetryClass {
        match self.downcast_ref::<CallError>() {
            Some(call) => call.retry_class(),
            None if is_connect_error(&**self) => RetryClass::Always,
            None => RetryClass::IfIdempotent,
        }
    }

    fn failed_instance(&self) -> Option<SocketAddr> {
        self.downcast_ref::<CallError>().and_then(CallError::addr)
    }
}
