//! reqwest through `BearerAuthMiddleware`: DPoP tokens with proofs, the resource server's nonce
//! retried, and redirects (which reqwest follows with the first URL's proof) keeping the token.

use http::header::LOCATION;
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
/// server refusing replayed `jti`s refuses. The middleware compares what the proof named
/// (scheme, host, port, path), not the query, which a later middleware may add (see
/// `a_query_added_by_a_later_middleware_still_gets_the_resource_servers_nonce`): this answer
/// looks direct, and the good token is dropped. Documented on `BearerAuthMiddleware` (turn
/// redirects off for DPoP clients); kept as the limit's record.
#[ignore = "documented limit: a redirect to the proof's own path with another query looks like a direct answer (BearerAuthMiddleware: turn redirects off for DPoP clients)"]
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

/// A redirect chain that comes back to the same URL (`/a` → `/login` → `/a`) ends where the
/// proof's `htu` points: the middleware cannot tell it from a direct answer, and a server
/// refusing the replayed proof's `jti` there makes it drop a good token. Documented on
/// `BearerAuthMiddleware` (turn redirects off for DPoP clients); kept as the limit's record.
#[ignore = "documented limit: a redirect ending on the proof's own URL looks like a direct answer (BearerAuthMiddleware: turn redirects off for DPoP clients)"]
#[tokio::test]
async fn a_reqwest_redirect_chain_back_to_the_same_url_drops_a_good_dpop_token() {
    let checker = Arc::new(ProofChecker::default());
    let verifying = checker.clone();
    let tokens = Arc::new(
        TokenServer::builder()
            .dpop_proofs(move |proof, request: &Received| {
                let host = request.headers[HOST].to_str().unwrap();
                let htu = format!("http://{host}{}", request.uri.path());
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
    let resource_checker = Arc::new(ProofChecker::default());
    let hits_on_a = Arc::new(AtomicUsize::new(0));
    let validator = tokens.clone();
    let hits = hits_on_a.clone();
    let addr = serve(move |request: Request<Incoming>| {
        let (checker, tokens, hits) = (resource_checker.clone(), validator.clone(), hits.clone());
        async move {
            let headers = request.headers();
            let path = request.uri().path().to_owned();
            if path == "/login" {
                // The login step sends the client back where it came from.
                let mut response = raw(StatusCode::TEMPORARY_REDIRECT, "", "");
                response
                    .headers_mut()
                    .insert(LOCATION, "/a".parse().unwrap());
                return response;
            }
            // Like a real resource server: the proof is verified (and its `jti` remembered)
            // before the application decides anything.
            let token = headers
                .get(AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("DPoP "))
                .unwrap_or_default()
                .to_owned();
            let proof = headers
                .get("dpop")
                .map(|p| p.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let host = headers[HOST].to_str().unwrap().to_owned();
            let htu = format!("http://{host}{path}");
            let expect = Expect {
                htm: "GET",
                htu: &htu,
                token: Some(&token),
                nonce: None,
            };
            let verified = matches!(checker.check(&proof, &expect),
                Ok(checked) if tokens.cnf_jkt(&token).as_deref() == Some(checked.jkt.as_str()));
            if !verified {
                let mut response = raw(StatusCode::UNAUTHORIZED, "", "");
                response.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    "DPoP error=\"invalid_dpop_proof\"".parse().unwrap(),
                );
                return response;
            }
            if hits.fetch_add(1, Ordering::SeqCst) == 0 {
                // The first visit needs a login step first.
                let mut response = raw(StatusCode::TEMPORARY_REDIRECT, "", "");
                response
                    .headers_mut()
                    .insert(LOCATION, "/login".parse().unwrap());
                return response;
            }
            raw(StatusCode::OK, "text/plain", "ok")
        }
    })
    .await;
    let credentials = ClientCredentials::builder()
        .token_url(tokens.url())
        .client_id("test-client")
        .client_secret("test-secret")
        .dpop(DpopKey::generate(JwsAlgorithm::ES256).unwrap())
        .build()
        .unwrap();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(tower_oauth2::BearerAuthMiddleware::new(credentials))
        .build();
    let status = client
        .get(format!("http://{addr}/a"))
        .send()
        .await
        .unwrap()
        .status();
    let again = client
        .get(format!("http://{addr}/a"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(again, 200, "the token and a fresh proof are accepted");
    assert_eq!(
        tokens.requests(),
        1,
        "the redirect chain's stale proof (answered {status} from the URL the proof named) \
         dropped a good token: the middleware took it for a token rejection"
    );
}

/// A later middleware adds a query parameter (an `api-version`) after the proof was made: the
/// proof is still right (`htu` has no query), so the answer is the request's own, and the
/// resource server's nonce is remembered and retried with.
#[tokio::test]
async fn a_query_added_by_a_later_middleware_still_gets_the_resource_servers_nonce() {
    struct ApiVersion;
    #[async_trait::async_trait]
    impl reqwest_middleware::Middleware for ApiVersion {
        async fn handle(
            &self,
            mut request: reqwest::Request,
            extensions: &mut http::Extensions,
            next: reqwest_middleware::Next<'_>,
        ) -> reqwest_middleware::Result<reqwest::Response> {
            request
                .url_mut()
                .query_pairs_mut()
                .append_pair("api-version", "2024-01-01");
            next.run(request, extensions).await
        }
    }
    let (tokens, _) = crate::dpop::token_server(None).await;
    let resource = crate::dpop::Resource::start(tokens.clone(), Some("rs-nonce-21c")).await;
    let credentials =
        crate::dpop::credentials(&tokens, DpopKey::generate(JwsAlgorithm::ES256).unwrap());
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(tower_oauth2::BearerAuthMiddleware::new(credentials))
        .with(ApiVersion)
        .build();
    let mut statuses = Vec::new();
    for i in 0..3 {
        let response = client
            .get(resource.url(&format!("/items/{i}")))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(
        statuses,
        [200, 200, 200],
        "the nonce the resource server asked for was never remembered nor retried: {:?}",
        resource
            .log()
            .into_iter()
            .map(|(_, refused)| refused)
            .collect::<Vec<_>>()
    );
}
