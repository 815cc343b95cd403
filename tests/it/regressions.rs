//! Defects an adversarial review of the issue-19 reshaping found, each fixed since: a test's
//! name says what used to go wrong, its assertions what must hold instead (no replay with the
//! token just rejected, one clean bounded line per error, no credential in a configuration
//! error, no runtime means `ErrorKind::Runtime` also with discovery, no panic out of
//! `fetch_uncached`, errors about a `ClientAuth` value name it).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tower::retry::RetryLayer;
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_oauth2::{
    cache::CachePolicy, layer::RetryOnUnauthorized, source::from_fn, AccessToken, BearerAuthLayer,
    TokenCache,
};

/// A source issuing `token-1`, `token-2`, … living an hour, and how many it issued.
fn counting_source() -> (TokenCache, Arc<AtomicUsize>) {
    let issued = Arc::new(AtomicUsize::new(0));
    let counter = issued.clone();
    let cache = TokenCache::new(from_fn(move || {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            Ok(AccessToken::new(format!("token-{n}")).with_lifetime(Duration::from_secs(3600)))
        }
    }));
    (cache, issued)
}

/// An API that rejects every token with 401, recording the bearer tokens it saw.
fn rejecting_api(
    seen: Arc<Mutex<Vec<String>>>,
) -> impl tower::Service<
    Request<()>,
    Response = Response<()>,
    Error = std::convert::Infallible,
    Future: Send,
> + Clone
       + Send {
    service_fn(move |request: Request<()>| {
        let seen = seen.clone();
        async move {
            let token = request.headers()[http::header::AUTHORIZATION]
                .to_str()
                .unwrap()
                .to_owned();
            seen.lock().unwrap().push(token);
            let mut response = Response::new(());
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            Ok(response)
        }
    })
}

/// `RetryOnUnauthorized` promises a replay only "with a new token": "When it kept the token …
/// the request is not replayed: it would carry the same token again". With a `TokenCache`
/// stacked in front of another (README: "A cache stacked in front of another
/// (`TokenCache::new(credentials)`) works too"), the front cache drops the rejected token
/// but the cache behind keeps it (its invalidation is rate-limited), so the front's next
/// fetch returns the very token just rejected, and the replay sends it again.
#[tokio::test]
async fn stacked_caches_replay_a_rejected_token_with_the_same_token() {
    let (back, issued) = counting_source();
    // The back cache is also used directly (a layer of its own), with default policies.
    let seen_direct = Arc::new(Mutex::new(Vec::new()));
    let direct = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(back.clone()))
        .service(rejecting_api(seen_direct.clone()));
    // A 401 through the direct layer drops token-1 from the back cache, starting its
    // invalidation interval.
    let response = direct.oneshot(Request::new(())).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // A second cache stacked in front of it, default policy, behind the retry policy.
    let front = TokenCache::new(back.clone());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryOnUnauthorized::default()))
        .layer(BearerAuthLayer::new(front))
        .service(rejecting_api(seen.clone()));
    let response = client.oneshot(Request::new(())).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let seen = seen.lock().unwrap().clone();
    assert_eq!(issued.load(Ordering::SeqCst), 2);
    assert!(
        seen.len() < 2 || seen[0] != seen[1],
        "the replay carried the token that was just rejected: {seen:?}"
    );
}

/// The same, with one stack: a front cache whose invalidation interval is shorter than the
/// cache behind it (any policy is allowed: "Every builder saturates").
#[tokio::test]
async fn a_front_cache_with_a_short_invalidation_interval_replays_the_same_token() {
    let (back, _issued) = counting_source();
    let front = TokenCache::with_policy(
        back,
        CachePolicy::default().invalidation_interval(Duration::ZERO),
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryOnUnauthorized::default()))
        .layer(BearerAuthLayer::new(front))
        .service(rejecting_api(seen.clone()));
    for _ in 0..2 {
        let response = client.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let seen = seen.lock().unwrap().clone();
    // Call 1: token-1, replay token-2. Call 2 must not send token-2 twice.
    for pair in seen.chunks(2).filter(|pair| pair.len() == 2) {
        assert_ne!(
            pair[0], pair[1],
            "a replay repeated the rejected token: {seen:?}"
        );
    }
}

/// The project's rule for error texts (tests/it/client_credentials/error_messages.rs): one
/// clean line, no line break, no backslash, no double space.
fn assert_one_line(text: &str) {
    assert!(
        !text.contains('\n') && !text.contains('\\') && !text.contains("  "),
        "not one clean line: {text:?}"
    );
}

/// An issuer on loopback whose well-known documents are `metadata(issuer)`.
async fn issuer_serving(
    metadata: impl Fn(&str) -> serde_json::Value + Send + Sync + 'static,
) -> String {
    let metadata = Arc::new(metadata);
    let cell: Arc<Mutex<Option<String>>> = Arc::default();
    let addr = {
        let (metadata, cell) = (metadata.clone(), cell.clone());
        crate::support::serve(move |request: Request<hyper::body::Incoming>| {
            let (metadata, cell) = (metadata.clone(), cell.clone());
            async move {
                let issuer = cell.lock().unwrap().clone().unwrap();
                if request.uri().path().ends_with("/oauth/token") {
                    return crate::support::json(
                        StatusCode::OK,
                        serde_json::json!({
                            "access_token": "discovered-token",
                            "token_type": "Bearer",
                            "expires_in": 3600,
                        }),
                    );
                }
                crate::support::json(StatusCode::OK, metadata(&issuer))
            }
        })
        .await
    };
    let issuer = format!("http://{addr}");
    *cell.lock().unwrap() = Some(issuer.clone());
    issuer
}

/// Discovery errors are "one line naming the issuer or its metadata" (commit 0092650), but
/// the list of supported methods from the network goes into the message raw: a hostile or
/// broken metadata document puts a line break (a forged log line, since the cache logs
/// `%error`) into the error text.
#[tokio::test]
async fn a_discovery_error_echoes_line_breaks_from_the_metadata() {
    let issuer = issuer_serving(|issuer| {
        serde_json::json!({
            "issuer": issuer,
            "token_endpoint": format!("{issuer}/oauth/token"),
            "token_endpoint_auth_methods_supported":
                ["private_key_jwt\nERROR forged log line", "tls_client_auth"],
        })
    })
    .await;
    let error = tower_oauth2::ClientCredentials::builder()
        .issuer(issuer)
        .client_id("client-1")
        .client_secret("discovery-secret")
        .build()
        .unwrap()
        .token()
        .await
        .unwrap_err();
    assert_one_line(&error.to_string());
}

/// The same for the issuer the metadata names: `{issuer:?}` of a hostile string puts
/// backslash escapes (and any length: the body limit is 1 MiB) into the message.
#[tokio::test]
async fn a_discovery_error_echoes_another_issuer_unbounded_and_escaped() {
    let issuer = issuer_serving(|issuer| {
        serde_json::json!({
            "issuer": format!("{issuer}/\"other\"\n{}", "x".repeat(100_000)),
            "token_endpoint": format!("{issuer}/oauth/token"),
        })
    })
    .await;
    let error = tower_oauth2::ClientCredentials::builder()
        .issuer(issuer)
        .client_id("client-1")
        .client_secret("discovery-secret")
        .build()
        .unwrap()
        .token()
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(text.len() < 2_000, "an error of {} bytes", text.len());
    assert_one_line(&text);
}

/// `transport::url_rules` says a URL is named in errors "never [with] its userinfo or query",
/// and `ClientCredentials`' Debug hides them because they "may hold credentials (a gateway
/// key)". `build()`'s ConfigError quotes the whole raw URL, credentials included.
#[test]
fn a_config_error_shows_the_credentials_in_a_token_url() {
    for url in [
        "http://gateway-user:gw-p4ssw0rd@idp.example.com/oauth/token",
        "http://idp.example.com/oauth/token?api_key=gw-p4ssw0rd",
        "ftp://gateway-user:gw-p4ssw0rd@idp.example.com/oauth/token",
    ] {
        let error = tower_oauth2::ClientCredentials::builder()
            .token_url(url)
            .client_id("client-1")
            .client_secret("config-secret")
            .build()
            .unwrap_err();
        let shown = format!(
            "{error} {error:?} {}",
            tower_oauth2::Error::from(error.clone())
        );
        assert!(!shown.contains("gw-p4ssw0rd"), "{url}: {shown}");
    }
}

/// A client discovering its token endpoint from a well-behaved issuer, served by the returned
/// runtime (keep it alive for the test).
fn discovering_credentials() -> (tokio::runtime::Runtime, tower_oauth2::ClientCredentials) {
    let server = tokio::runtime::Runtime::new().unwrap();
    let issuer = server.block_on(issuer_serving(|issuer| {
        serde_json::json!({ "issuer": issuer, "token_endpoint": format!("{issuer}/oauth/token") })
    }));
    let credentials = tower_oauth2::ClientCredentials::builder()
        .issuer(issuer)
        .client_id("client-1")
        .client_secret("discovery-secret")
        .build()
        .unwrap();
    (server, credentials)
}

/// README: "`ClientCredentials` needs a tokio runtime with IO and timers; called from anywhere
/// else (`futures::executor::block_on`, a runtime without timers or IO) it fails with
/// `ErrorKind::Runtime`, which is not backed off and poisons nothing: the next call from a
/// proper runtime fetches at once." With `.issuer(..)`, discovery runs before that check, and
/// its `tokio::time::timeout` panics without a timer: the cache records a `Panic`, backs off,
/// and the next call from a proper runtime gets that error again instead of a token.
#[test]
fn with_an_issuer_no_runtime_is_a_backed_off_panic_not_a_runtime_error() {
    let (_server, credentials) = discovering_credentials();
    let first = block_on(credentials.token()).expect_err("no runtime");
    let proper = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let second = proper.block_on(credentials.token());
    assert!(
        first.kind() == tower_oauth2::ErrorKind::Runtime && second.is_ok(),
        "without a runtime: {:?} {first}; then from a proper runtime: {}",
        first.kind(),
        match &second {
            Ok(token) => format!("a token ({:?})", token.scope()),
            Err(error) => format!("{:?} {error}", error.kind()),
        }
    );
}

/// The same on a runtime without timers.
#[test]
fn with_an_issuer_a_runtime_without_timers_is_a_panic_not_a_runtime_error() {
    let (_server, credentials) = discovering_credentials();
    let io_only = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let error = io_only
        .block_on(credentials.token())
        .expect_err("no timers");
    assert_eq!(error.kind(), tower_oauth2::ErrorKind::Runtime, "{error}");
}

/// Invariant 7: "A panic in user code (… an HTTP client) becomes an `Error`". `fetch_uncached`
/// (no cache around it) with an issuer and no runtime panics in the caller instead.
#[test]
fn fetch_uncached_with_an_issuer_and_no_runtime_panics() {
    let (_server, credentials) = discovering_credentials();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        block_on(credentials.fetch_uncached())
    }));
    match outcome {
        Ok(result) => assert_eq!(
            result.expect_err("no runtime").kind(),
            tower_oauth2::ErrorKind::Runtime
        ),
        Err(_) => panic!("fetch_uncached panicked instead of returning an Error"),
    }
}

/// A runtime-free executor (as `futures::executor::block_on`).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}

/// A response future that never completes and panics when dropped (a user's HTTP client with a
/// bug in its cleanup).
struct PendingThenPanicOnDrop;

impl std::future::Future for PendingThenPanicOnDrop {
    type Output =
        Result<http::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible>;
    fn poll(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::task::Poll::Pending
    }
}

impl Drop for PendingThenPanicOnDrop {
    fn drop(&mut self) {
        panic!("the HTTP client's future panicked when dropped");
    }
}

/// Invariant 7 and `Transport::exchange`'s doc ("A panic in the HTTP client is an error like
/// any other"): the timeout drops the client's future outside `catch_unwind`, so a panic in
/// its drop escapes `fetch_uncached` (which no cache wraps) into the caller.
#[tokio::test]
async fn an_http_client_panicking_when_its_timed_out_future_drops_escapes_fetch_uncached() {
    let credentials = tower_oauth2::ClientCredentials::builder()
        .token_url("http://127.0.0.1:9/oauth/token")
        .client_id("client-1")
        .client_secret("panic-secret")
        .timeout(Duration::from_millis(50))
        .http_client(tower::service_fn(
            |_: tower_oauth2::transport::TokenRequest| PendingThenPanicOnDrop,
        ))
        .build()
        .unwrap();
    let joined = tokio::spawn(async move { credentials.fetch_uncached().await }).await;
    match joined {
        Ok(result) => {
            let error = result.expect_err("timed out");
            assert!(
                matches!(
                    error.kind(),
                    tower_oauth2::ErrorKind::Panic | tower_oauth2::ErrorKind::Timeout
                ),
                "{error}"
            );
        }
        Err(join) => panic!("fetch_uncached panicked instead of returning an Error: {join}"),
    }
}

/// README: choices are "a `ConfigError` naming the setting" (`setting()`: "The setting to fix,
/// named as the builder method or constructor that sets it"). A `ClientAuth` given with
/// `.client_auth(..)` with an empty id or secret is reported as `client_id` / `client_secret`,
/// telling the user to "call .client_id(..)" / ".client_secret(..)": following that advice
/// makes `build()` fail with "give either .client_auth(..) or the shorthands … not both".
#[test]
fn a_client_auth_value_is_blamed_on_the_shorthands() {
    use tower_oauth2::{ClientAuth, ClientCredentials};
    for (auth, follow_advice) in [
        (
            ClientAuth::post("", "s3cr3t-value"),
            ClientCredentials::builder().client_id("my-service"),
        ),
        (
            ClientAuth::basic("my-service", ""),
            ClientCredentials::builder().client_secret("s3cr3t-value"),
        ),
    ] {
        let error = ClientCredentials::builder()
            .token_url("https://idp.example.com/oauth/token")
            .client_auth(auth.clone())
            .build()
            .unwrap_err();
        // The advice, followed.
        let advised = follow_advice
            .token_url("https://idp.example.com/oauth/token")
            .client_auth(auth)
            .build()
            .unwrap_err();
        assert_eq!(
            error.setting(),
            "client_auth",
            "{error} -> following it: {advised}"
        );
    }
}

/// The same for reqwest: `replay_once_on_401` compares the cache's generation, not the token,
/// so a front cache that fetched the same rejected token again from the cache behind it (as a
/// new generation) replays the request with the very token just rejected.
#[tokio::test]
async fn reqwest_replay_once_on_401_with_stacked_caches_repeats_the_rejected_token() {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let addr = {
        let seen = seen.clone();
        crate::support::serve(move |request: Request<hyper::body::Incoming>| {
            let seen = seen.clone();
            async move {
                let token = request.headers()[http::header::AUTHORIZATION]
                    .to_str()
                    .unwrap()
                    .to_owned();
                seen.lock().unwrap().push(token);
                crate::support::raw(StatusCode::UNAUTHORIZED, "text/plain", "no")
            }
        })
        .await
    };
    let (back, _issued) = counting_source();
    let front = TokenCache::with_policy(
        back,
        CachePolicy::default().invalidation_interval(Duration::ZERO),
    );
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(tower_oauth2::BearerAuthMiddleware::new(front).replay_once_on_401(true))
        .build();
    for _ in 0..2 {
        let response = client.get(format!("http://{addr}/")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let seen = seen.lock().unwrap().clone();
    for pair in seen.chunks(2).filter(|pair| pair.len() == 2) {
        assert_ne!(
            pair[0], pair[1],
            "a replay repeated the rejected token: {seen:?}"
        );
    }
}
