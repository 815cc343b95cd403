//! A token endpoint behind TLS with a private CA: refused with the system roots alone, accepted
//! once its CA is configured with `root_certificate_pem`.

use std::net::SocketAddr;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tower_oauth2::{ClientCredentials, ErrorKind};

use crate::support::tls;

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
    let config = tls::server_config(vec![pki.leaf.clone()], pki.leaf_key.clone_key(), None);
    tls::serve_tls(config, |_, _| async { tls::token_response("tls-token") }).await
}

fn builder(addr: SocketAddr) -> tower_oauth2::client_credentials::ClientCredentialsBuilder {
    ClientCredentials::builder()
        .token_url(format!("https://localhost:{}/oauth/token", addr.port()))
        .client_id("client")
        .client_secret("secret")
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_is_refused() {
    let pki = private_pki();
    let addr = tls_token_server(&pki).await;
    let error = builder(addr)
        .build()
        .unwrap()
        .fetch_uncached()
        .await
        .unwrap_err();
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
    let token = credentials.fetch_uncached().await.unwrap();
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
    assert_eq!(
        tower_oauth2::Error::from(error.clone()).kind(),
        ErrorKind::Config
    );
    assert!(
        error.to_string().contains("root_certificate_pem"),
        "{error}"
    );
}
