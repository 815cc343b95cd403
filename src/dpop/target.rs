//! Where a request goes, as a DPoP proof names it: `htu` is the URL's scheme, host and path,
//! without query or fragment (RFC 9449 §4.2); nonces are remembered per origin.

use http::Uri;

use crate::Error;

/// A request's `htu` and origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    /// `scheme://host[:port]/path`; the origin is its first `origin_len` bytes.
    htu: String,
    origin_len: usize,
}

impl Target {
    /// The target of a request to `uri`. A URI without scheme and host (what a tonic client
    /// made without `with_origin` sends) cannot be named in a proof: an error says what to do.
    pub(crate) fn of(uri: &Uri) -> Result<Target, Error> {
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(Error::config(format!(
                "a DPoP proof names the request's full URL, but this request's URI is only {:?}: \
                 send absolute URIs (for a tonic client, make it with \
                 `MyClient::with_origin(channel, \"https://host:port\".parse()?)`)",
                uri.path()
            )));
        };
        let scheme = scheme.to_ascii_lowercase();
        let host = authority.host().to_ascii_lowercase();
        let default_port = matches!(
            (scheme.as_str(), authority.port_u16()),
            ("https", Some(443)) | ("http", Some(80))
        );
        let mut htu = String::with_capacity(scheme.len() + host.len() + uri.path().len() + 10);
        htu.push_str(&scheme);
        htu.push_str("://");
        htu.push_str(&host);
        if let Some(port) = authority.port_u16().filter(|_| !default_port) {
            htu.push(':');
            htu.push_str(&port.to_string());
        }
        let origin_len = htu.len();
        htu.push_str(if uri.path().is_empty() {
            "/"
        } else {
            uri.path()
        });
        Ok(Target { htu, origin_len })
    }

    /// `htu`.
    // Read by proofs, which need a crypto provider.
    #[cfg_attr(not(feature = "rustls-no-provider"), allow(dead_code))]
    pub(crate) fn htu(&self) -> &str {
        &self.htu
    }

    /// `scheme://host[:port]`.
    pub(crate) fn origin(&self) -> &str {
        &self.htu[..self.origin_len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htu_has_no_query_fragment_or_default_port() {
        let target = Target::of(&"HTTPS://API.Example.com:443/a/b?x=1".parse().unwrap()).unwrap();
        assert_eq!(target.htu(), "https://api.example.com/a/b");
        assert_eq!(target.origin(), "https://api.example.com");
        let target = Target::of(&"http://127.0.0.1:8080".parse().unwrap()).unwrap();
        assert_eq!(target.htu(), "http://127.0.0.1:8080/");
        assert_eq!(target.origin(), "http://127.0.0.1:8080");
    }

    #[test]
    fn a_path_alone_is_an_error_naming_with_origin() {
        let error = Target::of(&"/pkg.Service/Method".parse().unwrap()).unwrap_err();
        assert!(error.to_string().contains("with_origin"), "{error}");
    }
}
