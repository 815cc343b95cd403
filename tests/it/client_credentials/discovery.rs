//! The token endpoint found from the issuer's metadata (RFC 8414, then OpenID Connect
//! Discovery), over real HTTP: where it is looked for, that it is kept, and that metadata for
//! another issuer is refused before any credential is sent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::support::{self, json, raw};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use tower_oauth2::{ClientCredentials, ErrorKind};

/// An identity provider on loopback: `metadata(addr)` per well-known path (None: 404), a token
/// endpoint at `/oauth/token`; counts requests by path.
struct Idp {
    addr: SocketAddr,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl Idp {
    async fn start(
        metadata: impl Fn(&str, SocketAddr) -> Option<serde_json::Value> + Send + Sync + 'static,
    ) -> Idp {
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let metadata = Arc::new(metadata);
        let addr_cell: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let addr = {
            let (hits, metadata, addr_cell) = (hits.clone(), metadata.clone(), addr_cell.clone());
            support::serve(move |request: Request<Incoming>| {
                let (hits, metadata, addr_cell) =
                    (hits.clone(), metadata.clone(), addr_cell.clone());
                async move {
                    let path = request.uri().path().to_owned();
                    *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
                    let addr = addr_cell.lock().unwrap().expect("address known");
                    if path.ends_with("/oauth/token") {
                        return json(
                            StatusCode::OK,
                            serde_json::json!({
                                "access_token": "discovered-token",
                                "token_type": "Bearer",
                                "expires_in": 3600,
                            }),
                        );
                    }
                    match metadata(&path, addr) {
                        Some(document) => json(StatusCode::OK, document),
                        None => raw(StatusCode::NOT_FOUND, "text/plain", "not found"),
                    }
                }
            })
            .await
        };
        *addr_cell.lock().unwrap() = Some(addr);
        Idp { addr, hits }
    }

    fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    fn credentials(&self, issuer: String) -> ClientCredentials {
        ClientCredentials::builder()
            .issuer(issuer)
            .client_id("client-1")
            .client_secret("d1sc0very-secret")
            .build()
            .unwrap()
    }
}

fn metadata(issuer: &str, token_endpoint: String) -> serde_json::Value {
    serde_json::json!({ "issuer": issuer, "token_endpoint": token_endpoint })
}

#[tokio::test]
async fn the_token_endpoint_comes_from_rfc_8414_metadata_once() {
    let idp = Idp::start(|path, addr| {
        (path == "/.well-known/oauth-authorization-server").then(|| {
            metadata(
                &format!("http://{addr}"),
                format!("http://{addr}/oauth/token"),
            )
        })
    })
    .await;
    let credentials = idp.credentials(idp.issuer());

    for _ in 0..3 {
        assert_eq!(
            credentials.fetch_uncached().await.unwrap().secret(),
            "discovered-token"
        );
    }
    assert_eq!(
        idp.hits("/.well-known/oauth-authorization-server"),
        1,
        "kept"
    );
    assert_eq!(idp.hits("/oauth/token"), 3);
}

#[tokio::test]
async fn without_rfc_8414_metadata_openid_configuration_is_used() {
    let idp = Idp::start(|path, addr| {
        (path == "/tenant/.well-known/openid-configuration").then(|| {
            metadata(
                &format!("http://{addr}/tenant"),
                format!("http://{addr}/tenant/oauth/token"),
            )
        })
    })
    .await;
    let credentials = idp.credentials(format!("{}/tenant", idp.issuer()));

    assert_eq!(
        credentials.fetch_uncached().await.unwrap().secret(),
        "discovered-token"
    );
    assert_eq!(
        idp.hits("/.well-known/oauth-authorization-server/tenant"),
        1,
        "RFC 8414 first, with the well-known segment before the path"
    );
    assert_eq!(idp.hits("/tenant/.well-known/openid-configuration"), 1);
    assert_eq!(idp.hits("/tenant/oauth/token"), 1);
}

#[tokio::test]
async fn metadata_for_another_issuer_is_refused_before_any_credential_is_sent() {
    let idp = Idp::start(|path, addr| {
        (path == "/.well-known/oauth-authorization-server").then(|| {
            metadata(
                "https://attacker.example",
                format!("http://{addr}/oauth/token"),
            )
        })
    })
    .await;
    let credentials = idp.credentials(idp.issuer());

    let error = credentials.fetch_uncached().await.unwrap_err();

    assert_eq!(error.kind(), ErrorKind::InvalidResponse);
    let message = error.to_string();
    assert!(message.contains("attacker.example"), "{message}");
    assert!(message.contains("RFC 8414"), "{message}");
    assert!(!message.contains("d1sc0very-secret"));
    assert_eq!(idp.hits("/oauth/token"), 0, "no credential sent");
}

#[tokio::test]
async fn a_plain_http_token_endpoint_elsewhere_is_refused() {
    let idp = Idp::start(|path, addr| {
        (path == "/.well-known/oauth-authorization-server").then(|| {
            metadata(
                &format!("http://{addr}"),
                "http://idp.example.com/oauth/token".to_owned(),
            )
        })
    })
    .await;
    let error = idp
        .credentials(idp.issuer())
        .fetch_uncached()
        .await
        .unwrap_err();
    assert!(error.to_string().contains("plain http"), "{error}");
}

#[tokio::test]
async fn no_metadata_anywhere_says_so_and_a_failure_is_not_kept() {
    let serve = Arc::new(Mutex::new(false));
    let switch = serve.clone();
    let idp = Idp::start(move |path, addr| {
        (*switch.lock().unwrap() && path == "/.well-known/openid-configuration").then(|| {
            metadata(
                &format!("http://{addr}"),
                format!("http://{addr}/oauth/token"),
            )
        })
    })
    .await;
    let credentials = idp.credentials(idp.issuer());

    let error = credentials.fetch_uncached().await.unwrap_err();
    assert!(error.to_string().contains("no metadata"), "{error}");
    assert!(error.hint().is_some_and(|hint| hint.contains("token_url")));

    *serve.lock().unwrap() = true;
    assert_eq!(
        credentials.fetch_uncached().await.unwrap().secret(),
        "discovered-token",
        "tried again"
    );
}

#[test]
fn build_refuses_both_a_token_url_and_an_issuer() {
    let error = ClientCredentials::builder()
        .token_url("https://idp.example.com/oauth/token")
        .issuer("https://idp.example.com")
        .client_id("client-1")
        .client_secret("secret")
        .build()
        .unwrap_err();
    assert_eq!(
        tower_oauth2::Error::from(error.clone()).kind(),
        ErrorKind::Config
    );
    assert!(error.to_string().contains("not both"), "{error}");
}
