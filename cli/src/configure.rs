//! The command line as a token source of the crate: client credentials, a token exchange or
//! the jwt-bearer grant, with secrets and keys read from where the operator keeps them, in
//! buffers wiped after use.

use std::path::Path;
use std::time::Duration;

use tower_oauth2::client_auth::{AuthStyle, PrivateKeyJwt};
use tower_oauth2::client_credentials::ClientCredentialsBuilder;
use tower_oauth2::jwt_bearer::JwtBearer;
use tower_oauth2::token_exchange::{TokenExchange, TokenType};
use tower_oauth2::{AccessToken, ClientCredentials, Error};
use zeroize::Zeroizing;

use crate::args::{self, TokenArgs};
use crate::exit::Failure;

/// The grant the command line asks for, built.
pub enum Source {
    ClientCredentials(ClientCredentials),
    Exchange(TokenExchange),
    JwtBearer(JwtBearer),
}

impl Source {
    /// One token request, past any cache.
    pub async fn fetch(&self) -> Result<AccessToken, Error> {
        match self {
            Source::ClientCredentials(source) => source.fetch_uncached().await,
            Source::Exchange(source) => source.fetch_uncached().await,
            Source::JwtBearer(source) => source.fetch_uncached().await,
        }
    }
}

pub fn source(args: &TokenArgs) -> Result<Source, Failure> {
    let client = client(args)?;
    if let Some(path) = &args.subject_token_file {
        readable(path, "--subject-token-file")?;
        let token_type = args
            .subject_token_type
            .clone()
            .unwrap_or(TokenType::AccessToken);
        // The grant's builder fills a client builder: hand it the one made from the options.
        let mut exchange = TokenExchange::builder()
            .configure(move |_| client)
            .subject_token_file(path, token_type);
        if let Some(audience) = &args.audience {
            exchange = exchange.audience(audience);
        }
        if let Some(resource) = &args.resource {
            exchange = exchange.resource(resource);
        }
        if let Some(wanted) = &args.requested_token_type {
            exchange = exchange.requested_token_type(wanted.clone());
        }
        return exchange
            .build()
            .map(Source::Exchange)
            .map_err(Failure::Config);
    }
    if let Some(path) = &args.jwt_bearer_assertion_file {
        readable(path, "--jwt-bearer-assertion-file")?;
        let mut grant = JwtBearer::builder()
            .configure(move |_| client)
            .assertion_file(path);
        if let Some(audience) = &args.audience {
            grant = grant.param("audience", audience);
        }
        return grant
            .build()
            .map(Source::JwtBearer)
            .map_err(Failure::Config);
    }
    let client = match &args.audience {
        Some(audience) => client.audience(audience),
        None => client,
    };
    client
        .build()
        .map(Source::ClientCredentials)
        .map_err(Failure::Config)
}

/// The settings every grant shares: endpoint, client authentication, transport.
fn client(args: &TokenArgs) -> Result<ClientCredentialsBuilder, Failure> {
    let mut builder = ClientCredentials::builder();
    if let Some(id) = &args.client_id {
        builder = builder.client_id(id);
    }
    builder = match (&args.token_url, &args.issuer) {
        (Some(url), _) => builder.token_url(url),
        (None, Some(issuer)) => builder.issuer(issuer),
        (None, None) => unreachable!("clap requires --token-url or --issuer"),
    };
    if let Some(mut secret) = secret_from_env(args)? {
        // Moved, not copied: the crate wipes the String it is given.
        builder = builder.client_secret(std::mem::take(&mut *secret));
    }
    if let Some(path) = &args.client_secret_file {
        // Read by the crate, as a service reads it; checked here so that a wrong path is a
        // configuration error of this command rather than a transient "not mounted yet".
        readable(path, "--client-secret-file")?;
        builder = builder.client_secret_file(path);
    }
    if let Some(path) = &args.client_assertion_file {
        readable(path, "--client-assertion-file")?;
        builder = builder.client_assertion_file(path);
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
    Ok(builder)
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

/// The client secret from `--client-secret-env`, if given.
fn secret_from_env(args: &TokenArgs) -> Result<Option<Zeroizing<String>>, Failure> {
    let Some(name) = &args.client_secret_env else {
        return Ok(None);
    };
    match std::env::var(name) {
        Ok(secret) if !secret.is_empty() => Ok(Some(Zeroizing::new(secret))),
        Ok(_) => Err(Failure::Setup(format!(
            "--client-secret-env: the environment variable {name} is empty"
        ))),
        Err(_) => Err(Failure::Setup(format!(
            "--client-secret-env: the environment variable {name} is not set (or not UTF-8)"
        ))),
    }
}

/// Fails unless the file at `path` can be opened (its content is read by the crate).
fn readable(path: &Path, option: &str) -> Result<(), Failure> {
    std::fs::File::open(path).map(drop).map_err(|error| {
        Failure::Setup(format!("{option}: cannot read {}: {error}", path.display()))
    })
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
