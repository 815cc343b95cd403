//! Exit codes, and what a failure prints on stderr.

use tower_oauth2::{ConfigError, Error, ErrorKind};

/// Something else went wrong: the endpoint answered 2xx with no usable token, say.
pub const OTHER: u8 = 1;
// 2 is clap's, for a command line it cannot parse.
/// The configuration cannot work: fix the command line, the secret, the key or the URL.
pub const CONFIGURATION: u8 = 3;
/// The token endpoint refused the request (4xx other than 408/429): credentials, grant, scope.
pub const REJECTED: u8 = 4;
/// Trying again later may help: unreachable, timed out, 5xx, 408, 429.
pub const TRANSIENT: u8 = 5;

/// The `--help` text about exit codes.
pub const HELP: &str = "\
Exit codes:
  0  a token was issued
  1  the endpoint answered, but not with a usable token
  2  the command line could not be parsed
  3  configuration error (arguments, secret, key, URL, issuer metadata)
  4  the token endpoint refused the request (credentials, grant, scope)
  5  transient failure: unreachable, timed out, 5xx, 408, 429; try again later";

/// Why no token was printed.
#[derive(Debug)]
pub enum Failure {
    /// Before any request: the command line, a file or variable, or `build()`.
    Setup(String),
    /// `build()` refused the configuration.
    Config(ConfigError),
    /// The token request failed.
    Token(Error),
}

impl Failure {
    pub fn code(&self) -> u8 {
        match self {
            Failure::Setup(_) | Failure::Config(_) => CONFIGURATION,
            Failure::Token(error) if error.is_transient() => TRANSIENT,
            Failure::Token(error) => match error.kind() {
                ErrorKind::Rejected => REJECTED,
                ErrorKind::Config | ErrorKind::ClientAuth | ErrorKind::Runtime => CONFIGURATION,
                _ => OTHER,
            },
        }
    }

    /// The crate's error, which names the endpoint and carries its hint; never a secret.
    pub fn print(&self) {
        let what = match self.code() {
            CONFIGURATION => "configuration error",
            REJECTED => "rejected",
            TRANSIENT => "transient failure",
            _ => "failed",
        };
        match self {
            Failure::Setup(message) => eprintln!("error ({what}): {message}"),
            Failure::Config(error) => eprintln!("error ({what}): {error}"),
            Failure::Token(error) => {
                eprintln!("error ({what}): {error}");
                if let Some(hint) = error.hint() {
                    eprintln!("  hint: {hint}");
                }
                if let Some(oauth) = error.oauth_error() {
                    eprintln!("  oauth error: {}", oauth.code());
                }
                if let Some(excerpt) = error.body_excerpt() {
                    eprintln!("  body: {excerpt:?}");
                }
                if let Some(retry_after) = error.retry_after() {
                    eprintln!("  retry after: {} s", retry_after.as_secs());
                }
            }
        }
    }
}
