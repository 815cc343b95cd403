//! [`TokenServer`]: a real OAuth 2.0 token endpoint on loopback, for testing code that uses this
//! crate (feature `test-util`). The recipe: [`guide::testing`](crate::guide::testing).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// How a client authenticated to the [`TokenServer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientAuth {
    /// `Authorization: Basic`, id and secret form-urlencoded (RFC 6749 §2.3.1).
    Basic,
    /// `client_id` and `client_secret` in a form body.
    Form,
    /// `client_id` and `client_secret` in a JSON body.
    Json,
    /// A JWT client assertion in a form body (`private_key_jwt` or `client_secret_jwt`).
    Assertion,
    /// None: a public client, accepted with [`TokenServerBuilder::public_clients`].
    None,
}

impl std::fmt::Display for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClientAuth::Basic => "HTTP Basic",
            ClientAuth::Form => "form body",
            ClientAuth::Json => "JSON body",
            ClientAuth::Assertion => "client assertion",
            ClientAuth::None => "no client authentication",
        })
    }
}

/// A request the [`TokenServer`] received, fully read.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Received {
    /// The method (`POST` from this crate).
    pub method: http::Method,
    /// The path and query it was sent to.
    pub uri: http::Uri,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

impl Received {
    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The body, read as `application/x-www-form-urlencoded`.
    pub fn form(&self) -> HashMap<String, String> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }

    /// The body, read as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }

    /// `Authorization: Basic` as sent: `(id, secret)` after base64, before any url-decoding.
    pub fn basic(&self) -> Option<(String, String)> {
        let encoded = self.header("authorization")?.strip_prefix("Basic ")?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        let (id, secret) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
        Some((id.to_owned(), secret.to_owned()))
    }
}

/// Answers a request in place of the [`TokenServer`]'s own behaviour; see
/// [`TokenServerBuilder::script`].
type Script = dyn Fn(Received, usize) -> futures_util::future::BoxFuture<'static, Option<Response<Full<Bytes>>>>
    + Send
    + Sync;

/// What an assertion verifier is handed besides the assertion: the server's own URLs, which a
/// real identity provider checks the assertion's `aud` against (RFC 7523 §3).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AssertionContext {
    token_url: String,
    base_url: String,
}

impl AssertionContext {
    /// The token endpoint URL, [`TokenServer::url`]: the `aud` this crate puts in assertions.
    pub fn token_url(&self) -> &str {
        &self.token_url
    }

    /// The server's origin, `http://127.0.0.1:port` (no trailing slash): the `aud` of clients
    /// told to name the issuer instead (`assertion_audience`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }
}

/// A failure for the [`TokenServer`] to answer with, instead of a token.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Failure {
    /// An RFC 6749 §5.2 error: this status and `{"error": code}`.
    OAuth {
        /// The HTTP status, e.g. 400 or 401.
        status: u16,
        /// The `error` code, e.g. `invalid_client`.
        error: String,
    },
    /// This status with `Retry-After: seconds` and an empty body (e.g. 429 or 503).
    RetryAfter {
        /// The HTTP status.
        status: u16,
        /// The `Retry-After` value, in seconds.
        seconds: u64,
    },
    /// Any status, content type and body: an HTML error page, a body that is not a token.
    Body {
        /// The HTTP status.
        status: u16,
        /// The `Content-Type`.
        content_type: String,
        /// The body.
        body: String,
    },
    /// A normal answer, after this delay (for timeouts, and callers that wait together).
    Delay(Duration),
}

/// A token endpoint for the client credentials grant on `127.0.0.1`, for your tests: it answers
/// on its token path only (`/oauth/token` unless [`token_path`](TokenServerBuilder::token_path)
/// says otherwise; 404 elsewhere), checks the client's credentials in every style the crate
/// sends (HTTP Basic, form or JSON body),
/// issues `<prefix>-1`, `<prefix>-2`, … with the lifetime you choose, counts requests, and
/// answers with the [`Failure`]s you queue. It stops when dropped.
///
/// ```
/// use std::time::Duration;
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
/// use tower_oauth2::test_util::{Failure, TokenServer};
/// use tower_oauth2::{BearerAuthLayer, ClientCredentials};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// let server = TokenServer::builder()
///     .client("my-service", "test-secret")
///     .lifetime(Duration::from_secs(300))
///     .start()
///     .await?;
/// let credentials = ClientCredentials::builder()
///     .token_url(server.url())
///     .client_id("my-service")
///     .client_secret("test-secret")
///     .build()?;
///
/// // The code under test: a client behind the layer.
/// let api = service_fn(|request: http::Request<()>| async move {
///     let auth = request.headers()["authorization"].to_str().unwrap().to_owned();
///     Ok::<_, std::convert::Infallible>(http::Response::new(auth))
/// });
/// let client = ServiceBuilder::new().layer(BearerAuthLayer::new(credentials)).service(api);
///
/// for _ in 0..3 {
///     let response = client.clone().oneshot(http::Request::new(())).await?;
///     assert_eq!(response.body(), "Bearer token-1");
/// }
/// assert_eq!(server.requests(), 1);
/// assert!(server.accepts("token-1"));
///
/// // An outage: the next token request fails.
/// server.fail_next(1, Failure::RetryAfter { status: 503, seconds: 1 });
/// # Ok(())
/// # }
/// ```
pub struct TokenServer {
    addr: SocketAddr,
    url: String,
    state: Arc<State>,
    accepting: tokio::task::JoinHandle<()>,
}

/// Configures a [`TokenServer`].
#[derive(Clone)]
pub struct TokenServerBuilder {
    script: Option<Arc<Script>>,
    assertions: Option<Arc<AssertionCheck>>,
    grants: Vec<(String, Arc<GrantCheck>)>,
    public_clients: bool,
    client_id: String,
    client_secret: String,
    lifetime: Duration,
    prefix: String,
    latency: Duration,
    path: String,
    dpop: Option<Arc<DpopCheck>>,
    dpop_nonce: Option<String>,
}

/// A DPoP proof's key thumbprint, if the proof is valid for a token request to this server.
type DpopCheck = dyn Fn(&str, &Received) -> Option<String> + Send + Sync;

/// Whether a client assertion is valid, as the identity provider would check it.
type AssertionCheck = dyn Fn(&str, &AssertionContext) -> bool + Send + Sync;

/// Whether the parameters of a grant other than client credentials are valid.
type GrantCheck = dyn Fn(&HashMap<String, String>) -> bool + Send + Sync;

/// `grant_type` of RFC 8693 token exchange.
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

struct State {
    script: Option<Arc<Script>>,
    assertions: Option<Arc<AssertionCheck>>,
    grants: Vec<(String, Arc<GrantCheck>)>,
    public_clients: bool,
    received: Mutex<Vec<Received>>,
    client_id: String,
    client_secret: String,
    prefix: String,
    latency: Duration,
    /// The token endpoint's path: anything else is 404, as on a real server.
    path: String,
    context: AssertionContext,
    lifetime: Mutex<Duration>,
    requests: AtomicUsize,
    /// Every token issued, with the instant it expires (by the lifetime it was issued with).
    issued: Mutex<HashMap<String, Instant>>,
    failures: Mutex<VecDeque<Failure>>,
    last_auth: Mutex<Option<ClientAuth>>,
    dpop: Option<Arc<DpopCheck>>,
    dpop_nonce: Option<String>,
    /// The key thumbprint (`cnf.jkt`) of every DPoP-bound token issued.
    bound: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for TokenServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenServerBuilder")
            .field("client_id", &self.client_id)
            .field("lifetime", &self.lifetime)
            .field("prefix", &self.prefix)
            .field("scripted", &self.script.is_some())
            .finish_non_exhaustive()
    }
}

impl TokenServerBuilder {
    /// The client it accepts (default `test-client` / `test-secret`).
    pub fn client(mut self, id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.client_id = id.into();
        self.client_secret = secret.into();
        self
    }

    /// Accept JWT client assertions (`private_key_jwt`, `client_secret_jwt`) from the client
    /// whose id [`client`](Self::client) gives, when `verify(assertion, context)` says the
    /// assertion is valid: check its signature and claims there with the verifier of your
    /// choice, as your identity provider would; `context` has the server's own URLs for the
    /// `aud` check. Requests with a client secret are still checked as before.
    ///
    /// ```
    /// # async fn demo() -> std::io::Result<()> {
    /// use tower_oauth2::test_util::TokenServer;
    ///
    /// let server = TokenServer::builder()
    ///     .client("my-service", "")
    ///     .client_assertions(|assertion, server| {
    ///         // Decode and verify with the JWT library of your choice; here, a stand-in.
    ///         let aud = server.token_url();
    ///         assertion.split('.').count() == 3 && aud.ends_with("/oauth/token")
    ///     })
    ///     .start()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn client_assertions(
        mut self,
        verify: impl Fn(&str, &AssertionContext) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.assertions = Some(Arc::new(verify));
        self
    }

    /// Accept the grant `grant_type` besides client credentials (token exchange, RFC 8693
    /// `urn:ietf:params:oauth:grant-type:token-exchange`; jwt-bearer, RFC 7523
    /// `urn:ietf:params:oauth:grant-type:jwt-bearer`) when `verify(params)` says its
    /// parameters are valid: check the `subject_token` or `assertion` there with the issuer key
    /// your identity provider trusts, as it would. Otherwise it answers `400 invalid_grant`.
    /// Client authentication is checked as for every grant (see
    /// [`public_clients`](Self::public_clients)). A token exchange's answer carries
    /// `issued_token_type`: the `requested_token_type`, or the access token type. What the
    /// client sent is in [`TokenServer::received`].
    ///
    /// ```
    /// # async fn demo() -> std::io::Result<()> {
    /// use tower_oauth2::test_util::TokenServer;
    ///
    /// let server = TokenServer::builder()
    ///     .grant("urn:ietf:params:oauth:grant-type:token-exchange", |params| {
    ///         params.get("subject_token").map(String::as_str) == Some("the-service-token")
    ///     })
    ///     .public_clients()
    ///     .start()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn grant(
        mut self,
        grant_type: impl Into<String>,
        verify: impl Fn(&HashMap<String, String>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.grants.push((grant_type.into(), Arc::new(verify)));
        self
    }

    /// Issue DPoP-bound tokens (RFC 9449) to token requests with a `DPoP` proof when
    /// `verify(proof, request)` returns the proof key's RFC 7638 thumbprint: check the proof's
    /// signature with its `jwk`, its `htm`, `htu`, `iat` and `jti` there, as your identity
    /// provider would. Such tokens have `token_type: DPoP`; [`TokenServer::cnf_jkt`] gives the
    /// thumbprint each is bound to. A proof it refuses is answered `400 invalid_dpop_proof`.
    /// Without this, proofs are ignored and bearer tokens issued, like a server without DPoP.
    pub fn dpop_proofs(
        mut self,
        verify: impl Fn(&str, &Received) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.dpop = Some(Arc::new(verify));
        self
    }

    /// Require DPoP proofs to carry `nonce` (RFC 9449 §8): a proof without it is answered
    /// `400 use_dpop_nonce` with `DPoP-Nonce: <nonce>`.
    pub fn dpop_nonce(mut self, nonce: impl Into<String>) -> Self {
        self.dpop_nonce = Some(nonce.into());
        self
    }

    /// Also accept requests without any client authentication (public clients, and token
    /// exchanges whose subject token is the whole proof, as Google's STS does).
    pub fn public_clients(mut self) -> Self {
        self.public_clients = true;
        self
    }

    /// `expires_in` of the tokens it issues (whole seconds; default one hour).
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// What issued tokens start with (default `token`: `token-1`, `token-2`, …).
    pub fn token_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Answer requests yourself: `script(request, n)` (`n` counts requests from 1) returns the
    /// response, or `None` for the server's own behaviour (checking the credentials and
    /// issuing a token). For endpoints that misbehave in ways [`Failure`] does not cover.
    ///
    /// ```
    /// # async fn demo() -> std::io::Result<()> {
    /// use tower_oauth2::test_util::TokenServer;
    ///
    /// // Every third request is refused with a 500.
    /// let server = TokenServer::builder()
    ///     .script(|_request, n| async move {
    ///         (n % 3 == 0).then(|| {
    ///             let mut response = http::Response::new("oops".into());
    ///             *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    ///             response
    ///         })
    ///     })
    ///     .start()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn script<F, Fut>(mut self, script: F) -> Self
    where
        F: Fn(Received, usize) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Option<Response<Full<Bytes>>>> + Send + 'static,
    {
        self.script = Some(Arc::new(move |request, n| Box::pin(script(request, n))));
        self
    }

    /// The token endpoint's path (default `/oauth/token`), with a query if the endpoint has one
    /// (Azure AD B2C's `?p=B2C_1_signin`). Requests to any other path, or without that query,
    /// are answered `404 Not Found`, as a real server does, so a test catches a wrong token URL.
    /// (A [`script`](Self::script) still sees every request first.)
    ///
    /// ```
    /// # async fn demo() -> std::io::Result<()> {
    /// use tower_oauth2::test_util::TokenServer;
    ///
    /// let server = TokenServer::builder().token_path("/realms/test/token").start().await?;
    /// assert!(server.url().ends_with("/realms/test/token"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn token_path(mut self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.path = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        self
    }

    /// Take this long to answer each request, like a real identity provider (default none).
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Listen on a free port of `127.0.0.1`. Needs a tokio runtime with IO.
    pub async fn start(self) -> std::io::Result<TokenServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let base_url = format!("http://{addr}");
        let url = format!("{base_url}{}", self.path);
        let state = Arc::new(State {
            script: self.script,
            assertions: self.assertions,
            grants: self.grants,
            public_clients: self.public_clients,
            received: Mutex::new(Vec::new()),
            client_id: self.client_id,
            client_secret: self.client_secret,
            prefix: self.prefix,
            latency: self.latency,
            path: self.path,
            context: AssertionContext {
                token_url: url.clone(),
                base_url,
            },
            lifetime: Mutex::new(self.lifetime),
            requests: AtomicUsize::new(0),
            issued: Mutex::new(HashMap::new()),
            failures: Mutex::new(VecDeque::new()),
            last_auth: Mutex::new(None),
            dpop: self.dpop,
            dpop_nonce: self.dpop_nonce,
            bound: Mutex::new(HashMap::new()),
        });
        let serving = state.clone();
        let accepting = tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // Out of file descriptors (EMFILE) fails every accept until one is
                        // closed: wait instead of spinning a core.
                        tokio::time::sleep(ACCEPT_RETRY).await;
                        continue;
                    }
                };
                let state = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state, request).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(TokenServer {
            addr,
            url,
            state,
            accepting,
        })
    }
}

impl TokenServer {
    /// A token server with the defaults (see [`TokenServerBuilder`]).
    pub async fn start() -> std::io::Result<TokenServer> {
        Self::builder().start().await
    }

    /// Configure one.
    pub fn builder() -> TokenServerBuilder {
        TokenServerBuilder {
            script: None,
            assertions: None,
            grants: Vec::new(),
            public_clients: false,
            client_id: "test-client".into(),
            client_secret: "test-secret".into(),
            lifetime: Duration::from_secs(3600),
            prefix: "token".into(),
            latency: Duration::ZERO,
            path: "/oauth/token".into(),
            dpop: None,
            dpop_nonce: None,
        }
    }

    /// The key thumbprint (`cnf.jkt`) the DPoP token `token` is bound to; `None` for a bearer
    /// token or one not issued here. See [`TokenServerBuilder::dpop_proofs`].
    pub fn cnf_jkt(&self, token: &str) -> Option<String> {
        lock(&self.state.bound).get(token).cloned()
    }

    /// The token endpoint URL, for `ClientCredentials::builder().token_url(..)`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The address it listens on (`127.0.0.1`, a free port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.state.received).clone()
    }

    /// How many requests arrived (answered, refused or failed; on any path).
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// How many tokens it issued.
    pub fn issued(&self) -> usize {
        lock(&self.state.issued).len()
    }

    /// Whether `token` was issued here and has not expired: what a resource server checks.
    pub fn accepts(&self, token: &str) -> bool {
        accepts(&self.state, token)
    }

    /// [`accepts`](Self::accepts), to hand to a resource server running elsewhere.
    pub fn validator(&self) -> impl Fn(&str) -> bool + Clone + Send + Sync + 'static {
        let state = self.state.clone();
        move |token: &str| accepts(&state, token)
    }

    /// How the last client that sent credentials authenticated.
    pub fn last_client_auth(&self) -> Option<ClientAuth> {
        *lock(&self.state.last_auth)
    }

    /// Answer the next `times` token requests with `failure`, after any already queued.
    pub fn fail_next(&self, times: usize, failure: Failure) {
        lock(&self.state.failures).extend(std::iter::repeat_n(failure, times));
    }

    /// Issue tokens with this lifetime from now on.
    pub fn set_lifetime(&self, lifetime: Duration) {
        *lock(&self.state.lifetime) = lifetime;
    }
}

impl std::fmt::Debug for TokenServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenServer")
            .field("url", &self.url)
            .field("requests", &self.requests())
            .finish_non_exhaustive()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

fn accepts(state: &State, token: &str) -> bool {
    lock(&state.issued)
        .get(token)
        .is_some_and(|expires| Instant::now() < *expires)
}

async fn answer(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let n = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let (parts, body) = request.into_parts();
    let Ok(body) = Limited::new(body, 64 * 1024).collect().await else {
        return oauth_error(400, "invalid_request");
    };
    let body = body.to_bytes();
    let received = Received {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
    };
    lock(&state.received).push(received.clone());
    if let Some(script) = &state.script {
        if let Some(response) = script(received.clone(), n).await {
            return response;
        }
    }
    if !at_token_path(&parts.uri, &state.path) {
        return plain(
            404,
            "text/plain",
            format!("no token endpoint at {}", parts.uri.path()),
        );
    }
    if !state.latency.is_zero() {
        tokio::time::sleep(state.latency).await;
    }
    let failure = lock(&state.failures).pop_front();
    match failure {
        Some(Failure::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(Failure::OAuth { status, error }) => return oauth_error(status, &error),
        Some(Failure::RetryAfter { status, seconds }) => {
            let mut response = plain(status, "text/plain", String::new());
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(RETRY_AFTER, value);
            }
            return response;
        }
        Some(Failure::Body {
            status,
            content_type,
            body,
        }) => return plain(status, &content_type, body),
        None => {}
    }
    let dpop = match (parts.headers.get("dpop"), &state.dpop) {
        (Some(proof), Some(verify)) => {
            let proof = proof.to_str().unwrap_or_default();
            if let Some(nonce) = &state.dpop_nonce {
                if proof_claim(proof, "nonce").as_deref() != Some(nonce.as_str()) {
                    let mut response = oauth_error(400, "use_dpop_nonce");
                    if let Ok(nonce) = HeaderValue::from_str(nonce) {
                        response.headers_mut().insert("dpop-nonce", nonce);
                    }
                    return response;
                }
            }
            match verify(proof, &received) {
                Some(thumbprint) => Some(thumbprint),
                None => return oauth_error(400, "invalid_dpop_proof"),
            }
        }
        _ => None,
    };
    let is_json = parts
        .headers
        .get(CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    let params: HashMap<String, String> = if is_json {
        match serde_json::from_slice(&body) {
            Ok(params) => params,
            Err(_) => return oauth_error(400, "invalid_request"),
        }
    } else {
        form_urlencoded::parse(&body).into_owned().collect()
    };
    let assertion = params
        .get("client_assertion_type")
        .filter(|kind| *kind == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        .and(params.get("client_assertion"));
    if let (Some(assertion), Some(verify)) = (assertion, &state.assertions) {
        *lock(&state.last_auth) = Some(ClientAuth::Assertion);
        let from_client = params
            .get("client_id")
            .is_none_or(|id| *id == state.client_id);
        if parts.headers.contains_key(AUTHORIZATION)
            || params.contains_key("client_secret")
            || !from_client
            || !verify(assertion, &state.context)
        {
            return oauth_error(401, "invalid_client");
        }
        return issue(state, &params, dpop);
    }
    let unauthenticated = !parts.headers.contains_key(AUTHORIZATION)
        && !params.contains_key("client_secret")
        && !params.contains_key("client_assertion");
    if state.public_clients && unauthenticated {
        *lock(&state.last_auth) = Some(ClientAuth::None);
        return issue(state, &params, dpop);
    }
    // Exactly one client authentication method (RFC 6749 §2.3).
    let (auth, id, secret) = match (basic(&parts.headers), params.get("client_id")) {
        (Some((id, secret)), None) => (ClientAuth::Basic, id, secret),
        (None, Some(id)) => {
            let auth = if is_json {
                ClientAuth::Json
            } else {
                ClientAuth::Form
            };
            let secret = params.get("client_secret").cloned().unwrap_or_default();
            (auth, id.clone(), secret)
        }
        _ => return oauth_error(400, "invalid_request"),
    };
    *lock(&state.last_auth) = Some(auth);
    if id != state.client_id || secret != state.client_secret {
        let mut response = oauth_error(401, "invalid_client");
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"test\""),
        );
        return response;
    }
    issue(state, &params, dpop)
}

/// How long the accept loop waits after a failed accept.
const ACCEPT_RETRY: Duration = Duration::from_millis(20);

/// A new token, if the grant type is right.
fn issue(
    state: &State,
    params: &HashMap<String, String>,
    dpop: Option<String>,
) -> Response<Full<Bytes>> {
    let grant_type = params
        .get("grant_type")
        .map(String::as_str)
        .unwrap_or_default();
    if grant_type != "client_credentials" {
        let Some((_, verify)) = state.grants.iter().find(|(name, _)| name == grant_type) else {
            return oauth_error(400, "unsupported_grant_type");
        };
        if !verify(params) {
            return oauth_error(400, "invalid_grant");
        }
    }
    let lifetime = *lock(&state.lifetime);
    let token = {
        let mut issued = lock(&state.issued);
        let token = format!("{}-{}", state.prefix, issued.len() + 1);
        // Judged by the lifetime it was issued with: a later set_lifetime changes new tokens only.
        issued.insert(
            token.clone(),
            crate::clock::far_as_possible(Instant::now(), lifetime),
        );
        token
    };
    let token_type = if dpop.is_some() { "DPoP" } else { "Bearer" };
    if let Some(thumbprint) = dpop {
        lock(&state.bound).insert(token.clone(), thumbprint);
    }
    let mut body = serde_json::json!({
        "access_token": token,
        "token_type": token_type,
        "expires_in": lifetime.as_secs(),
    });
    if let Some(scope) = params.get("scope") {
        body["scope"] = scope.clone().into();
    }
    if grant_type == TOKEN_EXCHANGE {
        body["issued_token_type"] = params
            .get("requested_token_type")
            .map_or(
                "urn:ietf:params:oauth:token-type:access_token",
                String::as_str,
            )
            .into();
    }
    let mut response = plain(200, "application/json", body.to_string());
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A claim of a JWT, read without verifying it.
fn proof_claim(jwt: &str, name: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&payload).ok()?;
    claims.get(name)?.as_str().map(str::to_owned)
}

/// `Authorization: Basic base64(urlencode(id) ":" urlencode(secret))`, decoded.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let encoded = headers
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |text: &str| -> String {
        form_urlencoded::parse(text.as_bytes())
            .map(|(key, _)| key.into_owned())
            .next()
            .unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

fn oauth_error(status: u16, code: &str) -> Response<Full<Bytes>> {
    plain(
        status,
        "application/json",
        serde_json::json!({ "error": code }).to_string(),
    )
}

fn plain(status: u16, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A `redis-server` child process on a free loopback port, for testing the shared cache
/// (features `test-util` and `redis`); killed, by its PID, when dropped.
///
/// ```no_run
/// # fn demo() -> std::io::Result<()> {
/// let redis = tower_oauth2::test_util::RedisServer::start()?;
/// let store = tower_oauth2::shared::RedisStore::new(&redis.url()).expect("a Redis URL");
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
#[derive(Debug)]
pub struct RedisServer {
    child: Option<std::process::Child>,
    port: u16,
}

#[cfg(feature = "redis")]
impl RedisServer {
    /// Start `redis-server` (from the PATH) on a free port of `127.0.0.1`, without
    /// persistence, and wait until it accepts connections. An error says how to install it.
    pub fn start() -> std::io::Result<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        Self::start_on(port)
    }

    /// Start it on `port` (to restart one that was [`stop`](Self::stop)ped).
    pub fn start_on(port: u16) -> std::io::Result<RedisServer> {
        Self::start_on_with_args(port, &[])
    }

    /// Start it on `port` with `args` after the defaults (`--port PORT --bind 127.0.0.1
    /// --save "" --appendonly no`; a later argument wins): an ACL user, a memory limit, TLS.
    ///
    /// ```no_run
    /// # fn demo() -> std::io::Result<()> {
    /// use tower_oauth2::test_util::RedisServer;
    ///
    /// let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    /// let redis = RedisServer::start_on_with_args(
    ///     port,
    ///     &["--user", "default", "off", "--user", "app", "on", ">s3cret", "~*", "+@all"],
    /// )?;
    /// let store = tower_oauth2::shared::RedisStore::new(&format!("redis://app:s3cret@127.0.0.1:{port}/"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn start_on_with_args(port: u16, args: &[&str]) -> std::io::Result<RedisServer> {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};

        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| {
                std::io::Error::new(
                    error.kind(),
                    format!(
                        "cannot start redis-server ({error}): install it, e.g. `apt-get install \
                         -y redis-server`"
                    ),
                )
            })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("redis-server has no standard output to watch"))?;
        let mut lines = BufReader::new(stdout).lines();
        // Its last lines, to say why it did not start (a bad argument, a missing file).
        let mut log = std::collections::VecDeque::new();
        let ready = lines.by_ref().map_while(Result::ok).any(|line| {
            let ready = line.contains("Ready to accept connections");
            log.push_back(line);
            if log.len() > 5 {
                log.pop_front();
            }
            ready
        });
        if !ready {
            let _ = child.kill();
            let _ = child.wait();
            let log: Vec<String> = log.into_iter().collect();
            return Err(std::io::Error::other(format!(
                "redis-server on port {port} exited before it was ready: {}",
                log.join(" / ")
            )));
        }
        // Keep reading its log, so that it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(RedisServer {
            child: Some(child),
            port,
        })
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kill it now (by its PID) and wait for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(feature = "redis")]
impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether `uri` is the token endpoint at `token_path`: the same path and, if `token_path` has
/// a query, the same query.
fn at_token_path(uri: &http::Uri, token_path: &str) -> bool {
    match token_path.split_once('?') {
        Some((path, query)) => uri.path() == path && uri.query() == Some(query),
        None => uri.path() == token_path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientCredentials;

    async fn issue_one(server: &TokenServer) -> String {
        let credentials = ClientCredentials::builder()
            .token_url(server.url())
            .client_id("client")
            .client_secret("secret")
            .build()
            .unwrap();
        credentials
            .fetch_uncached()
            .await
            .unwrap()
            .secret()
            .to_owned()
    }

    #[tokio::test]
    async fn a_token_is_judged_by_the_lifetime_it_was_issued_with() {
        let server = TokenServer::builder()
            .client("client", "secret")
            .lifetime(Duration::from_secs(3600))
            .start()
            .await
            .unwrap();
        let long_lived = issue_one(&server).await;
        server.set_lifetime(Duration::ZERO);
        assert!(
            server.accepts(&long_lived),
            "a shorter lifetime for new tokens does not expire those already issued"
        );
        let expired_at_birth = issue_one(&server).await;
        server.set_lifetime(Duration::from_secs(3600));
        assert!(
            !server.accepts(&expired_at_birth),
            "a longer lifetime for new tokens does not revive expired ones"
        );
        assert!(server.accepts(&issue_one(&server).await));
    }

    /// CPU time this process has used, in clock ticks (1/100 s on Linux), read from `stat`
    /// (`/proc/self/stat`, opened before the descriptors run out).
    fn cpu_ticks(stat: &std::fs::File) -> u64 {
        use std::os::unix::fs::FileExt;

        let mut buffer = [0u8; 1024];
        let read = stat.read_at(&mut buffer, 0).unwrap();
        let stat = String::from_utf8_lossy(&buffer[..read]);
        // The fields after the command name, which may hold spaces, in parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        // utime and stime: fields 14 and 15 of the line, 12 and 13 after `state`.
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    const EMFILE_CHILD: &str = "TOWER_OAUTH2_TEST_EMFILE_CHILD";

    #[test]
    fn the_accept_loop_waits_while_out_of_file_descriptors() {
        use std::io::BufRead;

        if std::env::var_os(EMFILE_CHILD).is_some() {
            return out_of_file_descriptors();
        }
        // The server runs in a child process that lowers its own limit on open files; the
        // clients connect from here, so that connections wait in its backlog.
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "test_util::tests::the_accept_loop_waits_while_out_of_file_descriptors",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(EMFILE_CHILD, "1")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| Some(line.split_once("listening on ")?.1.to_owned()))
            .expect("the child reports its address");
        let clients: Vec<_> = (0..40)
            .map(|_| std::net::TcpStream::connect(&addr).unwrap())
            .collect();
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        let status = child.wait().unwrap();
        drop(clients);
        assert!(status.success(), "{}", rest.join("\n"));
    }

    fn out_of_file_descriptors() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime.block_on(TokenServer::builder().start()).unwrap();
        let stat = std::fs::File::open("/proc/self/stat").unwrap();
        let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
        let limit = open + 8;
        let prlimit = std::process::Command::new("prlimit")
            .arg(format!("--pid={}", std::process::id()))
            .arg(format!("--nofile={limit}:{limit}"))
            .status()
            .expect("prlimit (Debian package util-linux) lowers this process's open-file limit");
        assert!(prlimit.success());
        println!("listening on {}", server.addr());
        // The parent's 40 connections fill the few descriptors left; the rest wait.
        std::thread::sleep(Duration::from_millis(300));
        let before = cpu_ticks(&stat);
        std::thread::sleep(Duration::from_millis(500));
        let used = cpu_ticks(&stat) - before;
        println!("cpu ticks used while out of descriptors: {used}");
        assert!(
            used < 15,
            "the accept loop used {used}/50 ticks of CPU in 0.5 s while accepts failed"
        );
        drop(server);
    }
}
