//! gRPC status codes for token failures, per gRFC A54 (enabled by the `tonic` feature).
//!
//! A call through [`BearerAuth`](crate::BearerAuth) that could not get a token fails with a
//! [`crate::Error`]; tonic turns a layer's error into the first [`tonic::Status`] it finds in
//! the error's source chain, and with this feature our error carries one there. So a gRPC
//! caller sees `UNAUTHENTICATED` or `UNAVAILABLE` without any mapping code.

use std::sync::Arc;

use super::{Error, ErrorKind};

/// `error` as a status whose source is `cause`.
pub(crate) fn status_of(
    error: &Error,
    cause: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
) -> tonic::Status {
    let code = if error.is_transient() {
        tonic::Code::Unavailable
    } else if error.kind() == ErrorKind::Rejected {
        tonic::Code::Unauthenticated
    } else {
        tonic::Code::Internal
    };
    let mut status = tonic::Status::new(code, format!("no OAuth 2.0 access token: {error}"));
    if let Some(cause) = cause {
        status.set_source(cause);
    }
    status
}

#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
impl From<Error> for tonic::Status {
    /// Transient failures become `UNAVAILABLE` (the call may be retried); credentials the token
    /// endpoint rejected become `UNAUTHENTICATED`; anything else `INTERNAL`. The message says
    /// the token could not be had and why, from the error's `Display`, which never contains a
    /// secret.
    ///
    /// ```
    /// let status = tonic::Status::from(tower_oauth2::Error::custom(true, "vault sealed"));
    /// assert_eq!(status.code(), tonic::Code::Unavailable);
    /// assert!(status.message().starts_with("no OAuth 2.0 access token"));
    /// ```
    fn from(error: Error) -> Self {
        status_of(&error, error.shared_cause())
    }
}

/// The gRPC status for a failed call, if a token failure caused it.
///
/// With the `tonic` feature, tonic already reports a token failure with the code this gives:
/// the error's source chain holds a `tonic::Status`, which tonic looks for. This is for errors
/// that reached you by another way, such as a [`tower::BoxError`] from a layer stack of your
/// own.
///
/// ```
/// let status = tonic::Status::from_error(Box::new(tower_oauth2::Error::custom(true, "down")));
/// assert_eq!(status.code(), tonic::Code::Unavailable);
/// let mapped = tower_oauth2::error::grpc_status(&status).expect("a token failure");
/// assert_eq!(mapped.code(), tonic::Code::Unavailable);
/// ```
pub fn grpc_status(error: &(dyn std::error::Error + 'static)) -> Option<tonic::Status> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(ours) = error.downcast_ref::<Error>() {
            return Some(ours.clone().into());
        }
        current = error.source();
    }
    None
}
