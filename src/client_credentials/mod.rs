//! [`ClientCredentials`]: the OAuth 2.0 client credentials grant (RFC 6749 §4.4) against any
//! token endpoint. Every rule about the wire format lives here; caching is [`TokenCache`]'s.

pub(crate) mod builder;
mod discovery;
mod request;
mod response;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Uri;
use tracing::Instrument;
use zeroize::Zeroizing;

pub use builder::ClientCredentialsBuilder;
use request::RequestTemplate;

use response::{decode, DecodeContext};

use crate::clock::Runtime;
use crate::source::{TokenFuture, TokenSource};
use crate::transport::url_rules::shown;
use crate::transport::{self, Transport};
use crate::{cache::CachePolicy, AccessToken, ConfigError, Error, ErrorKind, TokenCache};

/// A token source for the client credentials grant, with its cache built in.
///
/// [`token`](TokenSource::token) answers from the cache and fetches only when needed (see
/// [`CachePolicy`]); clones share the cache, so build one per credential set and clone it
/// wherever it is needed.
///
/// ```no_run
/// use tower_oauth2::{client_auth::AuthStyle, ClientCredentials, TokenSource};
///
/// # async fn demo() -> Result<(), tower_oauth2::Error> {
/// let credentials = ClientCredentials::builder()
///     .token_url("https://tenant.example.com/oauth/token")
///     .client_id("my-client")
///     .client_secret(std::env::var("CLIENT_SECRET").unwrap_or_default())
///     .auth_style(AuthStyle::Form)
///     .audience("https://api.example.com")
///     .scope("read:things")
///     .build()?;
///
/// let token = credentials.token().await?;
/// println!("expires at {:?}", token.expires_at());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ClientCredentials {
    endpoint: Arc<Endpoint>,
    cache: TokenCache,
    caching: Arc<Caching>,
}

/// How a client's tokens are cached, kept to build siblings the same way.
struct Caching {
    policy: CachePolicy,
    #[cfg(feature = "shared-cache")]
    fleet: Option<crate::shared::Fleet>,
}

impl Caching {
    /// A cache in front of `endpoint`, through the shared store if there is one.
    fn cache(&self, endpoint: &Arc<Endpoint>) -> Result<TokenCache, ConfigError> {
        #[cfg(feature = "shared-cache")]
        if let Some(fleet) = &self.fleet {
            let template = &endpoint.template;
            // Tokens bound to a key this process made are of no use to another process.
            let per_process = template.dpop.as_ref().is_some_and(|key| !key.shareable());
            if !per_process {
                let token_url = template.url.to_string();
                let identity = crate::shared::Identity {
                    token_url: &token_url,
                    auth: template.auth.auth(),
                    grant: &template.grant,
                    dpop_jkt: template.dpop.as_ref().map(|key| key.thumbprint()),
                };
                let shared = fleet.source(
                    endpoint.clone(),
                    identity,
                    &self.policy,
                    crate::shared::FetchShape {
                        request_timeout: endpoint.transport.timeout,
                        discovery: endpoint.discovery.is_some(),
                    },
                    endpoint.default_lifetime,
                )?;
                return Ok(match &template.dpop {
                    Some(key) => TokenCache::with_policy(
                        crate::dpop::BoundSource {
                            inner: shared,
                            key: key.clone(),
                        },
                        self.policy.clone(),
                    ),
                    None => TokenCache::with_policy(shared, self.policy.clone()),
                });
            }
        }
        Ok(TokenCache::with_policy(
            endpoint.clone(),
            self.policy.clone(),
        ))
    }
}

impl ClientCredentials {
    /// Start configuring a client.
    pub fn builder() -> ClientCredentialsBuilder {
        ClientCredentialsBuilder::default()
    }

    /// A usable token: the cached one, or one fetched now (shared with every concurrent
    /// caller) if there is none. This is what the layer sends; use it for clients the layer
    /// cannot wrap.
    ///
    /// ```no_run
    /// # async fn demo(credentials: tower_oauth2::ClientCredentials) -> Result<(), Box<dyn std::error::Error>> {
    /// let token = credentials.token().await?;
    /// let status = send_with(token.secret()).await;
    /// if status == 401 {
    ///     // The next call to `token()` fetches a new one.
    ///     credentials.invalidate(&token);
    /// }
    /// # Ok(())
    /// # }
    /// # async fn send_with(_: &str) -> u16 { 200 }
    /// ```
    pub async fn token(&self) -> Result<AccessToken, Error> {
        self.cache.entry().await.map(|entry| entry.relayed())
    }

    /// Drop `token` from the cache if it is still the cached one, because a server rejected
    /// it: the next [`token`](Self::token) fetches a new one. A token that was already
    /// replaced is ignored, so a late report cannot drop its successor.
    pub fn invalidate(&self, token: &AccessToken) {
        self.cache.invalidate(token);
    }

    /// A sibling client asking for tokens for `audience` instead: the same configuration,
    /// credentials and HTTP client, with a cache of its own (and its own shared-cache entry).
    /// For a service that calls several APIs with one client registration.
    ///
    /// ```no_run
    /// # fn demo(credentials: tower_oauth2::ClientCredentials) {
    /// let orders = credentials.with_audience("https://orders.example.com");
    /// let billing = credentials.with_audience("https://billing.example.com");
    /// // Each gets, caches, refreshes and invalidates its own token.
    /// # let _ = (orders, billing);
    /// # }
    /// ```
    pub fn with_audience(&self, audience: impl Into<String>) -> ClientCredentials {
        self.sibling("audience", Some(audience.into()))
    }

    /// A sibling client asking for tokens with these `scopes` (space-joined; none: no `scope`
    /// parameter) instead, like [`with_audience`](Self::with_audience).
    pub fn with_scopes<I, S>(&self, scopes: I) -> ClientCredentials
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let scopes: Vec<String> = scopes.into_iter().map(Into::into).collect();
        self.sibling("scope", (!scopes.is_empty()).then(|| scopes.join(" ")))
    }

    /// A sibling whose token requests set parameter `name` to `value` (or leave it out).
    fn sibling(&self, name: &'static str, value: Option<String>) -> ClientCredentials {
        let value_shown = value.clone();
        let mut template = self.endpoint.template.clone();
        template.grant = template.grant.with_param(name, value);
        let endpoint = Arc::new(Endpoint {
            template,
            discovery: self.endpoint.discovery.clone(),
            shown: self.endpoint.shown.clone(),
            transport: self.endpoint.transport.clone(),
            default_lifetime: self.endpoint.default_lifetime,
            redact: self.endpoint.redact.clone(),
            metrics: self.endpoint.metrics.clone(),
        });
        // Its metrics report apart from the parent's and the other siblings'.
        let mut policy = self.caching.policy.clone();
        policy.labels.retain(|(label, _)| *label != name);
        policy
            .labels
            .push((name, Arc::from(value_shown.unwrap_or_default())));
        let caching = Arc::new(Caching {
            policy,
            #[cfg(feature = "shared-cache")]
            fleet: self.caching.fleet.clone(),
        });
        // Only the shared store's key material could be refused, and it was accepted already.
        let cache = caching
            .cache(&endpoint)
            .unwrap_or_else(|_| TokenCache::with_policy(endpoint.clone(), caching.policy.clone()));
        ClientCredentials {
            endpoint,
            cache,
            caching,
        }
    }

    /// **Bypasses the cache**: sends a token request to the endpoint on every call, and does
    /// not store what it gets. For diagnostics and tests; to get a token for a request, call
    /// [`token`](Self::token), which answers from the cache.
    pub async fn fetch_uncached(&self) -> Result<AccessToken, Error> {
        self.endpoint.fetch().await
    }
}

impl TokenSource for ClientCredentials {
    fn token(&self) -> TokenFuture<'_> {
        self.cache.token()
    }

    fn invalidate(&self, token: &AccessToken) -> bool {
        TokenSource::invalidate(&self.cache, token)
    }
}

impl From<ClientCredentials> for TokenCache {
    /// The client's own cache, which every clone shares.
    fn from(credentials: ClientCredentials) -> Self {
        credentials.cache
    }
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.endpoint, f)
    }
}

/// Decode an arbitrary response as if the endpoint had sent it, checking the promises the
/// decoder makes about untrusted input: no panic, and no secret in what it returns.
#[cfg(feature = "__fuzz")]
pub(crate) fn fuzz_decode(status: u16, content_type: &str, retry_after: &str, body: &[u8]) {
    const SECRET: &str = "fuzz-secret";
    let status = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    let mut headers = http::HeaderMap::new();
    for (name, value) in [
        (http::header::CONTENT_TYPE, content_type),
        (http::header::RETRY_AFTER, retry_after),
        (http::header::LOCATION, content_type),
    ] {
        if let Ok(value) = http::HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    let context = DecodeContext {
        default_lifetime: Duration::from_secs(3600),
        redact: &[SECRET],
        dpop: false,
    };
    match decode(status, &headers, body, &context) {
        Ok(token) => {
            assert!(!token.secret().is_empty());
            assert!(token.secret().bytes().all(|b| b.is_ascii_graphic()));
        }
        Err(error) => {
            let shown = format!("{error} {error:?}");
            assert!(
                !shown.contains(SECRET),
                "an error shows the secret: {shown}"
            );
        }
    }
}

/// The uncached fetch: one token request per call.
struct Endpoint {
    template: RequestTemplate,
    /// With an issuer instead of a token URL (then `template.url` is the issuer's).
    discovery: Option<Arc<discovery::Discovery>>,
    /// The endpoint as errors name it: `host[:port]/path`, no query.
    shown: String,
    transport: Transport,
    default_lifetime: Duration,
    /// Every form of a credential we send, so that no error can echo one back.
    redact: Vec<Zeroizing<String>>,
    /// Counts DPoP nonce retries, labelled like the client's cache.
    metrics: crate::telemetry::Metrics,
}

impl Endpoint {
    async fn fetch(&self) -> Result<AccessToken, Error> {
        // Before anything that needs them, discovery included.
        runtime_with_timers()?;
        let url = match &self.discovery {
            None => self.template.url.clone(),
            Some(discovery) => discovery
                .token_endpoint(&self.transport)
                .await
                .map_err(|error| self.explain(error, &self.shown))?,
        };
        let shown = shown(&url);
        let span =
            tracing::debug_span!(target: "tower_oauth2::fetch", "token_fetch", endpoint = %shown);
        self.fetch_once(&url)
            .instrument(span)
            .await
            .map_err(|error| self.explain(error, &shown))
    }

    /// `error`, naming this endpoint and saying what is likely to fix it where we can tell.
    fn explain(&self, error: Error, shown: &str) -> Error {
        if error.kind() == ErrorKind::Runtime {
            return error;
        }
        let invalid_client = error
            .oauth_error()
            .is_some_and(|oauth| oauth.code() == "invalid_client");
        let dpop_refused = error
            .oauth_error()
            .is_some_and(|oauth| oauth.code() == "invalid_dpop_proof");
        let hint = match error.status().map(|status| status.as_u16()) {
            _ if error.hint().is_some() => None,
            Some(400 | 401) if dpop_refused => Some(crate::error::hints::DPOP_PROOF_REFUSED),
            Some(404 | 405) => Some(crate::error::hints::CHECK_TOKEN_URL),
            Some(400 | 401) if invalid_client => Some(self.template.auth.invalid_client_hint()),
            _ => None,
        };
        let error = match hint {
            Some(hint) => error.with_hint(hint),
            None => error,
        };
        error.at_endpoint(shown)
    }

    /// One token request, and with DPoP one more if the endpoint asks for a nonce other than
    /// the one the proof carried (`use_dpop_nonce`, RFC 9449 §8), within the same deadline;
    /// the token bound to the key.
    async fn fetch_once(&self, url: &Uri) -> Result<AccessToken, Error> {
        // One timeout for the whole fetch: what the closures, sources and signers take, and a
        // nonce retry, are not given it again.
        let deadline = crate::clock::deadline_in(self.transport.timeout);
        let mut nonce_retried = false;
        loop {
            let (result, new_nonce) = self.attempt(url, deadline).await;
            match (result, &self.template.dpop) {
                (Ok(token), Some(key)) => return Ok(token.with_dpop(key.clone())),
                (Err(error), Some(_))
                    if new_nonce
                        && !nonce_retried
                        && error
                            .oauth_error()
                            .is_some_and(|oauth| oauth.code() == "use_dpop_nonce") =>
                {
                    tracing::debug!(target: "tower_oauth2::fetch", "the token endpoint asked for a DPoP nonce: retrying with it");
                    self.metrics.dpop_nonce_retried();
                    nonce_retried = true;
                }
                (result, _) => return result,
            }
        }
    }

    /// One token request before `deadline`; whether the answer gave a DPoP nonce the request's
    /// proof did not carry.
    async fn attempt(
        &self,
        url: &Uri,
        deadline: tokio::time::Instant,
    ) -> (Result<AccessToken, Error>, bool) {
        match self.attempt_inner(url, deadline).await {
            Ok(answer) => answer,
            Err(error) => (Err(error), false),
        }
    }

    async fn attempt_inner(
        &self,
        url: &Uri,
        deadline: tokio::time::Instant,
    ) -> Result<(Result<AccessToken, Error>, bool), Error> {
        let started = Instant::now();
        let host = url.host().unwrap_or_default();
        let encoded = self.template.encode(url, deadline).await?;
        let sent_nonce = encoded.dpop_nonce;
        let (request, sent_now, read) = (encoded.request, encoded.redact, encoded.read);
        let exchange = self
            .transport
            .exchange_within(request, crate::clock::left(deadline));
        let (parts, body) = match exchange.await {
            Ok(response) => response,
            Err(error) if error.kind() == ErrorKind::Timeout => {
                tracing::warn!(target: "tower_oauth2::fetch", host, timeout = ?self.transport.timeout, "token request timed out");
                return Err(error);
            }
            Err(error) => {
                tracing::warn!(target: "tower_oauth2::fetch", host, %error, "token request failed");
                return Err(error);
            }
        };
        let new_nonce = match &self.template.dpop {
            Some(key) => crate::dpop::Target::of(url).is_ok_and(|target| {
                let kept = crate::dpop::remember_nonce(&**key, &target, &parts.headers);
                crate::dpop::is_new_nonce(kept, sent_nonce.as_deref())
            }),
            None => false,
        };
        let redact: Vec<&str> = self
            .redact
            .iter()
            .chain(&sent_now)
            .map(|s| s.as_str())
            .collect();
        let context = DecodeContext {
            default_lifetime: self.default_lifetime,
            redact: &redact,
            dpop: self.template.dpop.is_some(),
        };
        let result = match body {
            Ok(body) => decode(parts.status, &parts.headers, &body, &context),
            Err(transport::BodyTooLarge) if parts.status.is_success() => {
                Err(Error::invalid_response(format!(
                    "the response body is larger than the limit of {} bytes",
                    self.transport.body_limit
                )))
            }
            Err(transport::BodyTooLarge) => decode(
                parts.status,
                &parts.headers,
                b"[body over the size limit]",
                &context,
            ),
        };
        if let Some(oauth) = result.as_ref().err().and_then(Error::oauth_error) {
            read.refused(oauth.code());
        }
        let elapsed = started.elapsed();
        match &result {
            Ok(token) => tracing::debug!(
                target: "tower_oauth2::fetch",
                host,
                status = parts.status.as_u16(),
                ?elapsed,
                expires_in = ?token.expires_at().map(|at| at.saturating_duration_since(crate::token::now())),
                "token issued"
            ),
            Err(error) if parts.status.is_success() => tracing::warn!(
                target: "tower_oauth2::fetch",
                host,
                status = parts.status.as_u16(),
                ?elapsed,
                %error,
                "token response is not a usable token"
            ),
            Err(error) => tracing::warn!(
                target: "tower_oauth2::fetch",
                host,
                status = parts.status.as_u16(),
                ?elapsed,
                %error,
                "token request rejected"
            ),
        }
        Ok((result, new_nonce))
    }
}

/// An error unless the caller runs on a tokio runtime with timers, which every request needs.
fn runtime_with_timers() -> Result<(), Error> {
    match Runtime::current() {
        None => Err(Error::runtime(
            "ClientCredentials fetches tokens with tokio: call it from within a tokio runtime \
             (built with enable_all())",
        )),
        // Built with `panic = "abort"` this cannot be found out; tokio then aborts at the first
        // timer of a runtime without any.
        Some(runtime) if runtime.timers() == Some(false) => Err(Error::runtime(
            "ClientCredentials needs a tokio runtime with timers: build it with enable_all() (or \
             enable_io() and enable_time())",
        )),
        Some(_) => Ok(()),
    }
}

impl TokenSource for Endpoint {
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(self.fetch())
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.template.grant.grant_type() {
            crate::token_exchange::GRANT_TYPE => "TokenExchange",
            crate::jwt_bearer::GRANT_TYPE => "JwtBearer",
            _ => "ClientCredentials",
        };
        f.debug_struct(name)
            // As errors name it: userinfo and query may hold credentials (a gateway key).
            .field("token_url", &self.shown)
            .field("client_auth", self.template.auth.auth())
            .field("grant_type", &self.template.grant.grant_type())
            .field("params", &self.template.grant.param_names())
            .field(
                "dpop_jkt",
                &self.template.dpop.as_ref().map(|key| key.thumbprint()),
            )
            .field("timeout", &self.transport.timeout)
            .finish_non_exhaustive()
    }
}

/// Every form in which a credential leaves this process: the client's secret in each of its
/// encodings, and parameters whose names say they are credentials.
fn secrets_sent(template: &RequestTemplate) -> Vec<Zeroizing<String>> {
    let mut secrets: Vec<Zeroizing<String>> = template.auth.redact().to_vec();
    secrets.extend(template.grant.secrets());
    secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    secrets.dedup();
    secrets
}
