//! reqwest through `BearerAuthMiddleware`: DPoP tokens with proofs, the resource server's nonce
//! retried, and redirects (which reqwest follows with the first URL's proof) keeping the token.

use tower_oauth2::client_auth::JwsAlgorithm;

use super::*;

#[tokio::test]
async fn reqwest_sends_dpop_and_retries_the_resource_servers_nonce() {
    let (tokens, _) = token_server(None).await;
    let resource = Resource::start(tokens.clone(), Some("rs-nonce-8")).await;
    let credentials = credentials(&tokens, DpopKey::generate(JwsAlgorithm::EdDSA).unwrap());
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(tower_oauth2::BearerAuthMiddleware::new(credentials))
        .build();
    for i in 0..3 {
        let response = client
            .post(resource.url(&format!("/items/{i}?q=1")))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{:?}", resource.log());
    }
    assert_eq!(
        resource.hits.load(Ordering::SeqCst),
        4,
        "one nonce retry, then none"
    );
    assert_eq!(tokens.requests(), 1);
}

/// reqwest follows redirects inside the middleware's `next.run`: on a same-origin redirect it
/// sends `Authorization: DPoP …` again with the *first* URL's proof (`DPoP` is not a header
/// reqwest strips), which a verifying server refuses (htu names the old URL). The middleware
/// cannot sign for the new URL, but it sees the response came from another URL than the proof
/// named, so that `401` keeps the token (it once dropped it: every redirect cost a token). With
/// redirects off, as the docs advise, the caller follows them with a proof each.
#[tokio::test]
async fn a_reqwest_redirect_with_a_stale_proof_keeps_the_token() {
    let tokens = token_server(None).await.0;
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

/// A redirect reqwest follows to the same path with another query (`/page?step=1` to
/// `?step=2`: pagination, a login step) carries the first request's proof again, which a
/// server refusing replayed `jti`s refuses: the middleware compares the whole URL, so that
/// `401` keeps the token, as for a redirect to another path (repro: only `htu` was compared,
/// and the good token was dropped).
#[tokio::test]
async fn a_reqwest_redirect_to_the_same_path_with_another_query_keeps_the_token() {
    let tokens = token_server(None).await.0;
    let checker = Arc::new(ProofChecker::default());
    let validator = tokens.clone();
    let addr = serve(move |request: Request<Incoming>| {
        let (checker, tokens) = (checker.clone(), validator.clone());
        async move {
            let headers = request.headers();
            let token = headers
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("DPoP "))
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
                    if request.uri().query() == Some("step=1") {
                        let mut response = raw(StatusCode::FOUND, "", "");
                        response
                            .headers_mut()
                            .insert(http::header::LOCATION, "/page?step=2".parse().unwrap());
                        return response;
                    }
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
    let redirected = client
        .get(format!("http://{addr}/page?step=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(redirected.status(), 401, "the replayed proof is refused");
    let direct = client
        .get(format!("http://{addr}/page?step=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 200);
    assert_eq!(
        tokens.requests(),
        1,
        "a proof replayed by reqwest's redirect was taken for a rejected token"
    );
}
