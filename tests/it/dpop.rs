//! DPoP (RFC 9449) end to end: a token endpoint and a resource server on loopback that verify
//! proofs like real ones (`support::dpop`: signature with the embedded JWK, `htm`/`htu`, `iat`
//! window, replayed `jti` refused, `ath`, nonces), and tokens bound to the key's thumbprint
//! (`cnf.jkt`, from the `TokenServer`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{AUTHORIZATION, HOST, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::retry::RetryLayer;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_oauth2::client_auth::JwsAlgorithm;
use tower_oauth2::dpop::DpopKey;
use tower_oauth2::layer::RetryOnUnauthorized;
use tower_oauth2::test_util::{Received, TokenServer};
use tower_oauth2::{BearerAuthLayer, ClientCredentials};

use crate::support::dpop::{thumbprint, Expect, ProofChecker};
use crate::support::{raw, serve};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// `http://host/path` of a request a server received, as the server knows its own URL.
fn url_of(headers: &http::HeaderMap, path: &str) -> String {
    let host = headers[HOST].to_str().unwrap();
    format!("http://{host}{path}")
}

/// A token endpoint that issues DPoP tokens to verified proofs (and asks for `nonce`, if
/// given), with the verifier it used.
async fn token_server(nonce: Option<&str>) -> (Arc<TokenServer>, Arc<ProofChecker>) {
    let checker = Arc::new(ProofChecker::default());
    let verifying = checker.clone();
    let mut builder = TokenServer::builder().dpop_proofs(move |proof, request: &Received| {
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
    });
    if let Some(nonce) = nonce {
        builder = builder.dpop_nonce(nonce);
    }
    (Arc::new(builder.start().await.unwrap()), checker)
}

fn credentials(server: &TokenServer, key: DpopKey) -> ClientCredentials {
    ClientCredentials::builder()
        .token_url(server.url())
        .client_id("test-client")
        .client_secret("test-secret")
        .dpop(key)
        .build()
        .unwrap()
}

/// Every proof a resource server received, and why each was refused (`None`: accepted).
type ProofLog = Vec<(String, Option<String>)>;

/// A resource server that accepts only DPoP tokens the token server issued, with a valid
/// proof by the key each is bound to; with `nonce`, proofs must carry it.
#[derive(Clone)]
struct Resource {
    addr: std::net::SocketAddr,
    log: Arc<Mutex<ProofLog>>,
    hits: Arc<AtomicUsize>,
}

impl Resource {
    async fn start(tokens: Arc<TokenServer>, nonce: Option<&'static str>) -> Resource {
        let checker = Arc::new(ProofChecker::default());
        let log = Arc::new(Mutex::new(Vec::new()));
        let hits = Arc::new(AtomicUsize::new(0));
        let (logging, counting) = (log.clone(), hits.clone());
        let addr = serve(move |request: Request<Incoming>| {
            let (tokens, checker, log) = (tokens.clone(), checker.clone(), logging.clone());
            counting.fetch_add(1, Ordering::SeqCst);
            async move {
                let verdict = verify(&tokens, &checker, &request, nonce);
                let proof = request
                    .headers()
                    .get("dpop")
                    .map(|p| p.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                log.lock().unwrap().push((proof, verdict.clone().err()));
                match verdict {
                    Ok(()) => raw(StatusCode::OK, "text/plain", "ok"),
                    Err(why) if why == "use_dpop_nonce" => {
                        let mut response = raw(StatusCode::UNAUTHORIZED, "", "");
                        response.headers_mut().insert(
                            WWW_AUTHENTICATE,
                            "DPoP error=\"use_dpop_nonce\"".parse().unwrap(),
                        );
                        response
                            .headers_mut()
                            .insert("dpop-nonce", nonce.unwrap().parse().unwrap());
                        response
                    }
                    Err(_) => {
                        let mut response = raw(StatusCode::UNAUTHORIZED, "", "");
                        response.headers_mut().insert(
                            WWW_AUTHENTICATE,
                            "DPoP error=\"invalid_token\"".parse().unwrap(),
                        );
                        response
                    }
                }
            }
        })
        .await;
        Resource { addr, log, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn log(&self) -> ProofLog {
        self.log.lock().unwrap().clone()
    }
}

fn verify(
    tokens: &TokenServer,
    checker: &ProofChecker,
    request: &Request<Incoming>,
    nonce: Option<&str>,
) -> Result<(), String> {
    let headers = request.headers();
    let authorization = headers
        .get(AUTHORIZATION)
        .ok_or("no Authorization")?
        .to_str()
        .unwrap();
    let token = authorization
        .strip_prefix("DPoP ")
        .ok_or_else(|| format!("not the DPoP scheme: {authorization:.7}"))?;
    let proofs: Vec<_> = headers.get_all("dpop").iter().collect();
    let [proof] = proofs.as_slice() else {
        return Err(format!("{} DPoP headers", proofs.len()));
    };
    let htu = url_of(headers, request.uri().path());
    let expect = Expect {
        htm: request.method().as_str(),
        htu: &htu,
        token: Some(token),
        nonce,
    };
    let checked = checker.check(proof.to_str().unwrap(), &expect)?;
    if !tokens.accepts(token) {
        return Err("unknown token".into());
    }
    if tokens.cnf_jkt(token).as_deref() != Some(checked.jkt.as_str()) {
        return Err("the token is bound to another key".into());
    }
    Ok(())
}

fn request(method: Method, url: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap()
}

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
async fn the_token_endpoints_nonce_is_asked_for_once_and_then_sent() {
    let (tokens, _) = token_server(Some("server-nonce-1")).await;
    let credentials = credentials(&tokens, DpopKey::generate(JwsAlgorithm::ES256).unwrap());
    let token = credentials.token().await.unwrap();
    assert_eq!(token.token_type(), "DPoP");
    assert_eq!(
        tokens.requests(),
        2,
        "one refused for its nonce, one retried with it"
    );
    credentials.invalidate(&token);
    credentials.token().await.unwrap();
    assert_eq!(
        tokens.requests(),
        3,
        "the nonce is remembered: no second refusal"
    );
}

#[tokio::test]
async fn the_token_endpoints_nonce_is_retried_once_only() {
    // A server that wants a nonce no proof can carry: one retry, then the error.
    let tokens = TokenServer::builder()
        .dpop_proofs(|_, _| Some("jkt".into()))
        .script(|_, _| async {
            let mut response = raw(
                StatusCode::BAD_REQUEST,
                "application/json",
                r#"{"error":"use_dpop_nonce"}"#,
            );
            response
                .headers_mut()
                .insert("dpop-nonce", "always-new".parse().unwrap());
            Some(response)
        })
        .start()
        .await
        .unwrap();
    let credentials = credentials(&tokens, DpopKey::generate(JwsAlgorithm::ES256).unwrap());
    let error = credentials.fetch_uncached().await.unwrap_err();
    assert!(error.to_string().contains("use_dpop_nonce"), "{error}");
    assert_eq!(tokens.requests(), 2);
}

#[tokio::test]
async fn the_resource_servers_nonce_is_retried_once_and_keeps_the_token() {
    let (tokens, _) = token_server(None).await;
    let resource = Resource::start(tokens.clone(), Some("rs-nonce-7")).await;
    let credentials = credentials(&tokens, DpopKey::generate(JwsAlgorithm::ES256).unwrap());
    let mut client = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryOnUnauthorized::default()))
        .layer(BearerAuthLayer::new(credentials.clone()))
        .service(http_client());
    let response = client
        .ready()
        .await
        .unwrap()
        .call(request(Method::POST, &resource.url("/orders")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{:?}", resource.log());
    assert_eq!(
        resource.hits.load(Ordering::SeqCst),
        2,
        "asked for the nonce, then served"
    );
    assert_eq!(tokens.requests(), 1, "use_dpop_nonce never drops the token");

    // The nonce is remembered for this origin: the next request carries it at once.
    let response = client
        .ready()
        .await
        .unwrap()
        .call(request(Method::GET, &resource.url("/orders/1")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(resource.hits.load(Ordering::SeqCst), 3);
    assert_eq!(tokens.requests(), 1);
}

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

#[tokio::test]
async fn a_bearer_token_for_a_dpop_client_is_refused() {
    // A server without DPoP ignores the proof and issues a bearer token.
    let tokens = TokenServer::start().await.unwrap();
    let credentials = credentials(&tokens, DpopKey::generate(JwsAlgorithm::ES256).unwrap());
    let error = credentials.token().await.unwrap_err();
    assert!(error.to_string().contains("not DPoP"), "{error}");
}

#[tokio::test]
async fn a_dpop_token_for_a_client_without_a_key_is_refused() {
    let tokens = crate::support::scripted(|_, _| {
        crate::support::json(
            StatusCode::OK,
            serde_json::json!({"access_token": "t", "token_type": "DPoP", "expires_in": 60}),
        )
    })
    .await;
    let credentials = ClientCredentials::builder()
        .token_url(tokens.url())
        .client_id("test-client")
        .client_secret("test-secret")
        .build()
        .unwrap();
    let error = credentials.token().await.unwrap_err();
    assert!(error.to_string().contains(".dpop("), "{error}");
}

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

/// The fleet: a DPoP token goes through the shared cache only to processes holding its key.
#[cfg(feature = "redis")]
mod fleet {
    use super::*;
    use tower_oauth2::shared::RedisStore;
    use tower_oauth2::test_util::RedisServer;

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
}

/// The counters: tokens attached, requests replayed, nonce retries at both ends, labelled with
/// the client. A local recorder on a current-thread runtime keeps them this test's own.
#[cfg(feature = "metrics")]
#[test]
fn the_counters_count_attached_tokens_replays_and_nonce_retries() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use tower_oauth2::cache::CachePolicy;

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let (tokens, _) = token_server(Some("token-nonce")).await;
            let resource = Resource::start(tokens.clone(), Some("resource-nonce")).await;
            let credentials = ClientCredentials::builder()
                .token_url(tokens.url())
                .client_id("test-client")
                .client_secret("test-secret")
                .dpop(DpopKey::generate(JwsAlgorithm::ES256).unwrap())
                .cache_policy(CachePolicy::default().name("dpop-metrics"))
                .build()
                .unwrap();
            let mut client = ServiceBuilder::new()
                .layer(RetryLayer::new(RetryOnUnauthorized::default()))
                .layer(BearerAuthLayer::new(credentials))
                .service(http_client());
            for _ in 0..3 {
                let response = client
                    .ready()
                    .await
                    .unwrap()
                    .call(request(Method::GET, &resource.url("/counted")))
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::OK);
            }
        })
    });
    // Reading drains the counters: read once.
    let recorded = snapshotter.snapshot().into_vec();
    let counted = |name: &str, endpoint: Option<&str>| -> u64 {
        recorded
            .iter()
            .filter(|(key, ..)| {
                let labels: Vec<(String, String)> = key
                    .key()
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                key.key().name() == name
                    && labels.contains(&("client".into(), "dpop-metrics".into()))
                    && endpoint.is_none_or(|e| labels.contains(&("endpoint".into(), e.into())))
            })
            .map(|(.., value)| match value {
                DebugValue::Counter(count) => *count,
                other => panic!("{name} is a {other:?}"),
            })
            .sum()
    };
    assert_eq!(counted("tower_oauth2_tokens_attached_total", None), 4);
    assert_eq!(counted("tower_oauth2_requests_replayed_total", None), 1);
    assert_eq!(
        counted("tower_oauth2_dpop_nonce_retries_total", Some("token")),
        1
    );
    assert_eq!(
        counted("tower_oauth2_dpop_nonce_retries_total", Some("resource")),
        1
    );
}

/// tonic: the proof names the gRPC method URL; a client made with `with_origin` sends it.
mod grpc {
    use super::*;
    use tonic::service::interceptor::InterceptedService;
    use tonic::transport::server::TcpIncoming;
    use tonic::transport::{Endpoint, Server};
    use tonic::Status;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    /// A gRPC health server on loopback that verifies each call's DPoP proof for the method
    /// URL `http://addr/grpc.health.v1.Health/Check` and the token's binding.
    async fn grpc_server(tokens: Arc<TokenServer>) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let checker = Arc::new(ProofChecker::default());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counting = accepted.clone();
        let htu = format!("http://{addr}/grpc.health.v1.Health/Check");
        let (_reporter, health) = tonic_health::server::health_reporter();
        let check = move |request: tonic::Request<()>| {
            let metadata = request.metadata();
            let text = |name: &str| {
                metadata
                    .get(name)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            let authorization = text("authorization");
            let token = authorization
                .strip_prefix("DPoP ")
                .ok_or_else(|| Status::unauthenticated("not DPoP"))?;
            let expect = Expect {
                htm: "POST",
                htu: &htu,
                token: Some(token),
                nonce: None,
            };
            let checked = checker
                .check(&text("dpop"), &expect)
                .map_err(Status::unauthenticated)?;
            if tokens.cnf_jkt(token).as_deref() != Some(checked.jkt.as_str()) {
                return Err(Status::unauthenticated("bound to another key"));
            }
            counting.fetch_add(1, Ordering::SeqCst);
            Ok(request)
        };
        tokio::spawn(
            Server::builder()
                .add_service(InterceptedService::new(health, check))
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        (addr, accepted)
    }

    #[tokio::test]
    async fn a_tonic_client_with_an_origin_sends_a_proof_for_the_method_url() {
        let (tokens, _) = token_server(None).await;
        let (addr, accepted) = grpc_server(tokens.clone()).await;
        let credentials = credentials(&tokens, DpopKey::generate(JwsAlgorithm::ES256).unwrap());
        let origin = format!("http://{addr}");
        let channel = Endpoint::from_shared(origin.clone())
            .unwrap()
            .connect_lazy();
        let service = ServiceBuilder::new()
            .layer(BearerAuthLayer::new(credentials.clone()))
            .service(channel);
        let mut client = HealthClient::with_origin(service.clone(), origin.parse().unwrap());
        for _ in 0..3 {
            client
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .unwrap();
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        assert_eq!(tokens.requests(), 1);

        // Without an origin the request's URI is the path alone, which no proof can name.
        let status = HealthClient::new(service)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap_err();
        assert!(status.message().contains("with_origin"), "{status:?}");
    }
}

/// A key held elsewhere: a KMS-like signer answering with DER signatures, and one that panics.
mod remote {
    use super::*;
    use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
    use tower_oauth2::client_auth::{SignFuture, Signer};

    struct Kms {
        key: EcdsaKeyPair,
        panics: bool,
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
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &pair.serialize_der())
            .unwrap();
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

    #[test]
    fn a_public_key_that_is_not_the_signers_kind_is_refused() {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &p256.serialize_der())
            .unwrap();
        let error =
            DpopKey::from_signer(Kms { key, panics: false }, pair.public_key_pem()).unwrap_err();
        assert!(error.to_string().contains("EdDSA"), "{error}");
    }
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
async fn a_refused_proof_is_an_error_saying_what_to_check() {
    let tokens = TokenServer::builder()
        .dpop_proofs(|_, _| None)
        .start()
        .await
        .unwrap();
    let credentials = credentials(&tokens, DpopKey::generate(JwsAlgorithm::ES256).unwrap());
    let error = credentials.token().await.unwrap_err();
    let shown = error.to_string();
    assert!(shown.contains("invalid_dpop_proof"), "{shown}");
    assert!(shown.contains("algorithm"), "{shown}");
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
