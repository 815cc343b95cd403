//! An axum service calling another API with an OAuth 2.0 bearer token.
//!
//! The "front" API answers `GET /items/{id}` by asking an "upstream" API, which requires a
//! bearer token. The outbound client lives in axum `State`: a hyper-util client wrapped in
//! `BearerAuthLayer`, built once at startup and cloned per request (clones share the token
//! cache, so all handlers together cost the token endpoint one request per token lifetime).
//!
//! The example starts a stand-in token endpoint and the upstream (see
//! `examples/support/mod.rs`) and the front on 127.0.0.1, sends a few requests to the front
//! with a plain client, prints what happened and exits.
//!
//! ```text
//! cargo run --example axum_outbound
//! ```

#[path = "support/mod.rs"]
mod support;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};
use tower_oauth2::{error::BoxError, BearerAuth, BearerAuthLayer, ClientCredentials};

/// The outbound client: hyper-util, with a bearer token on every request.
type Upstream = BearerAuth<Client<HttpConnector, Empty<Bytes>>>;

#[derive(Clone)]
struct AppState {
    upstream: Upstream,
    upstream_url: String,
}

/// `GET /items/{id}`: look the item up upstream.
async fn item(
    State(state): State<AppState>,
    Path(id): Path<u32>,
) -> Result<String, (StatusCode, String)> {
    let request = http::Request::get(format!("{}/inventory/{id}", state.upstream_url))
        .body(Empty::new())
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let response = state.upstream.oneshot(request).await.map_err(|error| {
        // No token could be had (the error is a `tower_oauth2::Error`), or the upstream is down.
        match error.downcast_ref::<tower_oauth2::Error>() {
            Some(error) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no token: {error}"),
            ),
            None => (StatusCode::BAD_GATEWAY, format!("upstream: {error}")),
        }
    })?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()))?
        .to_bytes();
    if !status.is_success() {
        return Err((
            StatusCode::BAD_GATEWAY,
            format!("upstream answered {status}"),
        ));
    }
    Ok(format!(
        "item {id}: upstream said {:?}",
        String::from_utf8_lossy(&body)
    ))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let token_server = support::token_server().await?;
    let upstream = support::ProtectedApi::start(token_server.validator()).await?;

    // The front API, with its outbound client in State.
    let credentials = ClientCredentials::builder()
        .token_url(token_server.url())
        .client_id(support::CLIENT_ID)
        .client_secret(support::CLIENT_SECRET)
        .build()?;
    let state = AppState {
        upstream: ServiceBuilder::new()
            .layer(BearerAuthLayer::new(credentials))
            .service(Client::builder(TokioExecutor::new()).build_http()),
        upstream_url: upstream.url().to_owned(),
    };
    let front = Router::new()
        .route("/items/{id}", get(item))
        .with_state(state);
    let front_url = support::serve(front).await?;

    // Callers of the front know nothing about tokens: a plain client.
    let plain = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let get = |url: String| {
        let plain = plain.clone();
        async move {
            let response = plain.get(url.parse()?).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, BoxError>((status, String::from_utf8_lossy(&body).into_owned()))
        }
    };

    let (status, _) = get(format!("{}/inventory/1", upstream.url())).await?;
    println!("upstream directly, no token: {status}");
    if status != StatusCode::UNAUTHORIZED {
        return Err(
            format!("the upstream should refuse calls without a token, got {status}").into(),
        );
    }

    for id in [1, 2, 3] {
        let (status, body) = get(format!("{front_url}/items/{id}")).await?;
        println!("front GET /items/{id} -> {status} {body:?}");
        if status != StatusCode::OK {
            return Err(format!("GET /items/{id} answered {status}").into());
        }
    }

    let token_requests = token_server.requests();
    println!("token requests: {token_requests}");
    if token_requests != 1 {
        return Err(
            format!("expected 1 token request, the token server got {token_requests}").into(),
        );
    }
    Ok(())
}
