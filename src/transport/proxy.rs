//! Reaching the token endpoint through an HTTP proxy: `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`
//! and `NO_PROXY` as curl reads them, or an explicit proxy URL. The proxy only sees an HTTP
//! `CONNECT` to the endpoint's host and port; TLS runs end to end inside the tunnel, so the
//! client secret never travels in the clear to the proxy.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower::{Service, ServiceExt};

use crate::error::BoxError;
use crate::ConfigError;

/// Which proxy, if any, the built-in client uses.
#[derive(Clone, Default)]
pub(crate) enum ProxyConfig {
    /// `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` (and their lowercase forms),
    /// read when the client is built.
    #[default]
    FromEnvironment,
    /// Every non-loopback request through this proxy.
    Explicit(String),
    /// Connect directly, whatever the environment says.
    Direct,
}

impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // An explicit proxy URL may hold a password.
        f.write_str(match self {
            ProxyConfig::FromEnvironment => "FromEnvironment",
            ProxyConfig::Explicit(_) => "Explicit(..)",
            ProxyConfig::Direct => "Direct",
        })
    }
}

impl ProxyConfig {
    /// The matcher this configuration stands for, checking an explicit URL.
    fn matcher(&self) -> Result<Option<Matcher>, ConfigError> {
        match self {
            ProxyConfig::Direct => Ok(None),
            ProxyConfig::FromEnvironment => Ok(Some(Matcher::from_env())),
            ProxyConfig::Explicit(url) => {
                let parsed: Uri = url.parse().map_err(|_| {
                    ConfigError::new(
                        "proxy",
                        "proxy: not a valid URL; give one like http://proxy.internal:3128",
                    )
                })?;
                if parsed.scheme_str() != Some("http") || parsed.host().is_none() {
                    return Err(ConfigError::new(
                        "proxy",
                        "proxy: only http:// proxies with a host are supported (the tunnel to \
                         the token endpoint is TLS either way); give one like \
                         http://proxy.internal:3128",
                    ));
                }
                Ok(Some(Matcher::builder().all(url.as_str()).build()))
            }
        }
    }
}

/// A connector that opens a `CONNECT` tunnel through the proxy the matcher picks for a
/// destination, or connects directly. Loopback destinations always connect directly, as Go's
/// `net/http` does: a proxy elsewhere cannot reach this machine's loopback.
#[derive(Clone)]
pub(crate) struct ProxyConnector {
    matcher: Option<Arc<Matcher>>,
    direct: HttpConnector,
}

impl ProxyConnector {
    pub(crate) fn new(config: &ProxyConfig) -> Result<Self, ConfigError> {
        let mut direct = HttpConnector::new();
        // TLS, if any, is layered on top by the caller.
        direct.enforce_http(false);
        direct.set_nodelay(true);
        Ok(ProxyConnector {
            matcher: config.matcher()?.map(Arc::new),
            direct,
        })
    }
}

type Connecting = Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, BoxError>> + Send>>;

impl Service<Uri> for ProxyConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, destination: Uri) -> Self::Future {
        let direct = self.direct.clone();
        let intercept = self
            .matcher
            .as_ref()
            .filter(|_| {
                !destination
                    .host()
                    .is_some_and(super::url_rules::is_loopback)
            })
            .and_then(|matcher| matcher.intercept(&destination));
        let Some(intercept) = intercept else {
            return Box::pin(async move { direct.oneshot(destination).await.map_err(Into::into) });
        };
        if intercept.uri().scheme_str() != Some("http") {
            // A SOCKS or https:// proxy from the environment (ALL_PROXY=socks5://…): sending
            // CONNECT to it would fail obscurely. The proxy URL may hold a password: not shown.
            let scheme = intercept.uri().scheme_str().unwrap_or("?").to_owned();
            return Box::pin(async move {
                Err(format!(
                    "the {scheme}:// proxy from the environment is not supported: only http:// \
                     proxies are; set HTTPS_PROXY to one, or call .no_proxy()"
                )
                .into())
            });
        }
        let mut tunnel = Tunnel::new(intercept.uri().clone(), direct);
        if let Some(auth) = intercept.basic_auth() {
            tunnel = tunnel.with_auth(auth.clone());
        }
        let destination = with_port(destination);
        Box::pin(async move {
            tunnel
                .oneshot(destination)
                .await
                .map_err(|e| -> BoxError { format!("through the proxy: {e}").into() })
        })
    }
}

/// `uri` with its scheme's default port made explicit: the tunnel assumes 443 otherwise.
fn with_port(uri: Uri) -> Uri {
    if uri.port().is_some() || uri.scheme_str() != Some("http") {
        return uri;
    }
    let Some(host) = uri.host() else {
        return uri;
    };
    let authority = format!("{host}:80");
    let mut parts = uri.clone().into_parts();
    match authority.parse() {
        Ok(authority) => {
            parts.authority = Some(authority);
            Uri::from_parts(parts).unwrap_or(uri)
        }
        Err(_) => uri,
    }
}
