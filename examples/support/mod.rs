//! Loopback stand-ins shared by the examples (not an example itself):
//!
//! - [`token_server`], the crate's own test token endpoint (feature `test-util`) for the client
//!   credentials grant: it accepts all three client authentication styles the crate sends
//!   (HTTP Basic, `client_id` / `client_secret` in a form body, a JSON body), checks the
//!   credentials, issues `demo-token-1`, `demo-token-2`, … valid for an hour (or a chosen
//!   lifetime), and counts the requests it gets.
//! - [`ProtectedApi`], an HTTP API that answers `200` to requests with an accepted bearer token
//!   and `401` to everything else.
//!
//! Both listen on `127.0.0.1` with a port the OS picks, and stop when the example exits.
#![allow(dead_code)] // Each example uses a different part of this module.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
pub use tower_oauth2::test_util::TokenServer;

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

/// The embedded token endpoint: the crate's own test token server
/// ([`tower_oauth2::test_util::TokenServer`]), accepting [`CLIENT_ID`] and [`CLIENT_SECRET`] and
/// issuing `demo-token-1`, `demo-token-2`, … valid for an hour.
pub async fn token_server() -> std::io::Result<TokenServer> {
    token_server_issuing_for(Duration::from_secs(3600)).await
}

/// Like [`token_server`], with tokens that live `lifetime` (whole seconds).
pub async fn token_server_issuing_for(lifetime: Duration) -> std::io::Result<TokenServer> {
    TokenServer::builder()
        .client(CLIENT_ID, CLIENT_SECRET)
        .token_prefix("demo-token")
        .lifetime(lifetime)
        .latency(TOKEN_LATENCY)
        .start()
        .await
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
