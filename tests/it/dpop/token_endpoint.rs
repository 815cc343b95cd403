//! The token endpoint's side: a DPoP client accepts only DPoP tokens, a client without a key
//! refuses them, and a refused proof is an error that says what to check.

use tower_oauth2::client_auth::JwsAlgorithm;

use super::*;

#[tokio::test]
async fn a_bearer_token_for_a_dpop_client_is_refused() {
    // A server without DPoP ignores the proof and issues a bearer token.
    let tokens = TokenServer::start().await.unwrap();
    let credentials = credentials(&tokens, DpopKey::generate(JwsAlgorithm::ES256).unwrap());
    let error = credentials.token().await.unwrap_err();
    assert!(error.to_string().contains("not DPoP"), "{error}");
}

#[tokio::test]
async fn a_dpop_token_for_a_client_without_a_key_is_refused() {
    let tokens = crate::support::scripted(|_, _| {
        crate::support::json(
            StatusCode::OK,
            serde_json::json!({"access_token": "t", "token_type": "DPoP", "expires_in": 60}),
        )
    })
    .await;
    let credentials = ClientCredentials::builder()
        .token_url(tokens.url())
        .client_id("test-client")
        .client_secret("test-secret")
        .build()
        .unwrap();
    let error = credentials.token().await.unwrap_err();
    assert!(error.to_string().contains(".dpop("), "{error}");
}

#[tokio::test]
async fn a_refused_proof_is_an_error_saying_what_to_check() {
    let tokens = TokenServer::builder()
        .dpop_proofs(|_, _| None)
        .start()
        .await
        .unwrap();
    let credentials = credentials(&tokens, DpopKey::generate(JwsAlgorithm::ES256).unwrap());
    let error = credentials.token().await.unwrap_err();
    let shown = error.to_string();
    assert!(shown.contains("invalid_dpop_proof"), "{shown}");
    assert!(shown.contains("algorithm"), "{shown}");
}
