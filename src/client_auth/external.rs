//! Credentials made elsewhere: a file the platform mounts and rotates (a Kubernetes projected
//! service-account token, a SPIFFE JWT-SVID, a secret synced by an operator) or a closure of
//! the application's (a call to a metadata server, a vault). They are read at every token
//! request, never at `build()`, so that a rotation needs no restart and a file mounted after
//! start-up is picked up as soon as it appears.
//!
//! Whatever is read is a credential: it is kept in zeroizing buffers, never put in an error
//! (errors name the file, never its content), and the caller redacts it from responses.

use std::fmt;
use std::future::Future;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use zeroize::Zeroizing;

use crate::error::BoxError;
use crate::Error;

/// The largest credential read from a file: far more than any JWT or secret, far less than
/// what a wrong path (a log file, a device) could make us hold.
pub(crate) const FILE_LIMIT: usize = 64 * 1024;

/// What a closure handing out a credential returns.
pub(crate) type CredentialFuture =
    Pin<Box<dyn Future<Output = Result<String, BoxError>> + Send + 'static>>;
type CredentialFn = dyn Fn() -> CredentialFuture + Send + Sync;

/// Where a credential made elsewhere is read from.
#[derive(Clone)]
pub(crate) enum External {
    /// A file, read whole at each request (trailing whitespace, a newline, is not part of it).
    File(PathBuf),
    /// A closure, called at each request.
    Fn(Arc<CredentialFn>),
}

/// What the credential is, for the checks made on it and for the words of errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Kind {
    /// "client assertion", "client secret", "subject token", …
    pub(crate) name: &'static str,
    /// A JWT, whose `exp` is read (without verifying it) to refuse an expired one before the
    /// identity provider does.
    pub(crate) jwt: bool,
}

impl Kind {
    pub(crate) const CLIENT_ASSERTION: Kind = Kind {
        name: "client assertion",
        jwt: true,
    };
    pub(crate) const CLIENT_SECRET: Kind = Kind {
        name: "client secret",
        jwt: false,
    };
    /// A subject token inside a file of another format (a JSON document), checked by its
    /// reader.
    pub(crate) const SUBJECT_TOKEN: Kind = Kind {
        name: "subject token",
        jwt: false,
    };
}

impl External {
    pub(crate) fn file(path: impl Into<PathBuf>) -> Self {
        External::File(path.into())
    }

    pub(crate) fn from_fn<F, Fut>(make: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, BoxError>> + Send + 'static,
    {
        External::Fn(Arc::new(move || Box::pin(make()) as CredentialFuture))
    }

    /// The file, if it is one.
    #[cfg_attr(not(feature = "shared-cache"), allow(dead_code))]
    pub(crate) fn path(&self) -> Option<&Path> {
        match self {
            External::File(path) => Some(path),
            External::Fn(_) => None,
        }
    }

    /// The credential, now: read, checked, and trimmed of surrounding whitespace. A closure
    /// that panics or takes longer than `timeout` is an error, like an HTTP client that does.
    pub(crate) async fn read(
        &self,
        kind: Kind,
        timeout: Duration,
    ) -> Result<Zeroizing<String>, Error> {
        match self {
            // Nothing was sent: the endpoint is not to blame, and the next request reads the
            // file again at once (a late writer, a volume mounted after start-up).
            External::File(path) => read_file(path, kind)
                .and_then(|value| check(&value, kind, self).map(|()| value))
                .map_err(Error::found_locally),
            External::Fn(make) => {
                let value = call(make, kind, timeout).await?;
                check(&value, kind, self)?;
                Ok(value)
            }
        }
    }

    /// Where the credential comes from, as errors say it: `file /var/run/…` or `closure`.
    fn origin(&self) -> String {
        match self {
            External::File(path) => format!("file {}", path.display()),
            External::Fn(_) => "closure".to_owned(),
        }
    }
}

impl fmt::Debug for External {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            External::File(path) => f.debug_tuple("File").field(path).finish(),
            External::Fn(_) => f.write_str("Fn"),
        }
    }
}

/// The file's content, in a buffer allocated once (so that no partial copy is freed unwiped).
pub(crate) fn read_file(path: &Path, kind: Kind) -> Result<Zeroizing<String>, Error> {
    let name = kind.name;
    let shown = path.display();
    // A read of a small local file (tmpfs, in a pod): blocking for microseconds, like the
    // kubelet's own readers; not worth a thread hop.
    // A FIFO or a device could block this thread for ever, past any timeout (opening a FIFO
    // alone waits for a writer): regular files only, checked before opening (the kubelet's
    // symlinks lead to one).
    let metadata = std::fs::metadata(path).map_err(|error| io_error(path, kind, &error))?;
    if metadata.is_dir() {
        return Err(io_error(
            path,
            kind,
            &std::io::ErrorKind::IsADirectory.into(),
        ));
    }
    if !metadata.is_file() {
        return Err(Error::credential(
            format!("the {name} file {shown} is not a regular file (a pipe, a device?)"),
            false,
        ));
    }
    let mut file = std::fs::File::open(path).map_err(|error| io_error(path, kind, &error))?;
    let mut buffer = Zeroizing::new(vec![0u8; FILE_LIMIT + 1]);
    let mut filled = 0;
    loop {
        match file.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => {
                filled += read;
                if filled > FILE_LIMIT {
                    return Err(Error::credential(
                        format!(
                            "the {name} file {shown} is larger than {FILE_LIMIT} bytes: is this \
                             the right file?"
                        ),
                        false,
                    ));
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(io_error(path, kind, &error)),
        }
    }
    let text = std::str::from_utf8(&buffer[..filled]).map_err(|_| {
        Error::credential(format!("the {name} file {shown} is not UTF-8 text"), false)
    })?;
    let trimmed = trimmed(text);
    let mut value = Zeroizing::new(String::with_capacity(trimmed.len()));
    value.push_str(trimmed);
    Ok(value)
}

fn io_error(path: &Path, kind: Kind, error: &std::io::Error) -> Error {
    let name = kind.name;
    let shown = path.display();
    match error.kind() {
        // Not mounted yet, or between the kubelet's rename and its symlink swap: waiting fixes it.
        std::io::ErrorKind::NotFound => Error::credential(
            format!(
                "the {name} file {shown} does not exist (yet): is the volume mounted and the \
                 path right? It is read again at the next token request"
            ),
            true,
        ),
        std::io::ErrorKind::PermissionDenied => Error::credential(
            format!(
                "the {name} file {shown} cannot be read: permission denied (check the volume's \
                 defaultMode / fsGroup)"
            ),
            false,
        ),
        std::io::ErrorKind::IsADirectory => Error::credential(
            format!(
                "the {name} file {shown} is a directory: give the path of the file inside the \
                 mounted volume"
            ),
            false,
        ),
        other => Error::credential(
            format!("the {name} file {shown} cannot be read ({other})"),
            true,
        ),
    }
}

/// The closure's credential, with its panics and hangs contained.
async fn call(
    make: &Arc<CredentialFn>,
    kind: Kind,
    timeout: Duration,
) -> Result<Zeroizing<String>, Error> {
    use futures_util::FutureExt;

    let name = kind.name;
    // The call itself, the timer and dropping the future all happen inside the guard.
    let guarded = async move {
        match tokio::time::timeout(timeout, make()).await {
            Ok(result) => Ok(result),
            Err(_elapsed) => Err(Error::credential(
                format!("the {name} closure did not return within {timeout:?}"),
                true,
            )),
        }
    };
    let result = std::panic::AssertUnwindSafe(guarded)
        .catch_unwind()
        .await
        .unwrap_or_else(|_panic| {
            tracing::error!(target: "tower_oauth2::fetch", "the {name} closure panicked");
            Err(Error::panicked_in(&format!("the {name} closure")))
        })?;
    match result {
        Ok(value) => {
            let value = Zeroizing::new(value);
            let trimmed = trimmed(&value);
            let mut kept = Zeroizing::new(String::with_capacity(trimmed.len()));
            kept.push_str(trimmed);
            Ok(kept)
        }
        // An error of this crate (another client's, say) keeps its kind, transience and
        // words; it is said once, not wrapped in its own gRPC status.
        Err(source) => match source.downcast::<Error>() {
            Ok(error) => Err(error.within(&format!("the {name} closure failed"))),
            // The application's error, as the cause: its text is the application's to choose.
            Err(source) => Err(Error::credential_from(
                format!("the {name} closure failed"),
                true,
                source,
            )),
        },
    }
}

/// A credential without what surrounds it in a file: whitespace (a trailing newline, a CRLF)
/// and the byte order mark that Windows editors and PowerShell's `Out-File` put first.
fn trimmed(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || c == '\u{FEFF}')
}

/// Refuse what the identity provider would refuse anyway, saying why and where from.
fn check(value: &str, kind: Kind, from: &External) -> Result<(), Error> {
    let name = kind.name;
    let origin = from.origin();
    if value.is_empty() {
        // A file being written, or a closure before its first credential: waiting fixes it.
        return Err(Error::credential(
            format!("the {name} {origin} is empty; it is read again at the next token request"),
            true,
        ));
    }
    if !kind.jwt {
        return Ok(());
    }
    let Some(exp) = unverified_exp(value) else {
        return Err(Error::credential(
            format!(
                "the {name} from the {origin} is not a JWT (three base64url parts with a JSON \
                 payload)"
            ),
            false,
        ));
    };
    let Some(exp) = exp else { return Ok(()) };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or_default();
    if exp <= now {
        // Whoever writes it (the kubelet, a SPIFFE helper) is late: waiting may fix it.
        return Err(Error::credential(
            format!(
                "the {name} from the {origin} expired {} s ago (its exp, read without \
                 verifying): whatever writes it has not refreshed it",
                now - exp
            ),
            true,
        ));
    }
    Ok(())
}

/// The `exp` claim of a JWT, read without verifying anything: `None` if it is not a JWT,
/// `Some(None)` if it has no numeric `exp`.
pub(crate) fn unverified_exp(jwt: &str) -> Option<Option<u64>> {
    let mut parts = jwt.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let json = Zeroizing::new(URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?);
    let claims: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&json).ok()?;
    Some(match claims.get("exp") {
        Some(serde_json::Value::Number(exp)) => exp
            .as_u64()
            .or_else(|| exp.as_f64().filter(|e| *e >= 0.0).map(|e| e as u64)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        format!(
            "eyJhbGciOiJSUzI1NiJ9.{}.c2ln",
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn exp_is_read_without_verifying() {
        assert_eq!(
            unverified_exp(&jwt(r#"{"exp":1700000000}"#)),
            Some(Some(1_700_000_000))
        );
        assert_eq!(
            unverified_exp(&jwt(r#"{"exp":1.5e9}"#)),
            Some(Some(1_500_000_000))
        );
        assert_eq!(unverified_exp(&jwt(r#"{"sub":"x"}"#)), Some(None));
        assert_eq!(unverified_exp("not-a-jwt"), None);
        assert_eq!(unverified_exp("a.b.c.d"), None);
        assert_eq!(unverified_exp(&jwt("[1]")), None);
    }
}
