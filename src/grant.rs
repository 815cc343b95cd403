//! [`Grant`]: what a token request asks for, apart from who asks ([`ClientAuth`]) and how it
//! travels (`transport`): its `grant_type` and parameters in wire order, which of them are
//! credentials, and what of it tells one client's tokens from another's. The client
//! credentials grant (RFC 6749 §4.4) today; token exchange (RFC 8693) and jwt-bearer (RFC 7523)
//! are further constructors of the same value.
//!
//! [`ClientAuth`]: crate::ClientAuth

use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::client_auth::encoding;
use crate::client_auth::external::{External, Kind};
use crate::{ConfigError, Error, TokenSource};

/// A grant and its parameters, as they go on the wire after `grant_type`.
#[derive(Clone)]
pub(crate) struct Grant {
    grant_type: String,
    /// Values may be credentials (an assertion, a subject token): zeroized on drop.
    params: Vec<(String, Zeroizing<String>)>,
    /// Parameters whose values are made elsewhere and read at each request (a subject token,
    /// an assertion), after `params`.
    read: Vec<(&'static str, ReadParam)>,
}

/// Where a parameter read at each request comes from.
#[derive(Clone)]
pub(crate) enum ReadParam {
    /// A file or a closure; `kind` says what it is (for errors, and whether `exp` is checked).
    External(External, Kind),
    /// Another source's token (a chained exchange: the service's own token).
    Source(Arc<dyn TokenSource>),
}

/// The parameters read for one request, and the tokens other sources lent to it.
pub(crate) struct ReadNow {
    pub(crate) values: Vec<(&'static str, Zeroizing<String>)>,
    /// Each subject (or actor) token a source handed out, to give back as rejected when the
    /// endpoint refuses the grant.
    pub(crate) lent: Vec<(Arc<dyn TokenSource>, crate::AccessToken)>,
}

impl ReadNow {
    /// The endpoint refused the grant with `code`: a token lent by a source is taken to be
    /// the reason (expired, revoked) when the code says the grant is bad, so that the next
    /// request gets a new one from it.
    pub(crate) fn refused(&self, code: &str) {
        if matches!(code, "invalid_grant" | "invalid_request" | "invalid_token") {
            for (source, token) in &self.lent {
                source.invalidate(token);
            }
        }
    }
}

impl ReadParam {
    /// The value of parameter `param`, within `timeout`.
    async fn read(
        &self,
        param: &str,
        timeout: Duration,
        lent: &mut Vec<(Arc<dyn TokenSource>, crate::AccessToken)>,
    ) -> Result<Zeroizing<String>, Error> {
        match self {
            ReadParam::External(from, kind) => from.read(*kind, timeout).await,
            ReadParam::Source(source) => {
                use futures_util::FutureExt;
                // The operator is sent to the token at fault: the subject's or the actor's.
                let what = match param {
                    "actor_token" => "the actor token source",
                    _ => "the subject token source",
                };
                // A source of the user's may panic or hang: contained like an HTTP client.
                let guarded = async move {
                    match tokio::time::timeout(timeout, source.token()).await {
                        Ok(result) => {
                            result.map_err(|error| error.within(&format!("{what} failed")))
                        }
                        Err(_elapsed) => Err(Error::credential(
                            format!("{what} did not answer within {timeout:?}"),
                            true,
                        )),
                    }
                };
                let token = std::panic::AssertUnwindSafe(guarded)
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| Err(Error::panicked_in(what)))?;
                let value = Zeroizing::new(token.secret().to_owned());
                lent.push((source.clone(), token));
                Ok(value)
            }
        }
    }
}

/// Names of parameters the client authentication sets; a grant parameter may not.
const CLIENT_AUTH_PARAMS: [&str; 2] = ["client_id", "client_secret"];
const ASSERTION_PARAMS: [&str; 2] = ["client_assertion", "client_assertion_type"];

impl Grant {
    /// The client credentials grant: `scope` (space-joined), `audience`, then `extra`
    /// parameters, of which `grant_type` replaces the grant type. `signs` says whether the
    /// client authentication sends an assertion (whose parameters `extra` may then not set).
    pub(crate) fn client_credentials(
        scopes: &[String],
        audience: Option<String>,
        extra: Vec<(String, Zeroizing<String>)>,
        signs: bool,
    ) -> Result<Grant, ConfigError> {
        let mut grant = Grant {
            grant_type: "client_credentials".to_owned(),
            params: Vec::new(),
            read: Vec::new(),
        };
        if !scopes.is_empty() {
            grant
                .params
                .push(("scope".to_owned(), Zeroizing::new(scopes.join(" "))));
        }
        if let Some(audience) = audience {
            grant
                .params
                .push(("audience".to_owned(), Zeroizing::new(audience)));
        }
        for (name, value) in extra {
            if name == "grant_type" {
                grant.grant_type = value.to_string();
                continue;
            }
            grant.check_param(&name, signs)?;
            grant.params.push((name, value));
        }
        Ok(grant)
    }

    /// Another grant, `grant_type`: `static_params` first (set by the grant's builder:
    /// `subject_token_type`, `audience`, …), then `scope`, then the user's `extra` parameters
    /// (checked as for client credentials), then `read`, made elsewhere at each request.
    pub(crate) fn other(
        grant_type: &str,
        static_params: Vec<(String, Zeroizing<String>)>,
        scopes: &[String],
        extra: Vec<(String, Zeroizing<String>)>,
        read: Vec<(&'static str, ReadParam)>,
        signs: bool,
    ) -> Result<Grant, ConfigError> {
        let mut grant = Grant {
            grant_type: grant_type.to_owned(),
            params: static_params,
            read: Vec::new(),
        };
        if !scopes.is_empty() {
            grant
                .params
                .push(("scope".to_owned(), Zeroizing::new(scopes.join(" "))));
        }
        for (name, value) in extra {
            if name == "grant_type" || read.iter().any(|(read, _)| *read == name) {
                return Err(ConfigError::new(
                    "param",
                    format!("param {name:?} is set by the {grant_type} grant itself"),
                ));
            }
            grant.check_param(&name, signs)?;
            grant.params.push((name, value));
        }
        grant.read = read;
        Ok(grant)
    }

    /// The parameters made elsewhere, read now, before `deadline`.
    pub(crate) async fn read(&self, deadline: tokio::time::Instant) -> Result<ReadNow, Error> {
        let mut now = ReadNow {
            values: Vec::with_capacity(self.read.len()),
            lent: Vec::new(),
        };
        for (name, from) in &self.read {
            let value = from
                .read(name, crate::clock::left(deadline), &mut now.lent)
                .await?;
            now.values.push((*name, value));
        }
        Ok(now)
    }

    /// Whether `name` may be added as a parameter.
    fn check_param(&self, name: &str, signs: bool) -> Result<(), ConfigError> {
        if name.is_empty() {
            return Err(ConfigError::new(
                "param",
                "param: the parameter name is empty",
            ));
        }
        if signs && ASSERTION_PARAMS.contains(&name) {
            return Err(ConfigError::new(
                "param",
                format!(
                    "param {name:?} clashes with the client assertion this client signs \
                     (.private_key_jwt or .client_secret_jwt): give one or the other"
                ),
            ));
        }
        if CLIENT_AUTH_PARAMS.contains(&name) {
            return Err(ConfigError::new(
                "param",
                format!(
                    "param {name:?} clashes with client authentication: use \
                     .client_id/.client_secret and .auth_style instead"
                ),
            ));
        }
        if self.params.iter().any(|(existing, _)| existing == name) {
            let hint = match name {
                "scope" => " (.scope(..) already sets it)",
                "audience" => " (.audience(..) already sets it)",
                _ => "",
            };
            return Err(ConfigError::new(
                "param",
                format!("param {name:?} is given twice{hint}"),
            ));
        }
        Ok(())
    }

    /// The same grant with parameter `name` set to `value`, or left out with `None` (for
    /// sibling clients).
    pub(crate) fn with_param(&self, name: &str, value: Option<String>) -> Grant {
        let mut grant = self.clone();
        let at = grant.params.iter().position(|(n, _)| n == name);
        match (at, value) {
            (Some(at), Some(value)) => grant.params[at].1 = Zeroizing::new(value),
            (None, Some(value)) => grant.params.push((name.to_owned(), Zeroizing::new(value))),
            (Some(at), None) => drop(grant.params.remove(at)),
            (None, None) => {}
        }
        grant
    }

    pub(crate) fn grant_type(&self) -> &str {
        &self.grant_type
    }

    /// The parameters after `grant_type`, in wire order.
    pub(crate) fn params(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// The parameter names, for `Debug` (never the values).
    pub(crate) fn param_names(&self) -> Vec<&str> {
        self.params
            .iter()
            .map(|(name, _)| name.as_str())
            .chain(self.read.iter().map(|(name, _)| *name))
            .collect()
    }

    /// Parameters whose names say they are credentials, as sent (plain and form-encoded), so
    /// that no error can echo them.
    pub(crate) fn secrets(&self) -> Vec<Zeroizing<String>> {
        let mut secrets = Vec::new();
        for (name, value) in &self.params {
            let name = name.to_ascii_lowercase();
            // `subject_token_type` and the like name a kind of token, not a token.
            let sensitive = ["assertion", "secret", "password", "token"]
                .iter()
                .any(|word| name.contains(word))
                && !name.ends_with("_type");
            if sensitive && !value.is_empty() {
                secrets.push(value.clone());
                secrets.push(encoding::urlencode(value));
            }
        }
        secrets
    }

    /// Everything that decides which token the endpoint issues for this grant, flattened
    /// (names and values), for the shared cache's entry key.
    #[cfg(feature = "shared-cache")]
    /// Parameters read at each request count by their name and file, never their value
    /// (which rotates, and is a credential).
    pub(crate) fn identity(&self) -> Vec<&str> {
        std::iter::once(self.grant_type.as_str())
            .chain(
                self.params
                    .iter()
                    .flat_map(|(name, value)| [name.as_str(), value.as_str()]),
            )
            .chain(self.read.iter().flat_map(|(name, from)| {
                let file = match from {
                    ReadParam::External(from, _) => from.path().and_then(|path| path.to_str()),
                    ReadParam::Source(_) => None,
                };
                [*name, file.unwrap_or("")]
            }))
            .collect()
    }
}
