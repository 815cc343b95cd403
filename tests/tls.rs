//! A token endpoint behind TLS with a private CA: refused with the system roots alone, accepted
//! once its CA is configured with `root_certificate_pem`.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tower_oauth2::{ClientCredentials, ErrorKind};

/// A private CA and a certificate for `localhost` signed by it.
struct Pki {
    ca_pem: String,
    leaf: rustls::pki_types::CertificateDer<'static>,
    leaf_key: PrivateKeyDer<'static>,
}

fn private_pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tower-oauth2 test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        leaf: leaf.der().clone(),
        leaf_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    }
}

/// An HTTPS token endpoint on loopback (HTTP/1.1 and HTTP/2 by ALPN) issuing `tls-token`.
async fn tls_token_server(pki: &Pki) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.leaf.clone()], pki.leaf_key.clone_key())
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake; nothing to serve.
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(|_request| async {
                    let body =
                        r#"{"access_token":"tls-token","token_type":"Bearer","expires_in":60}"#;
                    let mut response = http::Response::new(Full::new(Bytes::from(body)));
                    response.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, std::convert::Infallible>(response)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn builder(addr: SocketAddr) -> tower_oauth2::ClientCredentialsBuilder {
    ClientCredentials::builder()
        .token_url(format!("https://localhost:{}/oauth/token", addr.port()))
        .client_id("client")
        .client_secret("secret")
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_is_refused() {
    let pki = private_pki();
    let addr = tls_token_server(&pki).await;
    let error = builder(addr).build().unwrap().fetch().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Transport);
    assert!(
        !error.is_transient(),
        "an untrusted certificate does not fix itself: {error}"
    );
    assert!(error.to_string().contains("certificate"), "{error}");
}

#[tokio::test]
async fn a_configured_private_ca_is_trusted() {
    let pki = private_pki();
    let addr = tls_token_server(&pki).await;
    let credentials = builder(addr)
        .root_certificate_pem(pki.ca_pem.clone())
        .build()
        .unwrap();
    let token = credentials.fetch().await.unwrap();
    assert_eq!(token.secret(), "tls-token");
}

#[tokio::test]
async fn a_root_certificate_that_is_not_pem_is_a_configuration_error() {
    let error = ClientCredentials::builder()
        .token_url("https://localhost/oauth/token")
        .client_id("client")
        .client_secret("secret")
        .root_certificate_pem("not a certificate")
        .build()
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Config);
    assert!(
        error.to_string().contains("root_certificate_pem"),
        "{error}"
    );
}
