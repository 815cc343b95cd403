//! Credentials made elsewhere (`.client_assertion_file`, `.client_assertion_fn`,
//! `.client_secret_file`): read at every token request, never at `build()`. The token server
//! verifies each assertion with the key of a separate issuer (as an identity provider trusting
//! a Kubernetes or SPIFFE issuer does), never the client's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use tower_oauth2::cache::CachePolicy;
use tower_oauth2::test_util::TokenServer;
use tower_oauth2::{ClientCredentials, ErrorKind};

use crate::support::issuer::{Issuer, Mounted};
use crate::support::{json as json_response, last};

const CLIENT_ID: &str = "workload";
const AUDIENCE: &str = "api://idp-token-exchange";

/// A token server trusting `issuer`'s assertions for `CLIENT_ID`.
async fn trusting(issuer: &Issuer) -> TokenServer {
    TokenServer::builder()
        .client(CLIENT_ID, "")
        .client_assertions(issuer.verifier(AUDIENCE))
        .start()
        .await
        .unwrap()
}

/// No backoff, so that a test sees the cache recover at the next call.
fn eager() -> CachePolicy {
    CachePolicy::default().backoff(Duration::ZERO, Duration::ZERO)
}

fn sent_assertion(server: &TokenServer) -> String {
    last(server).form()["client_assertion"].clone()
}

#[tokio::test]
async fn an_assertion_file_rewritten_between_fetches_is_read_at_each_request() {
    let issuer = Issuer::new("https://kubernetes.default.svc");
    let server = trusting(&issuer).await;
    let mounted = Mounted::new();
    let first = issuer.token(
        "system:serviceaccount:shop:orders",
        AUDIENCE,
        3600,
        json!({}),
    );
    let path = mounted.write("token", &format!("{first}\n"));
    let credentials = ClientCredentials::builder()
        .token_url(server.url())
        .client_id(CLIENT_ID)
        .client_assertion_file(&path)
        .build()
        .unwrap();

    let token = credentials.token().await.unwrap();
    let form = last(&server).form();
    assert_eq!(
        form["client_assertion"], first,
        "the file's content, trimmed"
    );
    assert_eq!(
        form["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert_eq!(form["client_id"], CLIENT_ID);
    assert!(!form.contains_key("client_secret"));

    // The kubelet rotates the token: the next request carries the new one.
    let second = issuer.token(
        "system:serviceaccount:shop:orders",
        AUDIENCE,
        3600,
        json!({}),
    );
    assert_ne!(first, second);
    mounted.write("token", &second);
    credentials.invalidate(&token);
    credentials.token().await.unwrap();
    assert_eq!(sent_assertion(&server), second);
    let third = issuer.token(
        "system:serviceaccount:shop:orders",
        AUDIENCE,
        3600,
        json!({}),
    );
    mounted.write("token", &third);
    credentials.fetch_uncached().await.unwrap();
    assert_eq!(sent_assertion(&server), third);
    assert_eq!(server.issued(), 3);

    // One the trusted issuer did not sign (the client's own key, say) is refused by the server.
    let stranger = Issuer::new("https://kubernetes.default.svc");
    mounted.write("token", &stranger.token("x", AUDIENCE, 3600, json!({})));
    let error = credentials.fetch_uncached().await.unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::UNAUTHORIZED), "{error}");
    assert!(
        error
            .hint()
            .is_some_and(|hint| hint.contains("federated credential")),
        "{error}"
    );
}

#[tokio::test]
async fn an_expired_assertion_is_refused_before_it_is_sent_and_the_error_names_the_file() {
    let issuer = Issuer::new("https://kubernetes.default.svc");
    let server = trusting(&issuer).await;
    let mounted = Mounted::new();
    let expired = issuer.token("svc", AUDIENCE, -30, json!({}));
    let path = mounted.write("token", &expired);
    let credentials = ClientCredentials::builder()
        .token_url(server.url())
        .client_id(CLIENT_ID)
        .client_assertion_file(&path)
        .cache_policy(eager())
        .build()
        .unwrap();
    let error = credentials.token().await.unwrap_err();
    let text = error.to_string();
    assert_eq!(error.kind(), ErrorKind::ClientAuth, "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("expired"), "{text}");
    assert!(
        error.is_transient(),
        "whoever writes it may refresh it: {text}"
    );
    assert!(!text.contains(&expired) && !format!("{error:?}").contains(&expired));
    assert_eq!(server.requests(), 0, "an expired assertion is not sent");

    // Refreshed: the cache recovers at the next call.
    mounted.write("token", &issuer.token("svc", AUDIENCE, 600, json!({})));
    credentials.token().await.unwrap();
    assert_eq!(server.issued(), 1);
}

#[tokio::test]
async fn a_file_that_appears_late_is_picked_up_and_the_cache_recovers() {
    let issuer = Issuer::new("spiffe://example.org");
    let server = trusting(&issuer).await;
    let mounted = Mounted::new();
    let path = mounted.path("jwt_svid.token");
    // Not there yet: build() accepts it.
    let credentials = ClientCredentials::builder()
        .token_url(server.url())
        .client_id(CLIENT_ID)
        .client_assertion_file(&path)
        .cache_policy(eager())
        .build()
        .unwrap();
    let error = credentials.token().await.unwrap_err();
    let text = error.to_string();
    assert_eq!(error.kind(), ErrorKind::ClientAuth, "{text}");
    assert!(error.is_transient(), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("does not exist"), "{text}");

    // Mounted, but empty while being written: still transient, still named.
    mounted.write("jwt_svid.token", "\n");
    let error = credentials.token().await.unwrap_err();
    assert!(
        error.is_transient() && error.to_string().contains("empty"),
        "{error}"
    );

    mounted.write(
        "jwt_svid.token",
        &issuer.token(
            "spiffe://example.org/ns/shop/sa/orders",
            AUDIENCE,
            300,
            json!({}),
        ),
    );
    credentials.token().await.unwrap();
    assert_eq!(
        server.requests(),
        1,
        "no request went out before the file was right"
    );
}

#[tokio::test]
async fn what_is_not_a_jwt_is_a_permanent_error_and_never_shown() {
    let server = trusting(&Issuer::new("https://issuer")).await;
    let mounted = Mounted::new();
    let path = mounted.write("token", "not-a-jwt-but-a-secret-looking-thing");
    let credentials = ClientCredentials::builder()
        .token_url(server.url())
        .client_id(CLIENT_ID)
        .client_assertion_file(&path)
        .build()
        .unwrap();
    let error = credentials.token().await.unwrap_err();
    let text = format!("{error} {error:?} {credentials:?}");
    assert!(!error.is_transient(), "{text}");
    assert!(text.contains("not a JWT"), "{text}");
    assert!(!text.contains("secret-looking"), "{text}");
}

#[tokio::test]
async fn an_assertion_the_endpoint_echoes_back_is_redacted() {
    let issuer = Issuer::new("https://issuer");
    let assertion = issuer.token("svc", AUDIENCE, 300, json!({}));
    let echoed = assertion.clone();
    let server = TokenServer::builder()
        .script(move |_, _| {
            let body = json!({
                "error": "invalid_client",
                "error_description": format!("assertion {echoed} is not trusted"),
            });
            let response = json_response(StatusCode::UNAUTHORIZED, body);
            async move { Some(response) }
        })
        .start()
        .await
        .unwrap();
    let credentials = ClientCredentials::builder()
        .token_url(server.url())
        .client_id(CLIENT_ID)
        .client_assertion_fn(move || {
            let assertion = assertion.clone();
            async move { Ok::<_, std::io::Error>(assertion) }
        })
        .build()
        .unwrap();
    let error = credentials.token().await.unwrap_err();
    let text = format!("{error} {error:?}");
    assert!(text.contains("is not trusted"), "{text}");
    assert!(!text.contains(&sent_assertion(&server)), "{text}");
}

#[tokio::test]
async fn an_assertion_closure_is_called_at_each_request() {
    let issuer = Issuer::new("https://metadata.internal");
    let server = trusting(&issuer).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let credentials = ClientCredentials::builder()
        .token_url(server.url())
        .client_id(CLIENT_ID)
        .client_assertion_fn({
            let (issuer, calls) = (issuer.clone(), calls.clone());
            move || {
                calls.fetch_add(1, Ordering::SeqCst);
                let jwt = issuer.token("svc", AUDIENCE, 300, json!({}));
                async move { Ok::<_, std::io::Error>(jwt) }
            }
        })
        .build()
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 0, "not called by build()");
    credentials.fetch_uncached().await.unwrap();
    credentials.fetch_uncached().await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(server.issued(), 2);
}

#[tokio::test]
async fn a_panicking_or_failing_assertion_closure_is_an_error_and_the_cache_recovers() {
    let issuer = Issuer::new("https://metadata.internal");
    let server = trusting(&issuer).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let credentials = ClientCredentials::builder()
        .token_url(server.url())
        .client_id(CLIENT_ID)
        .cache_policy(eager())
        .client_assertion_fn({
            let (issuer, calls) = (issuer.clone(), calls.clone());
            move || {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                if n == 1 {
                    panic!("metadata server client bug");
                }
                let jwt = issuer.token("svc", AUDIENCE, 300, json!({}));
                async move {
                    if n == 2 {
                        return Err(std::io::Error::other("metadata server unavailable"));
                    }
                    Ok(jwt)
                }
            }
        })
        .build()
        .unwrap();
    let panicked = credentials.token().await.unwrap_err();
    assert_eq!(panicked.kind(), ErrorKind::Panic, "{panicked}");
    assert!(
        panicked.to_string().contains("client assertion closure"),
        "{panicked}"
    );
    assert!(!panicked.to_string().contains("bug"), "{panicked}");
    let failed = credentials.token().await.unwrap_err();
    assert_eq!(failed.kind(), ErrorKind::ClientAuth, "{failed}");
    assert!(failed.is_transient());
    let causes = std::iter::successors(std::error::Error::source(&failed), |e| e.source());
    assert!(
        causes
            .map(|cause| cause.to_string())
            .any(|text| text == "metadata server unavailable"),
        "the closure's error is the cause"
    );
    credentials.token().await.unwrap();
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn a_hanging_assertion_closure_times_out() {
    let server = trusting(&Issuer::new("https://metadata.internal")).await;
    let credentials = ClientCredentials::builder()
        .token_url(server.url())
        .client_id(CLIENT_ID)
        .timeout(Duration::from_millis(100))
        .client_assertion_fn(std::future::pending::<Result<String, std::io::Error>>)
        .build()
        .unwrap();
    let error = tokio::time::timeout(Duration::from_secs(5), credentials.token())
        .await
        .expect("bounded by the fetch timeout")
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ClientAuth, "{error}");
    assert!(error.is_transient());
    assert!(
        error.to_string().contains("did not return within"),
        "{error}"
    );
    assert_eq!(server.requests(), 0);
}

/// A token server accepting `secrets` for `svc` in the body, changed by the test.
async fn accepting_secrets(secrets: Arc<Mutex<Vec<&'static str>>>) -> TokenServer {
    TokenServer::builder()
        .script(move |request, n| {
            let form = request.form();
            let accepted = secrets.lock().unwrap().clone();
            let ok = form.get("client_id").map(String::as_str) == Some("svc")
                && form
                    .get("client_secret")
                    .is_some_and(|secret| accepted.contains(&secret.as_str()));
            let response = if ok {
                json_response(
                    StatusCode::OK,
                    json!({"access_token": format!("token-{n}"), "token_type": "Bearer", "expires_in": 3600}),
                )
            } else {
                json_response(
                    StatusCode::UNAUTHORIZED,
                    json!({"error": "invalid_client", "error_description": format!("bad secret {:?}", form.get("client_secret"))}),
                )
            };
            async move { Some(response) }
        })
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_rotated_secret_file_is_used_from_the_next_request() {
    let accepted = Arc::new(Mutex::new(vec!["old-secret"]));
    let server = accepting_secrets(accepted.clone()).await;
    let mounted = Mounted::new();
    let path = mounted.write("client-secret", "old-secret\n");
    let credentials = ClientCredentials::builder()
        .token_url(server.url())
        .client_id("svc")
        .client_secret_file(&path)
        .auth_style(tower_oauth2::client_auth::AuthStyle::Form)
        .build()
        .unwrap();
    credentials.fetch_uncached().await.unwrap();
    assert_eq!(last(&server).form()["client_secret"], "old-secret");

    // The identity provider starts a grace window: both secrets work. The operator rewrites
    // the file; the next request uses the new one, no restart.
    accepted.lock().unwrap().push("new-secret");
    mounted.write("client-secret", "new-secret");
    credentials.fetch_uncached().await.unwrap();
    assert_eq!(last(&server).form()["client_secret"], "new-secret");
    // The grace window ends: the old secret is refused, the client does not notice.
    accepted
        .lock()
        .unwrap()
        .retain(|secret| *secret != "old-secret");
    credentials.fetch_uncached().await.unwrap();

    // A secret echoed back is redacted, though the client read it only for that request.
    mounted.write("client-secret", "wrong-secret");
    let error = credentials.fetch_uncached().await.unwrap_err();
    let text = format!("{error} {error:?} {credentials:?}");
    assert_eq!(error.status(), Some(StatusCode::UNAUTHORIZED), "{text}");
    assert!(!text.contains("wrong-secret"), "{text}");
    assert!(!text.contains("new-secret"), "{text}");
}

#[tokio::test]
async fn a_secret_file_in_a_basic_header_and_missing_at_first() {
    let server = TokenServer::builder()
        .client("svc", "s3cr3t with space")
        .start()
        .await
        .unwrap();
    let mounted = Mounted::new();
    let path = mounted.path("client-secret");
    let credentials = ClientCredentials::builder()
        .token_url(server.url())
        .client_id("svc")
        .client_secret_file(&path)
        .cache_policy(eager())
        .build()
        .unwrap();
    let error = credentials.token().await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(error.to_string().contains("client secret file"), "{error}");
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
    mounted.write("client-secret", "s3cr3t with space\n");
    credentials.token().await.unwrap();
    assert_eq!(
        server.issued(),
        1,
        "the server accepted the secret, trimmed"
    );
    assert_eq!(
        last(&server).basic().map(|(id, _)| id).as_deref(),
        Some("svc")
    );
}

#[test]
fn a_credential_made_elsewhere_excludes_the_other_methods() {
    let error = ClientCredentials::builder()
        .token_url("https://idp.example.com/token")
        .client_id(CLIENT_ID)
        .client_secret("secret")
        .client_assertion_file("/var/run/secrets/tokens/idp")
        .build()
        .unwrap_err();
    assert_eq!(error.setting(), "client_assertion", "{error}");
    assert!(error.to_string().contains(".client_secret"), "{error}");
    let error = ClientCredentials::builder()
        .token_url("https://idp.example.com/token")
        .client_id(CLIENT_ID)
        .client_secret("secret")
        .client_secret_file("/var/run/secrets/idp/secret")
        .build()
        .unwrap_err();
    assert_eq!(error.setting(), "client_secret_file", "{error}");
    let error = ClientCredentials::builder()
        .token_url("https://idp.example.com/token")
        .client_assertion_file("/var/run/secrets/tokens/idp")
        .build()
        .unwrap_err();
    assert_eq!(error.setting(), "client_id", "{error}");
}

/// A secret that rotates cannot key the shared cache's encryption: the key must be given, and
/// then the shared entry is the same whichever secret the file holds.
#[cfg(feature = "redis")]
#[test]
fn a_shared_cache_with_a_secret_file_needs_its_own_key() {
    let store = || tower_oauth2::shared::RedisStore::new("redis://127.0.0.1:1/").unwrap();
    let builder = || {
        ClientCredentials::builder()
            .token_url("https://idp.example.com/token")
            .client_id("svc")
            .client_secret_file("/var/run/secrets/idp/client-secret")
            .shared_cache(store())
    };
    let error = builder().build().unwrap_err();
    assert_eq!(error.setting(), "shared_cache_key", "{error}");
    builder()
        .shared_cache_key([7u8; 32].to_vec())
        .build()
        .expect("with a key of its own");
    let error = ClientCredentials::builder()
        .token_url("https://idp.example.com/token")
        .client_id("svc")
        .client_assertion_file("/var/run/secrets/tokens/idp")
        .shared_cache(store())
        .build()
        .unwrap_err();
    assert_eq!(error.setting(), "shared_cache_key", "{error}");
}
