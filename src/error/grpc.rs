//! gRPC status codes for token failures, per gRFC A54 (enabled by the `tonic` feature).
//!
//! A call through [`BearerAuth`](crate::BearerAuth) that could not get a token fails with a
//! [`crate::Error`]; tonic turns a layer's error into the first [`tonic::Status`] it finds in
//! the error's source chain, and with this feature our error carries one there. So a gRPC
//! caller sees a meaningful code without any mapping code of yours.
//!
//! # The mapping
//!
//! [gRFC A54](https://github.com/grpc/proposal/blob/master/A54-restrict-control-plane-status-codes.md)
//! asks that what gRPC does on a call's behalf (here: getting its credentials) never fails the
//! call with a code the application's own server could mean (`INVALID_ARGUMENT`, `NOT_FOUND`,
//! `FAILED_PRECONDITION`, …), and that `UNAUTHENTICATED` says what it says: the credentials
//! were refused. A wrong token URL is a configuration error, not a refused credential.
//!
//! | the token failure | gRPC code |
//! |---|---|
//! | could not reach the endpoint, timed out, 5xx, 408, 429, `temporarily_unavailable`, a transient [`Error::custom`](crate::Error::custom) | `UNAVAILABLE` |
//! | the endpoint refused the client's credentials: 401, `invalid_client`, `invalid_grant` | `UNAUTHENTICATED` |
//! | the endpoint knows the client but refuses it this token: 403, `unauthorized_client`, `access_denied` | `PERMISSION_DENIED` |
//! | any other refusal: 404 or 405 (not a token endpoint), `invalid_request`, `invalid_scope`, `unsupported_grant_type`, other 4xx | `INTERNAL` |
//! | a 2xx that is not a usable token, a configuration error found at fetch time, client credentials that could not be made, a panic, no usable runtime, a permanent [`Error::custom`](crate::Error::custom) | `INTERNAL` |
//!
//! The first rule wins: a `503` with `invalid_client` is `UNAVAILABLE`, since trying again
//! may help; a `401` with `unauthorized_client` or `invalid_request` is `UNAUTHENTICATED` (HTTP
//! says the credentials were refused, whatever code is added); a `403` with `invalid_request`
//! is `PERMISSION_DENIED`. The message is `no OAuth 2.0 access token: ` and the error's `Display` (never a
//! secret); the status's source is the error's cause.
//!
//! ```
//! let status = tonic::Status::from(tower_oauth2::Error::custom(false, "no such key"));
//! assert_eq!(status.code(), tonic::Code::Internal);
//! ```

use std::sync::Arc;

use super::{Error, ErrorKind};

/// `error` as a status whose source is `cause`.
pub(crate) fn status_of(
    error: &Error,
    cause: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
) -> tonic::Status {
    let mut status = tonic::Status::new(
        code_of(error),
        format!("no OAuth 2.0 access token: {error}"),
    );
    if let Some(cause) = cause {
        status.set_source(cause);
    }
    status
}

#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
/// The code for `error`: the table in this module's documentation.
fn code_of(error: &Error) -> tonic::Code {
    if error.is_transient() {
        return tonic::Code::Unavailable;
    }
    if error.kind() != ErrorKind::Rejected {
        return tonic::Code::Internal;
    }
    // The rows of the table, in its order: the HTTP status and the OAuth code each place a
    // refusal, and the first row either matches wins (a 401 says the credentials were refused,
    // whatever code the server chose to add).
    let status = error.status().map(|status| status.as_u16());
    let code = error.oauth_error().map(|oauth| oauth.code());
    if status == Some(401) || matches!(code, Some("invalid_client" | "invalid_grant")) {
        tonic::Code::Unauthenticated
    } else if status == Some(403) || matches!(code, Some("unauthorized_client" | "access_denied")) {
        tonic::Code::PermissionDenied
    } else {
        tonic::Code::Internal
    }
}

impl From<Error> for tonic::Status {
    /// Transient failures become `UNAVAILABLE` (the call may be retried); credentials the token
    /// endpoint rejected become `UNAUTHENTICATED`, a client it refuses this token
    /// `PERMISSION_DENIED`; anything else, configuration errors included, `INTERNAL`: see the
    /// [module documentation](self) for the table. The message says the token could not be had
    /// and why, from the error's `Display`, which never contains a secret.
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
