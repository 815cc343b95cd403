//! `TokenExchange` (RFC 8693, src/token_exchange.rs) against token servers on loopback that
//! check what an identity provider checks: the subject token verified with the key of the
//! issuer it trusts (never the client's), the token types, audience, resource and scope.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use tower::{Service, ServiceExt};
use tower_oauth2::test_util::TokenServer;
use tower_oauth2::token_exchange::{TokenExchange, TokenType};
use tower_oauth2::{BearerAuthLayer, ClientCredentials, ErrorKind, TokenSource};

use crate::support::issuer::{Issuer, Mounted};
use crate::support::{json as json_response, last};

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const AUDIENCE: &str = "sts.example.com";

/// A token server exchanging JWTs from `issuer` (for `AUDIENCE`) for client `svc`/`secret`.
async fn exchanging(issuer: &Issuer) -> TokenServer {
    let issuer = issuer.clone();
    TokenServer::builder()
        .client("svc", "secret")
        .grant(TOKEN_EXCHANGE, move |params| {
            params.get("subject_token_type").map(String::as_str) == Some(JWT)
                && params
                    .get("subject_token")
                    .is_some_and(|token| issuer.verify(token, AUDIENCE).is_some())
        })
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_subject_token_file_is_exchanged_with_every_parameter_and_reread_each_time() {
    let issuer = Issuer::new("https://kubernetes.default.svc");
    let server = exchanging(&issuer).await;
    let mounted = Mounted::new();
    let first = issuer.token(
        "system:serviceaccount:shop:orders",
        AUDIENCE,
        3600,
        json!({}),
    );
    let path = mounted.write("token", &first);
    let exchange = TokenExchange::builder()
        .token_url(server.url())
        .client_id("svc")
        .client_secret("secret")
        .subject_token_file(&path, TokenType::Jwt)
        .audience("billing")
        .resource("https://billing.example.com/api")
        .scope("invoices:read")
        .requested_token_type(TokenType::AccessToken)
        .build()
        .unwrap();
    let token = exchange.token().await.unwrap();
    assert_eq!(token.issued_token_type(), Some(ACCESS_TOKEN));
    assert_eq!(
        token.issued_token_type(),
        Some(TokenType::AccessToken.uri())
    );
    let form = last(&server).form();
    assert_eq!(form["grant_type"], TOKEN_EXCHANGE);
    assert_eq!(form["subject_token"], first);
    assert_eq!(form["subject_token_type"], JWT);
    assert_eq!(form["audience"], "billing");
    assert_eq!(form["resource"], "https://billing.example.com/api");
    assert_eq!(form["scope"], "invoices:read");
    assert_eq!(form["requested_token_type"], ACCESS_TOKEN);
    assert!(!form.contains_key("actor_token"));
    assert_eq!(
        last(&server).basic().map(|(id, _)| id).as_deref(),
        Some("svc")
    );
    // Served from the cache.
    exchange.token().await.unwrap();
    assert_eq!(server.requests(), 1);

    // Rotated: the next exchange sends the new subject token.
    let second = issuer.token(
        "system:serviceaccount:shop:orders",
        AUDIENCE,
        3600,
        json!({}),
    );
    mounted.write("token", &second);
    exchange.invalidate(&token);
    exchange.token().await.unwrap();
    assert_eq!(last(&server).form()["subject_token"], second);
    let shown = format!("{exchange:?}");
    assert!(shown.starts_with("TokenExchange"), "{shown}");
    assert!(
        !shown.contains(&second) && !shown.contains("secret\""),
        "{shown}"
    );
}

#[tokio::test]
async fn a_chained_exchange_sends_the_inner_sources_current_token() {
    // The service's own token, from its own identity provider.
    let own_idp = TokenServer::builder()
        .client("orders", "orders-secret")
        .token_prefix("own")
        .start()
        .await
        .unwrap();
    let own = ClientCredentials::builder()
        .token_url(own_idp.url())
        .client_id("orders")
        .client_secret("orders-secret")
        .build()
        .unwrap();
    // The exchanging server accepts only live tokens the first one issued.
    let accepts = own_idp.validator();
    let sts = TokenServer::builder()
        .client("orders", "orders-secret")
        .token_prefix("downstream")
        .grant(TOKEN_EXCHANGE, move |params| {
            params.get("subject_token_type").map(String::as_str) == Some(ACCESS_TOKEN)
                && params
                    .get("subject_token")
                    .is_some_and(|token| accepts(token))
        })
        .start()
        .await
        .unwrap();
    let exchange = TokenExchange::builder()
        .token_url(sts.url())
        .client_id("orders")
        .client_secret("orders-secret")
        .subject_token_source(own.clone(), TokenType::AccessToken)
        .audience("https://billing.example.com")
        .build()
        .unwrap();
    let downstream = exchange.token().await.unwrap();
    assert_eq!(downstream.secret(), "downstream-1");
    assert_eq!(last(&sts).form()["subject_token"], "own-1");

    // The inner token is refreshed (here: rejected and replaced); the next exchange sends the
    // new one, while the cached exchanged token is kept until then.
    let inner = own.token().await.unwrap();
    own.invalidate(&inner);
    assert_eq!(exchange.token().await.unwrap().secret(), "downstream-1");
    exchange.invalidate(&downstream);
    assert_eq!(exchange.token().await.unwrap().secret(), "downstream-2");
    assert_eq!(last(&sts).form()["subject_token"], "own-2");
    assert_eq!(own_idp.requests(), 2);
}

#[tokio::test]
async fn two_hundred_concurrent_callers_cause_one_exchange() {
    let own_idp = TokenServer::builder()
        .client("orders", "s")
        .latency(Duration::from_millis(30))
        .start()
        .await
        .unwrap();
    let own = ClientCredentials::builder()
        .token_url(own_idp.url())
        .client_id("orders")
        .client_secret("s")
        .build()
        .unwrap();
    let sts = TokenServer::builder()
        .client("orders", "s")
        .latency(Duration::from_millis(30))
        .grant(TOKEN_EXCHANGE, |_| true)
        .start()
        .await
        .unwrap();
    let exchange = TokenExchange::builder()
        .token_url(sts.url())
        .client_id("orders")
        .client_secret("s")
        .subject_token_source(own, TokenType::AccessToken)
        .build()
        .unwrap();
    let callers: Vec<_> = (0..200)
        .map(|_| {
            let exchange = exchange.clone();
            tokio::spawn(async move { exchange.token().await.map(|t| t.secret().to_owned()) })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap().unwrap(), "token-1");
    }
    assert_eq!(sts.requests(), 1, "one exchange for 200 callers");
    assert_eq!(own_idp.requests(), 1, "one inner token for that exchange");
}

#[tokio::test]
async fn a_bad_subject_token_is_a_permanent_error_whichever_code_the_server_uses() {
    for code in ["invalid_request", "invalid_grant"] {
        let server = TokenServer::builder()
            .script(move |request, _| {
                let subject = request.form().get("subject_token").cloned().unwrap_or_default();
                let body = json!({"error": code, "error_description": format!("subject token {subject} is expired")});
                let response = json_response(StatusCode::BAD_REQUEST, body);
                async move { Some(response) }
            })
            .start()
            .await
            .unwrap();
        let exchange = TokenExchange::builder()
            .token_url(server.url())
            .subject_token_fn(
                || async { Ok::<_, std::io::Error>("opaque-subject-token".to_owned()) },
                TokenType::AccessToken,
            )
            .build()
            .unwrap();
        let error = exchange.token().await.unwrap_err();
        let text = format!("{error} {error:?}");
        assert_eq!(error.kind(), ErrorKind::Rejected, "{text}");
        assert!(!error.is_transient(), "{code}: {text}");
        assert_eq!(error.oauth_error().map(|e| e.code()), Some(code));
        assert!(!text.contains("opaque-subject-token"), "redacted: {text}");
    }
}

#[tokio::test]
async fn a_missing_subject_token_file_is_a_transient_error_naming_it() {
    let server = exchanging(&Issuer::new("https://issuer")).await;
    let mounted = Mounted::new();
    let path = mounted.path("not-yet");
    let exchange = TokenExchange::builder()
        .token_url(server.url())
        .client_id("svc")
        .client_secret("secret")
        .subject_token_file(&path, TokenType::Jwt)
        .build()
        .unwrap();
    let error = exchange.token().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ClientAuth, "{error}");
    assert!(error.is_transient(), "{error}");
    let text = error.to_string();
    assert!(
        text.contains("subject token file") && text.contains(&path.display().to_string()),
        "{text}"
    );
    assert_eq!(server.requests(), 0);
}

#[tokio::test]
async fn an_actor_token_goes_with_its_type() {
    let issuer = Issuer::new("https://issuer");
    let server = TokenServer::builder()
        .public_clients()
        .grant(TOKEN_EXCHANGE, |params| params.contains_key("actor_token"))
        .start()
        .await
        .unwrap();
    let mounted = Mounted::new();
    let subject = mounted.write("subject", &issuer.token("user", AUDIENCE, 600, json!({})));
    let actor = mounted.write("actor", &issuer.token("orders", AUDIENCE, 600, json!({})));
    let exchange = TokenExchange::builder()
        .token_url(server.url())
        .subject_token_file(&subject, TokenType::IdToken)
        .actor_token_file(&actor, TokenType::Jwt)
        .requested_token_type(TokenType::Jwt)
        .build()
        .unwrap();
    let token = exchange.token().await.unwrap();
    assert_eq!(token.issued_token_type(), Some(JWT));
    let form = last(&server).form();
    assert_eq!(
        form["subject_token_type"],
        "urn:ietf:params:oauth:token-type:id_token"
    );
    assert_eq!(form["actor_token_type"], JWT);
    assert_eq!(
        form["actor_token"],
        std::fs::read_to_string(&actor).unwrap()
    );
}

#[tokio::test]
async fn the_layer_sends_the_exchanged_token() {
    let server = TokenServer::builder()
        .public_clients()
        .grant(TOKEN_EXCHANGE, |_| true)
        .token_prefix("exchanged")
        .start()
        .await
        .unwrap();
    let exchange = TokenExchange::builder()
        .token_url(server.url())
        .subject_token_source(
            tower_oauth2::source::StaticToken::new("subject"),
            TokenType::AccessToken,
        )
        .build()
        .unwrap();
    let seen = Arc::new(std::sync::Mutex::new(None));
    let mut service = tower::ServiceBuilder::new()
        .layer(BearerAuthLayer::new(exchange))
        .service_fn({
            let seen = seen.clone();
            move |request: http::Request<String>| {
                *seen.lock().unwrap() = request
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .map(|v| v.to_str().unwrap().to_owned());
                async { Ok::<_, std::convert::Infallible>(http::Response::new(String::new())) }
            }
        });
    let service = service.ready().await.unwrap();
    service
        .call(http::Request::new(String::new()))
        .await
        .unwrap();
    assert_eq!(seen.lock().unwrap().as_deref(), Some("Bearer exchanged-1"));
    let form = last(&server).form();
    assert!(
        !form.contains_key("client_id"),
        "no client authentication at all"
    );
    assert!(last(&server).header("authorization").is_none());
}

#[test]
fn a_subject_token_is_required() {
    let error = TokenExchange::builder()
        .token_url("https://sts.example.com/token")
        .build()
        .unwrap_err();
    assert_eq!(error.setting(), "subject_token", "{error}");
    let error = TokenExchange::builder()
        .token_url("https://sts.example.com/token")
        .subject_token_file("/t", TokenType::Jwt)
        .param("subject_token", "x")
        .build()
        .unwrap_err();
    assert_eq!(error.setting(), "param", "{error}");
}

#[allow(dead_code)]
fn is_a_clonable_source(exchange: TokenExchange) -> impl TokenSource + Clone {
    exchange
}

#[tokio::test]
async fn a_subject_token_the_server_refuses_is_given_back_to_its_source() {
    let own_idp = TokenServer::builder()
        .client("orders", "s")
        .token_prefix("own")
        .start()
        .await
        .unwrap();
    let own = ClientCredentials::builder()
        .token_url(own_idp.url())
        .client_id("orders")
        .client_secret("s")
        .build()
        .unwrap();
    // The STS finds the first subject token revoked.
    let sts = TokenServer::builder()
        .client("orders", "s")
        .grant(TOKEN_EXCHANGE, |params| {
            params.get("subject_token").map(String::as_str) != Some("own-1")
        })
        .start()
        .await
        .unwrap();
    let exchange = TokenExchange::builder()
        .token_url(sts.url())
        .client_id("orders")
        .client_secret("s")
        .subject_token_source(own, TokenType::AccessToken)
        .cache_policy(
            tower_oauth2::cache::CachePolicy::default().backoff(Duration::ZERO, Duration::ZERO),
        )
        .build()
        .unwrap();
    let error = exchange.token().await.unwrap_err();
    assert!(!error.is_transient(), "{error}");
    assert_eq!(error.oauth_error().map(|e| e.code()), Some("invalid_grant"));
    // The inner cache dropped the refused token: the next exchange carries a new one.
    exchange.token().await.unwrap();
    assert_eq!(last(&sts).form()["subject_token"], "own-2");
}

#[tokio::test]
async fn a_panicking_or_hanging_subject_source_is_contained() {
    let server = TokenServer::builder()
        .public_clients()
        .grant(TOKEN_EXCHANGE, |_| true)
        .start()
        .await
        .unwrap();
    let panicking = tower_oauth2::source::from_fn(|| async {
        panic!("subject source bug");
        #[allow(unreachable_code)]
        Ok(tower_oauth2::AccessToken::new("never"))
    });
    let exchange = TokenExchange::builder()
        .token_url(server.url())
        .subject_token_source(panicking, TokenType::AccessToken)
        .build()
        .unwrap();
    let error = exchange.token().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Panic, "{error}");
    let hanging = tower_oauth2::source::from_fn(|| async {
        std::future::pending::<Result<tower_oauth2::AccessToken, tower_oauth2::Error>>().await
    });
    let exchange = TokenExchange::builder()
        .token_url(server.url())
        .subject_token_source(hanging, TokenType::AccessToken)
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let error = tokio::time::timeout(Duration::from_secs(5), exchange.token())
        .await
        .expect("bounded by the timeout")
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(
        error.to_string().contains("did not answer within"),
        "{error}"
    );
    assert_eq!(server.requests(), 0);
}
