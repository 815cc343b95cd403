//! What a proof says and how it is used: `htm` and `htu` (normalised as RFC 9449 §4.3 and
//! servers compare them), the JWS header and `ath` for every algorithm, a `jti` never repeated,
//! and a proof for one request never accepted for another.

use std::collections::HashSet;

use http::Response;
use http::Uri;
use tower::{ServiceBuilder, ServiceExt};
use tower_oauth2::client_auth::JwsAlgorithm;
use tower_oauth2::BearerAuthLayer;

use crate::support::dpop::sha256_b64;

use super::*;

/// `htu`: scheme and host lowercased, userinfo, query, fragment and default ports dropped,
/// IPv6 literals kept bracketed, an empty path as `/`; `htm` as given for extension methods.
#[tokio::test]
async fn htu_and_htm_are_normalised_for_awkward_urls() {
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
async fn every_algorithms_proof_has_the_header_and_ath_servers_expect() {
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
fn ten_thousand_proofs_from_four_threads_have_distinct_jtis() {
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

#[tokio::test]
async fn a_proof_for_post_a_is_refused_at_get_b_and_when_replayed() {
    let (tokens, _) = token_server(None).await;
    let resource = Resource::start(tokens.clone(), None).await;
    let credentials = credentials(&tokens, DpopKey::generate(JwsAlgorithm::ES256).unwrap());
    let client = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(credentials.clone()))
        .service(http_client());
    let response = client
        .oneshot(request(Method::POST, &resource.url("/a")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (proof, _) = resource.log().pop().unwrap();
    let token = credentials.token().await.unwrap();

    let replay = |method: Method, path: &str| {
        let mut replayed = request(method, &resource.url(path));
        replayed.headers_mut().insert(
            AUTHORIZATION,
            format!("DPoP {}", token.secret()).parse().unwrap(),
        );
        replayed
            .headers_mut()
            .insert("dpop", proof.parse().unwrap());
        http_client().request(replayed)
    };
    let at_b = replay(Method::GET, "/b").await.unwrap();
    assert_eq!(at_b.status(), StatusCode::UNAUTHORIZED);
    let refused = resource.log().pop().unwrap().1.unwrap();
    assert!(refused.starts_with("htm"), "{refused}");
    let again = replay(Method::POST, "/a").await.unwrap();
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resource.log().pop().unwrap().1.unwrap(), "replayed jti");
}

#[tokio::test]
async fn a_request_without_a_full_url_fails_saying_what_to_do() {
    let (tokens, _) = token_server(None).await;
    let credentials = credentials(&tokens, DpopKey::generate(JwsAlgorithm::ES256).unwrap());
    let api = tower::service_fn(|_: Request<Full<Bytes>>| async {
        Ok::<_, std::convert::Infallible>(Response::new(Full::<Bytes>::default()))
    });
    let client = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(credentials))
        .service(api);
    let error = client
        .oneshot(request(Method::POST, "/pkg.Service/Method"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("with_origin"), "{error}");
}
