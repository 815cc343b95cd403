//! The HTTP client that talks to the token endpoint: hyper-util with rustls by default, or any
//! tower service the user hands in. Bounded reads; redirects are never followed.

pub(crate) mod proxy;
pub(crate) mod url_rules;

use bytes::Bytes;
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};
use zeroize::Zeroizing;

use crate::error::BoxError;
use crate::{ConfigError, Error};
use proxy::{ProxyConfig, ProxyConnector};

/// The request type a custom token-endpoint client must accept.
pub type TokenRequest = http::Request<Full<Bytes>>;

pub(crate) type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// A type-erased, cloneable HTTP client.
pub(crate) type HttpClient =
    BoxCloneSyncService<TokenRequest, http::Response<ResponseBody>, BoxError>;

/// Erase a user's client to [`HttpClient`].
pub(crate) fn boxed<S, B>(client: S) -> HttpClient
where
    S: Service<TokenRequest, Response = http::Response<B>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    BoxCloneSyncService::new(
        client
            .map_response(|response: http::Response<B>| {
                response.map(|body| body.map_err(Into::into).boxed_unsync())
            })
            .map_err(Into::into),
    )
}

/// Send `request` and read the whole response within `limit` bytes.
pub(crate) async fn send(
    client: &HttpClient,
    request: TokenRequest,
    limit: usize,
) -> Result<(http::response::Parts, Result<WholeBody, BodyTooLarge>), Error> {
    let response = client
        .clone()
        .oneshot(request)
        .await
        .map_err(Error::transport)?;
    let (parts, body) = response.into_parts();
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Ok((parts, Err(BodyTooLarge)));
    }
    let body = read_limited(body, limit).await?;
    Ok((parts, body))
}

/// The response body was longer than the configured limit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyTooLarge;

/// A whole response body: it may hold a token, so it is wiped when dropped.
pub(crate) type WholeBody = Zeroizing<Vec<u8>>;

async fn read_limited(
    mut body: ResponseBody,
    limit: usize,
) -> Result<Result<WholeBody, BodyTooLarge>, Error> {
    // The frames are the HTTP client's; ours is one copy, allocated once at its final size (a
    // growing buffer would free partial copies of the token unwiped).
    let mut frames = Vec::new();
    let mut length = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Error::transport)?;
        if let Ok(data) = frame.into_data() {
            if length + data.len() > limit {
                return Ok(Err(BodyTooLarge));
            }
            length += data.len();
            frames.push(data);
        }
    }
    let parts: Vec<&[u8]> = frames.iter().map(|frame| frame.as_ref()).collect();
    Ok(Ok(crate::wiped::concat(&parts)))
}

/// The built-in client: hyper-util's client, HTTP/1.1 and HTTP/2, rustls with the roots the
/// features choose plus `extra_roots` (PEM).
#[cfg(feature = "rustls-no-provider")]
pub(crate) fn default_client(
    extra_roots_pem: &[Vec<u8>],
    proxy: &ProxyConfig,
    identity: Option<&ClientIdentity>,
) -> Result<HttpClient, ConfigError> {
    let roots = root_certificates(extra_roots_pem)?;
    let tls = rustls::ClientConfig::builder_with_provider(crate::crypto::provider()?)
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            ConfigError::new(
                "rustls::crypto::CryptoProvider",
                format!("TLS setup failed: {e}"),
            )
        })?
        .with_root_certificates(roots);
    let tls = match identity {
        None => tls.with_no_client_auth(),
        Some(identity) => {
            let (chain, key) = identity.parse()?;
            tls.with_client_auth_cert(chain, key).map_err(|e| {
                ConfigError::new(
                    "tls_client_auth",
                    format!(
                        "tls_client_auth: the certificate and key do not form a TLS client \
                     identity: {e}"
                    ),
                )
            })?
        }
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(ProxyConnector::new(proxy)?);
    Ok(boxed(hyper_client(connector)))
}

/// A TLS client certificate chain and its private key (PEM), for mutual-TLS client
/// authentication (RFC 8705).
#[derive(Clone)]
// Without rustls, `build()` refuses an identity before anything reads it.
#[cfg_attr(not(feature = "rustls-no-provider"), allow(dead_code))]
pub(crate) struct ClientIdentity {
    pub(crate) chain_pem: Vec<u8>,
    pub(crate) key_pem: zeroize::Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientIdentity { .. }")
    }
}

impl ClientIdentity {
    pub(crate) fn new(chain_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        ClientIdentity {
            chain_pem: chain_pem.into(),
            key_pem: zeroize::Zeroizing::new(key_pem.into()),
        }
    }

    /// The chain and key, or a configuration error that says what is missing. Never shows the
    /// key.
    #[cfg(feature = "rustls-no-provider")]
    pub(crate) fn parse(
        &self,
    ) -> Result<
        (
            Vec<rustls::pki_types::CertificateDer<'static>>,
            rustls::pki_types::PrivateKeyDer<'static>,
        ),
        ConfigError,
    > {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let chain = CertificateDer::pem_slice_iter(&self.chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                ConfigError::new(
                    "tls_client_auth",
                    "tls_client_auth: the certificate chain is not valid PEM",
                )
            })?;
        if chain.is_empty() {
            return Err(ConfigError::new(
                "tls_client_auth",
                "tls_client_auth: no `BEGIN CERTIFICATE` block in the certificate chain",
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem).map_err(|_| {
            ConfigError::new(
                "tls_client_auth",
                "tls_client_auth: no private key (PKCS#8, PKCS#1 or SEC1 PEM) in the key",
            )
        })?;
        Ok((chain, key))
    }
}

/// The roots our features select, plus `extra_roots_pem`.
#[cfg(feature = "rustls-no-provider")]
pub(crate) fn root_certificates(
    extra_roots_pem: &[Vec<u8>],
) -> Result<rustls::RootCertStore, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let mut roots = rustls::RootCertStore::empty();
    #[cfg(feature = "native-roots")]
    {
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
    }
    #[cfg(feature = "webpki-roots")]
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let built_in = roots.len();
    for pem in extra_roots_pem {
        let mut found = 0;
        for certificate in CertificateDer::pem_slice_iter(pem) {
            let certificate = certificate.map_err(|e| {
                ConfigError::new(
                    "root_certificate_pem",
                    format!("root_certificate_pem: not a PEM certificate: {e}"),
                )
            })?;
            roots.add(certificate).map_err(|e| {
                ConfigError::new(
                    "root_certificate_pem",
                    format!("root_certificate_pem: unusable certificate: {e}"),
                )
            })?;
            found += 1;
        }
        if found == 0 {
            return Err(ConfigError::new(
                "root_certificate_pem",
                "root_certificate_pem: no `BEGIN CERTIFICATE` block found",
            ));
        }
    }
    if built_in == 0 && extra_roots_pem.is_empty() {
        tracing::warn!(
            target: "tower_oauth2::transport",
            "no root certificates (none found on the system, or neither the `native-roots` nor \
             the `webpki-roots` feature is on); HTTPS token endpoints will fail verification \
             unless a root certificate is configured"
        );
    }
    Ok(roots)
}

/// Without rustls the built-in client speaks plain HTTP only.
#[cfg(not(feature = "rustls-no-provider"))]
pub(crate) fn default_client(
    extra_roots_pem: &[Vec<u8>],
    proxy: &ProxyConfig,
    identity: Option<&ClientIdentity>,
) -> Result<HttpClient, ConfigError> {
    if identity.is_some() {
        return Err(ConfigError::new(
            "tls_client_auth",
            "tls_client_auth needs the `rustls` feature (or pass your own http_client)",
        ));
    }
    if !extra_roots_pem.is_empty() {
        return Err(ConfigError::new(
            "root_certificate_pem",
            "root_certificate_pem needs the `rustls` feature (or pass your own http_client)",
        ));
    }
    Ok(boxed(hyper_client(ProxyConnector::new(proxy)?)))
}

fn hyper_client<C>(connector: C) -> hyper_util::client::legacy::Client<C, Full<Bytes>>
where
    C: hyper_util::client::legacy::connect::Connect + Clone,
{
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        // Token requests are minutes apart, and a pooled connection belongs to the runtime that
        // opened it: reused from another runtime after that one is dropped, it would fail.
        .pool_max_idle_per_host(0)
        .build(connector)
}

/// How a client's token requests travel, apart from what they ask: what a builder collects.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) timeout: std::time::Duration,
    pub(crate) body_limit: usize,
    pub(crate) allow_insecure_http: bool,
    pub(crate) root_certificates: Vec<Vec<u8>>,
    pub(crate) proxy: ProxyConfig,
    /// The user's own HTTP client, instead of the built-in one.
    pub(crate) http: Option<HttpClient>,
}

impl Settings {
    /// Time allowed for a whole token request, response body included: 10 seconds.
    pub(crate) const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
    /// Largest response body read: 1 MiB.
    pub(crate) const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

    /// Which URLs credentials may go to under these settings.
    pub(crate) fn url_rules(&self) -> url_rules::UrlRules {
        url_rules::UrlRules {
            allow_insecure_http: self.allow_insecure_http,
            custom_http: self.http.is_some(),
        }
    }

    /// The transport these settings describe, presenting `certificate` on TLS connections.
    pub(crate) fn build(
        self,
        certificate: Option<&ClientIdentity>,
    ) -> Result<Transport, ConfigError> {
        let http = match self.http {
            Some(_) if certificate.is_some() => {
                return Err(ConfigError::new(
                    "http_client",
                    "tls_client_auth configures the built-in HTTP client; with your own \
                     .http_client(..), give it the client certificate instead",
                ))
            }
            Some(http) => http,
            None => default_client(&self.root_certificates, &self.proxy, certificate)?,
        };
        Ok(Transport {
            http,
            timeout: self.timeout,
            body_limit: self.body_limit,
        })
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            timeout: Self::DEFAULT_TIMEOUT,
            body_limit: Self::DEFAULT_BODY_LIMIT,
            allow_insecure_http: false,
            root_certificates: Vec::new(),
            proxy: ProxyConfig::default(),
            http: None,
        }
    }
}

/// The HTTP client of a built client, with its timeout and body limit.
#[derive(Clone)]
pub(crate) struct Transport {
    http: HttpClient,
    pub(crate) timeout: std::time::Duration,
    pub(crate) body_limit: usize,
}

impl Transport {
    /// Send `request` and read the whole response within the body limit and the timeout. A
    /// panic in the HTTP client is an error like any other.
    pub(crate) async fn exchange(
        &self,
        request: TokenRequest,
    ) -> Result<(http::response::Parts, Result<WholeBody, BodyTooLarge>), Error> {
        self.exchange_within(request, self.timeout).await
    }

    /// [`exchange`](Self::exchange) within `timeout`, what is left of a token request's.
    pub(crate) async fn exchange_within(
        &self,
        request: TokenRequest,
        timeout: std::time::Duration,
    ) -> Result<(http::response::Parts, Result<WholeBody, BodyTooLarge>), Error> {
        use futures_util::FutureExt;

        // The timer is made inside the guard (it panics without a runtime or timers), and the
        // client's future is dropped inside it when the timer fires (its drop may panic).
        let exchange = async move {
            match tokio::time::timeout(timeout, send(&self.http, request, self.body_limit)).await {
                Ok(result) => result,
                Err(_elapsed) => Err(Error::timeout(timeout)),
            }
        };
        std::panic::AssertUnwindSafe(exchange)
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(http_client_panicked(&*panic)))
    }
}

/// The error for a panic inside the HTTP client. The payload is only matched, never shown: it
/// is arbitrary text that may hold a credential.
fn http_client_panicked(panic: &(dyn std::any::Any + Send)) -> Error {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or_default();
    // The caller's setup, not the endpoint: a runtime without IO makes tokio panic inside the
    // connector.
    if message.contains("IO is disabled") {
        Error::runtime(
            "ClientCredentials needs a tokio runtime with IO: build it with enable_all() (or \
             enable_io() and enable_time())",
        )
    } else {
        tracing::error!(target: "tower_oauth2::fetch", "the HTTP client panicked");
        Error::panicked_in("the HTTP client")
    }
}
