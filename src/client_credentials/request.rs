//! Encoding the token request: client authentication (Basic / form / JSON) and parameters.

use base64::Engine as _;
use http::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{Method, Uri};
use http_body_util::Full;
use zeroize::Zeroizing;

use super::assertion::{AssertionConfig, ASSERTION_TYPE};
use crate::transport::TokenRequest;
use crate::Error;

/// How the client authenticates to the token endpoint.
///
/// Never more than one method is used in a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthStyle {
    /// `Authorization: Basic base64(id ":" secret)`, with id and secret form-urlencoded first
    /// as RFC 6749 §2.3.1 requires; parameters in an `application/x-www-form-urlencoded` body.
    /// The default, and what RFC 6749 says every server must support.
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the `application/x-www-form-urlencoded` body.
    Form,
    /// `client_id`, `client_secret` and parameters in an `application/json` body.
    Json,
}

/// Everything needed to build one token request; built once, encoded per fetch.
#[derive(Clone)]
pub(crate) struct RequestTemplate {
    pub(crate) url: Uri,
    pub(crate) client_id: String,
    pub(crate) client_secret: Zeroizing<String>,
    pub(crate) auth_style: AuthStyle,
    /// `private_key_jwt` or `client_secret_jwt`: a signed assertion in the form body instead
    /// of the secret (then `auth_style` is not used).
    pub(crate) assertion: Option<AssertionConfig>,
    pub(crate) basic_urlencode: bool,
    pub(crate) grant_type: String,
    /// `scope`, `audience` and extra parameters, in the order they go on the wire.
    pub(crate) params: Vec<(String, Zeroizing<String>)>,
}

const USER_AGENT_VALUE: &str = concat!("tower-oauth2/", env!("CARGO_PKG_VERSION"));

impl RequestTemplate {
    /// The request to the token endpoint at `url`, and the assertion it carries if any (so
    /// that no error can echo it).
    pub(crate) fn encode(
        &self,
        url: &Uri,
    ) -> Result<(TokenRequest, Option<Zeroizing<String>>), Error> {
        let form = "application/x-www-form-urlencoded";
        let mut assertion = None;
        let (content_type, body) = match (&self.assertion, self.auth_style) {
            (Some(config), _) => {
                let signed = assertion.insert(config.assertion(&self.client_id, url)?);
                (form, self.assertion_body(signed))
            }
            (None, AuthStyle::Basic) => (form, self.form_body(false)),
            (None, AuthStyle::Form) => (form, self.form_body(true)),
            (None, AuthStyle::Json) => ("application/json", self.json_body()?),
        };
        let mut request = http::Request::builder()
            .method(Method::POST)
            .uri(url.clone())
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .header(CONTENT_TYPE, HeaderValue::from_static(content_type))
            .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE))
            .body(Full::new(crate::wiped::bytes(body)))
            .map_err(|e| Error::config(format!("cannot build the token request: {e}")))?;
        if self.assertion.is_none() && self.auth_style == AuthStyle::Basic {
            request
                .headers_mut()
                .insert(AUTHORIZATION, self.basic_header()?);
        }
        Ok((request, assertion))
    }

    /// RFC 7523 §2.2: the assertion and its type, with `client_id` (OpenID Connect Core §9
    /// makes it optional; Entra ID and others want it).
    fn assertion_body(&self, assertion: &str) -> Zeroizing<Vec<u8>> {
        let mut form = form_urlencoded::Serializer::new(self.form_buffer(assertion));
        form.append_pair("grant_type", &self.grant_type);
        form.append_pair("client_id", &self.client_id);
        form.append_pair("client_assertion_type", ASSERTION_TYPE);
        form.append_pair("client_assertion", assertion);
        for (name, value) in &self.params {
            form.append_pair(name, value);
        }
        Zeroizing::new(form.finish().into_bytes())
    }

    /// The base64 credentials of the Basic header, as the endpoint will see them.
    pub(crate) fn basic_credentials(&self) -> Zeroizing<String> {
        let joined = if self.basic_urlencode {
            crate::wiped::concat(&[
                basic_urlencode(&self.client_id).as_bytes(),
                b":",
                basic_urlencode(&self.client_secret).as_bytes(),
            ])
        } else {
            crate::wiped::concat(&[
                self.client_id.as_bytes(),
                b":",
                self.client_secret.as_bytes(),
            ])
        };
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(joined.as_slice()))
    }

    fn basic_header(&self) -> Result<HeaderValue, Error> {
        let credentials = self.basic_credentials();
        let value = crate::wiped::concat(&[b"Basic ", credentials.as_bytes()]);
        crate::wiped::sensitive_header(value)
            .ok_or_else(|| Error::config("client credentials cannot form a Basic header"))
    }

    fn form_body(&self, with_credentials: bool) -> Zeroizing<Vec<u8>> {
        let mut form = form_urlencoded::Serializer::new(self.form_buffer(""));
        form.append_pair("grant_type", &self.grant_type);
        if with_credentials {
            form.append_pair("client_id", &self.client_id);
            if !self.client_secret.is_empty() {
                form.append_pair("client_secret", &self.client_secret);
            }
        }
        for (name, value) in &self.params {
            form.append_pair(name, value);
        }
        Zeroizing::new(form.finish().into_bytes())
    }

    /// An empty buffer large enough for the form body with `extra` in it, percent-encoded: it
    /// never grows, so no partial copy of a credential is freed unwiped.
    fn form_buffer(&self, extra: &str) -> String {
        let values = [
            self.grant_type.as_str(),
            self.client_id.as_str(),
            self.client_secret.as_str(),
            ASSERTION_TYPE,
            extra,
        ];
        let plain: usize = values.iter().map(|v| v.len() + 32).sum::<usize>()
            + self
                .params
                .iter()
                .map(|(name, value)| name.len() + value.len() + 2)
                .sum::<usize>();
        // Percent-encoding at most triples each byte.
        String::with_capacity(3 * plain)
    }

    fn json_body(&self) -> Result<Zeroizing<Vec<u8>>, Error> {
        let mut object = serde_json::Map::new();
        let mut put = |name: &str, value: &str| {
            object.insert(name.to_owned(), serde_json::Value::String(value.to_owned()));
        };
        put("grant_type", &self.grant_type);
        put("client_id", &self.client_id);
        if !self.client_secret.is_empty() {
            put("client_secret", &self.client_secret);
        }
        for (name, value) in &self.params {
            put(name, value);
        }
        // JSON escaping makes at most six bytes of one (`\u001f`): the buffer never grows.
        let plain: usize = object
            .iter()
            .map(|(name, value)| name.len() + value.as_str().map_or(0, str::len) + 8)
            .sum();
        let mut body = Zeroizing::new(Vec::with_capacity(6 * plain + 2));
        let written = serde_json::to_writer(&mut *body, &object)
            .map_err(|e| Error::config(format!("cannot encode the JSON body: {e}")));
        // The map holds copies of the secret and of parameters that may be credentials.
        for value in object.values_mut() {
            if let serde_json::Value::String(text) = value {
                zeroize::Zeroize::zeroize(text);
            }
        }
        written.map(|()| body)
    }
}

/// `application/x-www-form-urlencoded` encoding of one value (RFC 6749 §2.3.1, Appendix B).
pub(crate) fn urlencode(value: &str) -> Zeroizing<String> {
    // Allocated once at the largest size encoding can reach: a grown buffer would free a partial
    // copy of the value unwiped.
    let mut encoded = Zeroizing::new(String::with_capacity(3 * value.len()));
    for chunk in form_urlencoded::byte_serialize(value.as_bytes()) {
        encoded.push_str(chunk);
    }
    encoded
}

/// The encoding of one Basic credential (RFC 6749 §2.3.1), with a space as `%20` rather than
/// `+`: servers that percent-decode only (Authlib, for one) read `+` as a plus sign, while
/// `%20` is a space under both readings.
pub(crate) fn basic_urlencode(value: &str) -> Zeroizing<String> {
    let mut encoded = Zeroizing::new(String::with_capacity(3 * value.len()));
    for chunk in form_urlencoded::byte_serialize(value.as_bytes()) {
        encoded.push_str(if chunk == "+" { "%20" } else { chunk });
    }
    encoded
}
