//! The command line as a `ClientCredentials`: secrets and keys read from where the operator
//! keeps them, in buffers wiped after use.

use std::path::Path;
use std::time::Duration;

use tower_oauth2::client_auth::{AuthStyle, PrivateKeyJwt};
use tower_oauth2::ClientCredentials;
use zeroize::Zeroizing;

use crate::args::{self, TokenArgs};
use crate::exit::Failure;

pub fn credentials(args: &TokenArgs) -> Result<ClientCredentials, Failure> {
    let mut builder = ClientCredentials::builder().client_id(&args.client_id);
    builder = match (&args.token_url, &args.issuer) {
        (Some(url), _) => builder.token_url(url),
        (None, Some(issuer)) => builder.issuer(issuer),
        (None, None) => unreachable!("clap requires --token-url or --issuer"),
    };
    if let Some(mut secret) = secret(args)? {
        // Moved, not copied: the crate wipes the String it is given.
        builder = builder.client_secret(std::mem::take(&mut *secret));
    }
    if let Some(style) = args.auth_style {
        builder = builder.auth_style(match style {
            args::AuthStyle::Basic => AuthStyle::Basic,
            args::AuthStyle::Form => AuthStyle::Form,
            args::AuthStyle::Json => AuthStyle::Json,
        });
    }
    if args.client_secret_jwt {
        builder = builder.client_secret_jwt();
    }
    if let Some(path) = &args.private_key {
        let pem = read(path, "--private-key")?;
        let mut key = PrivateKeyJwt::from_pem(&*pem).map_err(Failure::Config)?;
        if let Some(kid) = &args.key_id {
            key = key.key_id(kid);
        }
        builder = builder.private_key_jwt(key);
    }
    if let Some(audience) = &args.assertion_audience {
        builder = builder.assertion_audience(audience);
    }
    if let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) {
        let chain = read(cert, "--client-cert")?;
        let key = read(key, "--client-key")?;
        builder = builder.tls_client_auth(chain.to_vec(), key.to_vec());
    }
    if let Some(scope) = &args.scope {
        builder = builder.scope(scope);
    }
    if let Some(audience) = &args.audience {
        builder = builder.audience(audience);
    }
    for (key, value) in &args.params {
        builder = builder.param(key, value);
    }
    for path in &args.root_certificate {
        builder = builder.root_certificate_pem(read(path, "--root-certificate")?.to_vec());
    }
    if args.allow_insecure_http {
        builder = builder.allow_insecure_http();
    }
    if let Some(seconds) = args.timeout {
        builder = builder.timeout(Duration::from_secs(seconds));
    }
    builder.build().map_err(Failure::Config)
}

/// Where the token came from, for the report: the URL without credentials or query (an API
/// gateway's subscription key, say), or the issuer whose metadata names the endpoint.
pub fn endpoint_shown(args: &TokenArgs) -> String {
    match (&args.token_url, &args.issuer) {
        (Some(url), _) => without_secrets(url),
        (None, Some(issuer)) => format!(
            "{} (the token endpoint its metadata names)",
            without_secrets(issuer)
        ),
        (None, None) => String::new(),
    }
}

/// `scheme://host/path` of `url`: no `user:password@`, no query, no fragment.
fn without_secrets(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or_default();
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// The client secret from `--client-secret-env` or `--client-secret-file`, if either is given.
fn secret(args: &TokenArgs) -> Result<Option<Zeroizing<String>>, Failure> {
    if let Some(name) = &args.client_secret_env {
        return match std::env::var(name) {
            Ok(secret) if !secret.is_empty() => Ok(Some(Zeroizing::new(secret))),
            Ok(_) => Err(Failure::Setup(format!(
                "--client-secret-env: the environment variable {name} is empty"
            ))),
            Err(_) => Err(Failure::Setup(format!(
                "--client-secret-env: the environment variable {name} is not set (or not UTF-8)"
            ))),
        };
    }
    let Some(path) = &args.client_secret_file else {
        return Ok(None);
    };
    let bytes = read(path, "--client-secret-file")?;
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        Failure::Setup(format!(
            "--client-secret-file: {} is not UTF-8 text",
            path.display()
        ))
    })?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.is_empty() {
        return Err(Failure::Setup(format!(
            "--client-secret-file: {} is empty",
            path.display()
        )));
    }
    Ok(Some(Zeroizing::new(text.to_owned())))
}

/// A file's bytes, wiped when dropped (secrets and keys pass through here).
fn read(path: &Path, option: &str) -> Result<Zeroizing<Vec<u8>>, Failure> {
    std::fs::read(path).map(Zeroizing::new).map_err(|error| {
        Failure::Setup(format!("{option}: cannot read {}: {error}", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::without_secrets;

    #[test]
    fn shown_urls_carry_no_credentials_or_query() {
        assert_eq!(
            without_secrets("https://user:pw@idp.example.com:8443/oauth/token?key=abc#x"),
            "https://idp.example.com:8443/oauth/token"
        );
        assert_eq!(
            without_secrets("http://127.0.0.1:1/t"),
            "http://127.0.0.1:1/t"
        );
        assert_eq!(
            without_secrets("https://idp.example.com"),
            "https://idp.example.com"
        );
    }
}
