//! The fleet (a real `redis-server` on loopback): a DPoP token goes through the shared cache
//! only to processes holding its key (a PEM, or the same key in a KMS: shared by thumbprint),
//! and a DPoP entry is never taken as a Bearer one.

use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use http::Response;
use tower::{ServiceBuilder, ServiceExt};
use tower_oauth2::client_auth::JwsAlgorithm;
use tower_oauth2::shared::RedisStore;
use tower_oauth2::test_util::RedisServer;
use tower_oauth2::BearerAuthLayer;

use crate::support::fleet::{entries, redis_server, set};

use super::signers::Kms;
use super::*;

fn member(tokens: &TokenServer, redis: &RedisServer, key: DpopKey) -> ClientCredentials {
    ClientCredentials::builder()
        .token_url(tokens.url())
        .client_id("test-client")
        .client_secret("test-secret")
        .dpop(key)
        .shared_cache(RedisStore::new(&redis.url()).unwrap())
        .build()
        .unwrap()
}

fn p256_pem() -> String {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .unwrap()
        .serialize_pem()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_processes_holding_the_same_key_share_a_dpop_token() {
    let redis = RedisServer::start().unwrap_or_else(|error| panic!("{error}"));
    let (tokens, _) = token_server(None).await;
    let resource = Resource::start(tokens.clone(), None).await;
    let pem = p256_pem();

    let first = member(&tokens, &redis, DpopKey::from_pem(&pem).unwrap());
    let token = first.token().await.unwrap();
    assert_eq!(tokens.requests(), 1);

    // Another process with the same key reads the token from the store, bound to its key.
    let second = member(&tokens, &redis, DpopKey::from_pem(&pem).unwrap());
    let shared = second.token().await.unwrap();
    assert_eq!(tokens.requests(), 1, "shared through the store");
    assert_eq!(shared.secret(), token.secret());
    assert_eq!(shared.token_type(), "DPoP");
    let response = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(second))
        .service(http_client())
        .oneshot(request(Method::GET, &resource.url("/shared")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{:?}", resource.log());

    // Another key: another entry. A key made in the process: never through the store.
    let other = member(&tokens, &redis, DpopKey::from_pem(p256_pem()).unwrap());
    assert_ne!(other.token().await.unwrap().secret(), token.secret());
    assert_eq!(tokens.requests(), 2);
    let generated = DpopKey::generate(JwsAlgorithm::ES256).unwrap();
    let made_here = member(&tokens, &redis, generated.clone());
    made_here.token().await.unwrap();
    let made_here_too = member(&tokens, &redis, generated);
    made_here_too.token().await.unwrap();
    assert_eq!(
        tokens.requests(),
        4,
        "tokens of a generated key stay per process"
    );
}

fn member_with(
    tokens: &TokenServer,
    redis: &RedisServer,
    key: Option<DpopKey>,
) -> ClientCredentials {
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
async fn a_pem_holder_and_a_kms_holder_of_one_key_share_its_token() {
    let redis = redis_server();
    let (tokens, _) = token_server(None).await;
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let pem_key = DpopKey::from_pem(pair.serialize_pem()).unwrap();
    let kms = Kms {
        key: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &pair.serialize_der())
            .unwrap(),
        panics: false,
    };
    let kms_key = DpopKey::from_signer(kms, pair.public_key_pem()).unwrap();
    assert_eq!(pem_key.thumbprint(), kms_key.thumbprint());

    let first = member_with(&tokens, &redis, Some(pem_key));
    send(first, tokens.clone()).await.unwrap();
    let second = member_with(&tokens, &redis, Some(kms_key));
    send(second, tokens.clone()).await.unwrap();
    assert_eq!(tokens.requests(), 1, "shared by thumbprint");
}

/// A Bearer process and a DPoP process of one registration never take each other's tokens,
/// even when a Redis writer copies the DPoP entry under the Bearer process's key (the seal's
/// associated data is the key): the DPoP token is never sent as Bearer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dpop_entry_copied_under_a_bearer_clients_key_is_not_used() {
    let redis = redis_server();
    let (tokens, _) = token_server(None).await;
    let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .unwrap()
        .serialize_pem();
    let dpop = member_with(&tokens, &redis, Some(DpopKey::from_pem(&pem).unwrap()));
    let bound = dpop.token().await.unwrap();
    let (dpop_key, dpop_value) = entries(&redis).remove(0);
    let bearer = member_with(&tokens, &redis, None);
    let plain = bearer.token().await.unwrap();
    assert_eq!(plain.token_type(), "Bearer");
    assert_ne!(plain.secret(), bound.secret());
    let bearer_key = entries(&redis)
        .into_iter()
        .map(|(key, _)| key)
        .find(|key| *key != dpop_key)
        .unwrap();
    set(&redis, &bearer_key, &dpop_value);
    let fresh = member_with(&tokens, &redis, None);
    let token = fresh.token().await.unwrap();
    assert_ne!(
        token.secret(),
        bound.secret(),
        "a DPoP token went out as Bearer"
    );
}
