//! Invariant 1: with a token cached, a request through the layer allocates nothing. And
//! invariant 4's memory side: every copy of a credential the crate makes is wiped before it is
//! freed.
//!
//! A counting global allocator, so this is a count, not a timing. It counts only on the thread
//! under test: the test harness allocates on other threads while it runs. Armed to scan, it
//! also looks for credentials in every block the thread under test frees, or moves away from
//! when it grows.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{HeaderMap, Request, Response};
use tower::{Layer, Service};
use tower_oauth2::cache::PerRequestCaches;
use tower_oauth2::layer::PerRequestLayer;
use tower_oauth2::{source::StaticToken, AccessToken, BearerAuthLayer, TokenCache, TokenSource};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count_allocation() {
    // `try_with`: the allocator also runs while thread-locals are being torn down.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
    }
}

thread_local! {
    /// The credentials to look for in freed memory, while armed.
    static SCANNING: Cell<Option<&'static [&'static [u8]]>> = const { Cell::new(None) };
    /// How many freed blocks held one of them, and the index of the last one found.
    static UNWIPED: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// How much of a credential found in freed memory counts as a copy of it.
const PREFIX: usize = 16;

/// Which of the credentials being scanned for `block` holds, if any.
fn credential_in(block: &[u8]) -> Option<usize> {
    let credentials = SCANNING.try_with(Cell::get).ok().flatten()?;
    // A prefix is enough to be a copy: a buffer that grew leaves partial copies behind.
    credentials.iter().position(|credential| {
        let prefix = &credential[..credential.len().min(PREFIX)];
        block.len() >= prefix.len() && block.windows(prefix.len()).any(|window| window == prefix)
    })
}

fn record_unwiped(found: Option<usize>) {
    if let Some(which) = found {
        let _ = UNWIPED.try_with(|unwiped| unwiped.set((unwiped.get().0 + 1, which)));
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the block is live until the call below frees it.
        record_unwiped(credential_in(unsafe {
            std::slice::from_raw_parts(ptr, layout.size())
        }));
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation();
        // SAFETY: the block is live until `realloc` below moves it.
        let found = credential_in(unsafe { std::slice::from_raw_parts(ptr, layout.size()) });
        let moved = unsafe { System.realloc(ptr, layout, new_size) };
        if moved != ptr && !moved.is_null() {
            // The old block was freed as it was: a partial copy left behind.
            record_unwiped(found);
        }
        moved
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// An inner service that does nothing, ready at once.
#[derive(Clone)]
struct Noop;

impl<B> Service<Request<B>> for Noop {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<B>) -> Self::Future {
        ready(Ok(Response::new(())))
    }
}

/// A request whose header map already has room, as every request from hyper or tonic does.
fn request() -> Request<()> {
    let mut request = Request::new(());
    *request.headers_mut() = HeaderMap::with_capacity(8);
    request
}

fn assert_fast_path_allocates_nothing(source: impl TokenSource) {
    assert_fast_paths_allocate_nothing(vec![source]);
}

/// Requests through layers over each of `sources`, taken in turn on one thread.
fn assert_fast_paths_allocate_nothing(sources: Vec<impl TokenSource>) {
    let services = sources
        .into_iter()
        .map(|source| BearerAuthLayer::new(TokenCache::new(source)).layer(Noop))
        .collect();
    assert_services_allocate_nothing(services, |_| request());
}

/// Requests `make_request(n)` through `services`, taken in turn on one thread.
fn assert_services_allocate_nothing<S>(
    mut services: Vec<S>,
    make_request: impl Fn(usize) -> Request<()>,
) where
    S: Service<Request<()>, Response = Response<()>> + Clone,
    S::Error: std::fmt::Debug,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Warm up with the sequence measured: a key's first call fetches and caches its token
    // (the slow path allocates); the second makes this thread's own copy of the header (once
    // per thread per token).
    runtime.block_on(async {
        for n in 0..100 {
            let caches = services.len();
            let mut warm = services[n % caches].clone();
            std::future::poll_fn(|cx| warm.poll_ready(cx))
                .await
                .unwrap();
            warm.call(make_request(n)).await.unwrap();
        }
    });
    ALLOCATIONS.set(0);

    let _entered = runtime.enter();
    let requests: Vec<_> = (0..1000).map(&make_request).collect();
    let mut context = Context::from_waker(Waker::noop());
    COUNTING.set(true);
    for (n, request) in requests.into_iter().enumerate() {
        let caches = services.len();
        let service = &mut services[n % caches];
        assert!(service.poll_ready(&mut context).is_ready());
        let future = pin!(service.call(request));
        let Poll::Ready(Ok(response)) = future.poll(&mut context) else {
            panic!("the fast path completes at once");
        };
        drop(response);
    }
    COUNTING.set(false);
    assert_eq!(ALLOCATIONS.get(), 0, "allocations in 1000 requests");
}

/// Credentials chosen per request: a known key's cache is found without a lock or an
/// allocation (the chooser borrows the key from the request, or returns a `'static` one).
#[test]
fn the_fast_path_allocates_nothing_with_credentials_chosen_per_request() {
    const KEYS: [&str; 3] = ["orders", "billing", "users"];
    let caches = PerRequestCaches::new(
        |head| KEYS.into_iter().find(|key| head.path().ends_with(key)),
        |key| {
            StaticToken::from(
                AccessToken::new(format!("cached-{key}")).with_lifetime(Duration::from_secs(3600)),
            )
        },
    );
    let service = PerRequestLayer::new(caches).layer(Noop);
    let make_request = |n: usize| {
        let mut request = request();
        *request.uri_mut() = http::Uri::from_static(["/orders", "/billing", "/users"][n % 3]);
        request
    };
    // One service, keys in turn: `make_request` picks the key, not the service.
    assert_services_allocate_nothing(vec![service], make_request);
}

#[test]
fn the_fast_path_allocates_nothing() {
    assert_fast_path_allocates_nothing(StaticToken::from(
        AccessToken::new("cached").with_lifetime(Duration::from_secs(3600)),
    ));
}

#[test]
fn the_fast_path_allocates_nothing_with_many_caches_on_a_thread() {
    let sources = (0..12)
        .map(|n| {
            StaticToken::from(
                AccessToken::new(format!("cached-{n}")).with_lifetime(Duration::from_secs(3600)),
            )
        })
        .collect();
    assert_fast_paths_allocate_nothing(sources);
}

const SECRET: &str = "canary-secret-Zq8vL2";
const TOKEN: &str = "canary-token-Xw3pR7";
/// `client:canary-secret-Zq8vL2`, as a Basic header carries it.
const BASIC: &str = "Y2xpZW50OmNhbmFyeS1zZWNyZXQtWnE4dkwy";
const CREDENTIALS: &[&[u8]] = &[SECRET.as_bytes(), TOKEN.as_bytes(), BASIC.as_bytes()];

/// Get a token with each client authentication through an HTTP client that holds on to
/// nothing (the bytes it answers with are static), with the thread's freed memory scanned for
/// the secret and the token from `build()` until everything is dropped.
#[test]
fn every_copy_of_a_credential_the_crate_makes_is_wiped_before_it_is_freed() {
    assert_eq!(
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("client:{SECRET}")
        ),
        BASIC
    );
    assert_credentials_wiped(SECRET, CREDENTIALS);
}

/// The same with a secret long enough (300 bytes) that any buffer sized by a default guess
/// (serde_json's 128 bytes, a `String` grown by pushes) would have to grow.
#[test]
fn copies_of_a_long_secret_are_wiped_too() {
    let secret: &'static str = Box::leak(format!("long-{}", "s3cr3t-".repeat(42)).into_boxed_str());
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("client:{secret}"),
    );
    let credentials: &'static [&'static [u8]] = Box::leak(
        vec![
            secret.as_bytes(),
            TOKEN.as_bytes(),
            Box::leak(basic.into_boxed_str()).as_bytes(),
        ]
        .into_boxed_slice(),
    );
    assert_credentials_wiped(secret, credentials);
}

fn assert_credentials_wiped(secret: &str, canaries: &'static [&'static [u8]]) {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use tower_oauth2::{client_auth::AuthStyle, transport::TokenRequest, ClientCredentials};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let styles = [
        (AuthStyle::Basic, false),
        (AuthStyle::Form, false),
        (AuthStyle::Json, false),
        (AuthStyle::Basic, true),
    ];
    // client_secret_jwt wants a secret of at least 32 bytes.
    for (style, signed) in styles
        .into_iter()
        .filter(|(_, signed)| !signed || secret.len() >= 32)
    {
        let endpoint = tower::service_fn(|request: TokenRequest| async move {
            // Read the request as a server would, then drop it: its copies are the crate's.
            let (parts, body) = request.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            assert!(!body.is_empty() || parts.headers.contains_key("authorization"));
            drop((parts, body));
            let answer = Bytes::from_static(
                b"{\"access_token\":\"canary-token-Xw3pR7\",\"token_type\":\"Bearer\",\"expires_in\":3600}",
            );
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(answer)))
        });
        UNWIPED.set((0, 0));
        SCANNING.set(Some(canaries));
        let builder = ClientCredentials::builder()
            .token_url("http://127.0.0.1:1/oauth/token")
            .client_id("client")
            .client_secret(String::from(secret))
            .http_client(endpoint);
        // client_secret_jwt: the secret signs an assertion and never leaves.
        let builder = if signed {
            builder.client_secret_jwt()
        } else {
            builder.auth_style(style)
        };
        let credentials = builder.build().unwrap();
        let token = runtime.block_on(credentials.token()).unwrap();
        assert_eq!(token.secret(), TOKEN);
        drop(token);
        drop(credentials);
        SCANNING.set(None);
        let (unwiped, which) = UNWIPED.get();
        assert_eq!(
            unwiped,
            0,
            "{style:?} (signed: {signed}): {unwiped} freed block(s) held a credential, the last one {:?}",
            String::from_utf8_lossy(canaries[which])
        );
    }
}

/// Get (or fail to get) a token through an HTTP client answering `status` with the static
/// `answer`, scanning the thread's freed memory for the secret and token as above; the
/// number of unwiped blocks found, and the last credential found.
fn unwiped_blocks_for(
    status: u16,
    content_type: &'static str,
    answer: &'static [u8],
) -> (usize, String) {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use tower_oauth2::{client_auth::AuthStyle, transport::TokenRequest, ClientCredentials};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let endpoint = tower::service_fn(move |request: TokenRequest| async move {
        let (parts, body) = request.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        drop((parts, body));
        let mut response = http::Response::new(Full::new(Bytes::from_static(answer)));
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        Ok::<_, std::convert::Infallible>(response)
    });
    UNWIPED.set((0, 0));
    SCANNING.set(Some(CREDENTIALS));
    let credentials = ClientCredentials::builder()
        .token_url("http://127.0.0.1:1/oauth/token")
        .client_id("client")
        .client_secret(String::from(SECRET))
        .auth_style(AuthStyle::Form)
        .http_client(endpoint)
        .build()
        .unwrap();
    let result = runtime.block_on(credentials.token());
    drop(result);
    drop(credentials);
    drop(runtime);
    SCANNING.set(None);
    let (unwiped, which) = UNWIPED.get();
    (
        unwiped,
        String::from_utf8_lossy(CREDENTIALS[which]).into_owned(),
    )
}

/// README (Security): "The client secret, parameter values and tokens we own are zeroized on
/// drop"; an error body "that echoes the request" is redacted. The redaction itself
/// (`response::excerpt`: `from_utf8_lossy(..).into_owned()` then `text.replace(secret, ..)`)
/// frees the unredacted copy, holding the secret, unwiped.
#[test]
fn an_error_body_echoing_the_secret_leaves_an_unwiped_copy() {
    let (unwiped, which) = unwiped_blocks_for(
        400,
        "text/html",
        b"<html>bad request: grant_type=client_credentials&client_id=client&client_secret=canary-secret-Zq8vL2</html>",
    );
    assert_eq!(
        unwiped, 0,
        "{unwiped} freed block(s) held a credential, the last one {which:?}"
    );
}

/// A token response whose JSON escapes a character (PHP's `json_encode` writes `/` as `\/`,
/// and tokens are often base64 with `/`): serde_json would copy the string through its scratch
/// buffer and free it unwiped, so the crate unescapes top-level strings itself.
#[test]
fn a_token_with_an_escaped_character_leaves_no_unwiped_copy() {
    let (unwiped, which) = unwiped_blocks_for(
        200,
        "application/json",
        b"{\"access_token\":\"canary-token-Xw3pR7\\/abc\",\"token_type\":\"Bearer\",\"expires_in\":3600}",
    );
    assert_eq!(
        unwiped, 0,
        "{unwiped} freed block(s) held a credential, the last one {which:?}"
    );
}

/// Credentials read at each request from a file (a rotated secret, a mounted assertion) are
/// copies the crate makes too: wiped before they are freed, like those given to `build()`.
#[test]
fn credentials_read_from_files_are_wiped_too() {
    use base64::Engine as _;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use tower_oauth2::{client_auth::AuthStyle, transport::TokenRequest, ClientCredentials};

    const ASSERTION_CANARY: &str = "canary-assertion-Kp4sYt";
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(br#"{"sub":"client","exp":4102444800}"#);
    let assertion = format!("eyJhbGciOiJFUzI1NiJ9.{payload}.{ASSERTION_CANARY}");
    let canaries: &'static [&'static [u8]] = Box::leak(
        vec![
            SECRET.as_bytes(),
            TOKEN.as_bytes(),
            BASIC.as_bytes(),
            ASSERTION_CANARY.as_bytes(),
        ]
        .into_boxed_slice(),
    );
    let dir = std::env::temp_dir().join(format!("tower-oauth2-alloc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret_file = dir.join("client-secret");
    let assertion_file = dir.join("token");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    std::fs::write(&assertion_file, &assertion).unwrap();
    drop(assertion);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cases = [
        Some(AuthStyle::Basic),
        Some(AuthStyle::Form),
        Some(AuthStyle::Json),
        None,
    ];
    for style in cases {
        let endpoint = tower::service_fn(|request: TokenRequest| async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            assert!(!body.is_empty() || parts.headers.contains_key("authorization"));
            drop((parts, body));
            let answer = Bytes::from_static(
                b"{\"access_token\":\"canary-token-Xw3pR7\",\"token_type\":\"Bearer\",\"expires_in\":3600}",
            );
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(answer)))
        });
        UNWIPED.set((0, 0));
        SCANNING.set(Some(canaries));
        let builder = ClientCredentials::builder()
            .token_url("http://127.0.0.1:1/oauth/token")
            .client_id("client")
            .http_client(endpoint);
        let builder = match style {
            Some(style) => builder.client_secret_file(&secret_file).auth_style(style),
            None => builder.client_assertion_file(&assertion_file),
        };
        let credentials = builder.build().unwrap();
        let token = runtime.block_on(credentials.token()).unwrap();
        assert_eq!(token.secret(), TOKEN);
        drop(token);
        drop(credentials);
        SCANNING.set(None);
        let (unwiped, which) = UNWIPED.get();
        assert_eq!(
            unwiped,
            0,
            "{style:?}: {unwiped} freed block(s) held a credential, the last one {:?}",
            String::from_utf8_lossy(canaries[which])
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Adversary (issue #21, per-request): a key evicted past the bound takes its cache, its
/// token and this thread's copy of its header with it, every copy wiped before it is freed.
#[test]
fn an_evicted_keys_token_is_wiped_before_it_is_freed() {
    let caches = PerRequestCaches::new(
        |head| head.path().strip_prefix('/'),
        |key| {
            StaticToken::from(
                AccessToken::new(canary_token(key)).with_lifetime(Duration::from_secs(3600)),
            )
        },
    )
    .max_keys(1);
    let mut service = PerRequestLayer::new(caches.clone()).layer(Noop);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    UNWIPED.set((0, 0));
    SCANNING.set(Some(CREDENTIALS));
    runtime.block_on(async {
        for path in ["/a", "/a", "/a", "/b", "/b", "/a", "/b"] {
            let mut request = request();
            *request.uri_mut() = http::Uri::from_static(path);
            std::future::poll_fn(|cx| Service::<Request<()>>::poll_ready(&mut service, cx))
                .await
                .unwrap();
            service.call(request).await.unwrap();
            assert_eq!(caches.len(), 1);
        }
    });
    drop(service);
    drop(caches);
    drop(runtime);
    SCANNING.set(None);
    let (unwiped, which) = UNWIPED.get();
    assert_eq!(
        unwiped,
        0,
        "{unwiped} freed block(s) held a token, the last one {:?}",
        String::from_utf8_lossy(CREDENTIALS[which])
    );
}

/// `TOKEN-key`, built in one allocation: `format!` may grow its buffer and free a partial
/// copy, unwiped, which would be this test's copy, not the crate's.
fn canary_token(key: &str) -> String {
    let mut token = String::with_capacity(TOKEN.len() + 1 + key.len());
    token.push_str(TOKEN);
    token.push('-');
    token.push_str(key);
    token
}

/// DPoP (issue #21): a DPoP key read from a PEM, a DPoP token fetched with it and a request
/// sent with a proof, all dropped: no block freed on the way may hold the private scalar or
/// the token. The scalar is looked for as it sits in the PKCS#8 DER.
#[test]
fn a_dpop_pem_keys_private_scalar_and_token_are_wiped() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use tower::ServiceExt;
    use tower_oauth2::client_auth::JwsAlgorithm;
    use tower_oauth2::dpop::DpopKey;
    use tower_oauth2::{transport::TokenRequest, ClientCredentials};

    for algorithm in [&rcgen::PKCS_ECDSA_P256_SHA256, &rcgen::PKCS_ED25519] {
        let pair = rcgen::KeyPair::generate_for(algorithm).unwrap();
        let pem = pair.serialize_pem();
        let der = pair.serialize_der();
        // PKCS#8: the private key is an OCTET STRING of 32 bytes (`04 20`), for P-256 inside
        // the SEC1 structure, for Ed25519 wrapped once more.
        let at = der.windows(2).rposition(|w| w == [0x04, 0x20]).unwrap() + 2;
        let scalar: &'static [u8] = Box::leak(der[at..at + 32].to_vec().into_boxed_slice());
        let canaries: &'static [&'static [u8]] =
            Box::leak(vec![scalar, TOKEN.as_bytes()].into_boxed_slice());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let endpoint = tower::service_fn(|request: TokenRequest| async move {
            let (parts, body) = request.into_parts();
            assert!(parts.headers.contains_key("dpop"));
            drop((parts, body.collect().await.unwrap().to_bytes()));
            let answer = Bytes::from_static(
                b"{\"access_token\":\"canary-token-Xw3pR7\",\"token_type\":\"DPoP\",\"expires_in\":3600}",
            );
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(answer)))
        });
        UNWIPED.set((0, 0));
        SCANNING.set(Some(canaries));
        let key = DpopKey::from_pem(&pem).unwrap();
        assert_ne!(key.algorithm(), JwsAlgorithm::RS256);
        let credentials = ClientCredentials::builder()
            .token_url("http://127.0.0.1:1/oauth/token")
            .client_id("client")
            .client_secret(String::from(SECRET))
            .http_client(endpoint)
            .dpop(key)
            .build()
            .unwrap();
        let service = BearerAuthLayer::new(credentials.clone()).layer(Noop);
        let request = Request::builder()
            .uri("http://127.0.0.1:1/api")
            .body(())
            .unwrap();
        runtime.block_on(service.oneshot(request)).unwrap();
        drop(credentials);
        drop(runtime);
        SCANNING.set(None);
        let (unwiped, which) = UNWIPED.get();
        assert_eq!(
            unwiped,
            0,
            "{algorithm:?}: {unwiped} freed block(s) held {}",
            if which == 0 {
                "the private key".to_owned()
            } else {
                String::from_utf8_lossy(canaries[which]).into_owned()
            }
        );
        drop((pem, der, pair));
    }
}
