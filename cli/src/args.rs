//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tower_oauth2::token_exchange::TokenType;

/// Debug an OAuth 2.0 setup against a real identity provider with tower-oauth2's own client.
#[derive(Debug, Parser)]
#[command(name = "tower-oauth2", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch one token and show its endpoint, type, expiry, scope and, for a JWT, its header
    /// and claims (not verified). The token itself is printed only with --print-token. The
    /// grant is client credentials; a token exchange (RFC 8693) with --subject-token-file; the
    /// jwt-bearer grant (RFC 7523) with --jwt-bearer-assertion-file.
    #[command(after_help = crate::exit::HELP)]
    Token(TokenArgs),
}

/// How the client authenticates: a secret (from the environment or a file, never from the
/// command line, where `ps` and shell history would show it), a private key, or a certificate.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The token endpoint URL.
    #[arg(
        long,
        value_name = "URL",
        required_unless_present = "issuer",
        conflicts_with = "issuer"
    )]
    pub token_url: Option<String>,

    /// The issuer: the token endpoint is read from its metadata (RFC 8414, OpenID Connect
    /// discovery).
    #[arg(long, value_name = "URL")]
    pub issuer: Option<String>,

    /// The client id (optional for a token exchange or jwt-bearer grant without client
    /// authentication).
    #[arg(
        long,
        value_name = "ID",
        required_unless_present_any = ["subject_token_file", "jwt_bearer_assertion_file"]
    )]
    pub client_id: Option<String>,

    /// Read the client secret from this environment variable.
    #[arg(long, value_name = "NAME", conflicts_with = "client_secret_file")]
    pub client_secret_env: Option<String>,

    /// Read the client secret from this file, as the library does: surrounding whitespace (a
    /// trailing newline) is not part of the secret.
    #[arg(long, value_name = "PATH")]
    pub client_secret_file: Option<PathBuf>,

    /// Authenticate with a client assertion made elsewhere (a Kubernetes projected
    /// service-account token, a SPIFFE JWT-SVID, AZURE_FEDERATED_TOKEN_FILE): the JWT in this
    /// file, sent as client_assertion (RFC 7523 §2.2).
    #[arg(
        long,
        value_name = "PATH",
        conflicts_with_all = ["client_secret_env", "client_secret_file", "private_key", "client_secret_jwt"]
    )]
    pub client_assertion_file: Option<PathBuf>,

    /// How the secret is sent.
    #[arg(long, value_enum, value_name = "STYLE")]
    pub auth_style: Option<AuthStyle>,

    /// Send a JWT signed with the secret instead of the secret (client_secret_jwt).
    #[arg(long)]
    pub client_secret_jwt: bool,

    /// Authenticate with a JWT signed by this private key (private_key_jwt; PEM file).
    #[arg(long, value_name = "PEM", conflicts_with_all = ["client_secret_env", "client_secret_file"])]
    pub private_key: Option<PathBuf>,

    /// The `kid` header of the assertions --private-key signs.
    #[arg(long, value_name = "KID", requires = "private_key")]
    pub key_id: Option<String>,

    /// The `aud` of client assertions, when the provider wants something other than the token
    /// endpoint URL.
    #[arg(long, value_name = "AUD")]
    pub assertion_audience: Option<String>,

    /// Authenticate with this TLS client certificate chain (mutual TLS; PEM file).
    #[arg(long, value_name = "PEM", requires = "client_key")]
    pub client_cert: Option<PathBuf>,

    /// The private key of --client-cert (PEM file).
    #[arg(long, value_name = "PEM", requires = "client_cert")]
    pub client_key: Option<PathBuf>,

    /// The `scope` parameter (space-separated scopes).
    #[arg(long, value_name = "SCOPE")]
    pub scope: Option<String>,

    /// The `audience` parameter.
    #[arg(long, value_name = "AUDIENCE")]
    pub audience: Option<String>,

    /// Token exchange (RFC 8693): the subject token is the content of this file.
    #[arg(
        long,
        value_name = "PATH",
        requires = "subject_token_type",
        conflicts_with = "jwt_bearer_assertion_file"
    )]
    pub subject_token_file: Option<PathBuf>,

    /// What the subject token is: access_token, refresh_token, id_token, jwt, saml1, saml2, or
    /// a token type URI.
    #[arg(long, value_name = "TYPE", value_parser = token_type, requires = "subject_token_file")]
    pub subject_token_type: Option<TokenType>,

    /// Token exchange: the `resource` parameter (a URI of the service the token is for).
    #[arg(long, value_name = "URI", requires = "subject_token_file")]
    pub resource: Option<String>,

    /// Token exchange: the kind of token wanted (the names of --subject-token-type).
    #[arg(long, value_name = "TYPE", value_parser = token_type, requires = "subject_token_file")]
    pub requested_token_type: Option<TokenType>,

    /// The jwt-bearer grant (RFC 7523 §2.1): the assertion is the content of this file.
    #[arg(long, value_name = "PATH")]
    pub jwt_bearer_assertion_file: Option<PathBuf>,

    /// Any other token request parameter; repeatable.
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = key_value)]
    pub params: Vec<(String, String)>,

    /// Trust this root certificate (PEM file) besides the system's; repeatable.
    #[arg(long, value_name = "PEM")]
    pub root_certificate: Vec<PathBuf>,

    /// Allow an http:// token URL on a host that is not loopback (the secret crosses the
    /// network in clear text).
    #[arg(long)]
    pub allow_insecure_http: bool,

    /// Give up on the token endpoint after this many seconds (at least 1).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,

    /// Print the token alone on stdout (for piping), instead of the report.
    #[arg(long, conflicts_with = "json")]
    pub print_token: bool,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AuthStyle {
    /// HTTP Basic (client_secret_basic).
    Basic,
    /// In the form body (client_secret_post).
    Form,
    /// In a JSON body.
    Json,
}

/// A token type by its short name (`jwt`), or its URI.
fn token_type(text: &str) -> Result<TokenType, String> {
    let known = [
        TokenType::AccessToken,
        TokenType::RefreshToken,
        TokenType::IdToken,
        TokenType::Saml1,
        TokenType::Saml2,
        TokenType::Jwt,
    ];
    if let Some(known) = known
        .into_iter()
        .find(|known| known.uri().rsplit(':').next() == Some(text))
    {
        return Ok(known);
    }
    if text.contains(':') {
        return Ok(TokenType::from_uri(text));
    }
    Err(format!(
        "expected access_token, refresh_token, id_token, jwt, saml1, saml2 or a URI, got {text:?}"
    ))
}

fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}
