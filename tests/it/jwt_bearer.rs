//! `JwtBearer` (RFC 7523 §2.1, src/jwt_bearer.rs): a JWT made elsewhere as the grant, verified
//! by the token server with the key of the issuer it trusts, with and without client
//! authentication.

use std::time::Duration;

use serde_json::json;
use tower_oauth2::client_auth::AuthStyle;
use tower_oauth2::jwt_bearer::JwtBearer;
use tower_oauth2::test_util::TokenServer;
use tower_oauth2::{ErrorKind, TokenCache};

use crate::support::issuer::{Issuer, Mounted};
use crate::support::last;

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const AUDIENCE: &str = "https://idp.example.com";

fn verifying(
    issuer: &Issuer,
) -> impl Fn(&std::collections::HashMap<String, String>) -> bool + Send + Sync + 'static {
    let issuer = issuer.clone();
    move |params| {
        params
            .get("assertion")
            .is_some_and(|jwt| issuer.verify(jwt, AUDIENCE).is_some())
    }
}

#[tokio::test]
async fn an_assertion_file_is_the_grant_and_is_reread_at_each_request() {
    let issuer = Issuer::new("https://kubernetes.default.svc");
    let server = TokenServer::builder()
        .public_clients()
        .grant(JWT_BEARER, verifying(&issuer))
        .start()
        .await
        .unwrap();
    let mounted = Mounted::new();
    let first = issuer.token("svc", AUDIENCE, 600, json!({}));
    let path = mounted.write("token", &first);
    let grant = JwtBearer::builder()
        .token_url(server.url())
        .assertion_file(&path)
        .scope("orders:read")
        .build()
        .unwrap();
    let token = grant.token().await.unwrap();
    let form = last(&server).form();
    assert_eq!(form["grant_type"], JWT_BEARER);
    assert_eq!(form["assertion"], first);
    assert_eq!(form["scope"], "orders:read");
    assert!(!form.contains_key("client_id") && !form.contains_key("client_assertion"));

    let second = issuer.token("svc", AUDIENCE, 600, json!({}));
    mounted.write("token", &second);
    grant.invalidate(&token);
    grant.token().await.unwrap();
    assert_eq!(last(&server).form()["assertion"], second);
    // A cache of its own, like every grant.
    let _cache: TokenCache = grant.clone().into();
    assert!(format!("{grant:?}").starts_with("JwtBearer"));
}

#[tokio::test]
async fn with_client_authentication_for_servers_that_want_it() {
    let issuer = Issuer::new("https://issuer");
    let server = TokenServer::builder()
        .client("svc", "secret")
        .grant(JWT_BEARER, verifying(&issuer))
        .start()
        .await
        .unwrap();
    let mounted = Mounted::new();
    let path = mounted.write("token", &issuer.token("svc", AUDIENCE, 600, json!({})));
    let grant = JwtBearer::builder()
        .token_url(server.url())
        .client_id("svc")
        .client_secret("secret")
        .auth_style(AuthStyle::Form)
        .assertion_file(&path)
        .build()
        .unwrap();
    grant.token().await.unwrap();
    let form = last(&server).form();
    assert_eq!(form["client_secret"], "secret");
    // Without it, this server refuses.
    let anonymous = JwtBearer::builder()
        .token_url(server.url())
        .assertion_file(&path)
        .build()
        .unwrap();
    assert!(anonymous.token().await.is_err());
}

#[tokio::test]
async fn an_expired_assertion_is_refused_before_it_is_sent() {
    let issuer = Issuer::new("https://issuer");
    let server = TokenServer::builder()
        .public_clients()
        .grant(JWT_BEARER, verifying(&issuer))
        .start()
        .await
        .unwrap();
    let mounted = Mounted::new();
    let path = mounted.write("token", &issuer.token("svc", AUDIENCE, -1, json!({})));
    let grant = JwtBearer::builder()
        .token_url(server.url())
        .assertion_file(&path)
        .build()
        .unwrap();
    let error = grant.token().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ClientAuth, "{error}");
    assert!(error.is_transient());
    let text = error.to_string();
    assert!(
        text.contains("assertion") && text.contains("expired"),
        "{text}"
    );
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert_eq!(server.requests(), 0);
}

#[tokio::test]
async fn panicking_and_hanging_assertion_closures_are_contained() {
    let server = TokenServer::builder()
        .public_clients()
        .grant(JWT_BEARER, |_| true)
        .start()
        .await
        .unwrap();
    let grant = JwtBearer::builder()
        .token_url(server.url())
        .assertion_fn(|| -> std::future::Ready<Result<String, std::io::Error>> {
            panic!("signer bug")
        })
        .build()
        .unwrap();
    let error = grant.token().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Panic, "{error}");
    let grant = JwtBearer::builder()
        .token_url(server.url())
        .timeout(Duration::from_millis(50))
        .assertion_fn(std::future::pending::<Result<String, std::io::Error>>)
        .build()
        .unwrap();
    let error = grant.token().await.unwrap_err();
    assert!(
        error.to_string().contains("did not return within"),
        "{error}"
    );
    assert_eq!(server.requests(), 0);
}

#[test]
fn an_assertion_is_required() {
    let error = JwtBearer::builder()
        .token_url("https://idp.example.com/token")
        .build()
        .unwrap_err();
    assert_eq!(error.setting(), "assertion", "{error}");
}
