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
mod jwt;
mod report;

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
    let credentials = configure::credentials(args)?;
    let token = credentials.fetch_uncached().await.map_err(Failure::Token)?;
    if args.print_token {
        println!("{}", token.secret());
        return Ok(());
    }
    let report = report::Report::new(&configure::endpoint_shown(args), &token);
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(())
}
