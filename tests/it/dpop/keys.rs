//! Keys: from a PEM (the thumbprint a fleet shares), of kinds DPoP cannot use (typed errors),
//! from a signer's public key (exactly a SubjectPublicKeyInfo of the signer's kind), and never
//! shown: not the private key, not the token, in Debug or TRACE logs.

use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use http::Response;
use tower::{ServiceBuilder, ServiceExt};
use tower_oauth2::client_auth::JwsAlgorithm;
use tower_oauth2::BearerAuthLayer;

use super::signers::{Behaviour, Ed25519Kms, Kms, ZeroEs256};
use super::*;

#[test]
fn keys_from_pem_keep_their_thumbprint_and_never_show_the_private_key() {
    let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .unwrap()
        .serialize_pem();
    let one = DpopKey::from_pem(&pem).unwrap();
    let two = DpopKey::from_pem(&pem).unwrap();
    assert_eq!(one.thumbprint(), two.thumbprint());
    assert_eq!(one.algorithm(), JwsAlgorithm::ES256);
    let shown = format!("{one:?}");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!shown.contains(&body[..20]), "{shown}");
    let error =
        DpopKey::from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
            .unwrap_err();
    assert!(!error.to_string().contains("AAAA"), "{error}");
}

/// Keys DPoP cannot use are typed errors, not panics: RSA, P-521, and a signer whose public key
/// is garbage or truncated.
#[test]
fn keys_of_other_kinds_are_typed_errors() {
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

/// What KMS tooling often hands out instead of a bare SubjectPublicKeyInfo (the key's
/// certificate, or an SPKI with a trailing byte) is a typed error from `from_signer`, which
/// compares its input with the whole DER prefix of each kind and its exact length. (It once
/// searched for OID bytes and took the input's last bytes as the key: for a certificate, the
/// end of its signature, so every proof named a key that did not sign it.)
#[test]
fn from_signer_refuses_a_certificate_or_trailing_bytes_as_the_public_key() {
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

/// A public key PEM pasted indented (in a YAML or TOML string, a Rust literal: spaces before
/// the BEGIN line, tabs before the base64 lines) is the same key, with the same thumbprint
/// (it was refused as "a PEM without `BEGIN PUBLIC KEY` (a certificate?)").
#[test]
fn from_signer_takes_an_indented_public_key_pem() {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let kms = || {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        Ed25519Kms {
            pair: Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap(),
            behaviour: Behaviour::Remote,
        }
    };
    let pem = pair.public_key_pem();
    let indented: String = pem
        .lines()
        .map(|line| {
            if line.starts_with("-----") {
                format!("   {line}  \r\n")
            } else {
                format!("\t\t{line}\n")
            }
        })
        .collect();
    let plain = DpopKey::from_signer(kms(), &pem).unwrap();
    let key = DpopKey::from_signer(kms(), &indented)
        .unwrap_or_else(|error| panic!("{error}\n{indented}"));
    assert_eq!(key.thumbprint(), plain.thumbprint());
}

#[test]
fn a_public_key_that_is_not_the_signers_kind_is_refused() {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &p256.serialize_der()).unwrap();
    let error =
        DpopKey::from_signer(Kms { key, panics: false }, pair.public_key_pem()).unwrap_err();
    assert!(error.to_string().contains("EdDSA"), "{error}");
}

/// Nothing secret (the token, the client secret, the PEM's private key) in TRACE logs of a
/// DPoP fetch, a nonce retry at the token endpoint, and requests; nor in Debug of the key.
#[test]
fn no_secret_appears_in_trace_logs_of_dpop_traffic() {
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
