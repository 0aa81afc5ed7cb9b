//! [`Call`]: a request on its way to some instance, with what a retry needs to know.

use std::net::SocketAddr;

/// A request for [`Balanced`](super::Balanced) and [`RetryPolicy`](super::RetryPolicy): the
/// request itself, whether it may be sent twice, and the instances that already failed it.
/// The per-instance service receives the bare request.
///
/// ```
/// use service_registry::balance::tower::Call;
///
/// let call = Call::new("GET /users/7").idempotent(true);
/// assert!(call.is_idempotent());
/// assert!(call.tried().is_empty());
/// assert_eq!(call.into_request(), "GET /users/7");
/// ```
#[derive(Clone, Debug)]
pub struct Call<R> {
    request: R,
    idempotent: bool,
    tried: Vec<SocketAddr>,
    attempt: u32,
}

impl<R> Call<R> {
    /// A call that is not idempotent: retried only when it never reached an instance.
    ///
    /// See [`Call`] for an example.
    pub fn new(request: R) -> Self {
        Self {
            request,
            idempotent: false,
            tried: Vec::new(),
            attempt: 0,
        }
    }

    /// Marks the call as safe to send more than once (a read, a put of the same value): then
    /// [`RetryPolicy`](super::RetryPolicy) also retries it after an instance failed it (timed
    /// out, reset the connection, answered with an error), not only after a connection
    /// failure.
    ///
    /// See [`Call`] for an example.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }

    /// True when marked [`idempotent`](Self::idempotent).
    ///
    /// See [`Call`] for an example.
    pub fn is_idempotent(&self) -> bool {
        self.idempotent
    }

    /// The instances that failed this call so far, oldest first.
    ///
    /// See [`Call`] for an example.
    pub fn tried(&self) -> &[SocketAddr] {
        &self.tried
    }

    /// The request.
    ///
    /// ```
    /// let call = service_registry::balance::Call::new(7);
    /// assert_eq!(*call.request(), 7);
    /// ```
    pub fn request(&self) -> &R {
        &self.request
    }

    /// The request, for the per-instance service.
    ///
    /// See [`Call`] for an example.
    pub fn into_request(self) -> R {
        self.request
    }

    /// How many times it has been retried.
    pub(crate) fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Records a failed attempt (on `addr`, when known) before the next one.
    pub(crate) fn failed_on(&mut self, addr: Option<SocketAddr>) {
        if let Some(addr) = addr {
            if !self.tried.contains(&addr) {
                self.tried.push(addr);
            }
        }
        self.attempt += 1;
    }
}
