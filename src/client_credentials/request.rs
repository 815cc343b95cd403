//! Encoding the token request: the grant's parameters and the client's credentials, as a form
//! or a JSON body.

use http::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};

use http::{Method, Uri};
use http_body_util::Full;
use zeroize::Zeroizing;

use crate::client_auth::{encoding, PreparedAuth};
use crate::clock::left;
use crate::grant::{Grant, ReadNow};
use crate::transport::TokenRequest;
use crate::Error;

/// Everything needed to build one token request; built once, encoded per fetch.
#[derive(Clone)]
pub(crate) struct RequestTemplate {
    pub(crate) url: Uri,
    pub(crate) auth: PreparedAuth,
    pub(crate) grant: Grant,
    /// The key tokens are bound to (DPoP): every token request carries a proof by it.
    pub(crate) dpop: Option<crate::dpop::Bound>,
}

const USER_AGENT_VALUE: &str = concat!("tower-oauth2/", env!("CARGO_PKG_VERSION"));

impl RequestTemplate {
    /// The request to the token endpoint at `url`, with the credentials made or read for it
    /// alone (an assertion, a secret or subject token read from a file), so that no error can
    /// echo them. What is read from elsewhere is read now, before `deadline`.
    pub(crate) async fn encode(
        &self,
        url: &Uri,
        deadline: tokio::time::Instant,
    ) -> Result<Encoded, Error> {
        let mut credentials = self.auth.credentials(url, left(deadline)).await?;
        let read = self.grant.read(deadline).await?;
        for (_, value) in &read.values {
            credentials.redact.push(encoding::urlencode(value));
            credentials.redact.push(value.clone());
        }
        let fields: Vec<(&str, &str)> = std::iter::once(("grant_type", self.grant.grant_type()))
            .chain(
                credentials
                    .fields
                    .iter()
                    .map(|(name, value)| (*name, value.as_str())),
            )
            .chain(self.grant.params())
            .chain(
                read.values
                    .iter()
                    .map(|(name, value)| (*name, value.as_str())),
            )
            .collect();
        let (content_type, body) = if self.auth.auth().json_body() {
            ("application/json", json_body(&fields)?)
        } else {
            ("application/x-www-form-urlencoded", form_body(&fields))
        };
        let mut request = http::Request::builder()
            .method(Method::POST)
            .uri(url.clone())
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .header(CONTENT_TYPE, HeaderValue::from_static(content_type))
            .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE))
            .body(Full::new(crate::wiped::bytes(body)))
            .map_err(|e| Error::config(format!("cannot build the token request: {e}")))?;
        if let Some(header) = credentials.header {
            request.headers_mut().insert(AUTHORIZATION, header);
        }
        let mut dpop_nonce = None;
        if let Some(key) = &self.dpop {
            let target = crate::dpop::Target::of(url)?;
            // The proof's signer shares the request's deadline.
            let proof = key
                .proof(&Method::POST, &target, None, left(deadline))
                .await?;
            request
                .headers_mut()
                .insert(crate::dpop::DPOP, proof.header);
            dpop_nonce = proof.nonce;
        }
        Ok(Encoded {
            request,
            redact: credentials.redact,
            read,
            dpop_nonce,
        })
    }
}

/// One encoded token request.
pub(crate) struct Encoded {
    pub(crate) request: TokenRequest,
    /// Credentials made or read for this request alone, in every form they are sent.
    pub(crate) redact: Vec<Zeroizing<String>>,
    /// The grant's parameters read for it, and the tokens sources lent to it.
    pub(crate) read: ReadNow,
    /// The server's nonce the DPoP proof carries, if any.
    pub(crate) dpop_nonce: Option<String>,
}

/// `fields` as an `application/x-www-form-urlencoded` body, in a buffer that never grows (a
/// grown buffer frees a partial copy of a credential unwiped).
fn form_body(fields: &[(&str, &str)]) -> Zeroizing<Vec<u8>> {
    // Percent-encoding at most triples each byte.
    let plain: usize = fields.iter().map(|(n, v)| n.len() + v.len() + 2).sum();
    let mut form = form_urlencoded::Serializer::new(String::with_capacity(3 * plain));
    for (name, value) in fields {
        form.append_pair(name, value);
    }
    Zeroizing::new(form.finish().into_bytes())
}

/// `fields` as a JSON object of strings, likewise in a buffer that never grows.
fn json_body(fields: &[(&str, &str)]) -> Result<Zeroizing<Vec<u8>>, Error> {
    let mut object = serde_json::Map::new();
    for (name, value) in fields {
        object.insert(
            (*name).to_owned(),
            serde_json::Value::String((*value).to_owned()),
        );
    }
    // JSON escaping makes at most six bytes of one (`\u001f`).
    let plain: usize = fields.iter().map(|(n, v)| n.len() + v.len() + 8).sum();
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
