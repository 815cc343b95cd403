//! Finding the token endpoint from the issuer: RFC 8414 authorization server metadata, then
//! OpenID Connect Discovery. Done on the first fetch, and kept; a failure is not kept.
//!
//! The metadata is refused unless its `issuer` is exactly the configured one (RFC 8414 §3.3),
//! before any credential is sent, and its `token_endpoint` obeys the same rules as a configured
//! token URL. The requests obey the same transport rules as token requests: the timeout, the
//! body limit, no redirects.

use bytes::Bytes;
use http::header::ACCEPT;
use http::{HeaderValue, Method, StatusCode, Uri};
use http_body_util::Full;
use serde_json::Value;

use crate::error::{hints, Rejected};
use crate::transport::url_rules::shown;
use crate::transport::url_rules::UrlRules;
use crate::transport::Transport;
use crate::Error;

/// The issuer to discover the token endpoint from, and what was found.
pub(super) struct Discovery {
    /// As configured: the metadata must name exactly this.
    issuer: String,
    issuer_url: Uri,
    rules: UrlRules,
    /// Prefer `mtls_endpoint_aliases.token_endpoint` (RFC 8705 §5): the client authenticates
    /// with a TLS certificate.
    mtls: bool,
    /// The names in `token_endpoint_auth_methods_supported` that mean how this client
    /// authenticates (empty: no standard name, not checked).
    auth_methods: Vec<&'static str>,
    token_endpoint: tokio::sync::OnceCell<Uri>,
}

impl Discovery {
    pub(super) fn new(
        issuer: String,
        issuer_url: Uri,
        rules: UrlRules,
        mtls: bool,
        auth_methods: Vec<&'static str>,
    ) -> Self {
        Discovery {
            issuer,
            issuer_url,
            rules,
            mtls,
            auth_methods,
            token_endpoint: tokio::sync::OnceCell::new(),
        }
    }

    /// The token endpoint, discovered on first use.
    pub(super) async fn token_endpoint(&self, transport: &Transport) -> Result<Uri, Error> {
        self.token_endpoint
            .get_or_try_init(|| self.discover(transport))
            .await
            .cloned()
    }

    async fn discover(&self, transport: &Transport) -> Result<Uri, Error> {
        let mut last = None;
        for url in metadata_urls(&self.issuer_url) {
            let shown = format!(
                "{}{}",
                url.authority().map_or("", |a| a.as_str()),
                url.path()
            );
            match self.metadata(transport, url).await {
                Ok(Some(metadata)) => {
                    return self
                        .token_endpoint_in(&metadata)
                        .map_err(|e| e.at_metadata(&shown))
                }
                // Not at this location: try the next.
                Ok(None) => {}
                Err(error) => last = Some(error.at_metadata(&shown)),
            }
        }
        Err(last.unwrap_or_else(|| {
            Error::invalid_response(
                "the issuer publishes no metadata at /.well-known/oauth-authorization-server \
                 or /.well-known/openid-configuration",
            )
            .with_hint(hints::NO_METADATA)
            .at_issuer(&format!(
                "{}{}",
                self.issuer_url.authority().map_or("", |a| a.as_str()),
                self.issuer_url.path()
            ))
        }))
    }

    /// The metadata document at `url`; `None` if there is none there (404, 405, 410).
    async fn metadata(
        &self,
        transport: &Transport,
        url: Uri,
    ) -> Result<Option<serde_json::Map<String, Value>>, Error> {
        let mut request = http::Request::new(Full::new(Bytes::new()));
        *request.method_mut() = Method::GET;
        *request.uri_mut() = url;
        request
            .headers_mut()
            .insert(ACCEPT, HeaderValue::from_static("application/json"));
        let (parts, body) = transport.exchange(request).await?;
        if matches!(
            parts.status,
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::GONE
        ) {
            return Ok(None);
        }
        if !parts.status.is_success() {
            return Err(Error::rejected(Rejected {
                note: Some("the issuer's metadata could not be read".into()),
                ..Rejected::status(parts.status)
            }));
        }
        let body = body.map_err(|_| {
            Error::invalid_response(format!(
                "the issuer's metadata is larger than the limit of {} bytes",
                transport.body_limit
            ))
        })?;
        match serde_json::from_slice(&body) {
            Ok(Value::Object(metadata)) => Ok(Some(metadata)),
            _ => Err(Error::invalid_response(
                "the issuer's metadata is not a JSON object",
            )),
        }
    }

    fn token_endpoint_in(&self, metadata: &serde_json::Map<String, Value>) -> Result<Uri, Error> {
        match metadata.get("issuer") {
            Some(Value::String(issuer)) if *issuer == self.issuer => {}
            Some(Value::String(issuer)) => {
                return Err(Error::invalid_response(format!(
                    "the metadata names issuer \"{}\", not the configured \"{}\"; refused \
                     before sending any credential (RFC 8414 §3.3)",
                    untrusted(issuer),
                    shown(&self.issuer_url)
                ))
                .with_hint(hints::CHECK_THE_ISSUER))
            }
            _ => {
                return Err(
                    Error::invalid_response("the issuer's metadata has no `issuer`")
                        .with_hint(hints::CHECK_THE_ISSUER),
                )
            }
        }
        self.check_auth_method(metadata)?;
        let alias = metadata
            .get("mtls_endpoint_aliases")
            .and_then(|aliases| aliases.get("token_endpoint"))
            .filter(|_| self.mtls);
        let Some(Value::String(endpoint)) = alias.or_else(|| metadata.get("token_endpoint")) else {
            return Err(Error::invalid_response(
                "the issuer's metadata has no `token_endpoint`",
            ));
        };
        let url = self
            .rules
            .check(endpoint, "the discovered token_endpoint")
            .map_err(|e| Error::invalid_response(e.to_string()))?;
        // Keycloak behind a proxy it was not told about publishes http://localhost:8080/…:
        // following that would send the credentials in clear to this machine's port 8080.
        if self.issuer_url.scheme_str() == Some("https") && url.scheme_str() != Some("https") {
            return Err(Error::invalid_response(format!(
                "the https issuer's metadata names a plain-http token_endpoint \"{}\"; \
                 refused: a discovered endpoint is never weaker than the issuer",
                shown(&url)
            ))
            .with_hint(hints::INTERNAL_TOKEN_ENDPOINT));
        }
        Ok(url)
    }
}

impl Discovery {
    /// A server that lists the methods it supports and not ours would refuse every token
    /// request with `invalid_client`: say so instead. Absent or malformed lists are not checked.
    fn check_auth_method(&self, metadata: &serde_json::Map<String, Value>) -> Result<(), Error> {
        let Some(Value::Array(supported)) = metadata.get("token_endpoint_auth_methods_supported")
        else {
            return Ok(());
        };
        let supported: Vec<&str> = supported.iter().filter_map(Value::as_str).collect();
        if self.auth_methods.is_empty()
            || supported.is_empty()
            || self
                .auth_methods
                .iter()
                .any(|ours| supported.contains(ours))
        {
            return Ok(());
        }
        Err(Error::config(format!(
            "the issuer's token endpoint does not support {} client authentication (its \
             token_endpoint_auth_methods_supported: {}); configure one of those",
            self.auth_methods.join(" or "),
            untrusted(&supported.join(", "))
        )))
    }
}

/// Text from the metadata, as an error may show it: bounded, one line, printable.
fn untrusted(text: &str) -> String {
    super::response::excerpt(text.as_bytes(), &[])
}

/// Where the metadata of `issuer` may be, in order: RFC 8414 §3.1 (the well-known segment
/// between host and path), then OpenID Connect Discovery 1.0 §4 (appended to the issuer).
fn metadata_urls(issuer: &Uri) -> Vec<Uri> {
    let scheme = issuer.scheme_str().unwrap_or("https");
    let authority = issuer.authority().map_or("", |a| a.as_str());
    let path = issuer.path().trim_end_matches('/');
    [
        format!("{scheme}://{authority}/.well-known/oauth-authorization-server{path}"),
        format!("{scheme}://{authority}{path}/.well-known/openid-configuration"),
    ]
    .into_iter()
    .filter_map(|url| url.parse().ok())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(issuer: &str) -> Vec<String> {
        metadata_urls(&issuer.parse().unwrap())
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn well_known_locations_follow_rfc_8414_then_openid_connect() {
        assert_eq!(
            urls("https://idp.example.com"),
            [
                "https://idp.example.com/.well-known/oauth-authorization-server",
                "https://idp.example.com/.well-known/openid-configuration",
            ]
        );
        assert_eq!(
            urls("https://idp.example.com/tenant/v2/"),
            [
                "https://idp.example.com/.well-known/oauth-authorization-server/tenant/v2",
                "https://idp.example.com/tenant/v2/.well-known/openid-configuration",
            ]
        );
    }

    fn https_issuer(rules: UrlRules) -> Discovery {
        Discovery::new(
            "https://idp.example.com".into(),
            "https://idp.example.com".parse().unwrap(),
            rules,
            false,
            vec!["client_secret_basic"],
        )
    }

    #[test]
    fn an_https_issuer_never_hands_out_a_plain_http_token_endpoint() {
        for allow_insecure_http in [false, true] {
            let discovery = https_issuer(UrlRules {
                allow_insecure_http,
                custom_http: true,
            });
            for endpoint in [
                "http://localhost:8080/realms/r/protocol/openid-connect/token",
                "http://127.0.0.1:8080/token",
                "http://idp.example.com/token",
            ] {
                let metadata = serde_json::json!({
                    "issuer": "https://idp.example.com",
                    "token_endpoint": endpoint,
                });
                let error = discovery
                    .token_endpoint_in(metadata.as_object().unwrap())
                    .expect_err(endpoint);
                assert_eq!(error.kind(), crate::ErrorKind::InvalidResponse);
                let loopback = endpoint.contains("localhost") || endpoint.contains("127.0.0.1");
                if loopback || allow_insecure_http {
                    assert!(error.to_string().contains("never weaker"), "{error}");
                }
                let hint = error.hint().unwrap_or_default();
                assert!(!hint.contains("check the issuer"), "{error}");
            }
        }
    }

    #[test]
    fn the_issuer_hint_is_only_for_another_issuers_metadata() {
        let discovery = https_issuer(UrlRules {
            allow_insecure_http: false,
            custom_http: true,
        });
        let hint = |metadata: serde_json::Value| {
            discovery
                .token_endpoint_in(metadata.as_object().unwrap())
                .unwrap_err()
                .hint()
                .map(str::to_owned)
        };
        let other_issuer = hint(serde_json::json!({
            "issuer": "https://other.example.com",
            "token_endpoint": "https://idp.example.com/token",
        }));
        assert!(other_issuer.unwrap().contains("check the issuer"));
        let other_method = hint(serde_json::json!({
            "issuer": "https://idp.example.com",
            "token_endpoint": "https://idp.example.com/token",
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        }));
        assert!(!other_method
            .unwrap_or_default()
            .contains("check the issuer"));
        let no_endpoint = hint(serde_json::json!({ "issuer": "https://idp.example.com" }));
        assert!(!no_endpoint.unwrap_or_default().contains("check the issuer"));
    }

    #[test]
    fn with_a_client_certificate_the_mtls_alias_is_preferred() {
        let metadata = serde_json::json!({
            "issuer": "https://idp.example.com",
            "token_endpoint": "https://idp.example.com/token",
            "mtls_endpoint_aliases": { "token_endpoint": "https://mtls.idp.example.com/token" },
        });
        let metadata = metadata.as_object().unwrap();
        let rules = UrlRules {
            allow_insecure_http: false,
            custom_http: true,
        };
        let discovery = |mtls| {
            Discovery::new(
                "https://idp.example.com".into(),
                "https://idp.example.com".parse().unwrap(),
                rules,
                mtls,
                vec!["tls_client_auth"],
            )
        };
        assert_eq!(
            discovery(true).token_endpoint_in(metadata).unwrap(),
            "https://mtls.idp.example.com/token"
        );
        assert_eq!(
            discovery(false).token_endpoint_in(metadata).unwrap(),
            "https://idp.example.com/token"
        );
    }
}
