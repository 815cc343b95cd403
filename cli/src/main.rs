//! `tower-oauth2`: fetch one OAuth 2.0 access token from a real identity provider with the
//! crate's own client, and show what came back, without printing the token.
//!
//! ```text
//! CLIENT_SECRET=… tower-oauth2 token --token-url https://idp.example.com/oauth/token \
//!     --client-id my-service --client-secret-env CLIENT_SECRET --scope "orders.read"
//! ```
#![forbid(unsafe_code)]

mod args;
mod configure;
mod exit;
mod hints;
mod jwt;
mod report;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};
use crate::exit::Failure;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: could not start the async runtime: {error}");
            return ExitCode::from(exit::OTHER);
        }
    };
    let outcome = match cli.command {
        Command::Token(args) => runtime.block_on(token(&args)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            failure.print();
            ExitCode::from(failure.code())
        }
    }
}

/// `tower-oauth2 token`: one token request, then the report (or the token alone).
async fn token(args: &args::TokenArgs) -> Result<(), Failure> {
    let source = configure::source(args)?;
    let token = source.fetch().await.map_err(Failure::Token)?;
    if args.print_token {
        return write_out(token.secret());
    }
    let report = report::Report::new(&configure::endpoint_shown(args), &token);
    if args.json {
        write_out(&report.json().to_string())
    } else {
        write_out(report.text().trim_end_matches('\n'))
    }
}

/// `text` and a newline on stdout. A reader that went away (`| head -c0`) is a clean exit
/// (0), as for any Unix filter; `println!` would panic there, since Rust ignores SIGPIPE.
fn write_out(text: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::Output(error)),
        _ => Ok(()),
    }
}
