//! Adversarial repros for DPoP (issue #21, RFC 9449). Each `defect_*` test FAILS on the code it
//! was written against and passes once that defect is fixed; each `holds_*` test is a probe
//! that found nothing (kept, since it is cheap and pins the behaviour).
//!
//! Run: `cargo test --test it adversary_dpop`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, HOST, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tower::retry::RetryLayer;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_oauth2::client_auth::{JwsAlgorithm, SignFuture, Signer};
use tower_oauth2::dpop::DpopKey;
use tower_oauth2::layer::RetryOnUnauthorized;
use tower_oauth2::test_util::{Received, TokenServer};
use tower_oauth2::{BearerAuthLayer, ClientCredentials};

use crate::support::dpop::{sha256_b64, Expect, ProofChecker};
use crate::support::{raw, serve};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A proof's JWS header and claims.
fn decode(proof: &str) -> (Value, Value) {
    let part = |i: usize| -> Value {
        let text = proof.split('.').nth(i).expect("a JWS has three parts");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(text).unwrap()).unwrap()
    };
    assert_eq!(proof.split('.').count(), 3, "compact JWS");
    (part(0), part(1))
}

fn url_of(headers: &http::HeaderMap, path: &str) -> String {
    format!("http://{}{path}", headers[HOST].to_str().unwrap())
}

/// A token endpoint issuing DPoP tokens to proofs it verified.
async fn token_server() -> Arc<TokenServer> {
    let checker = Arc::new(ProofChecker::default());
    Arc::new(
        TokenServer::builder()
            .dpop_proofs(move |proof, request: &Received| {
                let htu = url_of(&request.headers, request.uri.path());
                let expect = Expect {
                    htm: "POST",
                    htu: &htu,
                    token: None,
                    nonce: None,
                };
                checker.check(proof, &expect).ok().map(|c| c.jkt)
            })
            .start()
            .await
            .unwrap(),
    )
}

/// A token endpoint that binds any proof's token to "jkt" without checking the proof: to see
/// what a client sends when its proof is broken.
async fn lenient_token_server() -> Arc<TokenServer> {
    Arc::new(
        TokenServer::builder()
            .dpop_proofs(|_, _| Some("jkt".into()))
            .start()
            .await
            .unwrap(),
    )
}

fn credentials(server: &TokenServer, key: DpopKey) -> ClientCredentials {
    ClientCredentials::builder()
        .token_url(server.url())
        .client_id("test-client")
        .client_secret("test-secret")
        .dpop(key)
        .build()
        .unwrap()
}

fn request(method: Method, url: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap()
}

/// What a remote (KMS-like) Ed25519 signer does when asked to sign.
#[derive(Clone, Copy)]
enum Behaviour {
    /// A correct signature, after a network round trip (here: one yield to the executor).
    Remote,
    /// A correct signature followed by this many junk bytes.
    Overlong(usize),
    /// Never answers.
    Hangs,
}

struct Ed25519Kms {
    pair: Ed25519KeyPair,
    behaviour: Behaviour,
}

impl Signer for Ed25519Kms {
    fn algorithm(&self) -> JwsAlgorithm {
        JwsAlgorithm::EdDSA
    }

    fn sign<'a>(&'a self, message: &'a [u8]) -> SignFuture<'a> {
        Box::pin(async move {
            let mut signature = self.pair.sign(message).as_ref().to_vec();
            match self.behaviour {
                Behaviour::Remote => tokio::task::yield_now().await,
                Behaviour::Overlong(junk) => signature.extend(std::iter::repeat_n(0xAB, junk)),
                Behaviour::Hangs => std::future::pending::<()>().await,
            }
            Ok(signature)
        })
    }
}

/// An Ed25519 key held by a "KMS" behaving as told.
fn ed25519_kms(behaviour: Behaviour) -> DpopKey {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    // SubjectPublicKeyInfo for Ed25519 (RFC 8410): a fixed prefix, then the 32-byte key.
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(pair.public_key().as_ref());
    DpopKey::from_signer(Ed25519Kms { pair, behaviour }, spki).unwrap()
}

/// A P-256 "KMS" that answers every request with 64 zero bytes: `r = s = 0`, which no ECDSA
/// verifier accepts (and which the holder of the public key can tell without any secret).
struct ZeroEs256;

impl Signer for ZeroEs256 {
    fn algorithm(&self) -> JwsAlgorithm {
        JwsAlgorithm::ES256
    }

    fn sign<'a>(&'a self, _message: &'a [u8]) -> SignFuture<'a> {
        Box::pin(async { Ok(vec![0u8; 64]) })
    }
}

// ---------------------------------------------------------------------------------------------
// Defects
// ---------------------------------------------------------------------------------------------

/// Invariant 6 ("the same with no runtime, or a runtime without timers") and 7: a remote
/// signer that does any I/O (here: one yield) on a tokio runtime built without timers. The
/// crate's own `tokio::time::timeout` in `KeyInner::sign_remote` panics ("timers are
/// disabled"); its `catch_unwind`, meant for the user's signer, catches that and reports
/// "the DPoP proof signer panicked": every proof fails, the blame lands on a signer that is
/// fine, and the panic hook prints a tokio panic. A local key signs fine on the same runtime.
/// Expected: a proof (no timeout without timers), or an error naming the runtime's timers.
#[test]
fn defect_a_remote_signer_on_a_runtime_without_timers_is_blamed_for_the_crates_panic() {
    let key = ed25519_kms(Behaviour::Remote);
    let no_timers = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let url: Uri = "https://api.example.com/things".parse().unwrap();
    let outcome = no_timers.block_on(key.proof(&Method::GET, &url, Some("token")));
    judge(outcome.map(|proof| decode(&proof).1["htm"] == "GET"));
}

/// `Ok(true)`, or an error that says the runtime lacks timers (not that the signer failed).
fn judge<E: std::fmt::Display>(outcome: Result<bool, E>) {
    match outcome {
        Ok(sent) => assert!(sent),
        Err(error) => {
            let shown = error.to_string();
            assert!(
                shown.contains("timer") && !shown.contains("signer panicked"),
                "a working signer is blamed: {shown}"
            );
        }
    }
}

/// The same through the layer: the token was fetched on a runtime with timers (the cache is
/// shared by both), then a request is sent from a current-thread runtime without them. The
/// request fails with "the DPoP proof signer panicked" and is not sent.
/// Expected: the request is sent with a proof, or fails saying the runtime needs timers.
#[test]
fn defect_the_layer_with_a_remote_signer_fails_on_a_runtime_without_timers() {
    let with_timers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let key = ed25519_kms(Behaviour::Remote);
    let tokens = with_timers.block_on(lenient_token_server());
    let credentials = credentials(&tokens, key);
    with_timers.block_on(credentials.token()).unwrap();

    let api = tower::service_fn(move |request: Request<Full<Bytes>>| {
        let proved = request.headers().contains_key("dpop");
        async move { Ok::<_, std::convert::Infallible>(Response::new(proved)) }
    });
    let client = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(credentials))
        .service(api);
    let no_timers = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let outcome = no_timers.block_on(client.oneshot(request(Method::GET, "http://127.0.0.1:9/x")));
    judge(outcome.map(Response::into_body));
    drop(no_timers);
    drop(with_timers);
}

/// A remote Ed25519 signer that returns more than the 64 bytes an Ed25519 signature is: the
/// crate passes any non-empty EdDSA signature through (`as_jws`: `None => Ok(signature)`), so
/// a token request goes out with a proof no server can verify (and a 16 KiB header).
/// Expected: a typed error, and no token request sent.
#[tokio::test]
async fn defect_an_overlong_eddsa_signature_is_sent_in_a_proof() {
    let tokens = lenient_token_server().await;
    let credentials = credentials(&tokens, ed25519_kms(Behaviour::Overlong(16 * 1024)));
    let outcome = credentials.fetch_uncached().await;
    let sent = tokens.received();
    let proof_len = sent
        .first()
        .and_then(|r| r.header("dpop").map(str::len))
        .unwrap_or(0);
    assert!(
        outcome.is_err() && sent.is_empty(),
        "a proof with a {proof_len}-byte header went to the token endpoint ({} requests), \
         outcome ok: {}",
        sent.len(),
        outcome.is_ok()
    );

    // The public API hands the malformed proof out too.
    let key = ed25519_kms(Behaviour::Overlong(1));
    let url: Uri = "https://api.example.com/x".parse().unwrap();
    assert!(
        key.proof(&Method::GET, &url, None).await.is_err(),
        "a 65-byte Ed25519 signature makes a proof"
    );
}

/// A remote ES256 signer answering 64 zero bytes (`r = s = 0`, invalid for every message): the
/// crate takes any 64 bytes as `r || s` and sends the proof. Checking the signature against
/// the public key the crate already holds would catch every garbage signature of the right
/// length, before a request is spent on it. Expected: a typed error, no token request.
/// (Arguable: it costs one verification per proof; an all-zero `r` at least is free to check.)
#[tokio::test]
async fn defect_a_garbage_es256_signature_of_the_right_length_is_sent() {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let key = DpopKey::from_signer(ZeroEs256, pair.public_key_pem()).unwrap();
    let tokens = lenient_token_server().await;
    let credentials = credentials(&tokens, key);
    let outcome = credentials.fetch_uncached().await;
    assert!(
        outcome.is_err() && tokens.requests() == 0,
        "a proof signed r = s = 0 went to the token endpoint ({} requests)",
        tokens.requests()
    );
}

/// `ClientCredentialsBuilder::timeout` says: "Time allowed for a whole token request: the
/// credentials made elsewhere (closures, sources, a remote signer) and the HTTP exchange share
/// it, one deadline for all." The DPoP proof's remote signer is not given that deadline: it
/// gets its own fixed 10 s (`REMOTE_SIGN_TIMEOUT`), so a hanging KMS holds a fetch configured
/// for 1 s for 10 s. Expected: the fetch fails with a timeout within the client's 1 s.
#[tokio::test(start_paused = true)]
async fn defect_a_hanging_dpop_signer_outlives_the_token_request_timeout() {
    let tokens = lenient_token_server().await;
    let credentials = ClientCredentials::builder()
        .token_url(tokens.url())
        .client_id("test-client")
        .client_secret("test-secret")
        .timeout(Duration::from_secs(1))
        .dpop(ed25519_kms(Behaviour::Hangs))
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let error = credentials.fetch_uncached().await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(tokens.requests(), 0);
    assert!(
        took <= Duration::from_millis(1100),
        "the fetch, configured for 1s, took {took:?}: {error}"
    );
}

/// A resource server's `401 use_dpop_nonce` whose `DPoP-Nonce` the crate refuses to keep (here
/// over its 1 KiB limit; a hostile or broken server) still triggers the replay: the replay's
/// proof carries no nonce, so it is refused the same way, and the request (a POST here) was
/// sent twice for nothing. `resource_wants_nonce` looks only for the header's presence, not
/// whether `remember_nonce` kept it. Expected: no replay when no usable nonce was given.
#[tokio::test]
async fn defect_an_unusable_nonce_still_costs_a_replay() {
    let tokens = token_server().await;
    let hits = Arc::new(AtomicUsize::new(0));
    let counting = hits.clone();
    let huge = "n".repeat(4096);
    let addr = serve(move |_request: Request<Incoming>| {
        counting.fetch_add(1, Ordering::SeqCst);
        let huge = huge.clone();
        async move {
            let mut response = raw(StatusCode::UNAUTHORIZED, "", "");
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                "DPoP error=\"use_dpop_nonce\"".parse().unwrap(),
            );
            response
                .headers_mut()
                .insert("dpop-nonce", huge.parse().unwrap());
            response
        }
    })
    .await;
    let key = DpopKey::generate(JwsAlgorithm::ES256).unwrap();
    let credentials = credentials(&tokens, key);
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryOnUnauthorized::default()))
        .layer(BearerAuthLayer::new(credentials.clone()))
        .service(Client::builder(TokioExecutor::new()).build_http());
    let response = client
        .oneshot(request(Method::POST, &format!("http://{addr}/orders")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "the POST was replayed with no nonce to offer"
    );

    // The reqwest middleware does the same.
    hits.store(0, Ordering::SeqCst);
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(tower_oauth2::BearerAuthMiddleware::new(credentials))
        .build();
    let response = client
        .post(format!("http://{addr}/orders"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "reqwest: the POST was replayed with no nonce to offer"
    );
}

// ---------------------------------------------------------------------------------------------
// Probes that held
// ---------------------------------------------------------------------------------------------

/// `htu`: scheme and host lowercased, userinfo, query, fragment and default ports dropped,
/// IPv6 literals kept bracketed, an empty path as `/`; `htm` as given for extension methods.
#[tokio::test]
async fn holds_htu_and_htm_for_awkward_urls() {
    let key = DpopKey::generate(JwsAlgorithm::ES256).unwrap();
    let cases = [
        (
            "HTTPS://user:pw@API.Example.COM:443/a/B?x=1#frag",
            "https://api.example.com/a/B",
        ),
        ("http://[::1]:8080/x", "http://[::1]:8080/x"),
        ("http://[::1]:80/x", "http://[::1]/x"),
        ("HTTP://EXAMPLE.com:80", "http://example.com/"),
        ("https://example.com:8443?q", "https://example.com:8443/"),
        (
            "https://example.com/a%2Fb/./c",
            "https://example.com/a%2Fb/./c",
        ),
        ("http://example.com:443/", "http://example.com:443/"),
    ];
    for (url, htu) in cases {
        let method = Method::from_bytes(b"PURGE").unwrap();
        let proof = key
            .proof(&method, &url.parse().unwrap(), None)
            .await
            .unwrap();
        let (_, claims) = decode(&proof);
        assert_eq!(claims["htu"], htu, "{url}");
        assert_eq!(claims["htm"], "PURGE");
    }
}

/// The JWS header (`typ`, `alg` matching the key, a public-only `jwk`) and `ath` exactly
/// base64url(SHA-256(token)) without padding, for every algorithm a key can be made with.
#[tokio::test]
async fn holds_proof_shape_for_each_algorithm() {
    for algorithm in [
        JwsAlgorithm::ES256,
        JwsAlgorithm::ES384,
        JwsAlgorithm::EdDSA,
    ] {
        let key = DpopKey::generate(algorithm).unwrap();
        let token = "tok+/=en";
        let proof = key
            .proof(
                &Method::GET,
                &"https://a.example/x".parse().unwrap(),
                Some(token),
            )
            .await
            .unwrap();
        let (header, claims) = decode(&proof);
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(header["alg"], algorithm.name());
        let jwk = header["jwk"].as_object().unwrap();
        assert!(!jwk.contains_key("d"), "{algorithm}: private member in jwk");
        assert_eq!(claims["ath"], sha256_b64(token.as_bytes()));
        assert!(!claims["ath"].as_str().unwrap().contains('='));
        let checker = ProofChecker::default();
        checker
            .check(
                &proof,
                &Expect {
                    htm: "GET",
                    htu: "https://a.example/x",
                    token: Some(token),
                    nonce: None,
                },
            )
            .unwrap();
    }
}

/// 10,000 proofs from four threads at once: every `jti` distinct.
#[test]
fn holds_ten_thousand_proofs_have_distinct_jtis_across_threads() {
    let key = DpopKey::generate(JwsAlgorithm::EdDSA).unwrap();
    let url: Uri = "https://a.example/x".parse().unwrap();
    let jtis: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (key, url) = (key.clone(), url.clone());
                scope.spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap();
                    (0..2500)
                        .map(|_| {
                            let proof = runtime
                                .block_on(key.proof(&Method::GET, &url, None))
                                .unwrap();
                            decode(&proof).1["jti"].as_str().unwrap().to_owned()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let distinct: HashSet<&String> = jtis.iter().collect();
    assert_eq!(distinct.len(), 10_000);
}

/// Keys DPoP cannot use are typed errors, not panics: RSA, P-521, and a signer whose public key
/// is garbage or truncated.
#[test]
fn holds_keys_of_other_kinds_are_typed_errors() {
    for alg in [&rcgen::PKCS_RSA_SHA256, &rcgen::PKCS_ECDSA_P521_SHA512] {
        let pem = rcgen::KeyPair::generate_for(alg).unwrap().serialize_pem();
        let error = DpopKey::from_pem(&pem).unwrap_err();
        assert!(!error.to_string().is_empty());
    }
    for spki in [
        &b""[..],
        &[0x06, 0x03, 0x2b, 0x65, 0x70][..],
        &[
            0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
            0xce, 0x3d, 0x03, 0x01, 0x07,
        ][..],
    ] {
        assert!(DpopKey::from_signer(ZeroEs256, spki).is_err());
    }
}

/// 1,000 concurrent requests through the layer: one token request, 1,000 distinct proofs that
/// a verifying server accepts (signature, htm, htu, ath, fresh jti).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_a_thousand_concurrent_requests_one_token_a_thousand_valid_proofs() {
    let tokens = token_server().await;
    let checker = Arc::new(ProofChecker::default());
    let refused = Arc::new(Mutex::new(Vec::new()));
    let (checking, refusing) = (checker.clone(), refused.clone());
    let api = tower::service_fn(move |request: Request<Full<Bytes>>| {
        let token = request.headers()[AUTHORIZATION]
            .to_str()
            .unwrap()
            .strip_prefix("DPoP ")
            .unwrap()
            .to_owned();
        let proof = request.headers()["dpop"].to_str().unwrap().to_owned();
        let htu = format!("http://127.0.0.1:9{}", request.uri().path());
        if let Err(why) = checking.check(
            &proof,
            &Expect {
                htm: "PATCH",
                htu: &htu,
                token: Some(&token),
                nonce: None,
            },
        ) {
            refusing.lock().unwrap().push(why);
        }
        async { Ok::<_, std::convert::Infallible>(Response::new(Full::<Bytes>::default())) }
    });
    let credentials = credentials(&tokens, DpopKey::generate(JwsAlgorithm::ES256).unwrap());
    let client = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(credentials))
        .service(api);
    let calls: Vec<_> = (0..1000)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(
                client.oneshot(request(Method::PATCH, &format!("http://127.0.0.1:9/r/{i}"))),
            )
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(tokens.requests(), 1);
    assert_eq!(*refused.lock().unwrap(), Vec::<String>::new());
}

/// A resource server that keeps asking for a new nonce: one replay, never two, the token kept
/// (tower and reqwest), and the nonce the replay carried is the one the server gave.
#[tokio::test]
async fn holds_a_nonce_demanding_resource_server_gets_one_replay_and_keeps_the_token() {
    let tokens = token_server().await;
    let seen = Arc::new(Mutex::new(Vec::<Option<String>>::new()));
    let recording = seen.clone();
    let addr = serve(move |request: Request<Incoming>| {
        let proof = request.headers()["dpop"].to_str().unwrap().to_owned();
        let nonce = decode(&proof).1["nonce"].as_str().map(str::to_owned);
        let mut log = recording.lock().unwrap();
        log.push(nonce);
        let fresh = format!("nonce-{}", log.len());
        async move {
            let mut response = raw(StatusCode::UNAUTHORIZED, "", "");
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                "DPoP error=\"use_dpop_nonce\"".parse().unwrap(),
            );
            response
                .headers_mut()
                .insert("dpop-nonce", fresh.parse().unwrap());
            response
        }
    })
    .await;
    let credentials = credentials(&tokens, DpopKey::generate(JwsAlgorithm::ES256).unwrap());
    let mut client = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryOnUnauthorized::default()))
        .layer(BearerAuthLayer::new(credentials.clone()))
        .service(Client::builder(TokioExecutor::new()).build_http());
    let response = client
        .ready()
        .await
        .unwrap()
        .call(request(Method::GET, &format!("http://{addr}/a")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![None, Some("nonce-1".to_owned())]
    );
    let reqwest = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(tower_oauth2::BearerAuthMiddleware::new(credentials.clone()).replay_once_on_401(true))
        .build();
    let response = reqwest
        .get(format!("http://{addr}/b#frag"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(seen.lock().unwrap().len(), 4, "one replay each");
    assert_eq!(tokens.requests(), 1, "use_dpop_nonce never drops the token");
}

/// Nothing secret (the token, the client secret, the PEM's private key) in TRACE logs of a
/// DPoP fetch, a nonce retry at the token endpoint, and requests; nor in Debug of the key.
#[test]
fn holds_no_secret_in_trace_logs_of_dpop_traffic() {
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let pem = pair.serialize_pem();
    let der = pair.serialize_der();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (token, shown) = runtime.block_on(async {
        let tokens = Arc::new(
            TokenServer::builder()
                .dpop_proofs(|_, _| Some("jkt".into()))
                .dpop_nonce("token-nonce")
                .start()
                .await
                .unwrap(),
        );
        let key = DpopKey::from_pem(&pem).unwrap();
        let credentials = credentials(&tokens, key.clone());
        let api = tower::service_fn(|_: Request<Full<Bytes>>| async {
            Ok::<_, std::convert::Infallible>(Response::new(Full::<Bytes>::default()))
        });
        let client = ServiceBuilder::new()
            .layer(BearerAuthLayer::new(credentials.clone()))
            .service(api);
        client
            .oneshot(request(Method::GET, "http://127.0.0.1:9/x"))
            .await
            .unwrap();
        let token = credentials.token().await.unwrap();
        let shown = format!("{key:?} {credentials:?} {token:?} {:#?}", key);
        (token.secret().to_owned(), shown)
    });
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let all = format!("{logs}\n{shown}");
    assert!(!all.contains(&token), "the token is in the output");
    assert!(!all.contains("test-secret"));
    // The private scalar (SEC1 `04 20 <d>` inside the PKCS#8) never appears, in any encoding.
    let at = der.windows(2).position(|w| w == [0x04, 0x20]).unwrap() + 2;
    let d = &der[at..at + 32];
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    for form in [
        URL_SAFE_NO_PAD.encode(d),
        base64::engine::general_purpose::STANDARD.encode(d),
        hex,
    ] {
        assert!(!all.contains(&form), "the private key is in the output");
    }
    assert!(!all.contains(pem.lines().nth(1).unwrap()));
}

/// gRPC has no `401`: a gRPC resource server asks for its DPoP nonce with `UNAUTHENTICATED`
/// (trailers-only, so `grpc-status: 16` in the response headers) carrying
/// `www-authenticate: DPoP error="use_dpop_nonce"` and `dpop-nonce`. The layer checks for a
/// nonce request only on HTTP `401` (`resource_wants_nonce`), so it takes this for a rejected
/// token and drops it: the next call fetches a new token. Issue #21: "a `use_dpop_nonce`
/// answer never drops the token". Expected: one token request for both calls.
#[tokio::test]
async fn defect_a_grpc_use_dpop_nonce_answer_drops_the_token() {
    use tonic::metadata::MetadataMap;
    use tonic::service::interceptor::InterceptedService;
    use tonic::transport::server::TcpIncoming;
    use tonic::transport::{Endpoint, Server};
    use tonic::{Code, Status};
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let tokens = token_server().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let demand_nonce = |request: tonic::Request<()>| {
        let proof = request
            .metadata()
            .get("dpop")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if decode(&proof).1["nonce"] == "grpc-nonce" {
            return Ok(request);
        }
        let mut metadata = MetadataMap::new();
        metadata.insert(
            "www-authenticate",
            "DPoP error=\"use_dpop_nonce\"".parse().unwrap(),
        );
        metadata.insert("dpop-nonce", "grpc-nonce".parse().unwrap());
        Err(Status::with_metadata(
            Code::Unauthenticated,
            "use_dpop_nonce",
            metadata,
        ))
    };
    tokio::spawn(
        Server::builder()
            .add_service(InterceptedService::new(health, demand_nonce))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let credentials = credentials(&tokens, DpopKey::generate(JwsAlgorithm::ES256).unwrap());
    let origin = format!("http://{addr}");
    let channel = Endpoint::from_shared(origin.clone())
        .unwrap()
        .connect_lazy();
    let service = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(credentials))
        .service(channel);
    let mut client = HealthClient::with_origin(service, origin.parse().unwrap());
    let check = || HealthCheckRequest {
        service: String::new(),
    };
    let first = client.check(check()).await.unwrap_err();
    assert_eq!(first.code(), Code::Unauthenticated);
    // Calling again once, as the layer's docs tell tonic users to: the nonce is remembered.
    client.check(check()).await.unwrap();
    assert_eq!(
        tokens.requests(),
        1,
        "the use_dpop_nonce answer dropped the token"
    );
}

/// A remote signer that fails (error) for resource proofs after the token was fetched: the
/// request is not sent at all (never as Bearer, never without a proof).
#[tokio::test]
async fn holds_a_failing_signer_means_no_request_not_a_bearer_one() {
    struct Flaky {
        inner: Ed25519KeyPair,
        calls: AtomicUsize,
    }
    impl Signer for Flaky {
        fn algorithm(&self) -> JwsAlgorithm {
            JwsAlgorithm::EdDSA
        }
        fn sign<'a>(&'a self, message: &'a [u8]) -> SignFuture<'a> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if n == 0 {
                    Ok(self.inner.sign(message).as_ref().to_vec())
                } else {
                    Err("KMS throttled".into())
                }
            })
        }
    }
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let inner = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(inner.public_key().as_ref());
    let key = DpopKey::from_signer(
        Flaky {
            inner,
            calls: AtomicUsize::new(0),
        },
        spki,
    )
    .unwrap();
    let tokens = token_server().await;
    let sent = Arc::new(AtomicUsize::new(0));
    let counting = sent.clone();
    let api = tower::service_fn(move |_: Request<Full<Bytes>>| {
        counting.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, std::convert::Infallible>(Response::new(Full::<Bytes>::default())) }
    });
    let client = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(credentials(&tokens, key)))
        .service(api);
    let error = client
        .oneshot(request(Method::GET, "http://127.0.0.1:9/x"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("signer"), "{error}");
    assert_eq!(sent.load(Ordering::SeqCst), 0);
    assert_eq!(tokens.requests(), 1);
}

/// `DpopKey::from_signer` finds the key kind by looking for OID bytes anywhere in the input
/// and takes the key as the input's last 32 (Ed25519) or 65 (EC) bytes (`jwk::from_spki`),
/// without parsing the structure. Given what KMS tooling often hands out instead of a bare
/// SubjectPublicKeyInfo (the key's certificate, or an SPKI with a trailing byte), it builds a
/// JWK from the wrong bytes (for a certificate: the end of its signature) and accepts it: every
/// proof then names a key that did not sign it, and every server refuses it. Expected: a typed
/// error from `from_signer` for input that is not exactly one SubjectPublicKeyInfo.
#[test]
fn defect_from_signer_accepts_a_certificate_or_trailing_bytes_as_the_public_key() {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let kms = || {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        Ed25519Kms {
            pair: Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap(),
            behaviour: Behaviour::Remote,
        }
    };
    let spki = rcgen::PublicKeyData::subject_public_key_info(&pair);
    let right = DpopKey::from_signer(kms(), &spki).unwrap();
    let certificate = rcgen::CertificateParams::new(vec!["kms.example".into()])
        .unwrap()
        .self_signed(&pair)
        .unwrap();
    let mut trailing = spki.clone();
    trailing.push(0x0a);
    let mut accepted = Vec::new();
    for (what, input) in [
        ("the key's certificate (DER)", certificate.der().to_vec()),
        ("its SPKI and a trailing newline", trailing),
    ] {
        if let Ok(key) = DpopKey::from_signer(kms(), &input) {
            accepted.push(format!(
                "{what} was taken as a public key with thumbprint {} (the key's is {})",
                key.thumbprint(),
                right.thumbprint()
            ));
        }
    }
    assert!(accepted.is_empty(), "{accepted:#?}");
}

/// Hostile `DPoP-Nonce` values are not kept (quotes, non-ASCII, over 1 KiB), a nonce goes only
/// to the origin that gave it (`:443` is the same origin as no port), and 10,000 origins leave
/// only the last 32 remembered.
#[tokio::test]
async fn holds_nonces_are_per_origin_bounded_and_filtered() {
    let key = DpopKey::generate(JwsAlgorithm::ES256).unwrap();
    let nonce_in = |url: &'static str| {
        let key = key.clone();
        async move {
            let proof = key
                .proof(&Method::GET, &url.parse().unwrap(), None)
                .await
                .unwrap();
            decode(&proof).1["nonce"].as_str().map(str::to_owned)
        }
    };
    let give = |url: &str, nonce: &[u8]| {
        let mut headers = http::HeaderMap::new();
        headers.insert("dpop-nonce", http::HeaderValue::from_bytes(nonce).unwrap());
        key.remember_nonce(&url.parse().unwrap(), &headers);
    };
    for hostile in [&b"a\"b"[..], "caf\u{e9}".as_bytes(), &[b'n'; 2000][..]] {
        give("https://h.example/x", hostile);
        assert_eq!(nonce_in("https://h.example/y").await, None);
    }
    give("https://h.example:443/x", b"good");
    assert_eq!(
        nonce_in("https://H.EXAMPLE/y").await.as_deref(),
        Some("good")
    );
    assert_eq!(nonce_in("http://h.example/y").await, None);
    assert_eq!(nonce_in("https://h.example:8443/y").await, None);
    for i in 0..10_000 {
        give(
            &format!("https://o{i}.example/"),
            format!("n{i}").as_bytes(),
        );
    }
    assert_eq!(nonce_in("https://o0.example/").await, None);
    assert_eq!(
        nonce_in("https://o9999.example/").await.as_deref(),
        Some("n9999")
    );
    assert_eq!(nonce_in("https://h.example/").await, None, "evicted");
}

/// reqwest follows redirects inside the middleware's `next.run`: on a same-origin redirect it
/// sends `Authorization: DPoP …` again with the *first* URL's proof (`DPoP` is not a header
/// reqwest strips). A verifying server refuses it (htu names the old URL), and the middleware,
/// seeing a plain `401`, drops the good token: every redirected request costs a token. With a
/// bearer token the same redirect just works. Expected: the redirected request succeeds (a
/// proof for the URL it reaches), or at least the token is kept; here: 200 and one token.
#[tokio::test]
async fn defect_reqwest_redirects_resend_a_stale_proof_and_drop_the_token() {
    let tokens = token_server().await;
    let checker = Arc::new(ProofChecker::default());
    let validator = tokens.clone();
    let addr = serve(move |request: Request<Incoming>| {
        let (checker, tokens) = (checker.clone(), validator.clone());
        async move {
            if request.uri().path() == "/old" {
                let mut response = raw(StatusCode::TEMPORARY_REDIRECT, "", "");
                response
                    .headers_mut()
                    .insert(http::header::LOCATION, "/new".parse().unwrap());
                return response;
            }
            let headers = request.headers();
            let token = headers[AUTHORIZATION]
                .to_str()
                .unwrap()
                .strip_prefix("DPoP ")
                .unwrap_or_default();
            let proof = headers
                .get("dpop")
                .map(|p| p.to_str().unwrap())
                .unwrap_or_default();
            let htu = url_of(headers, request.uri().path());
            let expect = Expect {
                htm: "GET",
                htu: &htu,
                token: Some(token),
                nonce: None,
            };
            match checker.check(proof, &expect) {
                Ok(checked) if tokens.cnf_jkt(token).as_deref() == Some(checked.jkt.as_str()) => {
                    raw(StatusCode::OK, "text/plain", "ok")
                }
                _ => {
                    let mut response = raw(StatusCode::UNAUTHORIZED, "", "");
                    response.headers_mut().insert(
                        WWW_AUTHENTICATE,
                        "DPoP error=\"invalid_dpop_proof\"".parse().unwrap(),
                    );
                    response
                }
            }
        }
    })
    .await;
    let credentials = credentials(&tokens, DpopKey::generate(JwsAlgorithm::ES256).unwrap());
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(tower_oauth2::BearerAuthMiddleware::new(credentials.clone()))
        .build();
    let direct = client
        .get(format!("http://{addr}/new"))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 200, "the server accepts a direct request");
    let redirected = client
        .get(format!("http://{addr}/old"))
        .send()
        .await
        .unwrap()
        .status();
    // One more direct request shows whether the redirect's 401 dropped the token.
    let again = client
        .get(format!("http://{addr}/new"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    let token_requests = tokens.requests();
    // What is promised: the middleware cannot sign for the URL reqwest was redirected to, so
    // the stale proof is refused, but the token is kept.
    assert!(
        redirected == 401 && token_requests == 1,
        "redirected: {redirected}, token requests: {token_requests}"
    );

    // What the docs tell DPoP clients to do: redirects off, followed by the caller, each
    // request with a proof of its own.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let client = reqwest_middleware::ClientBuilder::new(no_redirects)
        .with(tower_oauth2::BearerAuthMiddleware::new(credentials))
        .build();
    let first = client
        .get(format!("http://{addr}/old"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 307);
    let location = first.headers()[http::header::LOCATION].to_str().unwrap();
    let followed = client
        .get(format!("http://{addr}{location}"))
        .send()
        .await
        .unwrap();
    assert_eq!(followed.status(), 200);
    assert_eq!(tokens.requests(), 1);
}
