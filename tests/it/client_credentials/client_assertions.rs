//! Client assertions (RFC 7523 §2.2): `private_key_jwt` with every key type and format, and
//! `client_secret_jwt`, against a token endpoint on loopback that checks each assertion with an
//! independent verifier (jsonwebtoken): the signature with the public key or secret, the
//! claims, and that no `jti` comes twice.

use crate::support::{self, keys};

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::json;
use base64::Engine as _;
use http::StatusCode;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tower_oauth2::test_util::{Received, TokenServer};
use tower_oauth2::{
    client_auth::JwsAlgorithm, client_auth::PrivateKeyJwt, ClientCredentials, ErrorKind,
};

const CLIENT_ID: &str = "assertion-client";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const HS256_SECRET: &str = "a-client-secret-that-is-at-least-32-bytes-long";

/// What the endpoint checks an assertion with.
#[derive(Clone)]
enum Verifier {
    PublicKey { pem: String, alg: Algorithm },
    Secret(&'static str),
}

impl Verifier {
    fn key(&self) -> DecodingKey {
        match self {
            Verifier::PublicKey { pem, alg } => match alg {
                Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem.as_bytes()),
                Algorithm::EdDSA => DecodingKey::from_ed_pem(pem.as_bytes()),
                _ => DecodingKey::from_rsa_pem(pem.as_bytes()),
            }
            .expect("the test's public key"),
            Verifier::Secret(secret) => DecodingKey::from_secret(secret.as_bytes()),
        }
    }

    fn alg(&self) -> Algorithm {
        match self {
            Verifier::PublicKey { alg, .. } => *alg,
            Verifier::Secret(_) => Algorithm::HS256,
        }
    }
}

/// An accepted assertion, as the endpoint decoded it.
#[derive(Debug, Clone)]
struct Accepted {
    header: jsonwebtoken::Header,
    claims: serde_json::Value,
}

/// A token endpoint that accepts only valid assertions from `CLIENT_ID`.
struct Idp {
    server: TokenServer,
    accepted: Arc<Mutex<Vec<Accepted>>>,
}

impl Idp {
    async fn start(verifier: Verifier) -> Idp {
        Self::start_with_audience(verifier, None).await
    }

    /// `audience`: what `aud` must be; by default the token endpoint's URL.
    async fn start_with_audience(verifier: Verifier, audience: Option<String>) -> Idp {
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let log = accepted.clone();
        let server = support::scripted(move |request, n| {
            if request.uri.path().starts_with("/.well-known/") {
                // Discovery: this server is its own issuer, and wants assertions.
                let issuer = format!("http://{}", request.header("host").unwrap_or_default());
                return json(
                    StatusCode::OK,
                    serde_json::json!({
                        "issuer": issuer,
                        "token_endpoint": format!("{issuer}/oauth/token"),
                        "token_endpoint_auth_methods_supported":
                            ["private_key_jwt", "client_secret_jwt"],
                    }),
                );
            }
            match check(request, &verifier, audience.as_deref(), &seen) {
                Ok(assertion) => {
                    log.lock().unwrap().push(assertion);
                    json(
                        StatusCode::OK,
                        serde_json::json!({
                            "access_token": format!("assertion-token-{n}"),
                            "token_type": "Bearer",
                            "expires_in": 3600,
                        }),
                    )
                }
                Err(why) => json(
                    StatusCode::UNAUTHORIZED,
                    serde_json::json!({ "error": "invalid_client", "error_description": why }),
                ),
            }
        })
        .await;
        Idp { server, accepted }
    }

    fn accepted(&self) -> Vec<Accepted> {
        self.accepted.lock().unwrap().clone()
    }
}

/// What an identity provider checks of a `private_key_jwt` / `client_secret_jwt` request.
fn check(
    request: &Received,
    verifier: &Verifier,
    audience: Option<&str>,
    seen: &Mutex<HashSet<String>>,
) -> Result<Accepted, String> {
    let form = request.form();
    if request.header("authorization").is_some() {
        return Err("an Authorization header came with the assertion".into());
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return Err("grant_type".into());
    }
    if form.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
        return Err("client_id is missing or wrong".into());
    }
    if form.contains_key("client_secret") {
        return Err("the secret was sent".into());
    }
    if form.get("client_assertion_type").map(String::as_str) != Some(ASSERTION_TYPE) {
        return Err("client_assertion_type".into());
    }
    let assertion = form.get("client_assertion").ok_or("no client_assertion")?;
    let token_endpoint = format!(
        "http://{}{}",
        request.header("host").unwrap_or_default(),
        request.uri.path()
    );
    let mut validation = Validation::new(verifier.alg());
    validation.set_audience(&[audience.unwrap_or(&token_endpoint)]);
    validation.set_issuer(&[CLIENT_ID]);
    validation.sub = Some(CLIENT_ID.to_owned());
    validation.set_required_spec_claims(&["exp", "iat", "nbf", "aud", "iss", "sub", "jti"]);
    validation.leeway = 0;
    let decoded =
        jsonwebtoken::decode::<serde_json::Value>(assertion, &verifier.key(), &validation)
            .map_err(|e| format!("assertion refused: {e}"))?;
    let jti = decoded.claims["jti"]
        .as_str()
        .ok_or("jti is not a string")?;
    if !seen.lock().unwrap().insert(jti.to_owned()) {
        return Err("replayed jti".into());
    }
    Ok(Accepted {
        header: decoded.header,
        claims: decoded.claims,
    })
}

fn private_key_client(idp: &Idp, key: PrivateKeyJwt) -> ClientCredentials {
    ClientCredentials::builder()
        .token_url(idp.server.url())
        .client_id(CLIENT_ID)
        .private_key_jwt(key)
        .build()
        .expect("a client with a private key")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn every_key_type_and_format_signs_assertions_the_endpoint_verifies() {
    for key in keys::all() {
        let idp = Idp::start(Verifier::PublicKey {
            pem: key.public_pem.clone(),
            alg: key.alg,
        })
        .await;
        let credentials = private_key_client(
            &idp,
            PrivateKeyJwt::from_pem(&key.private_pem)
                .unwrap()
                .key_id("key-1"),
        );
        let before = now();
        for _ in 0..3 {
            let token = credentials
                .fetch_uncached()
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", key.name));
            assert!(token.secret().starts_with("assertion-token-"));
        }
        let accepted = idp.accepted();
        assert_eq!(accepted.len(), 3, "{}", key.name);
        for assertion in &accepted {
            assert_eq!(assertion.header.alg, key.alg, "{}", key.name);
            assert_eq!(assertion.header.kid.as_deref(), Some("key-1"));
            assert_eq!(assertion.header.typ.as_deref(), Some("JWT"));
            let claims = &assertion.claims;
            assert_eq!(claims["aud"], idp.server.url(), "{}", key.name);
            let iat = claims["iat"].as_u64().unwrap();
            assert!(iat >= before && iat <= now(), "{}: iat {iat}", key.name);
            assert_eq!(claims["exp"].as_u64().unwrap(), iat + 60, "{}", key.name);
            // At least 128 random bits.
            let jti = claims["jti"].as_str().unwrap();
            let bits = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(jti)
                .map(|raw| raw.len() * 8)
                .unwrap_or(0);
            assert!(bits >= 128, "{}: jti {jti:?}", key.name);
        }
    }
}

#[tokio::test]
async fn an_rsa_key_signs_ps256_when_asked() {
    let key = keys::rsa_pkcs8();
    let idp = Idp::start(Verifier::PublicKey {
        pem: key.public_pem.clone(),
        alg: Algorithm::PS256,
    })
    .await;
    let credentials = private_key_client(
        &idp,
        PrivateKeyJwt::from_pem(&key.private_pem)
            .unwrap()
            .algorithm(JwsAlgorithm::PS256),
    );
    credentials.fetch_uncached().await.unwrap();
    let accepted = idp.accepted();
    assert_eq!(accepted[0].header.alg, Algorithm::PS256);
    assert_eq!(accepted[0].header.kid, None, "no kid unless one is given");
}

#[tokio::test]
async fn every_token_request_carries_a_fresh_assertion_and_a_replay_is_refused() {
    let key = keys::p256_pkcs8();
    let idp = Idp::start(Verifier::PublicKey {
        pem: key.public_pem.clone(),
        alg: key.alg,
    })
    .await;
    let credentials = private_key_client(&idp, PrivateKeyJwt::from_pem(&key.private_pem).unwrap());
    for _ in 0..20 {
        credentials.fetch_uncached().await.unwrap();
    }
    let jtis: HashSet<String> = idp
        .accepted()
        .iter()
        .map(|a| a.claims["jti"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(jtis.len(), 20, "one jti per request, never reused");

    // The endpoint's replay check is real: the same request sent again is refused.
    let last = support::last(&idp.server);
    let replayed = reqwest_free_post(&idp.server.url(), &last).await;
    assert_eq!(replayed, StatusCode::UNAUTHORIZED);
}

/// POST `request`'s body again to `url`, with hyper: what an attacker holding a captured
/// request would do.
async fn reqwest_free_post(url: &str, request: &Received) -> StatusCode {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let replay = http::Request::post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(request.body.clone()))
        .unwrap();
    client.request(replay).await.unwrap().status()
}

#[tokio::test]
async fn the_wrong_key_is_a_permanent_invalid_client_error() {
    let registered = keys::p256_pkcs8();
    let other = keys::p256_pkcs8();
    let idp = Idp::start(Verifier::PublicKey {
        pem: registered.public_pem.clone(),
        alg: registered.alg,
    })
    .await;
    let credentials =
        private_key_client(&idp, PrivateKeyJwt::from_pem(&other.private_pem).unwrap());
    let error = credentials.fetch_uncached().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Rejected, "{error}");
    assert!(!error.is_transient(), "a wrong key is not retried: {error}");
    assert_eq!(error.oauth_error().unwrap().code(), "invalid_client");
    let hint = error.hint().unwrap_or_default();
    assert!(
        hint.contains("public key"),
        "the hint names the key: {hint}"
    );
}

#[tokio::test]
async fn client_secret_jwt_signs_with_the_secret() {
    let idp = Idp::start(Verifier::Secret(HS256_SECRET)).await;
    let credentials = ClientCredentials::builder()
        .token_url(idp.server.url())
        .client_id(CLIENT_ID)
        .client_secret(HS256_SECRET)
        .client_secret_jwt()
        .build()
        .unwrap();
    credentials.fetch_uncached().await.unwrap();
    credentials.fetch_uncached().await.unwrap();
    let accepted = idp.accepted();
    assert_eq!(accepted.len(), 2);
    assert_eq!(accepted[0].header.alg, Algorithm::HS256);
    assert!(!String::from_utf8_lossy(&support::last(&idp.server).body).contains(HS256_SECRET));

    // Another secret: refused.
    let wrong = ClientCredentials::builder()
        .token_url(idp.server.url())
        .client_id(CLIENT_ID)
        .client_secret("another-client-secret-also-32-bytes-or-more")
        .client_secret_jwt()
        .build()
        .unwrap();
    let error = wrong.fetch_uncached().await.unwrap_err();
    assert_eq!(error.oauth_error().unwrap().code(), "invalid_client");
}

#[tokio::test]
async fn audience_and_lifetime_can_be_set() {
    let key = keys::ed25519();
    let idp = Idp::start_with_audience(
        Verifier::PublicKey {
            pem: key.public_pem.clone(),
            alg: key.alg,
        },
        Some("https://idp.example.com".into()),
    )
    .await;
    let credentials = ClientCredentials::builder()
        .token_url(idp.server.url())
        .client_id(CLIENT_ID)
        .private_key_jwt(PrivateKeyJwt::from_pem(&key.private_pem).unwrap())
        .assertion_audience("https://idp.example.com")
        .assertion_lifetime(Duration::from_secs(300))
        .build()
        .unwrap();
    credentials.fetch_uncached().await.unwrap();
    let claims = &idp.accepted()[0].claims;
    assert_eq!(claims["aud"], "https://idp.example.com");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        300
    );
}

#[tokio::test]
async fn a_certificate_adds_its_sha256_thumbprint() {
    let key = keys::rsa_pkcs8();
    let key_pair = rcgen::KeyPair::from_pem(&key.private_pem).unwrap();
    let certificate = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .self_signed(&key_pair)
        .unwrap();
    let idp = Idp::start(Verifier::PublicKey {
        pem: key.public_pem.clone(),
        alg: key.alg,
    })
    .await;
    let credentials = private_key_client(
        &idp,
        PrivateKeyJwt::from_pem(&key.private_pem)
            .unwrap()
            .certificate_pem(certificate.pem())
            .unwrap(),
    );
    credentials.fetch_uncached().await.unwrap();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, certificate.der());
    let expected = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref());
    assert_eq!(
        idp.accepted()[0].header.x5t_s256.as_deref(),
        Some(expected.as_str())
    );
}

#[test]
fn keys_that_cannot_sign_are_build_errors_that_say_why() {
    let build = |key: PrivateKeyJwt| {
        ClientCredentials::builder()
            .token_url("https://idp.example.com/token")
            .client_id(CLIENT_ID)
            .private_key_jwt(key)
            .build()
    };

    let not_a_key =
        PrivateKeyJwt::from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .unwrap_err();
    assert_eq!(
        tower_oauth2::Error::from(not_a_key.clone()).kind(),
        ErrorKind::Config
    );
    assert!(
        not_a_key.to_string().contains("no private key"),
        "{not_a_key}"
    );

    let encrypted = keys::pem("ENCRYPTED PRIVATE KEY", b"ciphertext");
    let error = PrivateKeyJwt::from_pem(encrypted).unwrap_err();
    assert!(error.to_string().contains("encrypted"), "{error}");

    let garbage = keys::pem("PRIVATE KEY", b"definitely not a PKCS#8 structure");
    let error = build(PrivateKeyJwt::from_pem(garbage).unwrap()).unwrap_err();
    assert_eq!(
        tower_oauth2::Error::from(error.clone()).kind(),
        ErrorKind::Config
    );
    assert!(error.to_string().contains("cannot use this key"), "{error}");

    let ec = keys::p256_pkcs8();
    let error = build(
        PrivateKeyJwt::from_pem(&ec.private_pem)
            .unwrap()
            .algorithm(JwsAlgorithm::RS256),
    )
    .unwrap_err();
    assert!(error.to_string().contains("cannot sign RS256"), "{error}");

    let p521 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512).unwrap();
    let error = build(PrivateKeyJwt::from_pem(p521.serialize_pem()).unwrap()).unwrap_err();
    assert_eq!(
        tower_oauth2::Error::from(error.clone()).kind(),
        ErrorKind::Config
    );
    assert!(error.to_string().contains("P-256, P-384"), "{error}");

    let error = PrivateKeyJwt::from_pem(&ec.private_pem)
        .unwrap()
        .certificate_pem("not a certificate")
        .unwrap_err();
    assert!(error.to_string().contains("BEGIN CERTIFICATE"), "{error}");
}

#[test]
fn conflicting_client_authentication_is_a_build_error() {
    let key = || PrivateKeyJwt::from_pem(keys::p256_pkcs8().private_pem).unwrap();
    let builder = || {
        ClientCredentials::builder()
            .token_url("https://idp.example.com/token")
            .client_id(CLIENT_ID)
    };
    let cases = [
        (
            builder().private_key_jwt(key()).client_secret("s"),
            "either a client secret or private_key_jwt",
        ),
        (
            builder().private_key_jwt(key()).client_secret_jwt(),
            "either private_key_jwt or client_secret_jwt",
        ),
        (builder().client_secret_jwt(), "call .client_secret"),
        (
            builder().client_secret("short").client_secret_jwt(),
            "32 bytes",
        ),
        (
            builder()
                .private_key_jwt(key())
                .auth_style(tower_oauth2::client_auth::AuthStyle::Json),
            "form body",
        ),
        (
            builder()
                .private_key_jwt(key())
                .param("client_assertion", "a-static-one"),
            "clashes with the client assertion this client signs",
        ),
        (
            builder()
                .private_key_jwt(key())
                .auth_style(tower_oauth2::client_auth::AuthStyle::Form),
            "this client sends none",
        ),
        (
            builder().client_auth(tower_oauth2::ClientAuth::private_key_jwt(CLIENT_ID, key())),
            "either .client_auth(..) or the shorthands",
        ),
    ];
    for (builder, expected) in cases {
        let error = builder.build().unwrap_err();
        assert_eq!(
            tower_oauth2::Error::from(error.clone()).kind(),
            ErrorKind::Config
        );
        assert!(
            error.to_string().contains(expected),
            "{expected:?} in {error}"
        );
    }
}

#[tokio::test]
async fn with_discovery_the_assertion_is_for_the_discovered_token_endpoint() {
    let key = keys::p384_sec1();
    let idp = Idp::start(Verifier::PublicKey {
        pem: key.public_pem.clone(),
        alg: key.alg,
    })
    .await;
    let credentials = ClientCredentials::builder()
        .issuer(format!("http://{}", idp.server.addr()))
        .client_id(CLIENT_ID)
        .private_key_jwt(PrivateKeyJwt::from_pem(&key.private_pem).unwrap())
        .build()
        .unwrap();
    credentials.fetch_uncached().await.unwrap();
    assert_eq!(idp.accepted()[0].claims["aud"], idp.server.url());

    // A client authenticating with its secret is told the endpoint wants something else,
    // before any token request.
    let requests = idp.server.requests();
    let error = ClientCredentials::builder()
        .issuer(format!("http://{}", idp.server.addr()))
        .client_id(CLIENT_ID)
        .client_secret("a-secret")
        .build()
        .unwrap()
        .fetch_uncached()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Config, "{error}");
    let message = error.to_string();
    assert!(
        message.contains("does not support client_secret_basic")
            && message.contains("private_key_jwt, client_secret_jwt"),
        "{message}"
    );
    let token_requests = idp.server.received()[requests..]
        .iter()
        .filter(|request| request.uri.path() == "/oauth/token")
        .count();
    assert_eq!(token_requests, 0, "no credential sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_fetches_each_carry_their_own_assertion() {
    let key = keys::p384_pkcs8();
    let idp = Idp::start(Verifier::PublicKey {
        pem: key.public_pem.clone(),
        alg: key.alg,
    })
    .await;
    let credentials = private_key_client(&idp, PrivateKeyJwt::from_pem(&key.private_pem).unwrap());
    let fetches: Vec<_> = (0..1000)
        .map(|_| {
            let credentials = credentials.clone();
            tokio::spawn(async move { credentials.fetch_uncached().await })
        })
        .collect();
    for fetch in fetches {
        fetch
            .await
            .unwrap()
            .expect("every assertion verifies, no jti repeats");
    }
    assert_eq!(idp.accepted().len(), 1000);
}

#[tokio::test]
async fn odd_client_ids_kids_and_lifetimes_stay_exact() {
    let key = keys::ed25519();
    let client_id = "svc \"quoted\" & ünïcode/+=?";
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let log = accepted.clone();
    let server = support::scripted(move |request, _| {
        let form = request.form();
        log.lock().unwrap().push(form);
        json(
            StatusCode::OK,
            serde_json::json!({"access_token": "t", "token_type": "Bearer", "expires_in": 60}),
        )
    })
    .await;
    for lifetime in [Duration::ZERO, Duration::MAX] {
        let credentials = ClientCredentials::builder()
            .token_url(server.url())
            .client_id(client_id)
            .private_key_jwt(
                PrivateKeyJwt::from_pem(&key.private_pem)
                    .unwrap()
                    .key_id("kid \"with\" quotes ✓"),
            )
            .assertion_lifetime(lifetime)
            .build()
            .unwrap();
        credentials.fetch_uncached().await.unwrap();
    }
    let forms = accepted.lock().unwrap().clone();
    for (form, lifetime) in forms.iter().zip([1u64, u64::MAX]) {
        assert_eq!(form["client_id"], client_id);
        let mut rules = Validation::new(Algorithm::EdDSA);
        rules.validate_aud = false;
        rules.validate_exp = false;
        rules.required_spec_claims.clear();
        let decoded = jsonwebtoken::decode::<serde_json::Value>(
            &form["client_assertion"],
            &DecodingKey::from_ed_pem(key.public_pem.as_bytes()).unwrap(),
            &rules,
        )
        .unwrap();
        assert_eq!(decoded.claims["iss"], client_id);
        assert_eq!(decoded.claims["sub"], client_id);
        assert_eq!(decoded.header.kid.as_deref(), Some("kid \"with\" quotes ✓"));
        let iat = decoded.claims["iat"].as_u64().unwrap();
        let exp = decoded.claims["exp"].as_u64().unwrap();
        assert_eq!(
            exp,
            iat.saturating_add(lifetime),
            "at least 1 s, saturating"
        );
    }
}

#[test]
fn without_a_runtime_a_fetch_is_a_runtime_error() {
    let key = keys::p256_pkcs8();
    let credentials = ClientCredentials::builder()
        .token_url("http://127.0.0.1:9/oauth/token")
        .client_id(CLIENT_ID)
        .private_key_jwt(PrivateKeyJwt::from_pem(&key.private_pem).unwrap())
        .build()
        .unwrap();
    // No tokio anywhere on this thread: the first poll answers.
    let error = futures_util::FutureExt::now_or_never(credentials.fetch_uncached())
        .expect("answers at once without a runtime")
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Runtime, "{error}");
}
