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

/// `workload::google_external_account` with `credential_source.format.type = "json"` reads
/// the file with `std::fs::read` in `json_field` (src/workload.rs): none of the guards of
/// `.subject_token_file` (regular files only, 64 KiB). A FIFO at that path blocks the runtime
/// thread in `open(2)` past every timeout (the exchange's 1 s included), so the token call
/// never ends; a device such as /dev/zero would be read until memory runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_google_json_credential_source_that_is_a_pipe_is_refused_not_read() {
    let mounted = Mounted::new();
    let fifo = mounted.path("token.json");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo (Debian package coreutils) makes the named pipe this test reads");
    assert!(made.success());
    let server = TokenServer::builder()
        .public_clients()
        .grant(TOKEN_EXCHANGE, |_| true)
        .start()
        .await
        .unwrap();
    let config = json!({
        "type": "external_account",
        "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k8s",
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": server.url(),
        "credential_source": {
            "file": fifo.to_str().unwrap(),
            "format": { "type": "json", "subject_token_field_name": "id_token" }
        }
    });
    let exchange = tower_oauth2::workload::google_external_account(&config.to_string())
        .unwrap()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let call = tokio::spawn(async move { exchange.token().await });
    let outcome = tokio::time::timeout(Duration::from_secs(4), call).await;
    // Whatever happened, let a blocked open(2) go (a writer appears, then leaves: EOF), so
    // that the runtime can shut down. Opened for reading too, which on Linux never blocks: a
    // write-only open would wait for ever for a reader when the pipe was (rightly) not opened.
    let unblock = fifo.clone();
    std::thread::spawn(move || {
        drop(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(unblock),
        )
    })
    .join()
    .unwrap();
    let error = outcome
        .expect("the token call hung on the pipe past its 1 s timeout")
        .unwrap()
        .expect_err("a pipe holds no subject token");
    assert!(error.to_string().contains("not a regular file"), "{error}");
}

/// `TokenServerBuilder::token_path` with a query (Azure AD B2C's token URL carries its policy:
/// `/tenant/oauth2/v2.0/token?p=B2C_1_signin`): `url()` includes it and the client sends it,
/// but the server compares the request's path alone with the whole string, so it answers 404
/// to every request, at its own URL.
#[tokio::test]
async fn a_token_path_with_a_query_answers_at_its_own_url() {
    let server = TokenServer::builder()
        .client("svc", "secret")
        .token_path("/tenant/oauth2/v2.0/token?p=B2C_1_signin")
        .start()
        .await
        .unwrap();
    let credentials = ClientCredentials::builder()
        .token_url(server.url())
        .client_id("svc")
        .client_secret("secret")
        .build()
        .unwrap();
    let result = credentials.token().await;
    assert!(result.is_ok(), "{}", result.unwrap_err());
}

/// The A54 table in src/error/grpc.rs says "the first rule wins" and lists 401 in the
/// `UNAUTHENTICATED` row, above the `PERMISSION_DENIED` row of `unauthorized_client` /
/// `access_denied`; `code_of` looks at the OAuth code first, so a 401 `unauthorized_client`
/// (the client's credentials refused, as HTTP says) reaches a real tonic caller as
/// `PERMISSION_DENIED`, and a 401 `invalid_request` as `INTERNAL`.
#[tokio::test]
async fn a_401_reaches_a_grpc_caller_as_unauthenticated_whatever_its_oauth_code() {
    use tonic::transport::server::TcpIncoming;
    use tonic::transport::{Endpoint, Server};
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tower_oauth2::test_util::Failure;
    use tower_oauth2::BearerAuthLayer;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        Server::builder()
            .add_service(health)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let mut wrong = Vec::new();
    for code in ["unauthorized_client", "access_denied", "invalid_request"] {
        let tokens = TokenServer::builder()
            .client("svc", "secret")
            .start()
            .await
            .unwrap();
        tokens.fail_next(
            1,
            Failure::OAuth {
                status: 401,
                error: code.to_owned(),
            },
        );
        let credentials = ClientCredentials::builder()
            .token_url(tokens.url())
            .client_id("svc")
            .client_secret("secret")
            .build()
            .unwrap();
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let mut client = HealthClient::new(
            tower::ServiceBuilder::new()
                .layer(BearerAuthLayer::new(credentials))
                .service(channel),
        );
        let status = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect_err("no token");
        if status.code() != tonic::Code::Unauthenticated {
            wrong.push(format!("401 {code}: {:?}", status.code()));
        }
    }
    assert!(wrong.is_empty(), "{wrong:?}");
}

/// `.timeout` is "time allowed for a whole token request", but each stage gets the whole of it
/// anew: the client assertion closure, the subject token closure, the actor token closure
/// (each `tokio::time::timeout(timeout, ..)` in `External::read`) and then the HTTP exchange.
/// Four stages each just under a 500 ms timeout make a token request of ~1.8 s that succeeds:
/// a caller sizing its own deadline from `.timeout` is late by up to 4x.
#[tokio::test]
async fn the_timeout_bounds_the_whole_token_request_not_each_stage() {
    let issuer = Issuer::new("https://kubernetes.default.svc");
    let server = TokenServer::builder()
        .client(CLIENT_ID, "")
        .client_assertions(issuer.verifier(AUDIENCE))
        .grant(TOKEN_EXCHANGE, |_| true)
        .latency(Duration::from_millis(400))
        .start()
        .await
        .unwrap();
    let slow = |value: String| {
        move || {
            let value = value.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(400)).await;
                Ok::<_, std::io::Error>(value)
            }
        }
    };
    let assertion = issuer.token(
        "system:serviceaccount:shop:orders",
        AUDIENCE,
        3600,
        json!({}),
    );
    let timeout = Duration::from_millis(500);
    let exchange = TokenExchange::builder()
        .token_url(server.url())
        .client_id(CLIENT_ID)
        .client_assertion_fn(slow(assertion))
        .subject_token_fn(slow("subject".into()), TokenType::AccessToken)
        .actor_token_fn(slow("actor".into()), TokenType::AccessToken)
        .timeout(timeout)
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let outcome = exchange.fetch_uncached().await;
    let took = started.elapsed();
    assert!(
        took < timeout + Duration::from_millis(250),
        "a token request with a {timeout:?} timeout took {took:?} (ok: {})",
        outcome.is_ok()
    );
}

/// A closure that knows its failure is permanent (no such key in the vault, a credential
/// revoked) says so the way the crate offers, `Error::custom(false, ..)`; `External::read`
/// wraps every closure error as `Error::credential_from(.., transient: true, ..)`, so the
/// caller is told to retry and a gRPC caller gets `UNAVAILABLE` instead of `INTERNAL`. The same
/// for a subject token closure (and for `workload::google_external_account`'s JSON-field
/// reader, whose "no string field" mistake is thus retried for ever).
#[tokio::test]
async fn a_closure_failing_permanently_is_a_permanent_error() {
    let server = TokenServer::builder()
        .public_clients()
        .grant(TOKEN_EXCHANGE, |_| true)
        .start()
        .await
        .unwrap();
    let assertion = ClientCredentials::builder()
        .token_url(server.url())
        .client_id(CLIENT_ID)
        .client_assertion_fn(|| async {
            Err::<String, _>(tower_oauth2::Error::custom(
                false,
                "no such key in the vault",
            ))
        })
        .build()
        .unwrap();
    let subject = TokenExchange::builder()
        .token_url(server.url())
        .subject_token_fn(
            || async { Err::<String, _>(tower_oauth2::Error::custom(false, "credential revoked")) },
            TokenType::Jwt,
        )
        .build()
        .unwrap();
    let errors = [
        assertion.fetch_uncached().await.unwrap_err(),
        subject.fetch_uncached().await.unwrap_err(),
    ];
    for error in errors {
        assert!(!error.is_transient(), "said to be transient: {error}");
    }
}

/// A subject token closure that asks another client of this crate (a token from a second
/// identity provider) and passes its `Error` on. With the `tonic` feature the inner error's
/// `source()` is a `tonic::Status` (so that tonic finds the code), and `Display` walks the
/// chain (src/error/mod.rs), so the message repeats itself inside a Status dump:
/// "…: code: 'The request does not have valid authentication credentials', message: \"no
/// OAuth 2.0 access token: …\"" (the whole inner message, endpoint and hint, twice).
#[tokio::test]
async fn an_error_of_this_crate_from_a_closure_is_shown_once_without_a_grpc_status_dump() {
    let other_idp = TokenServer::builder()
        .client("svc", "secret")
        .start()
        .await
        .unwrap();
    let other = ClientCredentials::builder()
        .token_url(other_idp.url())
        .client_id("svc")
        .client_secret("wrong")
        .build()
        .unwrap();
    let server = TokenServer::builder()
        .public_clients()
        .grant(TOKEN_EXCHANGE, |_| true)
        .start()
        .await
        .unwrap();
    let exchange = TokenExchange::builder()
        .token_url(server.url())
        .subject_token_fn(
            move || {
                let other = other.clone();
                async move { other.token().await.map(|token| token.secret().to_owned()) }
            },
            TokenType::AccessToken,
        )
        .build()
        .unwrap();
    let shown = exchange.fetch_uncached().await.unwrap_err().to_string();
    assert!(!shown.contains("code: '"), "{shown}");
    assert_eq!(
        shown.matches("no OAuth 2.0 access token").count(),
        0,
        "{shown}"
    );
}

/// A source resolved after `build()`, as an application wiring its clients from a registry
/// does.
#[derive(Clone, Default)]
struct Later(std::sync::Arc<std::sync::OnceLock<TokenExchange>>);

impl tower_oauth2::TokenSource for Later {
    fn token(&self) -> tower_oauth2::source::TokenFuture<'_> {
        Box::pin(async move { self.0.get().expect("wired").token().await })
    }
}

/// Two chained exchanges whose subject token sources are each other (a wiring mistake): A's
/// flight waits on B's, B's joins A's. A self-reference is caught at once, but this two-cycle
/// hangs for ever, and no timeout helps: when the 1 s fetch timeouts fire, the futures-timer
/// thread wakes A's `futures::Shared` flight, whose waker wakes B's, whose waker wakes A's
/// again and blocks on A's (non-reentrant) waker mutex, which it already holds; the runtime
/// thread then blocks on that mutex too (gdb: `Shared::record_waker` ← src/cache/
/// single_flight.rs:323). Even `tokio::time::timeout` around the call never fires. The call
/// runs on a thread of its own here so that the test can fail instead of hanging.
#[test]
fn a_two_exchange_cycle_is_an_error_not_a_deadlock() {
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let server = TokenServer::builder()
                .public_clients()
                .grant(TOKEN_EXCHANGE, |_| true)
                .start()
                .await
                .unwrap();
            let (to_a, to_b) = (Later::default(), Later::default());
            let exchange = |subject: Later| {
                TokenExchange::builder()
                    .token_url(server.url())
                    .subject_token_source(subject, TokenType::AccessToken)
                    .timeout(Duration::from_secs(1))
                    .build()
                    .unwrap()
            };
            let a = exchange(to_b.clone());
            let b = exchange(to_a.clone());
            to_a.0.set(a.clone()).unwrap();
            to_b.0.set(b).unwrap();
            let result = tokio::time::timeout(Duration::from_secs(5), a.token()).await;
            let _ = done.send(result.map(|r| r.map_err(|e| e.to_string())));
        });
    });
    let outcome = outcome
        .recv_timeout(Duration::from_secs(8))
        .expect("deadlocked: neither the 1 s fetch timeout nor a 5 s tokio timeout fired");
    let result = outcome.expect("not even an error within 5 s");
    assert!(result.is_err(), "a cycle cannot yield a token");
}
