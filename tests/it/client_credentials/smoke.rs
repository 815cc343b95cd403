use crate::support;
use tower_oauth2::ClientCredentials;

#[tokio::test]
async fn fetches_and_caches_a_token() {
    let server = support::issuing(3600).await;
    let credentials = ClientCredentials::builder()
        .token_url(server.url())
        .client_id("id")
        .client_secret("secret")
        .build()
        .unwrap();
    let first = credentials.token().await.unwrap();
    let second = credentials.token().await.unwrap();
    assert_eq!(first.secret(), "token-1");
    assert_eq!(second.secret(), "token-1");
    assert_eq!(server.requests(), 1);
    assert_eq!(
        support::last(&server).basic(),
        Some(("id".into(), "secret".into()))
    );
}
