//! Mutual-TLS client authentication (RFC 8705 §2): the client certificate on the TLS
//! connection to a token endpoint that requires one, and only `client_id` in the body.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::BodyExt;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tower_oauth2::{ClientCredentials, ErrorKind};

use crate::support::tls;

/// A CA, a server certificate for `localhost` and a client certificate, all PEM or DER.
struct Pki {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    server: (CertificateDer<'static>, PrivateKeyDer<'static>),
    client_pem: String,
    client_key_pem: String,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "mtls test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(DnType::CommonName, "client-1");
    let client = client_params.signed_by(&client_key, &issuer).unwrap();
    Pki {
        ca_pem: ca.pem(),
        ca_der: ca.der().clone(),
        server: (
            server.der().clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        ),
        client_pem: client.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

/// What the token endpoint saw of a request: whether a client certificate came with it, the
/// `Authorization` header, and the body.
#[derive(Debug, Clone, Default)]
struct Seen {
    client_certificate: bool,
    authorization: Option<String>,
    body: String,
}

/// An HTTPS token endpoint that requires a client certificate from the test CA.
async fn mtls_token_server(pki: &Pki) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let config = tls::server_config(
        vec![pki.server.0.clone()],
        pki.server.1.clone_key(),
        Some(roots),
    );
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let record = seen.clone();
    let addr = tls::serve_tls(config, move |request, client_certificate| {
        let record = record.clone();
        async move {
            let authorization = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.to_str().unwrap().to_owned());
            let body = request.into_body().collect().await.unwrap().to_bytes();
            record.lock().unwrap().push(Seen {
                client_certificate,
                authorization,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
            tls::token_response("mtls-token")
        }
    })
    .await;
    (addr, seen)
}

fn url(addr: SocketAddr) -> String {
    format!("https://localhost:{}/oauth/token", addr.port())
}

#[tokio::test]
async fn the_client_certificate_authenticates_and_the_body_has_only_the_client_id() {
    let pki = pki();
    let (addr, seen) = mtls_token_server(&pki).await;
    let credentials = ClientCredentials::builder()
        .token_url(url(addr))
        .client_id("client-1")
        .tls_client_auth(pki.client_pem.clone(), pki.client_key_pem.clone())
        .root_certificate_pem(pki.ca_pem.clone())
        .build()
        .unwrap();

    assert_eq!(credentials.token().await.unwrap().secret(), "mtls-token");

    let seen = seen.lock().unwrap()[0].clone();
    assert!(seen.client_certificate);
    assert_eq!(seen.authorization, None, "no Basic header");
    let form: Vec<(String, String)> = form_urlencoded::parse(seen.body.as_bytes())
        .into_owned()
        .collect();
    assert_eq!(
        form,
        [
            ("grant_type".to_owned(), "client_credentials".to_owned()),
            ("client_id".to_owned(), "client-1".to_owned()),
        ]
    );
    assert!(!format!("{credentials:?}").contains("PRIVATE KEY"));
}

#[tokio::test]
async fn without_a_client_certificate_the_handshake_is_refused() {
    let pki = pki();
    let (addr, seen) = mtls_token_server(&pki).await;
    let credentials = ClientCredentials::builder()
        .token_url(url(addr))
        .client_id("client-1")
        .client_secret("a-secret")
        .root_certificate_pem(pki.ca_pem.clone())
        .build()
        .unwrap();

    let error = credentials.fetch_uncached().await.unwrap_err();

    assert_eq!(error.kind(), ErrorKind::Transport, "{error}");
    assert!(seen.lock().unwrap().is_empty());
}

#[test]
fn a_certificate_and_a_secret_or_an_unusable_key_are_configuration_errors() {
    let pki = pki();
    let builder = || {
        ClientCredentials::builder()
            .token_url("https://localhost/oauth/token")
            .client_id("client-1")
    };
    let both = builder()
        .client_secret("a-secret")
        .tls_client_auth(pki.client_pem.clone(), pki.client_key_pem.clone())
        .build()
        .unwrap_err();
    assert!(both.to_string().contains("not both"), "{both}");

    let no_key = builder()
        .tls_client_auth(pki.client_pem.clone(), "not a key")
        .build()
        .unwrap_err();
    assert_eq!(
        tower_oauth2::Error::from(no_key.clone()).kind(),
        ErrorKind::Config
    );
    assert!(no_key.to_string().contains("private key"), "{no_key}");

    let no_chain = builder()
        .tls_client_auth("", pki.client_key_pem.clone())
        .build()
        .unwrap_err();
    assert!(no_chain.to_string().contains("CERTIFICATE"), "{no_chain}");
    for error in [both, no_key, no_chain] {
        assert!(!format!("{error} {error:?}").contains("PRIVATE KEY"));
    }
}
