//! `private_key_jwt` with a key held elsewhere (`ClientAuth::signed_by` and the `Signer`
//! trait): a KMS-like signer returning DER ECDSA signatures, the local key as a signer, and
//! signers that panic or hang. The token server verifies each assertion with the client's
//! registered public key through jsonwebtoken.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_ASN1_SIGNING};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tower_oauth2::cache::CachePolicy;
use tower_oauth2::client_auth::{JwsAlgorithm, PrivateKeyJwt, SignFuture, Signer};
use tower_oauth2::test_util::TokenServer;
use tower_oauth2::{ClientAuth, ClientCredentials, ErrorKind};

use crate::support::last;

const CLIENT_ID: &str = "kms-client";

/// A pretend cloud KMS: an ECDSA key it never hands out, answering with DER signatures as
/// KMS APIs do; `behaviour(n)` can make call `n` panic or hang.
struct Kms {
    key: EcdsaKeyPair,
    calls: AtomicUsize,
    behaviour: fn(usize) -> Behaviour,
}

#[derive(PartialEq)]
enum Behaviour {
    Sign,
    Panic,
    Hang,
}

impl Signer for Kms {
    fn algorithm(&self) -> JwsAlgorithm {
        JwsAlgorithm::ES256
    }

    fn key_id(&self) -> Option<&str> {
        Some("kms-key-7")
    }

    fn sign<'a>(&'a self, message: &'a [u8]) -> SignFuture<'a> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let behaviour = (self.behaviour)(n);
        if behaviour == Behaviour::Panic {
            panic!("KMS client bug");
        }
        Box::pin(async move {
            if behaviour == Behaviour::Hang {
                std::future::pending::<()>().await;
            }
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let signature = self.key.sign(&rng, message).map_err(|_| "KMS failed")?;
            Ok(signature.as_ref().to_vec())
        })
    }
}

/// A KMS key, and the public key the identity provider has registered for the client.
fn kms(behaviour: fn(usize) -> Behaviour) -> (Arc<Kms>, String) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &pair.serialize_der()).unwrap();
    assert!(!key.public_key().as_ref().is_empty());
    let kms = Kms {
        key,
        calls: AtomicUsize::new(0),
        behaviour,
    };
    (Arc::new(kms), pair.public_key_pem())
}

/// A token server that verifies assertions with `public_pem` (`alg`), for `CLIENT_ID`.
async fn verifying(public_pem: String, alg: Algorithm) -> TokenServer {
    TokenServer::builder()
        .client(CLIENT_ID, "")
        .client_assertions(move |jwt| {
            let key = match alg {
                Algorithm::ES256 => DecodingKey::from_ec_pem(public_pem.as_bytes()),
                _ => DecodingKey::from_rsa_pem(public_pem.as_bytes()),
            }
            .unwrap();
            let mut rules = Validation::new(alg);
            rules.set_issuer(&[CLIENT_ID]);
            rules.sub = Some(CLIENT_ID.into());
            rules.validate_aud = false;
            jsonwebtoken::decode::<serde_json::Value>(jwt, &key, &rules).is_ok()
        })
        .start()
        .await
        .unwrap()
}

/// `Signer` for an `Arc` of one, so that the test keeps a handle on the calls.
struct Shared(Arc<Kms>);

impl Signer for Shared {
    fn algorithm(&self) -> JwsAlgorithm {
        self.0.algorithm()
    }
    fn key_id(&self) -> Option<&str> {
        self.0.key_id()
    }
    fn sign<'a>(&'a self, message: &'a [u8]) -> SignFuture<'a> {
        self.0.sign(message)
    }
}

#[tokio::test]
async fn a_kms_signer_with_der_signatures_makes_assertions_the_server_accepts() {
    let (kms, public_pem) = kms(|_| Behaviour::Sign);
    let server = verifying(public_pem, Algorithm::ES256).await;
    let credentials = ClientCredentials::builder()
        .token_url(server.url())
        .client_auth(ClientAuth::signed_by(CLIENT_ID, Shared(kms.clone())))
        .build()
        .unwrap();
    credentials.fetch_uncached().await.unwrap();
    credentials.fetch_uncached().await.unwrap();
    assert_eq!(
        kms.calls.load(Ordering::SeqCst),
        2,
        "one signature per request"
    );
    let assertion = last(&server).form()["client_assertion"].clone();
    let header = jsonwebtoken::decode_header(&assertion).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    assert_eq!(header.kid.as_deref(), Some("kms-key-7"));
    assert_eq!(server.issued(), 2);
}

#[tokio::test]
async fn the_local_key_is_a_signer_too() {
    let key = crate::support::keys::rsa_pkcs8();
    let server = verifying(key.public_pem.clone(), Algorithm::RS256).await;
    // With its certificate, for Entra ID certificate credentials.
    let pair = rcgen::KeyPair::from_pem(&key.private_pem).unwrap();
    let certificate = rcgen::CertificateParams::new(vec!["client".to_owned()])
        .unwrap()
        .self_signed(&pair)
        .unwrap();
    let thumbprint = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, certificate.der()),
    );
    let signer = PrivateKeyJwt::from_pem(&key.private_pem)
        .unwrap()
        .key_id("local-1")
        .certificate_pem(certificate.pem())
        .unwrap()
        .into_signer()
        .unwrap();
    assert_eq!(signer.algorithm(), JwsAlgorithm::RS256);
    assert_eq!(signer.x5t_s256(), Some(thumbprint.as_str()));
    assert!(!format!("{signer:?}").contains("PRIVATE"));
    let credentials = ClientCredentials::builder()
        .token_url(server.url())
        .client_auth(ClientAuth::signed_by(CLIENT_ID, signer))
        .build()
        .unwrap();
    credentials.token().await.unwrap();
    let assertion = last(&server).form()["client_assertion"].clone();
    let header = jsonwebtoken::decode_header(&assertion).unwrap();
    assert_eq!(header.kid.as_deref(), Some("local-1"));
    assert_eq!(header.x5t_s256.as_deref(), Some(thumbprint.as_str()));
}

#[tokio::test]
async fn a_panicking_signer_is_an_error_and_the_cache_recovers() {
    let (kms, public_pem) = kms(|n| {
        if n == 1 {
            Behaviour::Panic
        } else {
            Behaviour::Sign
        }
    });
    let server = verifying(public_pem, Algorithm::ES256).await;
    let credentials = ClientCredentials::builder()
        .token_url(server.url())
        .client_auth(ClientAuth::signed_by(CLIENT_ID, Shared(kms)))
        .cache_policy(CachePolicy::default().backoff(Duration::ZERO, Duration::ZERO))
        .build()
        .unwrap();
    let error = credentials.token().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Panic, "{error}");
    assert!(error.to_string().contains("assertion signer"), "{error}");
    assert!(!error.to_string().contains("KMS client bug"), "{error}");
    credentials.token().await.unwrap();
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn a_hanging_signer_times_out() {
    let (kms, public_pem) = kms(|_| Behaviour::Hang);
    let server = verifying(public_pem, Algorithm::ES256).await;
    let credentials = ClientCredentials::builder()
        .token_url(server.url())
        .client_auth(ClientAuth::signed_by(CLIENT_ID, Shared(kms)))
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let error = tokio::time::timeout(Duration::from_secs(5), credentials.token())
        .await
        .expect("bounded by the timeout")
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ClientAuth, "{error}");
    assert!(error.is_transient());
    assert!(
        error.to_string().contains("did not answer within"),
        "{error}"
    );
    assert_eq!(server.requests(), 0);
}
