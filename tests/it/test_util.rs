//! The public test token server (feature `test-util`), as users' tests would use it: every
//! client authentication style, queued failures, lifetimes.

use std::time::Duration;

use tower_oauth2::test_util::{ClientAuth, Failure, TokenServer};
use tower_oauth2::{cache::CachePolicy, client_auth::AuthStyle, ClientCredentials, ErrorKind};

fn credentials(server: &TokenServer, style: AuthStyle) -> ClientCredentials {
    ClientCredentials::builder()
        .token_url(server.url())
        .client_id("test-client")
        .client_secret("test-secret")
        .auth_style(style)
        .cache_policy(CachePolicy::default().backoff(Duration::ZERO, Duration::ZERO))
        .build()
        .unwrap()
}

#[tokio::test]
async fn it_accepts_every_client_authentication_style_and_refuses_wrong_secrets() {
    let server = TokenServer::start().await.unwrap();
    for (style, seen) in [
        (AuthStyle::Basic, ClientAuth::Basic),
        (AuthStyle::Form, ClientAuth::Form),
        (AuthStyle::Json, ClientAuth::Json),
    ] {
        let token = credentials(&server, style).fetch_uncached().await.unwrap();
        assert!(server.accepts(token.secret()));
        assert_eq!(server.last_client_auth(), Some(seen));
    }
    let wrong = ClientCredentials::builder()
        .token_url(server.url())
        .client_id("test-client")
        .client_secret("wrong")
        .build()
        .unwrap();
    let error = wrong.fetch_uncached().await.unwrap_err();
    assert_eq!(error.oauth_error().unwrap().code(), "invalid_client");
    assert_eq!(server.issued(), 3);
    assert_eq!(server.requests(), 4);
    assert!(!server.accepts("token-99"));
}

#[tokio::test]
async fn queued_failures_come_first_then_tokens_again() {
    let server = TokenServer::start().await.unwrap();
    server.fail_next(
        1,
        Failure::OAuth {
            status: 400,
            error: "invalid_scope".into(),
        },
    );
    server.fail_next(
        1,
        Failure::RetryAfter {
            status: 429,
            seconds: 7,
        },
    );
    server.fail_next(
        1,
        Failure::Body {
            status: 200,
            content_type: "text/html".into(),
            body: "<html>login</html>".into(),
        },
    );
    server.fail_next(1, Failure::Delay(Duration::from_millis(300)));
    let client = credentials(&server, AuthStyle::Basic);

    let scope = client.fetch_uncached().await.unwrap_err();
    assert_eq!(scope.oauth_error().unwrap().code(), "invalid_scope");
    let limited = client.fetch_uncached().await.unwrap_err();
    assert_eq!(limited.retry_after(), Some(Duration::from_secs(7)));
    assert!(limited.is_transient());
    let html = client.fetch_uncached().await.unwrap_err();
    assert_eq!(html.kind(), ErrorKind::InvalidResponse);
    let slow = ClientCredentials::builder()
        .token_url(server.url())
        .client_id("test-client")
        .client_secret("test-secret")
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    assert_eq!(
        slow.fetch_uncached().await.unwrap_err().kind(),
        ErrorKind::Timeout
    );
    assert_eq!(client.fetch_uncached().await.unwrap().secret(), "token-1");
}

#[tokio::test]
async fn tokens_expire_for_the_server_after_their_lifetime() {
    let server = TokenServer::builder()
        .lifetime(Duration::from_secs(1))
        .token_prefix("short")
        .start()
        .await
        .unwrap();
    let token = credentials(&server, AuthStyle::Basic)
        .fetch_uncached()
        .await
        .unwrap();
    assert_eq!(token.secret(), "short-1");
    assert!(server.accepts("short-1"));
    let validator = server.validator();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(!validator("short-1"), "expired for the resource server");
}

#[tokio::test]
async fn it_answers_404_off_its_token_path_so_a_wrong_token_url_fails() {
    let server = TokenServer::start().await.unwrap();
    let wrong = ClientCredentials::builder()
        .token_url(format!("http://{}/token", server.addr()))
        .client_id("test-client")
        .client_secret("test-secret")
        .build()
        .unwrap();
    let error = wrong.fetch_uncached().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Rejected, "{error}");
    assert_eq!(error.status().map(|s| s.as_u16()), Some(404), "{error}");
    assert_eq!(server.issued(), 0);

    let custom = TokenServer::builder()
        .token_path("/realms/test/protocol/openid-connect/token")
        .start()
        .await
        .unwrap();
    assert!(custom
        .url()
        .ends_with("/realms/test/protocol/openid-connect/token"));
    let token = credentials(&custom, AuthStyle::Basic)
        .fetch_uncached()
        .await
        .unwrap();
    assert!(custom.accepts(token.secret()));
}

#[tokio::test]
async fn an_assertion_verifier_is_handed_the_servers_own_token_url() {
    use base64::Engine as _;
    use std::sync::{Arc, Mutex};

    let audiences = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let seen = audiences.clone();
    let server = TokenServer::builder()
        .client("test-client", "")
        .client_assertions(move |assertion, server| {
            let claims = assertion.split('.').nth(1).unwrap_or_default();
            let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(claims)
                .unwrap_or_default();
            let claims: serde_json::Value = serde_json::from_slice(&claims).unwrap_or_default();
            let aud = claims["aud"].as_str().unwrap_or_default().to_owned();
            seen.lock()
                .unwrap()
                .push((aud.clone(), server.token_url().to_owned()));
            aud == server.token_url()
        })
        .start()
        .await
        .unwrap();
    let credentials = ClientCredentials::builder()
        .token_url(server.url())
        .client_id("test-client")
        .client_secret("a-shared-secret-of-at-least-32-bytes!!")
        .client_secret_jwt()
        .build()
        .unwrap();

    let token = credentials.fetch_uncached().await.unwrap();
    assert!(server.accepts(token.secret()));
    assert_eq!(server.last_client_auth(), Some(ClientAuth::Assertion));
    let audiences = audiences.lock().unwrap().clone();
    assert_eq!(audiences, [(server.url(), server.url())]);
}
