//! Adversarial repros for issue #20 (credentials made elsewhere, token exchange): each test
//! here failed on the branch it was written against and passes once its defect is fixed.

use std::time::Duration;

use serde_json::json;
use tower_oauth2::test_util::TokenServer;
use tower_oauth2::token_exchange::{TokenExchange, TokenType};
use tower_oauth2::ClientCredentials;

use crate::support::issuer::{Issuer, Mounted};
use crate::support::last;

const CLIENT_ID: &str = "workload";
const AUDIENCE: &str = "api://idp-token-exchange";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

async fn trusting(issuer: &Issuer) -> TokenServer {
    TokenServer::builder()
        .client(CLIENT_ID, "")
        .client_assertions(issuer.verifier(AUDIENCE))
        .start()
        .await
        .unwrap()
}

/// Issue #20: "the cache recovers the moment the file is right". With the default cache
/// policy, an expired assertion file (whatever writes it is late) is refused locally, no
/// request is sent, yet the failure starts the endpoint backoff: the rewritten file is not
/// read until the backoff is over, and each further late write doubles the wait.
#[tokio::test]
async fn a_rewritten_expired_assertion_file_is_used_at_once_with_the_default_policy() {
    let issuer = Issuer::new("https://kubernetes.default.svc");
    let server = trusting(&issuer).await;
    let mounted = Mounted::new();
    let sub = "system:serviceaccount:shop:orders";
    let path = mounted.write("token", &issuer.token(sub, AUDIENCE, -60, json!({})));
    let credentials = ClientCredentials::builder()
        .token_url(server.url())
        .client_id(CLIENT_ID)
        .client_assertion_file(&path)
        .build()
        .unwrap();

    let expired = credentials.token().await.unwrap_err();
    assert!(expired.is_transient(), "{expired}");
    assert_eq!(server.requests(), 0, "refused before sending");

    mounted.write("token", &issuer.token(sub, AUDIENCE, 3600, json!({})));
    let recovered = credentials.token().await;
    assert!(
        recovered.is_ok(),
        "the fresh file was not read: {}",
        recovered.unwrap_err()
    );
}

/// A file that is not mounted yet: the same, from the first request of a pod whose volume
/// comes up a moment after the container starts.
#[tokio::test]
async fn an_assertion_file_mounted_after_the_first_request_is_used_at_once_with_the_default_policy()
{
    let issuer = Issuer::new("https://kubernetes.default.svc");
    let server = trusting(&issuer).await;
    let mounted = Mounted::new();
    let path = mounted.path("token");
    let credentials = ClientCredentials::builder()
        .token_url(server.url())
        .client_id(CLIENT_ID)
        .client_assertion_file(&path)
        .build()
        .unwrap();

    let missing = credentials.token().await.unwrap_err();
    assert!(missing.is_transient(), "{missing}");

    mounted.write(
        "token",
        &issuer.token(
            "system:serviceaccount:shop:orders",
            AUDIENCE,
            3600,
            json!({}),
        ),
    );
    let recovered = credentials.token().await;
    assert!(
        recovered.is_ok(),
        "the file now mounted was not read: {}",
        recovered.unwrap_err()
    );
}

/// An assertion file saved by a Windows editor or a PowerShell `Out-File` starts with a UTF-8
/// byte order mark. `str::trim` keeps U+FEFF and the `exp` check reads only the payload, so
/// the BOM is sent as the first character of `client_assertion` and the provider refuses it
/// (`invalid_client`, whose hint then blames the federated credential's trust settings).
#[tokio::test]
async fn an_assertion_file_with_a_byte_order_mark_and_crlf_is_accepted() {
    let issuer = Issuer::new("https://spiffe.example.org");
    let server = trusting(&issuer).await;
    let mounted = Mounted::new();
    let jwt = issuer.token("spiffe://example.org/orders", AUDIENCE, 3600, json!({}));
    let path = mounted.write("svid.jwt", &format!("\u{FEFF}{jwt}\r\n"));
    let credentials = ClientCredentials::builder()
        .token_url(server.url())
        .client_id(CLIENT_ID)
        .client_assertion_file(&path)
        .build()
        .unwrap();

    let result = credentials.token().await;
    assert!(result.is_ok(), "{}", result.unwrap_err());
    assert_eq!(last(&server).form()["client_assertion"], jwt);
}

/// The same for a client secret file: the BOM is sent as part of the secret, which the
/// identity provider refuses as `invalid_client`.
#[tokio::test]
async fn a_secret_file_with_a_byte_order_mark_sends_the_secret_without_it() {
    let server = TokenServer::builder()
        .client("svc", "rotating-secret")
        .start()
        .await
        .unwrap();
    let mounted = Mounted::new();
    let path = mounted.write("client-secret", "\u{FEFF}rotating-secret\n");
    let credentials = ClientCredentials::builder()
        .token_url(server.url())
        .client_id("svc")
        .client_secret_file(&path)
        .build()
        .unwrap();
    let result = credentials.token().await;
    assert!(result.is_ok(), "{}", result.unwrap_err());
}

/// An actor token source that hangs: the error blames "the subject token source"
/// (`ReadParam::read` in src/grant.rs names the subject for every source), sending the
/// operator to the wrong token.
#[tokio::test]
async fn a_failing_actor_token_source_is_named_as_the_actor() {
    let server = TokenServer::builder()
        .public_clients()
        .grant(TOKEN_EXCHANGE, |_| true)
        .start()
        .await
        .unwrap();
    let subject = TokenServer::builder()
        .client("public", "unchecked")
        .start()
        .await
        .unwrap();
    let subject_source = ClientCredentials::builder()
        .token_url(subject.url())
        .client_id("public")
        .client_secret("unchecked")
        .build()
        .unwrap();
    let hanging = TokenServer::builder()
        .client("public", "unchecked")
        .latency(Duration::from_secs(5))
        .start()
        .await
        .unwrap();
    let actor_source = ClientCredentials::builder()
        .token_url(hanging.url())
        .client_id("public")
        .client_secret("unchecked")
        .build()
        .unwrap();
    let exchange = TokenExchange::builder()
        .token_url(server.url())
        .subject_token_source(subject_source, TokenType::AccessToken)
        .actor_token_source(actor_source, TokenType::AccessToken)
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let error = exchange.token().await.unwrap_err().to_string();
    assert!(
        error.contains("actor"),
        "an actor token source timing out is reported as: {error}"
    );
}
