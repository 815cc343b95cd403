//! Loopback stand-ins shared by the examples (not an example itself):
//!
//! - [`TokenServer`], a small OAuth 2.0 token endpoint for the client credentials grant. It
//!   accepts all three client authentication styles the crate sends (HTTP Basic, `client_id` /
//!   `client_secret` in a form body, a JSON body), checks the credentials, issues
//!   `demo-token-1`, `demo-token-2`, … valid for an hour (or a chosen lifetime), and counts the requests it gets.
//! - [`ProtectedApi`], an HTTP API that answers `200` to requests with an accepted bearer token
//!   and `401` to everything else.
//!
//! Both listen on `127.0.0.1` with a port the OS picks, and stop when the example exits.
#![allow(dead_code)] // Each example uses a different part of this module.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::json;

/// The client the embedded token server knows.
pub const CLIENT_ID: &str = "demo-client";
/// Its secret. Examples pass it to the builder and never print it.
pub const CLIENT_SECRET: &str = "demo-secret";

/// How long the token server takes to answer, like a real identity provider: long enough
/// that requests started together really do wait for the same token request.
const TOKEN_LATENCY: Duration = Duration::from_millis(25);

/// Serve `app` on a fresh loopback port (HTTP/1.1 and HTTP/2); returns `http://127.0.0.1:PORT`.
pub async fn serve(app: Router) -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// The embedded token endpoint. Cheap to clone; clones share the counters.
#[derive(Clone)]
pub struct TokenServer {
    url: String,
    state: Arc<TokenState>,
}

#[derive(Default)]
struct TokenState {
    /// `expires_in` of every token issued, in seconds.
    lifetime: u64,
    requests: AtomicUsize,
    issued: Mutex<HashSet<String>>,
    last_client_auth: Mutex<Option<&'static str>>,
}

impl TokenServer {
    pub async fn start() -> std::io::Result<TokenServer> {
        Self::issuing_for(Duration::from_secs(3600)).await
    }

    /// A token server whose tokens live `lifetime` (whole seconds).
    pub async fn issuing_for(lifetime: Duration) -> std::io::Result<TokenServer> {
        let state = Arc::new(TokenState {
            lifetime: lifetime.as_secs(),
            ..TokenState::default()
        });
        let app = Router::new()
            .route("/oauth/token", axum::routing::post(issue))
            .with_state(state.clone());
        let url = format!("{}/oauth/token", serve(app).await?);
        Ok(TokenServer { url, state })
    }

    /// The token endpoint URL, for `ClientCredentials::builder().token_url(..)`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How many token requests arrived so far (accepted or not).
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// How the last client authenticated: `"HTTP Basic"`, `"form body"` or `"JSON body"`.
    pub fn last_client_auth(&self) -> Option<&'static str> {
        *self.state.last_client_auth.lock().unwrap()
    }

    /// A check for resource servers: was `token` issued here?
    pub fn validator(&self) -> impl Fn(&str) -> bool + Clone + Send + Sync + 'static {
        let state = self.state.clone();
        move |token: &str| state.issued.lock().unwrap().contains(token)
    }
}

/// `POST /oauth/token`: the client credentials grant, RFC 6749 §4.4.
async fn issue(State(state): State<Arc<TokenState>>, headers: HeaderMap, body: Bytes) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(TOKEN_LATENCY).await;

    let is_json = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let params: HashMap<String, String> = if is_json {
        match serde_json::from_slice(&body) {
            Ok(params) => params,
            Err(_) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request"),
        }
    } else {
        form_urlencoded::parse(&body).into_owned().collect()
    };

    // Exactly one client authentication method (RFC 6749 §2.3).
    let (method, id, secret) = match (basic_credentials(&headers), params.get("client_id")) {
        (Some((id, secret)), None) => ("HTTP Basic", id, secret),
        (None, Some(id)) => {
            let method = if is_json { "JSON body" } else { "form body" };
            let secret = params.get("client_secret").cloned().unwrap_or_default();
            (method, id.clone(), secret)
        }
        _ => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request"),
    };
    *state.last_client_auth.lock().unwrap() = Some(method);
    if id != CLIENT_ID || secret != CLIENT_SECRET {
        let mut response = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
        let challenge = header::HeaderValue::from_static("Basic realm=\"demo\"");
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge);
        return response;
    }
    if params.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }

    let token = {
        let mut issued = state.issued.lock().unwrap();
        let token = format!("demo-token-{}", issued.len() + 1);
        issued.insert(token.clone());
        token
    };
    let scope = params.get("scope").map_or("demo.read", String::as_str);
    let body = json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": state.lifetime,
        "scope": scope,
    });
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// `Authorization: Basic base64(urlencode(id) ":" urlencode(secret))`, decoded.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let encoded = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| -> String {
        form_urlencoded::parse(s.as_bytes())
            .map(|(key, _)| key.into_owned())
            .next()
            .unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

/// An RFC 6749 §5.2 error response.
fn oauth_error(status: StatusCode, code: &str) -> Response {
    (status, Json(json!({ "error": code }))).into_response()
}

/// The token in `Authorization: Bearer <token>` (scheme compared case-insensitively).
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A resource server: `200 hello from <path>` with an accepted bearer token, `401` otherwise.
#[derive(Clone)]
pub struct ProtectedApi {
    url: String,
    state: Arc<ApiState>,
}

struct ApiState {
    accepts: Box<dyn Fn(&str) -> bool + Send + Sync>,
    tokens_seen: Mutex<HashSet<String>>,
}

impl ProtectedApi {
    /// Serve on loopback, accepting the bearer tokens for which `accepts` is true.
    pub async fn start(
        accepts: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> std::io::Result<ProtectedApi> {
        let state = Arc::new(ApiState {
            accepts: Box::new(accepts),
            tokens_seen: Mutex::new(HashSet::new()),
        });
        let app = Router::new().fallback(protected).with_state(state.clone());
        let url = serve(app).await?;
        Ok(ProtectedApi { url, state })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How many different tokens the accepted requests carried.
    pub fn distinct_tokens(&self) -> usize {
        self.state.tokens_seen.lock().unwrap().len()
    }
}

async fn protected(State(state): State<Arc<ApiState>>, uri: Uri, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    match token {
        Some(token) if (state.accepts)(token) => {
            let mut seen = state.tokens_seen.lock().unwrap();
            if !seen.contains(token) {
                seen.insert(token.to_owned());
            }
            drop(seen);
            format!("hello from {}", uri.path()).into_response()
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a valid bearer token is required",
        )
            .into_response(),
    }
}
