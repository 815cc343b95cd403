//! Adversarial probes for DPoP in the fleet (issue #21 with the shared cache of issue #22),
//! against a real `redis-server` on loopback. Run:
//! `cargo test --test it --features redis adversary_dpop_fleet`.

use std::sync::{Arc, Mutex};

use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{Request, Response};
use http_body_util::Full;
use tower::{ServiceBuilder, ServiceExt};
use tower_oauth2::client_auth::{JwsAlgorithm, SignFuture, Signer};
use tower_oauth2::dpop::DpopKey;
use tower_oauth2::shared::RedisStore;
use tower_oauth2::test_util::{RedisServer, TokenServer};
use tower_oauth2::{BearerAuthLayer, ClientCredentials};

use crate::support::dpop::{Expect, ProofChecker};
use crate::support::fleet::{entries, redis_server, set};

/// A token endpoint issuing DPoP tokens to any proof (bearer tokens without one), bound to
/// the proof's real key thumbprint.
async fn tokens() -> Arc<TokenServer> {
    let checker = Arc::new(ProofChecker::default());
    Arc::new(
        TokenServer::builder()
            .dpop_proofs(move |proof, request| {
                let host = request.headers["host"].to_str().unwrap();
                let htu = format!("http://{host}{}", request.uri.path());
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

fn member(tokens: &TokenServer, redis: &RedisServer, key: Option<DpopKey>) -> ClientCredentials {
    let builder = ClientCredentials::builder()
        .token_url(tokens.url())
        .client_id("test-client")
        .client_secret("test-secret")
        .shared_cache(RedisStore::new(&redis.url()).unwrap());
    match key {
        Some(key) => builder.dpop(key),
        None => builder,
    }
    .build()
    .unwrap()
}

struct Kms(EcdsaKeyPair);

impl Signer for Kms {
    fn algorithm(&self) -> JwsAlgorithm {
        JwsAlgorithm::ES256
    }

    fn sign<'a>(&'a self, message: &'a [u8]) -> SignFuture<'a> {
        Box::pin(async move {
            let rng = aws_lc_rs::rand::SystemRandom::new();
            Ok(self
                .0
                .sign(&rng, message)
                .map_err(|_| "kms")?
                .as_ref()
                .to_vec())
        })
    }
}

/// What a resource server would say of each request: the proof verified and the token bound
/// to the proof's key.
async fn send(credentials: ClientCredentials, tokens: Arc<TokenServer>) -> Result<(), String> {
    let verdict = Arc::new(Mutex::new(Err::<(), String>("not sent".into())));
    let writing = verdict.clone();
    let checker = Arc::new(ProofChecker::default());
    let api = tower::service_fn(move |request: Request<Full<Bytes>>| {
        let headers = request.headers();
        let result = (|| {
            let authorization = headers[AUTHORIZATION].to_str().unwrap();
            let token = authorization
                .strip_prefix("DPoP ")
                .ok_or_else(|| format!("sent as {authorization:.6}"))?;
            let proof = headers.get("dpop").ok_or("no proof")?.to_str().unwrap();
            let checked = checker.check(
                proof,
                &Expect {
                    htm: "GET",
                    htu: "http://127.0.0.1:9/x",
                    token: Some(token),
                    nonce: None,
                },
            )?;
            (tokens.cnf_jkt(token).as_deref() == Some(checked.jkt.as_str()))
                .then_some(())
                .ok_or_else(|| "bound to another key".to_owned())
        })();
        *writing.lock().unwrap() = result;
        async { Ok::<_, std::convert::Infallible>(Response::new(Full::<Bytes>::default())) }
    });
    ServiceBuilder::new()
        .layer(BearerAuthLayer::new(credentials))
        .service(api)
        .oneshot(
            Request::builder()
                .uri("http://127.0.0.1:9/x")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let verdict = verdict.lock().unwrap().clone();
    verdict
}

/// A process holding the key as a PEM and one holding it in a KMS (same public key, same
/// thumbprint) share one token, and each sends it with a proof the token is bound to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_a_pem_holder_and_a_kms_holder_of_one_key_share_its_token() {
    let redis = redis_server();
    let tokens = tokens().await;
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let pem_key = DpopKey::from_pem(pair.serialize_pem()).unwrap();
    let kms = Kms(
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &pair.serialize_der()).unwrap(),
    );
    let kms_key = DpopKey::from_signer(kms, pair.public_key_pem()).unwrap();
    assert_eq!(pem_key.thumbprint(), kms_key.thumbprint());

    let first = member(&tokens, &redis, Some(pem_key));
    send(first, tokens.clone()).await.unwrap();
    let second = member(&tokens, &redis, Some(kms_key));
    send(second, tokens.clone()).await.unwrap();
    assert_eq!(tokens.requests(), 1, "shared by thumbprint");
}

/// A Bearer process and a DPoP process of one registration never take each other's tokens,
/// even when a Redis writer copies the DPoP entry under the Bearer process's key (the seal's
/// associated data is the key): the DPoP token is never sent as Bearer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_a_dpop_entry_copied_under_a_bearer_clients_key_is_not_used() {
    let redis = redis_server();
    let tokens = tokens().await;
    let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .unwrap()
        .serialize_pem();
    let dpop = member(&tokens, &redis, Some(DpopKey::from_pem(&pem).unwrap()));
    let bound = dpop.token().await.unwrap();
    let (dpop_key, dpop_value) = entries(&redis).remove(0);
    let bearer = member(&tokens, &redis, None);
    let plain = bearer.token().await.unwrap();
    assert_eq!(plain.token_type(), "Bearer");
    assert_ne!(plain.secret(), bound.secret());
    let bearer_key = entries(&redis)
        .into_iter()
        .map(|(key, _)| key)
        .find(|key| *key != dpop_key)
        .unwrap();
    set(&redis, &bearer_key, &dpop_value);
    let fresh = member(&tokens, &redis, None);
    let token = fresh.token().await.unwrap();
    assert_ne!(
        token.secret(),
        bound.secret(),
        "a DPoP token went out as Bearer"
    );
}
