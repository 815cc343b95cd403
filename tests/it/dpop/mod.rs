//! DPoP (RFC 9449) end to end: a token endpoint and resource servers on loopback that verify
//! proofs like real ones (`support::dpop`: signature with the embedded JWK, `htm`/`htu`, `iat`
//! window, replayed `jti` refused, `ath`, nonces), and tokens bound to the key's thumbprint
//! (`cnf.jkt`, from the `TokenServer`). One file per idea:
//!
//! - `proofs`: what a proof says (htm, htu, ath, jti, its header) and that each is used once;
//! - `layer`: the tower layer sending DPoP tokens with proofs (never as Bearer);
//! - `token_endpoint`: what the client asks for and accepts at the token endpoint;
//! - `nonces`: servers' nonces at both ends, and when a retry is worth it;
//! - `keys`: keys from PEM, from a signer's public key (strict SPKI), and what never shows;
//! - `signers`: keys held elsewhere: timeouts, panics, signatures of the wrong size or key,
//!   runtimes without timers;
//! - `grpc`, `middleware`: tonic and reqwest (the method URL, UNAUTHENTICATED, redirects);
//! - `fleet` (feature `redis`), `counters` (feature `metrics`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, HOST, WWW_AUTHENTICATE};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tower_oauth2::dpop::DpopKey;
use tower_oauth2::test_util::{Received, TokenServer};
use tower_oauth2::ClientCredentials;

use crate::support::dpop::{Expect, ProofChecker};
use crate::support::{raw, serve};

#[cfg(feature = "metrics")]
mod counters;
#[cfg(feature = "redis")]
mod fleet;
mod grpc;
mod keys;
mod layer;
mod middleware;
mod nonces;
mod proofs;
mod signers;
mod token_endpoint;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// `http://host/path` of a request a server received, as the server knows its own URL.
fn url_of(headers: &http::HeaderMap, path: &str) -> String {
    let host = headers[HOST].to_str().unwrap();
    format!("http://{host}{path}")
}

/// A proof's JWS header and claims.
fn decode(proof: &str) -> (Value, Value) {
    let part = |i: usize| -> Value {
        let text = proof.split('.').nth(i).expect("a JWS has three parts");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(text).unwrap()).unwrap()
    };
    assert_eq!(proof.split('.').count(), 3, "compact JWS");
    (part(0), part(1))
}

/// A token endpoint that issues DPoP tokens to verified proofs (and asks for `nonce`, if
/// given), with the verifier it used.
pub(crate) async fn token_server(nonce: Option<&str>) -> (Arc<TokenServer>, Arc<ProofChecker>) {
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

/// A token endpoint that binds any proof's token to "jkt" without checking the proof: to see
/// what a client sends when its proof is broken.
async fn lenient_token_server() -> Arc<TokenServer> {
    Arc::new(
        TokenServer::builder()
            .dpop_proofs(|_, _| Some("jkt".into()))
            .start()
            .await
            .unwrap(),
    )
}

pub(crate) fn credentials(server: &TokenServer, key: DpopKey) -> ClientCredentials {
    ClientCredentials::builder()
        .token_url(server.url())
        .client_id("test-client")
        .client_secret("test-secret")
        .dpop(key)
        .build()
        .unwrap()
}

/// Every proof a resource server received, and why each was refused (`None`: accepted).
pub(crate) type ProofLog = Vec<(String, Option<String>)>;

/// A resource server that accepts only DPoP tokens the token server issued, with a valid
/// proof by the key each is bound to; with `nonce`, proofs must carry it.
#[derive(Clone)]
pub(crate) struct Resource {
    addr: std::net::SocketAddr,
    log: Arc<Mutex<ProofLog>>,
    pub(crate) hits: Arc<AtomicUsize>,
}

impl Resource {
    pub(crate) async fn start(tokens: Arc<TokenServer>, nonce: Option<&'static str>) -> Resource {
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

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn log(&self) -> ProofLog {
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
