//! A reqwest client that sends a bearer token with every request, through
//! `reqwest-middleware`, fetched (once) from an OAuth 2.0 token endpoint with the client
//! credentials grant.
//!
//! It starts a stand-in token endpoint and a protected API on 127.0.0.1 (see
//! `examples/support/mod.rs`), sends concurrent requests, and prints their status codes and how
//! many token requests they cost (one).
//!
//! ```text
//! cargo run --example reqwest_client --features reqwest
//! ```

#[path = "support/mod.rs"]
mod support;

use tower_oauth2::{error::BoxError, BearerAuthMiddleware, ClientCredentials};

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

    // Your reqwest client, with the middleware: every request carries `Authorization: Bearer …`,
    // and a 401 drops the token it carried (with one replay of the request, here).
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(BearerAuthMiddleware::new(credentials.clone()).replay_once_on_401(true))
        .build();

    let requests = ["/orders", "/orders/42", "/customers"].map(|path| {
        let (client, url) = (client.clone(), format!("{}{path}", api.url()));
        async move {
            let response = client.get(url).send().await?;
            let status = response.status();
            let body = response.text().await?;
            Ok::<_, BoxError>((path, status, body))
        }
    });
    for result in futures_util::future::join_all(requests).await {
        let (path, status, body) = result?;
        println!("GET {path} -> {status} {body:?}");
        if !status.is_success() {
            return Err(format!("GET {path} answered {status}").into());
        }
    }

    // For a client the middleware cannot wrap: the same cached token, by hand.
    let token = credentials.token().await?;
    println!("cached token expires at {:?}", token.expires_at());

    let token_requests = token_server.requests();
    println!("token requests: {token_requests}");
    if token_requests != 1 {
        return Err(
            format!("expected 1 token request, the token server got {token_requests}").into(),
        );
    }
    Ok(())
}
