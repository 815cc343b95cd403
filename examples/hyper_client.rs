//! The shortest complete example: a hyper-util client that sends a bearer token with every
//! request, fetched (once) from an OAuth 2.0 token endpoint with the client credentials grant.
//!
//! It starts a stand-in token endpoint and a protected API on 127.0.0.1 (see
//! `examples/support/mod.rs`), sends a few requests, and prints their status codes and how many
//! token requests they cost (one).
//!
//! ```text
//! cargo run --example hyper_client
//! ```

#[path = "support/mod.rs"]
mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};
use tower_oauth2::{error::BoxError, BearerAuthLayer, ClientCredentials};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let token_server = support::token_server().await?;
    let api = support::ProtectedApi::start(token_server.validator()).await?;

    // One `ClientCredentials` per credential set: it holds the token cache.
    let credentials = ClientCredentials::builder()
        .token_url(token_server.url())
        .client_id(support::CLIENT_ID)
        .client_secret(support::CLIENT_SECRET)
        .build()?;

    // Any hyper-util client, wrapped: every request now carries `Authorization: Bearer …`.
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let client = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(credentials))
        .service(client);

    for path in ["/orders", "/orders/42", "/customers"] {
        let request = http::Request::get(format!("{}{path}", api.url())).body(Empty::new())?;
        let response = client.clone().oneshot(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        println!(
            "GET {path} -> {status} {:?}",
            String::from_utf8_lossy(&body)
        );
        if !status.is_success() {
            return Err(format!("GET {path} answered {status}").into());
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
