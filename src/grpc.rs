//! gRPC status codes for token failures, per gRFC A54 (enabled by the `tonic` feature).

use crate::{Error, ErrorKind};

impl From<Error> for tonic::Status {
    /// Transient failures become `UNAVAILABLE` (the call may be retried); credentials the token
    /// endpoint rejected become `UNAUTHENTICATED`; anything else `INTERNAL`. The message is the
    /// error's `Display`, which never contains a secret.
    fn from(error: Error) -> Self {
        let code = if error.is_transient() {
            tonic::Code::Unavailable
        } else if error.kind() == ErrorKind::Rejected {
            tonic::Code::Unauthenticated
        } else {
            tonic::Code::Internal
        };
        tonic::Status::new(code, error.to_string())
    }
}

/// The gRPC status for a failed call, if a token failure caused it.
///
/// tonic reports errors from the layers under a client as `Status { code: Unknown, .. }` with
/// the original error as its source. This finds a [`crate::Error`] in that chain (or in any
/// error) and maps it as [`From<Error> for tonic::Status`](#impl-From<Error>-for-Status) does.
///
/// ```
/// let status = tonic::Status::from_error(Box::new(tower_oauth2::Error::custom(true, "down")));
/// let mapped = tower_oauth2::grpc_status(&status).expect("a token failure");
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
