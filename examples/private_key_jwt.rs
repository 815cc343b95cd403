//! `private_key_jwt` (RFC 7523): the client proves itself with a JWT signed by its private key
//! instead of sending a secret, as Okta, Entra ID certificate credentials, Keycloak "Signed JWT"
//! and Auth0 "Private Key JWT" expect.
//!
//! It makes a P-256 key pair, starts the embedded token endpoint holding the public key (it
//! checks every assertion's signature and claims with jsonwebtoken, as an identity provider
//! would) and a protected API on 127.0.0.1, then calls the API through a hyper-util client
//! wrapped in `BearerAuthLayer`.
//!
//! ```text
//! cargo run --example private_key_jwt
//! ```

#[path = "support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};
use tower_oauth2::test_util::TokenServer;
use tower_oauth2::{
    client_auth::PrivateKeyJwt, error::BoxError, BearerAuthLayer, ClientCredentials,
};

const CLIENT_ID: &str = "jwt-client";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // The client's key pair. In production the private key is a file or a mounted secret, and
    // the identity provider holds the public key (or fetches it from the client's JWKS URL).
    let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let private_key_pem = key_pair.serialize_pem();
    let public_key = jsonwebtoken::DecodingKey::from_ec_pem(key_pair.public_key_pem().as_bytes())?;

    let seen_ids = Arc::new(Mutex::new(HashSet::new()));
    let idp = TokenServer::builder()
        .client(CLIENT_ID, "")
        .token_prefix("jwt-token")
        // The server hands its verifier its own token URL: the assertion's `aud`.
        .client_assertions(move |assertion, server| {
            let mut rules = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
            rules.set_issuer(&[CLIENT_ID]);
            rules.sub = Some(CLIENT_ID.to_owned());
            rules.set_audience(&[server.token_url()]);
            rules.set_required_spec_claims(&["iss", "sub", "aud", "exp", "jti"]);
            match jsonwebtoken::decode::<serde_json::Value>(assertion, &public_key, &rules) {
                Ok(jwt) => {
                    let jti = jwt.claims["jti"].as_str().unwrap_or_default().to_owned();
                    println!(
                        "identity provider: valid assertion (kid {:?}, jti {jti})",
                        jwt.header.kid.unwrap_or_default()
                    );
                    // A replayed assertion is refused.
                    seen_ids.lock().unwrap().insert(jti)
                }
                Err(error) => {
                    println!("identity provider: assertion refused: {error}");
                    false
                }
            }
        })
        .start()
        .await?;
    let api = support::ProtectedApi::start(idp.validator()).await?;

    let key = PrivateKeyJwt::from_pem(&private_key_pem)?.key_id("jwt-client-key-1");
    let credentials = ClientCredentials::builder()
        .token_url(idp.url())
        .client_id(CLIENT_ID)
        .private_key_jwt(key)
        .build()?;

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let client = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(credentials.clone()))
        .service(client);
    for path in ["/orders", "/customers"] {
        let request = http::Request::get(format!("{}{path}", api.url())).body(Empty::new())?;
        let status = client.clone().oneshot(request).await?.status();
        println!("GET {path} -> {status}");
        if !status.is_success() {
            return Err(format!("GET {path} answered {status}").into());
        }
    }

    // Every token request carries a new assertion: fetch() bypasses the cache to show it.
    credentials.fetch_uncached().await?;
    let (requests, issued) = (idp.requests(), idp.issued());
    println!("token requests: {requests}, tokens issued: {issued}");
    if (requests, issued) != (2, 2) {
        return Err(format!("expected 2 token requests, each with a fresh assertion accepted; got {requests} requests and {issued} tokens").into());
    }
    Ok(())
}
