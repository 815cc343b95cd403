//! The tower layer with a DPoP token: `Authorization: DPoP …` and a new proof that a verifying
//! server accepts on every request, one token request for any number of them, never the token
//! as Bearer; with credentials chosen per request and a token exchange too.

use std::collections::HashSet;

use http::Response;
use http_body_util::BodyExt;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_oauth2::client_auth::JwsAlgorithm;
use tower_oauth2::BearerAuthLayer;

use crate::support::dpop::thumbprint;

use super::*;

async fn a_hundred_requests_carry_a_hundred_proofs_and_one_token(algorithm: JwsAlgorithm) {
    let (tokens, _) = token_server(None).await;
    let resource = Resource::start(tokens.clone(), None).await;
    let key = DpopKey::generate(algorithm).unwrap();
    let credentials = credentials(&tokens, key.clone());
    let mut client = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(credentials.clone()))
        .service(http_client());
    for i in 0..100 {
        let method = if i % 2 == 0 {
            Method::GET
        } else {
            Method::POST
        };
        let url = resource.url(&format!("/things/{i}?page=2#top"));
        let response = client
            .ready()
            .await
            .unwrap()
            .call(request(method, &url))
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{:?}",
            resource.log().last()
        );
    }
    assert_eq!(tokens.requests(), 1, "one token request");
    let log = resource.log();
    let proofs: HashSet<&String> = log.iter().map(|(proof, _)| proof).collect();
    assert_eq!(proofs.len(), 100, "a new proof for every request");
    assert!(log.iter().all(|(_, refused)| refused.is_none()));

    let token = credentials.token().await.unwrap();
    assert_eq!(token.token_type(), "DPoP");
    let jkt = tokens.cnf_jkt(token.secret()).expect("a DPoP-bound token");
    assert_eq!(jkt, key.thumbprint());
    let jwk: serde_json::Value = serde_json::from_str(key.public_jwk()).unwrap();
    assert_eq!(thumbprint(&jwk).unwrap(), key.thumbprint(), "RFC 7638");
    let token_request = tokens.received().pop().unwrap();
    assert!(
        token_request.header("dpop").is_some(),
        "the token request has a proof"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_a_hundred_requests_carry_a_hundred_proofs_and_one_token() {
    a_hundred_requests_carry_a_hundred_proofs_and_one_token(JwsAlgorithm::ES256).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eddsa_a_hundred_requests_carry_a_hundred_proofs_and_one_token() {
    a_hundred_requests_carry_a_hundred_proofs_and_one_token(JwsAlgorithm::EdDSA).await;
}

/// 1,000 concurrent requests through the layer: one token request, 1,000 distinct proofs that
/// a verifying server accepts (signature, htm, htu, ath, fresh jti).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_cost_one_token_and_carry_a_thousand_valid_proofs() {
    let tokens = token_server(None).await.0;
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

#[tokio::test]
async fn a_dpop_token_is_never_sent_as_bearer() {
    let (tokens, _) = token_server(None).await;
    let credentials = credentials(&tokens, DpopKey::generate(JwsAlgorithm::ES256).unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recording = seen.clone();
    let api = tower::service_fn(move |request: Request<Full<Bytes>>| {
        let headers = request.headers().clone();
        recording.lock().unwrap().push(headers);
        async { Ok::<_, std::convert::Infallible>(Response::new(Full::<Bytes>::default())) }
    });
    let mut client = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(credentials))
        .service(api);
    for _ in 0..5 {
        client
            .ready()
            .await
            .unwrap()
            .call(request(Method::GET, "http://127.0.0.1:9/x"))
            .await
            .unwrap();
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 5);
    for headers in seen.iter() {
        let authorization = headers[AUTHORIZATION].to_str().unwrap();
        assert!(authorization.starts_with("DPoP "), "{authorization:.8}");
        assert!(headers[AUTHORIZATION].is_sensitive());
        assert!(headers.contains_key("dpop"));
    }
}

#[tokio::test]
async fn the_layers_response_body_is_untouched() {
    let (tokens, _) = token_server(None).await;
    let resource = Resource::start(tokens.clone(), None).await;
    let credentials = credentials(&tokens, DpopKey::generate(JwsAlgorithm::ES256).unwrap());
    let client = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(credentials))
        .service(http_client());
    let response = client
        .oneshot(request(Method::GET, &resource.url("/")))
        .await
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"ok");
}

#[tokio::test]
async fn credentials_chosen_per_request_keep_their_dpop_binding() {
    use tower_oauth2::cache::PerRequestCaches;
    use tower_oauth2::layer::PerRequestLayer;

    let (tokens, _) = token_server(None).await;
    let resource = Resource::start(tokens.clone(), None).await;
    let key = DpopKey::generate(JwsAlgorithm::EdDSA).unwrap();
    let base = credentials(&tokens, key.clone());
    let caches = PerRequestCaches::new(
        |request| {
            let api = request.path().trim_start_matches('/').split('/').next()?;
            ["orders", "billing"]
                .into_iter()
                .find(|known| *known == api)
        },
        move |audience| base.with_audience(audience),
    );
    let mut client = ServiceBuilder::new()
        .layer(PerRequestLayer::new(caches))
        .service(http_client());
    for path in ["/orders/1", "/billing/1", "/orders/2", "/billing/2"] {
        let response = client
            .ready()
            .await
            .unwrap()
            .call(request(Method::GET, &resource.url(path)))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{:?}", resource.log());
    }
    assert_eq!(tokens.requests(), 2, "one token per audience");
    for received in tokens.received() {
        assert!(received.header("dpop").is_some());
    }
}

#[tokio::test]
async fn a_token_exchange_binds_its_tokens_through_configure() {
    use tower_oauth2::source::StaticToken;
    use tower_oauth2::token_exchange::{TokenExchange, TokenType};

    let checker = Arc::new(ProofChecker::default());
    let verifying = checker.clone();
    let tokens = Arc::new(
        TokenServer::builder()
            .grant(
                "urn:ietf:params:oauth:grant-type:token-exchange",
                |params| params.get("subject_token").map(String::as_str) == Some("workload-token"),
            )
            .public_clients()
            .dpop_proofs(move |proof, request| {
                let htu = url_of(&request.headers, request.uri.path());
                let expect = Expect {
                    htm: "POST",
                    htu: &htu,
                    token: None,
                    nonce: None,
                };
                verifying
                    .check(proof, &expect)
                    .ok()
                    .map(|checked| checked.jkt)
            })
            .start()
            .await
            .unwrap(),
    );
    let resource = Resource::start(tokens.clone(), None).await;
    let key = DpopKey::generate(JwsAlgorithm::ES256).unwrap();
    let exchange = TokenExchange::builder()
        .token_url(tokens.url())
        .subject_token_source(StaticToken::new("workload-token"), TokenType::Jwt)
        .configure(|client| client.dpop(key.clone()))
        .build()
        .unwrap();
    let response = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(exchange))
        .service(http_client())
        .oneshot(request(Method::GET, &resource.url("/exchanged")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{:?}", resource.log());
    assert_eq!(tokens.requests(), 1);
}
