//! One client registration, several APIs: `with_audience` and `with_scopes` siblings share the
//! configuration and the HTTP client, and each has its own token, cache and invalidation.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::support::{self, json};
use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;
use tower_oauth2::test_util::TokenServer;
use tower_oauth2::{transport::TokenRequest, ClientCredentials};

/// Issues `<audience or scope>-<n>` (spaces as `+`: a token has none).
async fn token_server() -> TokenServer {
    support::scripted(|request, n| {
        let form = request.form();
        let what = form
            .get("audience")
            .or(form.get("scope"))
            .cloned()
            .unwrap_or_else(|| "default".into());
        json(
            StatusCode::OK,
            serde_json::json!({
                "access_token": format!("{}-{n}", what.replace(' ', "+")),
                "token_type": "Bearer",
                "expires_in": 3600,
            }),
        )
    })
    .await
}

/// A client through one HTTP client that counts what it sends.
fn credentials(server: &TokenServer, sent: Arc<AtomicUsize>) -> ClientCredentials {
    let hyper = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let counting = tower::service_fn(move |request: TokenRequest| {
        sent.fetch_add(1, Ordering::SeqCst);
        hyper.clone().oneshot(request)
    });
    ClientCredentials::builder()
        .token_url(server.url())
        .client_id("client-1")
        .client_secret("secret")
        .audience("https://default.example.com")
        .http_client(counting)
        .build()
        .unwrap()
}

#[tokio::test]
async fn siblings_share_the_http_client_and_keep_their_own_tokens() {
    let server = token_server().await;
    let sent = Arc::new(AtomicUsize::new(0));
    let base = credentials(&server, sent.clone());
    let orders = base.with_audience("orders");
    let billing = base.with_audience("billing");

    for _ in 0..3 {
        assert_eq!(orders.token().await.unwrap().secret(), "orders-1");
        assert_eq!(billing.token().await.unwrap().secret(), "billing-2");
        assert_eq!(
            base.token().await.unwrap().secret(),
            "https://default.example.com-3"
        );
    }
    assert_eq!(server.requests(), 3, "one token request each");
    assert_eq!(
        sent.load(Ordering::SeqCst),
        3,
        "all through the one HTTP client"
    );
    for request in server.received() {
        assert_eq!(request.basic().unwrap().0, "client-1", "same credentials");
    }
}

#[tokio::test]
async fn a_siblings_invalidation_leaves_the_others_alone() {
    let server = token_server().await;
    let base = credentials(&server, Arc::default());
    let orders = base.with_audience("orders");
    let billing = base.with_audience("billing");
    let rejected = orders.token().await.unwrap();
    let kept = billing.token().await.unwrap();

    orders.invalidate(&rejected);
    // A token of another sibling is not this one's to drop.
    orders.invalidate(&kept);

    assert_eq!(orders.token().await.unwrap().secret(), "orders-3");
    assert_eq!(billing.token().await.unwrap().secret(), kept.secret());
    assert_eq!(server.requests(), 3);
}

#[tokio::test]
async fn with_scopes_replaces_the_scope_and_no_scopes_leaves_it_out() {
    let server = token_server().await;
    let base = ClientCredentials::builder()
        .token_url(server.url())
        .client_id("client-1")
        .client_secret("secret")
        .scope("read")
        .build()
        .unwrap();

    let write = base.with_scopes(["write", "admin"]);
    assert_eq!(write.token().await.unwrap().secret(), "write+admin-1");
    let none = base.with_scopes(Vec::<String>::new());
    none.token().await.unwrap();
    assert!(!support::last(&server).form().contains_key("scope"));
    assert_eq!(base.token().await.unwrap().secret(), "read-3");
}
