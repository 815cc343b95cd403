//! Where credentials may be sent: which URLs a client accepts for its token endpoint or issuer,
//! and how a URL is named in errors and logs (never its userinfo or query).

use std::net::IpAddr;

use http::Uri;

use crate::ConfigError;

/// Which URLs a client may send credentials to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UrlRules {
    pub(crate) allow_insecure_http: bool,
    pub(crate) custom_http: bool,
}

impl UrlRules {
    /// `raw` (named `what` in errors) as an absolute `https` URL, or `http` to loopback (or
    /// anywhere, if allowed).
    pub(crate) fn check(&self, raw: &str, what: &'static str) -> Result<Uri, ConfigError> {
        let raw_shown = quoted(raw);
        if !raw.contains("://") {
            return Err(ConfigError::new(
                what,
                format!(
                    "{what} {raw_shown} is not an absolute URL (it has no scheme, so no host \
                 either): give an absolute https://… URL, like \
                 https://idp.example.com/oauth/token"
                ),
            ));
        }
        let url: Uri = raw.parse().map_err(|e| {
            ConfigError::new(what, format!("{what} {raw_shown} is not a valid URL: {e}"))
        })?;
        let host = url.host().ok_or_else(|| {
            ConfigError::new(
                what,
                format!(
                "{what} {raw_shown} has no host: give an absolute URL like https://host/oauth/token"
            ),
            )
        })?;
        match url.scheme_str() {
            Some("https") => {
                if cfg!(not(feature = "rustls-no-provider")) && !self.custom_http {
                    return Err(ConfigError::new(
                        what,
                        format!(
                            "https {what}s need the `rustls` feature or your own .http_client(..)"
                        ),
                    ));
                }
            }
            Some("http") if self.allow_insecure_http || is_loopback(host) => {}
            Some("http") => {
                return Err(ConfigError::new(
                    what,
                    format!(
                    "{what} {raw_shown} is plain http to a non-loopback host, which would send the \
                     client secret in clear text: use https, or .allow_insecure_http() on a \
                     trusted network"
                ),
                ))
            }
            _ => {
                return Err(ConfigError::new(
                    what,
                    format!(
                        "{what} {raw_shown} must start with https:// (or http:// for loopback)"
                    ),
                ))
            }
        }
        Ok(url)
    }
}

/// `raw`, as a configuration error quotes it: without userinfo, query or fragment (a gateway key
/// or a password), and on one line.
fn quoted(raw: &str) -> String {
    let cut = raw.find(['?', '#']).map_or(raw, |at| &raw[..at]);
    let (scheme, rest) = match cut.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, cut),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = authority.rsplit('@').next().unwrap_or_default();
    let hidden = if cut.len() < raw.len() || host.len() < authority.len() {
        "…"
    } else {
        ""
    };
    let text: String = match scheme {
        Some(scheme) => format!("{scheme}://{host}{path}{hidden}"),
        None => format!("{host}{path}{hidden}"),
    }
    .chars()
    .map(|c| if c.is_control() { ' ' } else { c })
    .collect();
    format!("\"{text}\"")
}

/// `url` as errors name it: `host[:port]/path`, no credentials, no query.
pub(crate) fn shown(url: &Uri) -> String {
    let authority = url
        .authority()
        .map(|authority| authority.as_str().rsplit('@').next().unwrap_or_default())
        .unwrap_or_default();
    format!("{authority}{}", url.path())
}

/// Whether `host` is this machine: plain http to it is allowed, and no proxy is used for it.
pub(crate) fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}
