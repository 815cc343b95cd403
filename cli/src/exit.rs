//! Exit codes, and what a failure prints on stderr.

use tower_oauth2::{ConfigError, Error, ErrorKind};

use crate::hints::as_flags;

/// Something else went wrong: the endpoint answered 2xx with no usable token, say.
pub const OTHER: u8 = 1;
// 2 is clap's, for a command line it cannot parse.
/// The configuration cannot work: fix the command line, the secret, the key or the URL.
pub const CONFIGURATION: u8 = 3;
/// The token endpoint refused the request (4xx other than 404/405/408/429): credentials,
/// grant, scope.
pub const REJECTED: u8 = 4;
/// Trying again later may help: unreachable, timed out, 5xx, 408, 429.
pub const TRANSIENT: u8 = 5;

/// The `--help` text about exit codes.
pub const HELP: &str = "\
Exit codes:
  0  a token was issued
  1  the endpoint answered, but not with a usable token
  2  the command line could not be parsed
  3  configuration error (arguments, secret, key, URL, issuer metadata; a token URL
     answering 404 or 405)
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
    /// The report could not be written (stdout closed is not this: that is a clean exit).
    Output(std::io::Error),
}

impl Failure {
    pub fn code(&self) -> u8 {
        match self {
            Failure::Setup(_) | Failure::Config(_) => CONFIGURATION,
            Failure::Token(error) if error.is_transient() => TRANSIENT,
            // No token endpoint at that URL: the URL is wrong, not the credentials (gRPC's
            // mapping, gRFC A54, says INTERNAL for it too, not UNAUTHENTICATED).
            Failure::Token(error)
                if matches!(
                    error.status().map(|status| status.as_u16()),
                    Some(404 | 405)
                ) =>
            {
                CONFIGURATION
            }
            Failure::Token(error) => match error.kind() {
                ErrorKind::Rejected => REJECTED,
                ErrorKind::Config | ErrorKind::ClientAuth | ErrorKind::Runtime => CONFIGURATION,
                _ => OTHER,
            },
            Failure::Output(_) => OTHER,
        }
    }

    /// The crate's error, which names the endpoint, then its hint on a line of its own, in
    /// command-line words (`--auth-style form`, not `.auth_style(..)`); never a secret.
    pub fn print(&self) {
        let what = match self.code() {
            CONFIGURATION => "configuration error",
            REJECTED => "rejected",
            TRANSIENT => "transient failure",
            _ => "failed",
        };
        match self {
            Failure::Setup(message) => eprintln!("error ({what}): {message}"),
            Failure::Output(error) => eprintln!("error: cannot write to stdout: {error}"),
            Failure::Config(error) => eprintln!("error ({what}): {}", as_flags(&error.to_string())),
            Failure::Token(error) => {
                let text = error.to_string();
                // The crate's `Display` ends with "; <hint>": shown once, on its own line.
                let hint = error.hint();
                let text = match hint {
                    Some(hint) => text.replacen(&format!("; {hint}"), "", 1),
                    None => text,
                };
                eprintln!("error ({what}): {}", as_flags(&text));
                if let Some(hint) = hint {
                    eprintln!("  hint: {}", as_flags(hint));
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
