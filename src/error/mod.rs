//! [`Error`]: every way getting a token can fail, and the RFC 6749 §5.2 error body;
//! [`ConfigError`]: what a builder refuses before any request.

mod config;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub mod grpc;
pub(crate) mod hints;

pub use config::ConfigError;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub use grpc::grpc_status;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

const TOKEN_ENDPOINT: &str = "token endpoint";
const ISSUER_METADATA: &str = "issuer metadata";
const ISSUER: &str = "issuer";

/// A type-erased error, as tower uses.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, broadly. Match on it to decide what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The token endpoint answered with a non-success status, or with an RFC 6749 §5.2
    /// error body. [`Error::status`] and [`Error::oauth_error`] tell more.
    Rejected,
    /// The token endpoint could not be reached or the connection failed.
    Transport,
    /// The token endpoint did not answer within the fetch timeout.
    Timeout,
    /// The token endpoint answered 2xx, but not with a usable token.
    InvalidResponse,
    /// The configuration cannot work, found out at fetch time (the issuer's metadata lists
    /// other client authentication methods, a source asks its own cache for a token). What
    /// `build()` finds is a [`ConfigError`], which converts to this kind.
    Config,
    /// The credentials for this request could not be made: the client's assertion could not
    /// be signed (the crypto provider failed, no randomness, a clock before 1970), or a
    /// credential made elsewhere (a mounted file, a closure: a client assertion, a secret, a
    /// subject token) is missing, empty, expired or unreadable. The error names the file;
    /// [`Error::is_transient`] says whether waiting may fix it (a file not mounted yet). A
    /// file's problem is found before anything is sent, so the cache does not back off for it.
    ClientAuth,
    /// A custom [`TokenSource`](crate::TokenSource) failed.
    Other,
    /// Code the crate calls panicked: a token source, the HTTP client. The panic's message
    /// went to the panic hook, not into this error (it may hold a credential).
    Panic,
    /// The caller's context cannot run the fetch: no tokio runtime, or one built without IO or
    /// timers. Not the endpoint's fault, so the cache does not back off: the next call from a
    /// runtime with `enable_all()` fetches at once.
    Runtime,
}

/// The RFC 6749 §5.2 error body: `error`, `error_description`, `error_uri`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub(crate) code: String,
    pub(crate) description: Option<String>,
    pub(crate) uri: Option<String>,
}

impl OAuthError {
    /// The `error` code, e.g. `invalid_client`.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The `error_description`, if the server sent one.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The `error_uri`, if the server sent one.
    pub fn uri(&self) -> Option<&str> {
        self.uri.as_deref()
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.code)?;
        if let Some(description) = &self.description {
            write!(f, ": {description}")?;
        }
        if let Some(uri) = &self.uri {
            write!(f, " (see {uri})")?;
        }
        Ok(())
    }
}

/// What an endpoint's refusal carries, named: `Error::rejected(Rejected { oauth, ..Rejected::status(code) })`.
pub(crate) struct Rejected {
    pub(crate) status: StatusCode,
    /// The RFC 6749 §5.2 error body.
    pub(crate) oauth: Option<OAuthError>,
    /// An excerpt of any other body: bounded, printable and redacted already.
    pub(crate) excerpt: Option<String>,
    pub(crate) retry_after: Option<Duration>,
    /// The message, instead of "the token endpoint rejected the request".
    pub(crate) note: Option<String>,
}

impl Rejected {
    /// A refusal with `status` and nothing else.
    pub(crate) fn status(status: StatusCode) -> Self {
        Rejected {
            status,
            oauth: None,
            excerpt: None,
            retry_after: None,
            note: None,
        }
    }
}

/// Why no token could be had.
///
/// Cheap to clone (one reference count), so every caller waiting on one failed fetch gets the
/// same error. It never contains a client secret or a token: bodies from the endpoint are cut to
/// a short printable excerpt with anything we sent redacted.
///
/// ```
/// # async fn demo(source: tower_oauth2::ClientCredentials) {
/// use tower_oauth2::{ErrorKind, TokenSource};
///
/// match source.token().await {
///     Ok(token) => println!("token expires at {:?}", token.expires_at()),
///     Err(err) if err.kind() == ErrorKind::Rejected && err.status().map(|s| s.as_u16()) == Some(403) => {
///         eprintln!("credentials are valid but not allowed: {err}");
///     }
///     Err(err) if err.is_transient() => eprintln!("try again later: {err}"),
///     Err(err) => eprintln!("fix the configuration: {err}"),
/// }
/// # }
/// ```
#[derive(Clone)]
pub struct Error {
    inner: Arc<Inner>,
}

struct Inner {
    kind: ErrorKind,
    message: String,
    status: Option<StatusCode>,
    oauth: Option<OAuthError>,
    excerpt: Option<String>,
    retry_after: Option<Duration>,
    transient: bool,
    /// Found before anything was sent (a credential file missing, empty or expired): not the
    /// endpoint's failure, so the cache does not back off.
    local: bool,
    /// Shared, so that the gRPC status in the chain can point at it too.
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
    /// The token endpoint, as `host/path` (never a query, never credentials).
    endpoint: Option<String>,
    /// What `endpoint` is: the token endpoint, or the issuer's metadata.
    endpoint_role: &'static str,
    /// What is likely to fix it, when we can tell.
    hint: Option<String>,
    /// When the cache tries again, for an error served during a backoff step.
    next_attempt_in: Option<Duration>,
    /// This error as a gRPC status, made on first use: tonic looks for a `Status` in the source
    /// chain of a layer's error, and uses its code instead of `Unknown`.
    #[cfg(feature = "tonic")]
    grpc_status: std::sync::OnceLock<tonic::Status>,
}

impl Inner {
    /// A copy to add context to (the gRPC status is made again from the new one).
    fn copy(&self) -> Inner {
        Inner {
            kind: self.kind,
            message: self.message.clone(),
            status: self.status,
            oauth: self.oauth.clone(),
            excerpt: self.excerpt.clone(),
            retry_after: self.retry_after,
            transient: self.transient,
            local: self.local,
            source: self.source.clone(),
            endpoint: self.endpoint.clone(),
            endpoint_role: self.endpoint_role,
            hint: self.hint.clone(),
            next_attempt_in: self.next_attempt_in,
            #[cfg(feature = "tonic")]
            grpc_status: std::sync::OnceLock::new(),
        }
    }
}

impl Error {
    /// The fetch could not run where it was called (see [`ErrorKind::Runtime`]).
    pub(crate) fn runtime(message: impl Into<String>) -> Self {
        Self::from_inner(Self::build(ErrorKind::Runtime, message.into()))
    }

    /// A [`TokenSource`](crate::TokenSource) panicked. The panic's message is not included: it
    /// is user text that may hold a credential, and the panic hook has already printed it.
    pub(crate) fn panicked() -> Self {
        Self::panicked_in("the token source")
    }

    /// `what` panicked; see [`Error::panicked`].
    pub(crate) fn panicked_in(what: &str) -> Self {
        Self::from_inner(Self::build(
            ErrorKind::Panic,
            format!("{what} panicked (its message went to the panic hook, usually stderr)"),
        ))
    }

    /// Whether the cache should count this against the endpoint (back off, keep it as the
    /// last error). Failures of the caller's context are not the endpoint's.
    pub(crate) fn counts_as_endpoint_failure(&self) -> bool {
        self.inner.kind != ErrorKind::Runtime && !self.inner.local
    }

    /// The same error, found before anything was sent: the cache does not back off for it.
    pub(crate) fn found_locally(self) -> Self {
        self.with(|inner| inner.local = true)
    }

    /// An error of this crate that a credential closure or source returned, said as
    /// `context: error` (with the same kind, transience and details).
    pub(crate) fn within(&self, context: &str) -> Self {
        self.with(|inner| inner.message = format!("{context}: {}", inner.message))
    }

    /// The client's credentials for one request could not be made (see
    /// [`ErrorKind::ClientAuth`]).
    #[cfg_attr(not(feature = "rustls-no-provider"), allow(dead_code))]
    pub(crate) fn client_auth(message: impl Into<String>) -> Self {
        Self::from_inner(Self::build(ErrorKind::ClientAuth, message.into()))
    }

    /// A credential made elsewhere could not be had; `transient` when waiting may fix it.
    pub(crate) fn credential(message: impl Into<String>, transient: bool) -> Self {
        let mut inner = Self::build(ErrorKind::ClientAuth, message.into());
        inner.transient = transient;
        Self::from_inner(inner)
    }

    /// Like [`credential`](Self::credential), caused by the application's `source`.
    pub(crate) fn credential_from(
        message: impl Into<String>,
        transient: bool,
        source: BoxError,
    ) -> Self {
        let mut inner = Self::build(ErrorKind::ClientAuth, message.into());
        inner.transient = transient;
        inner.source = Some(source.into());
        Self::from_inner(inner)
    }

    fn build(kind: ErrorKind, message: String) -> Inner {
        Inner {
            kind,
            message,
            status: None,
            oauth: None,
            excerpt: None,
            retry_after: None,
            transient: matches!(kind, ErrorKind::Transport | ErrorKind::Timeout),
            local: false,
            source: None,
            endpoint: None,
            endpoint_role: TOKEN_ENDPOINT,
            hint: None,
            next_attempt_in: None,
            #[cfg(feature = "tonic")]
            grpc_status: std::sync::OnceLock::new(),
        }
    }

    fn from_inner(inner: Inner) -> Self {
        Error {
            inner: Arc::new(inner),
        }
    }

    /// A configuration mistake; `message` says what to fix.
    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::from_inner(Self::build(ErrorKind::Config, message.into()))
    }

    /// The endpoint answered 2xx with a body that is not a token response at all (an HTML
    /// page, say). `excerpt` must already be bounded, printable and redacted.
    pub(crate) fn not_a_token_response(message: impl Into<String>, excerpt: String) -> Self {
        let mut inner = Self::build(ErrorKind::InvalidResponse, message.into());
        inner.excerpt = Some(excerpt);
        inner.hint = Some(hints::NOT_A_TOKEN_ENDPOINT.into());
        Self::from_inner(inner)
    }

    /// The endpoint answered 2xx with something that is not a usable token.
    pub(crate) fn invalid_response(message: impl Into<String>) -> Self {
        Self::from_inner(Self::build(ErrorKind::InvalidResponse, message.into()))
    }

    pub(crate) fn transport(source: impl Into<BoxError>) -> Self {
        let source = source.into();
        let untrusted = causes(&*source).any(is_certificate_error);
        let not_tls = causes(&*source).any(is_not_tls);
        let message = if untrusted {
            "the token endpoint's TLS certificate is not trusted (for a private CA, see \
             root_certificate_pem)"
        } else if not_tls {
            "the token endpoint does not speak TLS on this port"
        } else {
            "could not reach the token endpoint"
        };
        let mut inner = Self::build(ErrorKind::Transport, message.into());
        if not_tls {
            inner.hint = Some(hints::PLAIN_HTTP_PORT.into());
        }
        // Retrying does not make a certificate trusted, nor a plain port speak TLS.
        inner.transient = !untrusted && !not_tls;
        inner.source = Some(source.into());
        Self::from_inner(inner)
    }

    pub(crate) fn timeout(after: Duration) -> Self {
        Self::from_inner(Self::build(
            ErrorKind::Timeout,
            format!("the token endpoint did not answer within {after:?}"),
        ))
    }

    /// The endpoint said no; see [`Rejected`] for the details it may carry.
    pub(crate) fn rejected(rejected: Rejected) -> Self {
        let Rejected {
            status,
            oauth,
            excerpt,
            retry_after,
            note,
        } = rejected;
        let transient = status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
            || oauth
                .as_ref()
                .is_some_and(|o| o.code == "temporarily_unavailable");
        let message = note.unwrap_or_else(|| "the token endpoint rejected the request".into());
        Self::from_inner(Inner {
            status: Some(status),
            oauth,
            excerpt,
            retry_after,
            transient,
            ..Self::build(ErrorKind::Rejected, message)
        })
    }

    /// An error from a custom [`TokenSource`](crate::TokenSource).
    ///
    /// `transient` decides whether callers should expect a retry to help; the cache backs off
    /// either way.
    ///
    /// ```
    /// let err = tower_oauth2::Error::custom(true, "vault sealed");
    /// assert!(err.is_transient());
    /// assert_eq!(err.kind(), tower_oauth2::ErrorKind::Other);
    /// ```
    pub fn custom(transient: bool, source: impl Into<BoxError>) -> Self {
        let mut inner = Self::build(ErrorKind::Other, "the token source failed".into());
        inner.transient = transient;
        inner.source = Some(source.into().into());
        Self::from_inner(inner)
    }

    fn with(&self, change: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = self.inner.copy();
        change(&mut inner);
        Self::from_inner(inner)
    }

    /// The same error, naming the token endpoint (`host/path`) it came from, unless it already
    /// names where it came from.
    pub(crate) fn at_endpoint(self, endpoint: &str) -> Self {
        self.at(TOKEN_ENDPOINT, endpoint)
    }

    /// The same error, naming the issuer metadata document (`host/path`) it came from.
    pub(crate) fn at_metadata(self, url: &str) -> Self {
        self.at(ISSUER_METADATA, url)
    }

    /// The same error, naming the issuer (`host/path`) whose metadata could not be found.
    pub(crate) fn at_issuer(self, issuer: &str) -> Self {
        self.at(ISSUER, issuer)
    }

    fn at(self, role: &'static str, place: &str) -> Self {
        if self.inner.endpoint.is_some() {
            return self;
        }
        self.with(|inner| {
            inner.endpoint = Some(place.to_owned());
            inner.endpoint_role = role;
        })
    }

    /// The same error, with what is likely to fix it.
    pub(crate) fn with_hint(self, hint: impl Into<String>) -> Self {
        let hint = hint.into();
        self.with(|inner| inner.hint = Some(hint))
    }

    /// The same error, served again during a backoff step that ends in `delay`.
    pub(crate) fn retrying_in(&self, delay: Duration) -> Self {
        self.with(|inner| inner.next_attempt_in = Some(delay))
    }

    /// The cause, shareable with a gRPC status.
    #[cfg(feature = "tonic")]
    pub(crate) fn shared_cause(
        &self,
    ) -> Option<Arc<dyn std::error::Error + Send + Sync + 'static>> {
        self.inner.source.clone()
    }

    /// What went wrong, broadly.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The HTTP status the token endpoint answered with, for [`ErrorKind::Rejected`].
    ///
    /// `401` means the endpoint did not accept the client credentials; `403` means it accepted
    /// them but the client may not have this token. Retrying helps neither.
    pub fn status(&self) -> Option<StatusCode> {
        self.inner.status
    }

    /// The RFC 6749 §5.2 error body, when the endpoint sent one.
    pub fn oauth_error(&self) -> Option<&OAuthError> {
        self.inner.oauth.as_ref()
    }

    /// A short printable excerpt of a failing body that was not an RFC 6749 error
    /// (an HTML error page, say). Bounded, and anything we sent is redacted.
    pub fn body_excerpt(&self) -> Option<&str> {
        self.inner.excerpt.as_deref()
    }

    /// The token endpoint the failure came from, as `host/path` (no query, no credentials); for
    /// a failure to discover it, the issuer's metadata document.
    pub fn endpoint(&self) -> Option<&str> {
        self.inner.endpoint.as_deref()
    }

    /// What is likely to fix it, when the crate can tell (also in the `Display` text).
    ///
    /// ```
    /// # async fn demo(credentials: tower_oauth2::ClientCredentials) {
    /// if let Err(error) = credentials.token().await {
    ///     eprintln!("no token: {error}");
    ///     if let Some(hint) = error.hint() {
    ///         eprintln!("try: {hint}");
    ///     }
    /// }
    /// # }
    /// ```
    pub fn hint(&self) -> Option<&str> {
        self.inner.hint.as_deref()
    }

    /// For an error served again during a backoff step: how long until the cache tries the
    /// endpoint again (measured when the error was served).
    pub fn next_attempt_in(&self) -> Option<Duration> {
        self.inner.next_attempt_in
    }

    /// How long the endpoint asked us to wait (`Retry-After`), if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// Whether trying again later may help: true for 5xx, 408, 429, `temporarily_unavailable`,
    /// connection failures and timeouts; false for 400/401/403, invalid responses and
    /// configuration mistakes.
    pub fn is_transient(&self) -> bool {
        self.inner.transient
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        let mut out = f.debug_struct("Error");
        out.field("kind", &inner.kind)
            .field("message", &inner.message);
        if let Some(status) = inner.status {
            out.field("status", &status);
        }
        if let Some(oauth) = &inner.oauth {
            out.field("oauth_error", oauth);
        }
        if let Some(excerpt) = &inner.excerpt {
            out.field("body_excerpt", excerpt);
        }
        if let Some(retry_after) = inner.retry_after {
            out.field("retry_after", &retry_after);
        }
        if let Some(source) = &inner.source {
            out.field("source", source);
        }
        if let Some(endpoint) = &inner.endpoint {
            out.field("endpoint", endpoint);
        }
        if let Some(hint) = &inner.hint {
            out.field("hint", hint);
        }
        if let Some(delay) = inner.next_attempt_in {
            out.field("next_attempt_in", &delay);
        }
        out.field("transient", &inner.transient).finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.write_str(&inner.message)?;
        if let Some(status) = inner.status {
            write!(f, ": HTTP {status}")?;
        }
        if let Some(oauth) = &inner.oauth {
            write!(f, ": {oauth}")?;
        } else if let Some(excerpt) = &inner.excerpt {
            write!(f, ": body {excerpt:?}")?;
        }
        if let Some(source) = &inner.source {
            // The whole chain: "client error (Connect)" alone does not say what went wrong.
            let mut last = String::new();
            for cause in causes(&**source) {
                let text = cause.to_string();
                if !last.contains(&text) {
                    write!(f, ": {text}")?;
                }
                last = text;
            }
        }
        if let Some(endpoint) = &inner.endpoint {
            write!(f, " ({} {endpoint})", inner.endpoint_role)?;
        }
        if let Some(hint) = &inner.hint {
            write!(f, "; {hint}")?;
        }
        if let Some(delay) = inner.next_attempt_in {
            write!(f, "; next attempt in {:.1} s", delay.as_secs_f64())?;
        }
        Ok(())
    }
}

/// An error and its causes, looking inside `io::Error`s, whose `source` skips the error they
/// wrap.
fn causes<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |error| {
        match error.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => error.source(),
        }
    })
}

#[cfg(feature = "rustls-no-provider")]
fn is_certificate_error(error: &(dyn std::error::Error + 'static)) -> bool {
    matches!(
        error.downcast_ref::<rustls::Error>(),
        Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)
    )
}

#[cfg(not(feature = "rustls-no-provider"))]
fn is_certificate_error(_: &(dyn std::error::Error + 'static)) -> bool {
    false
}

/// The peer answered the TLS handshake with something that is not TLS (plain HTTP, usually).
#[cfg(feature = "rustls-no-provider")]
fn is_not_tls(error: &(dyn std::error::Error + 'static)) -> bool {
    matches!(
        error.downcast_ref::<rustls::Error>(),
        Some(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType
        ))
    )
}

#[cfg(not(feature = "rustls-no-provider"))]
fn is_not_tls(_: &(dyn std::error::Error + 'static)) -> bool {
    false
}

impl std::error::Error for Error {
    /// The cause. With the `tonic` feature, the chain first passes through this error as a
    /// [`tonic::Status`] (whose source is the cause), so that a tonic client reports the
    /// status code of [`From<Error> for tonic::Status`](#impl-From<Error>-for-Status) instead
    /// of `Unknown`.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        #[cfg(feature = "tonic")]
        {
            let status = self
                .inner
                .grpc_status
                .get_or_init(|| grpc::status_of(self, self.shared_cause()));
            Some(status)
        }
        #[cfg(not(feature = "tonic"))]
        self.inner
            .source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}
