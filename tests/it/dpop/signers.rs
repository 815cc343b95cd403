//! Keys held elsewhere (a KMS, an HSM) through a `Signer`: proofs the servers accept, and
//! every way a signer can fail contained before anything is sent: a panic, an error, a hang
//! (within the request's timeout), a signature of the wrong size, zero scalars or another key;
//! on a runtime without timers it still signs.

use std::time::Duration;

use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ECDSA_P256_SHA256_ASN1_SIGNING,
};
use http::{Response, Uri};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_oauth2::client_auth::{JwsAlgorithm, SignFuture, Signer};
use tower_oauth2::BearerAuthLayer;

use super::*;

/// What a remote (KMS-like) Ed25519 signer does when asked to sign.
#[derive(Clone, Copy)]
pub(super) enum Behaviour {
    /// A correct signature, after a network round trip (here: one yield to the executor).
    Remote,
    /// A correct signature followed by this many junk bytes.
    Overlong(usize),
    /// Never answers.
    Hangs,
}

pub(super) struct Ed25519Kms {
    pub(super) pair: Ed25519KeyPair,
    pub(super) behaviour: Behaviour,
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
pub(super) fn ed25519_kms(behaviour: Behaviour) -> DpopKey {
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
pub(super) struct ZeroEs256;

impl Signer for ZeroEs256 {
    fn algorithm(&self) -> JwsAlgorithm {
        JwsAlgorithm::ES256
    }

    fn sign<'a>(&'a self, _message: &'a [u8]) -> SignFuture<'a> {
        Box::pin(async { Ok(vec![0u8; 64]) })
    }
}

pub(super) struct Kms {
    pub(super) key: EcdsaKeyPair,
    pub(super) panics: bool,
}

impl Signer for Kms {
    fn algorithm(&self) -> JwsAlgorithm {
        JwsAlgorithm::ES256
    }

    fn sign<'a>(&'a self, message: &'a [u8]) -> SignFuture<'a> {
        assert!(!self.panics, "KMS client bug");
        Box::pin(async move {
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let signature = self.key.sign(&rng, message).map_err(|_| "KMS failed")?;
            Ok(signature.as_ref().to_vec())
        })
    }
}

fn kms_key(panics: bool) -> DpopKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &pair.serialize_der()).unwrap();
    DpopKey::from_signer(Kms { key, panics }, pair.public_key_pem()).unwrap()
}

#[tokio::test]
async fn a_key_held_elsewhere_signs_proofs_the_servers_accept() {
    let (tokens, _) = token_server(None).await;
    let resource = Resource::start(tokens.clone(), None).await;
    let key = kms_key(false);
    let credentials = credentials(&tokens, key.clone());
    let mut client = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(credentials.clone()))
        .service(http_client());
    for i in 0..3 {
        let response = client
            .ready()
            .await
            .unwrap()
            .call(request(Method::PUT, &resource.url(&format!("/kms/{i}"))))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{:?}", resource.log());
    }
    let token = credentials.token().await.unwrap();
    assert_eq!(
        tokens.cnf_jkt(token.secret()).as_deref(),
        Some(key.thumbprint())
    );
}

#[tokio::test]
async fn a_panicking_signer_is_an_error() {
    let (tokens, _) = token_server(None).await;
    let credentials = credentials(&tokens, kms_key(true));
    let error = credentials.token().await.unwrap_err();
    assert!(error.to_string().contains("DPoP proof signer"), "{error}");
    assert_eq!(tokens.requests(), 0, "no token request without a proof");
}

/// A remote signer that fails (error) for resource proofs after the token was fetched: the
/// request is not sent at all (never as Bearer, never without a proof).
#[tokio::test]
async fn a_failing_signer_means_no_request_not_a_bearer_one() {
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
    let tokens = token_server(None).await.0;
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

/// Invariants 6 ("the same with no runtime, or a runtime without timers") and 7: a remote
/// signer that does any I/O (here: one yield) on a tokio runtime built without timers signs
/// the proof. The signer's deadline is a real-time timer, not tokio's (whose creation panics
/// there, and a `catch_unwind` meant for the user's signer used to blame that panic on it).
/// The judge also accepts an error naming the runtime's timers, never the signer.
#[test]
fn a_remote_signer_signs_on_a_runtime_without_timers() {
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
/// shared by both), then a request is sent from a current-thread runtime without them: it is
/// sent with a proof (or would fail saying the runtime needs timers, never blaming the signer).
#[test]
fn the_layer_sends_a_remote_signers_proofs_from_a_runtime_without_timers() {
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

/// A remote Ed25519 signer that returns more than the 64 bytes an Ed25519 signature is (any
/// other size once went out in a proof no server can verify, here a 16 KiB header): a typed
/// error, no token request sent, and `DpopKey::proof` refuses it too.
#[tokio::test]
async fn an_overlong_eddsa_signature_is_an_error_and_nothing_is_sent() {
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

/// A remote ES256 signer answering 64 zero bytes (`r = s = 0`, invalid for every message, and
/// of the right length): refused before a request is spent on it (a zero scalar costs
/// nothing to see; other garbage fails the first signature's verification with the public
/// key, once per key rather than ~40 µs on every proof). A typed error, no token request.
#[tokio::test]
async fn an_es256_signature_with_zero_scalars_is_an_error_and_nothing_is_sent() {
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
/// it, one deadline for all." The DPoP proof's remote signer shares it too (it once had a
/// fixed 10 s of its own): a hanging KMS fails a fetch configured for 1 s within that second.
/// (The signer's deadline is real time, so this test takes a real second.)
#[tokio::test(start_paused = true)]
async fn a_hanging_signer_fails_the_token_request_within_its_timeout() {
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

/// A signer whose key is not the public key it was given (a KMS key ARN mixed up, a rotated
/// key): its signatures are well formed, so only verifying one tells. The first proof is
/// verified, and the token request fails saying so instead of sending a proof every server
/// refuses.
#[tokio::test]
async fn a_signer_of_another_key_fails_the_first_request_saying_so() {
    let signing = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let named = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &signing.serialize_der())
        .unwrap();
    let key = DpopKey::from_signer(Kms { key, panics: false }, named.public_key_pem()).unwrap();
    let tokens = lenient_token_server().await;
    let error = credentials(&tokens, key).token().await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("does not verify with the public key"),
        "{error}"
    );
    assert_eq!(tokens.requests(), 0, "no proof by the wrong key was sent");
}

/// A P-256 "KMS": its first signature (the token request's proof) is a real one; every later
/// `sign` returns a future that never answers and panics when dropped (a KMS client whose
/// cancellation path is buggy), telling the test once it was polled.
struct DropBombKms {
    key: aws_lc_rs::signature::EcdsaKeyPair,
    calls: AtomicUsize,
    asked: Arc<tokio::sync::Notify>,
}

struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("KMS client bug in drop");
    }
}

impl Signer for DropBombKms {
    fn algorithm(&self) -> JwsAlgorithm {
        JwsAlgorithm::ES256
    }

    fn sign<'a>(&'a self, message: &'a [u8]) -> SignFuture<'a> {
        let first = self.calls.fetch_add(1, Ordering::SeqCst) == 0;
        let asked = self.asked.clone();
        Box::pin(async move {
            if first {
                let rng = aws_lc_rs::rand::SystemRandom::new();
                let signature = self.key.sign(&rng, message).map_err(|_| "KMS failed")?;
                return Ok(signature.as_ref().to_vec());
            }
            let _bomb = Bomb;
            asked.notify_one();
            std::future::pending::<()>().await;
            Ok(Vec::new())
        })
    }
}

/// A cancelled request (a caller's timeout, `select!`, a client going away) whose signer's
/// future panics when dropped: the panic is contained, as when the signer's future is dropped
/// after signing or timing out (repro: it unwound out of the caller's drop).
#[tokio::test]
async fn a_cancelled_requests_signer_panicking_in_drop_is_contained() {
    let tokens = token_server(None).await.0;
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &pair.serialize_der()).unwrap();
    let asked = Arc::new(tokio::sync::Notify::new());
    let kms = DropBombKms {
        key,
        calls: AtomicUsize::new(0),
        asked: asked.clone(),
    };
    let dpop = DpopKey::from_signer(kms, pair.public_key_pem()).unwrap();
    let credentials = credentials(&tokens, dpop);
    credentials.token().await.expect("the first proof is real");
    let mut client = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(credentials))
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
    let request = Request::builder()
        .method(Method::GET)
        .uri("http://127.0.0.1:9/never-sent")
        .body(Full::default())
        .unwrap();
    let mut call = Box::pin(client.ready().await.unwrap().call(request));
    tokio::select! {
        _ = &mut call => panic!("the signer never answers"),
        _ = asked.notified() => {}
    }
    // The caller gives up on the request.
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(call)));
    assert!(
        dropped.is_ok(),
        "the signer's panic in drop unwound out of the cancelled request's drop"
    );
}
