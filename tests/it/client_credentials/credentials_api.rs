//! `ClientCredentials`'s inherent methods, for clients no layer or middleware wraps. This file
//! deliberately does not import `TokenSource`: the methods must work without it.

use crate::support;
use tower_oauth2::test_util::TokenServer;
use tower_oauth2::ClientCredentials;

fn credentials(server: &TokenServer) -> ClientCredentials {
    ClientCredentials::builder()
        .token_url(server.url())
        .client_id("client")
        .client_secret("s3cr3t-value")
        .build()
        .unwrap()
}

#[tokio::test]
async fn token_answers_from_the_cache() {
    let tokens = support::issuing(3600).await;
    let credentials = credentials(&tokens);

    let first = credentials.token().await.unwrap();
    let again = credentials.clone().token().await.unwrap();

    assert_eq!((first.secret(), again.secret()), ("token-1", "token-1"));
    assert_eq!(tokens.requests(), 1);
}

#[tokio::test]
async fn invalidate_drops_exactly_the_rejected_token() {
    let tokens = support::issuing(3600).await;
    let credentials = credentials(&tokens);
    let first = credentials.token().await.unwrap();

    credentials.invalidate(&first);
    let second = credentials.token().await.unwrap();
    assert_eq!(second.secret(), "token-2");

    // A late report about the replaced token must not drop its successor.
    credentials.invalidate(&first);
    assert_eq!(credentials.token().await.unwrap().secret(), "token-2");
    assert_eq!(tokens.requests(), 2);
}

#[tokio::test]
async fn fetch_bypasses_the_cache() {
    let tokens = support::issuing(3600).await;
    let credentials = credentials(&tokens);
    let cached = credentials.token().await.unwrap();

    let fetched = credentials.fetch_uncached().await.unwrap();

    assert_eq!((cached.secret(), fetched.secret()), ("token-1", "token-2"));
    assert_eq!(
        credentials.token().await.unwrap().secret(),
        "token-1",
        "fetch does not update the cache"
    );
}

/// `timeout(Duration::MAX)` (a user's "no timeout") is a deadline that never comes: a token
/// is had (repro: the deadline `now + timeout` overflowed and every token request panicked).
#[tokio::test]
async fn a_timeout_of_duration_max_is_no_timeout() {
    let tokens = support::issuing(3600).await;
    let built = ClientCredentials::builder()
        .token_url(tokens.url())
        .client_id("client")
        .client_secret("secret")
        .timeout(std::time::Duration::MAX)
        .build();
    let credentials = built.expect("Duration::MAX is accepted: no timeout");
    let outcome = credentials.token().await;
    assert!(
        outcome.is_ok(),
        "Duration::MAX as the timeout: {:?}",
        outcome.map(|_| ()).map_err(|e| e.to_string())
    );
}
