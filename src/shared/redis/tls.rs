//! `rediss://` through the crate's own rustls: the crypto provider and roots the token client
//! uses (`crate::crypto::provider`, the `native-roots`/`webpki-roots` features), so that Redis
//! over TLS brings no second TLS or crypto library (the redis crate's `tls-rustls` would build
//! its config with `ClientConfig::builder()`, which panics when two providers are compiled and
//! none is installed, and always loads the system's roots).

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::connection::Failure;
use crate::error::BoxError;
use crate::transport::ClientIdentity;
use crate::ConfigError;

/// What a TLS connection to Redis trusts and presents.
#[derive(Clone)]
pub(super) struct Tls {
    extra_roots_pem: Vec<Vec<u8>>,
    identity: Option<ClientIdentity>,
    config: Arc<rustls::ClientConfig>,
}

impl Tls {
    /// The built-in roots, no client certificate.
    pub(super) fn new() -> Result<Self, ConfigError> {
        let config = client_config(&[], None)?;
        Ok(Tls {
            extra_roots_pem: Vec::new(),
            identity: None,
            config,
        })
    }

    /// Also trust the certificates in `pem`; refused if it holds none.
    pub(super) fn add_root(&mut self, pem: Vec<u8>) -> Result<(), ConfigError> {
        let mut roots = self.extra_roots_pem.clone();
        roots.push(pem);
        self.config = client_config(&roots, self.identity.as_ref())?;
        self.extra_roots_pem = roots;
        Ok(())
    }

    /// Present `identity` to servers that ask for a client certificate.
    pub(super) fn set_identity(&mut self, identity: ClientIdentity) -> Result<(), ConfigError> {
        self.config = client_config(&self.extra_roots_pem, Some(&identity))?;
        self.identity = Some(identity);
        Ok(())
    }

    /// A TLS connection to `host:port`. A failed handshake's error names the likely cause.
    pub(super) async fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> Result<TlsStream<TcpStream>, BoxError> {
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|_| format!("Redis host {host:?} is not a valid TLS server name"))?;
        let stream = TcpStream::connect((host, port)).await?;
        stream.set_nodelay(true)?;
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, stream)
            .await
            .map_err(|error| handshake_error(host, port, error))
    }
}

/// A failed handshake, saying what to check: the CA for a certificate the client refused, the
/// client certificate for an alert the server sent.
fn handshake_error(host: &str, port: u16, error: std::io::Error) -> BoxError {
    let rustls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let (cause, hint) = match rustls_error {
        Some(rustls::Error::InvalidCertificate(_)) => (
            "certificate",
            "Redis's certificate is not trusted: RedisStore::root_certificate_pem",
        ),
        Some(rustls::Error::AlertReceived(_)) => (
            "certificate",
            "Redis refused ours: RedisStore::client_certificate_pem",
        ),
        _ => ("tls", "check that the port speaks TLS"),
    };
    Box::new(Failure {
        cause,
        message: format!("TLS handshake with Redis at {host}:{port} failed ({hint}): {error}"),
    })
}

fn client_config(
    extra_roots_pem: &[Vec<u8>],
    identity: Option<&ClientIdentity>,
) -> Result<Arc<rustls::ClientConfig>, ConfigError> {
    let roots = crate::transport::root_certificates(extra_roots_pem)?;
    let builder = rustls::ClientConfig::builder_with_provider(crate::crypto::provider()?)
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            ConfigError::new(
                "rustls::crypto::CryptoProvider",
                format!("TLS setup failed: {e}"),
            )
        })?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(identity) => {
            let (chain, key) = identity.parse()?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                ConfigError::new(
                    "RedisStore::client_certificate_pem",
                    format!(
                        "RedisStore::client_certificate_pem: the certificate and key do not form \
                         a TLS client identity: {e}"
                    ),
                )
            })?
        }
    };
    Ok(Arc::new(config))
}
