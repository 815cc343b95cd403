//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Debug an OAuth 2.0 setup against a real identity provider with tower-oauth2's own client.
#[derive(Debug, Parser)]
#[command(name = "tower-oauth2", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch one token (client credentials grant) and show its endpoint, type, expiry, scope
    /// and, for a JWT, its header and claims (not verified). The token itself is printed only
    /// with --print-token.
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

    /// The client id.
    #[arg(long, value_name = "ID")]
    pub client_id: String,

    /// Read the client secret from this environment variable.
    #[arg(long, value_name = "NAME", conflicts_with = "client_secret_file")]
    pub client_secret_env: Option<String>,

    /// Read the client secret from this file (one trailing newline is dropped).
    #[arg(long, value_name = "PATH")]
    pub client_secret_file: Option<PathBuf>,

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

    /// Give up on the token endpoint after this many seconds.
    #[arg(long, value_name = "SECONDS")]
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

fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}
