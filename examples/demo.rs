//! The tour: `cargo run --example demo`.
//!
//! Without arguments everything runs on 127.0.0.1 against an embedded token server (see
//! `examples/support/mod.rs`):
//!
//! 1. one token is fetched with each client authentication style (`AuthStyle::Basic`, `Form`,
//!    `Json`) and described: type, lifetime, scope;
//! 2. a wrong secret shows what a rejected token request looks like;
//! 3. a hyper-util client wrapped in `BearerAuthLayer` sends 4000 concurrent requests to a
//!    protected API at a cold start, and the demo reports how many token requests that cost
//!    (one, counted by the client and by the server), the time to the first token, how many
//!    requests succeeded, and their latency once the token is cached;
//! 4. two-second tokens under steady calls: refreshed ahead, no caller waits;
//! 5. the API revokes the token in use: one 401, exactly that token dropped, the next request
//!    carries a new one.
//!
//! With `--token-url` (or `TOKEN_URL`) it talks to your identity provider instead: it fetches a
//! token, describes it, and runs step 3 against a local API that accepts any bearer token.
//! `cargo run --example demo -- --help` lists the options.
//!
//! Nothing secret is printed: neither the client secret nor any access token. The exit status is
//! non-zero if any check fails (more than one token request or any failed request in step 3),
//! so CI can run the demo as a test.

#[path = "support/mod.rs"]
mod support;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;
use tower::{ServiceBuilder, ServiceExt};
use tower_oauth2::{
    client_auth::AuthStyle, error::BoxError, AccessToken, BearerAuthLayer, ClientCredentials,
    ErrorKind,
};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;

const USAGE: &str = "\
Usage: cargo run --example demo [-- OPTIONS]

Without options, runs against an embedded token server on 127.0.0.1.
With --token-url, runs against your identity provider instead.

Options (in brackets: the environment variable read when the option is absent):
  --token-url URL         token endpoint, e.g. https://tenant.example.com/oauth/token [TOKEN_URL]
  --client-id ID          client identifier [CLIENT_ID]
  --client-secret SECRET  client secret; prefer the variable, arguments show in `ps` [CLIENT_SECRET]
  --audience AUDIENCE     the `audience` parameter some providers need [AUDIENCE]
  --scope SCOPE           a scope to ask for; repeatable [SCOPE, space-separated]
  --auth-style STYLE      client authentication: basic (default), form or json [AUTH_STYLE]
  --requests N            concurrent requests in the load step (default 4000)
  -h, --help              print this help

Nothing secret is printed. RUST_LOG=tower_oauth2=debug shows the crate's logs on stderr.
";

#[tokio::main]
async fn main() -> ExitCode {
    // `RUST_LOG=tower_oauth2=debug` and the like (targets and levels; no regex filters).
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| directives.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::ERROR));
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .init();

    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let _ = SNAPSHOTTER.set(recorder.snapshotter());
    let _ = recorder.install();

    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}\n(--help lists the options)");
            return ExitCode::from(2);
        }
    };
    let outcome = match options.provider {
        None => embedded(options.requests).await,
        Some(provider) => against_provider(provider, options.requests).await,
    };
    match outcome {
        Ok(true) => {
            println!("\nAll checks passed.");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            eprintln!("\nFAILED: see the lines marked FAIL above.");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("\nerror: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Reads the crate's metrics (feature `metrics`), which a real service would export.
static SNAPSHOTTER: std::sync::OnceLock<metrics_util::debugging::Snapshotter> =
    std::sync::OnceLock::new();
/// Token requests counted so far: the recorder hands counters out as increments.
static FETCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many token requests this process's clients made, by the crate's own metrics.
fn client_side_fetches() -> u64 {
    use metrics_util::debugging::DebugValue;
    let new: u64 = SNAPSHOTTER
        .get()
        .map(|snapshotter| snapshotter.snapshot().into_vec())
        .unwrap_or_default()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "tower_oauth2_token_fetches_total")
        .map(|(.., value)| match value {
            DebugValue::Counter(count) => count,
            _ => 0,
        })
        .sum();
    FETCHES.fetch_add(new, std::sync::atomic::Ordering::SeqCst) + new
}

/// Everything against the embedded token server. `Ok(false)`: a check failed.
async fn embedded(requests: usize) -> Result<bool, BoxError> {
    let token_server = support::token_server().await?;
    let mut ok = true;
    println!("Embedded token server: {}", token_server.url());
    let credentials = |style: AuthStyle, secret: &str| {
        ClientCredentials::builder()
            .token_url(token_server.url())
            .client_id(support::CLIENT_ID)
            .client_secret(secret)
            .auth_style(style)
            .scope("demo.read")
            .build()
    };

    println!("\n1. One token with each client authentication style");
    for (style, expected) in [
        (AuthStyle::Basic, "HTTP Basic"),
        (AuthStyle::Form, "form body"),
        (AuthStyle::Json, "JSON body"),
    ] {
        let token = credentials(style, support::CLIENT_SECRET)?
            .fetch_uncached()
            .await?;
        let seen = token_server
            .last_client_auth()
            .map_or_else(|| "nothing".to_owned(), |auth| auth.to_string());
        let verdict = check(&mut ok, seen == expected);
        println!(
            "   {:<5} -> {}; server saw credentials in: {seen} {verdict}",
            format!("{style:?}"),
            describe(&token)
        );
    }

    println!("\n2. A wrong client secret");
    match credentials(AuthStyle::Basic, "not-the-secret")?
        .fetch_uncached()
        .await
    {
        Err(error) => {
            let verdict = check(&mut ok, error.kind() == ErrorKind::Rejected);
            println!(
                "   {:?}, transient: {}: {error} {verdict}",
                error.kind(),
                error.is_transient()
            );
        }
        Ok(_) => {
            check(&mut ok, false);
            println!("   a token was issued for a wrong secret FAIL");
        }
    }

    println!("\n3. {requests} concurrent requests through one BearerAuthLayer, twice");
    let api = support::ProtectedApi::start(token_server.validator()).await?;
    let before = token_server.requests();
    let before_here = client_side_fetches();
    let report = load(
        credentials(AuthStyle::Basic, support::CLIENT_SECRET)?,
        api.url(),
        requests,
    )
    .await?;
    let token_requests = token_server.requests() - before;
    let fetched = client_side_fetches() - before_here;
    let verdict = check(&mut ok, token_requests == 1 && fetched == 1);
    println!(
        "   token requests: {fetched} made by the client (its own metrics), {token_requests} \
         served by the token server (expected 1) {verdict}"
    );
    ok &= report.print(api.distinct_tokens());

    println!("\n4. Two-second tokens, a call every 50 ms for 5 s: refreshed ahead, nobody waits");
    ok &= short_tokens().await?;

    println!("\n5. The API rejects the current token once (401)");
    ok &= rejected_once().await?;
    Ok(ok)
}

/// Calls through the layer while 2 s tokens expire: every call succeeds, and none waits for a
/// refresh (the slowest call after the first is as fast as the others).
async fn short_tokens() -> Result<bool, BoxError> {
    let mut ok = true;
    // A slow token server: a caller that waited for a refresh would take half a second.
    let token_server = support::TokenServer::builder()
        .client(support::CLIENT_ID, support::CLIENT_SECRET)
        .lifetime(Duration::from_secs(2))
        .latency(Duration::from_millis(500))
        .start()
        .await?;
    let api = support::ProtectedApi::start(token_server.validator()).await?;
    let credentials = ClientCredentials::builder()
        .token_url(token_server.url())
        .client_id(support::CLIENT_ID)
        .client_secret(support::CLIENT_SECRET)
        .build()?;
    let client = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(credentials))
        .service(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>());
    let uri: http::Uri = format!("{}/orders", api.url()).parse()?;
    let (mut failed, mut slowest, mut calls) = (0, Duration::ZERO, 0);
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let sent = Instant::now();
        let request = http::Request::get(uri.clone()).body(Empty::new())?;
        match client.clone().oneshot(request).await {
            Ok(response) if response.status().is_success() => {}
            _ => failed += 1,
        }
        if calls > 0 {
            slowest = slowest.max(sent.elapsed());
        }
        calls += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let verdict = check(&mut ok, failed == 0);
    println!("   calls: {calls}, failed: {failed} {verdict}");
    let refreshes = token_server.requests();
    let verdict = check(&mut ok, (3..=6).contains(&refreshes));
    println!("   token requests: {refreshes} (one per ~1 s of a 2 s token) {verdict}");
    let verdict = check(&mut ok, slowest < Duration::from_millis(400));
    println!(
        "   slowest call after the first: {:.1} ms (a wait for a refresh would be >= 500 ms) \
         {verdict}",
        slowest.as_secs_f64() * 1000.0
    );
    Ok(ok)
}

/// The API revokes the token in use: the request that carried it gets 401, the layer drops
/// exactly that token, and the next request carries a new one.
async fn rejected_once() -> Result<bool, BoxError> {
    let mut ok = true;
    let token_server = support::token_server().await?;
    let revoked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let api = {
        let (revoked, valid) = (revoked.clone(), token_server.validator());
        support::ProtectedApi::start(move |token| {
            valid(token) && !revoked.lock().unwrap().iter().any(|r| r == token)
        })
        .await?
    };
    let credentials = ClientCredentials::builder()
        .token_url(token_server.url())
        .client_id(support::CLIENT_ID)
        .client_secret(support::CLIENT_SECRET)
        .build()?;
    let client = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(credentials.clone()))
        .service(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>());
    let uri: http::Uri = format!("{}/orders", api.url()).parse()?;
    let call = || async {
        let request = http::Request::get(uri.clone()).body(Empty::new())?;
        Ok::<_, BoxError>(client.clone().oneshot(request).await?.status())
    };
    call().await?;
    let first = credentials.token().await?;
    revoked.lock().unwrap().push(first.secret().to_owned());
    let statuses = [call().await?, call().await?, call().await?];
    let verdict = check(
        &mut ok,
        statuses.map(|s| s.as_u16()) == [401, 200, 200] && token_server.requests() == 2,
    );
    println!(
        "   statuses after the revocation: {}, {}, {}; token requests: {} (expected 401, then \
         200 with a new token; 2) {verdict}",
        statuses[0].as_u16(),
        statuses[1].as_u16(),
        statuses[2].as_u16(),
        token_server.requests()
    );
    Ok(ok)
}

/// A real identity provider: describe a token, then the load step against a local API.
async fn against_provider(provider: Provider, requests: usize) -> Result<bool, BoxError> {
    println!(
        "Token endpoint: {} (client {:?}, auth style {:?})",
        printable_url(&provider.token_url),
        provider.client_id,
        provider.auth_style
    );
    let mut builder = ClientCredentials::builder()
        .token_url(provider.token_url)
        .client_id(provider.client_id)
        .client_secret(provider.client_secret)
        .auth_style(provider.auth_style);
    if let Some(audience) = provider.audience {
        builder = builder.audience(audience);
    }
    for scope in provider.scopes {
        builder = builder.scope(scope);
    }
    let credentials = builder.build()?;

    println!("\n1. One token");
    let token = credentials.fetch_uncached().await?;
    println!("   {}", describe(&token));

    println!("\n2. {requests} concurrent requests through one BearerAuthLayer, twice");
    println!("   (to a local API accepting any bearer token)");
    let api = support::ProtectedApi::start(|_| true).await?;
    let before = client_side_fetches();
    let report = load(credentials, api.url(), requests).await?;
    let mut ok = true;
    let fetched = client_side_fetches() - before;
    let verdict = check(&mut ok, fetched == 1);
    println!(
        "   token requests this client made (its own metrics): {fetched} (expected 1) {verdict}"
    );
    Ok(report.print(api.distinct_tokens()) && ok)
}

/// The URL to print: no user info, no query (either might hold something secret).
fn printable_url(url: &str) -> String {
    match url.parse::<http::Uri>() {
        Ok(uri) => {
            format!(
                "{}://{}{}",
                uri.scheme_str().unwrap_or("?"),
                uri.host().unwrap_or("?"),
                uri.port().map(|p| format!(":{p}")).unwrap_or_default()
            ) + uri.path()
        }
        Err(_) => "(not a valid URL)".to_owned(),
    }
}

/// "Bearer token, expires in 3600 s, scope "demo.read"" — never the token itself.
fn describe(token: &AccessToken) -> String {
    let expiry = match token.expires_at() {
        Some(at) => {
            let left = at.saturating_duration_since(Instant::now());
            format!("expires in {} s", (left.as_millis() + 500) / 1000)
        }
        None => "no expiry".to_owned(),
    };
    let scope = token
        .scope()
        .map_or("none stated".to_owned(), |s| format!("{s:?}"));
    format!("{} token, {expiry}, scope {scope}", token.token_type())
}

/// Record a check in `ok`; the mark to print after the line it concerns.
fn check(ok: &mut bool, passed: bool) -> &'static str {
    *ok &= passed;
    if passed {
        "ok"
    } else {
        "FAIL"
    }
}

/// The outcome of [`load`].
struct Report {
    succeeded: usize,
    failures: Vec<String>,
    /// Of the requests sent with the token cached.
    latencies: Vec<Duration>,
    /// From the cold start to the first token.
    first_token: Duration,
    /// Of the wave with the token cached.
    elapsed: Duration,
}

/// Send `requests` concurrent `GET`s to `api_url`, all through ONE client wrapped in
/// `BearerAuthLayer` with `credentials`, twice: at a cold start (every request waits for the
/// same token request; the time to that first token is measured on its own), then with the
/// token cached (the latencies reported).
async fn load(
    credentials: ClientCredentials,
    api_url: &str,
    requests: usize,
) -> Result<Report, BoxError> {
    // HTTP/2 over one connection, so thousands of requests in flight need no thousands of sockets.
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Empty<Bytes>>();
    let service = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(credentials.clone()))
        .service(client);
    let uri: http::Uri = format!("{api_url}/orders").parse()?;

    let mut report = Report {
        succeeded: 0,
        failures: Vec::new(),
        latencies: Vec::with_capacity(requests),
        first_token: Duration::ZERO,
        elapsed: Duration::ZERO,
    };
    for cold in [true, false] {
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for _ in 0..requests {
            let service = service.clone(); // clones share the token cache
            let request = http::Request::get(uri.clone()).body(Empty::new())?;
            tasks.spawn(async move {
                let sent = Instant::now();
                let outcome = match service.oneshot(request).await {
                    Ok(response) if response.status().is_success() => response
                        .into_body()
                        .collect()
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string()),
                    Ok(response) => Err(format!("HTTP {}", response.status())),
                    Err(error) => Err(error.to_string()), // never contains a secret
                };
                (outcome, sent.elapsed())
            });
        }
        if cold {
            // Joins the token request the layer's callers started.
            credentials.token().await?;
            report.first_token = started.elapsed();
        }
        while let Some(joined) = tasks.join_next().await {
            let (outcome, latency) = joined?;
            match outcome {
                Ok(()) => report.succeeded += 1,
                Err(error) => report.failures.push(error),
            }
            if !cold {
                report.latencies.push(latency);
            }
        }
        if !cold {
            report.elapsed = started.elapsed();
        }
    }
    report.latencies.sort();
    Ok(report)
}

impl Report {
    /// Print the report; whether every request succeeded with one and the same token.
    fn print(&self, distinct_tokens: usize) -> bool {
        let mut ok = true;
        let verdict = check(&mut ok, self.failures.is_empty());
        println!(
            "   requests succeeded: {}, failed: {} {verdict}",
            self.succeeded,
            self.failures.len()
        );
        if let Some(first) = self.failures.first() {
            println!("   first failure: {first}");
        }
        let verdict = check(&mut ok, distinct_tokens == 1);
        println!("   distinct tokens the API saw: {distinct_tokens} (expected 1) {verdict}");
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let percentile = |p: f64| {
            let last = self.latencies.len().saturating_sub(1);
            self.latencies
                .get((last as f64 * p).round() as usize)
                .map_or(0.0, |d| ms(*d))
        };
        println!(
            "   time to the first token: {:.1} ms (every request of the cold start waited for it)",
            ms(self.first_token)
        );
        println!(
            "   latency ms with the token cached: p50 {:.1}, p90 {:.1}, p99 {:.1}, max {:.1} (all \
             done in {:.0} ms)",
            percentile(0.50),
            percentile(0.90),
            percentile(0.99),
            percentile(1.0),
            ms(self.elapsed)
        );
        ok
    }
}

/// Command line and environment.
struct Options {
    provider: Option<Provider>,
    requests: usize,
}

/// A real identity provider to run against.
struct Provider {
    token_url: String,
    client_id: String,
    client_secret: String,
    audience: Option<String>,
    scopes: Vec<String>,
    auth_style: AuthStyle,
}

impl Options {
    /// `Ok(None)`: help was asked for.
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
        let env = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let mut token_url = env("TOKEN_URL");
        let mut client_id = env("CLIENT_ID");
        let mut client_secret = env("CLIENT_SECRET");
        let mut audience = env("AUDIENCE");
        let mut auth_style = env("AUTH_STYLE");
        let mut scopes: Vec<String> = env("SCOPE")
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        let mut scopes_given = false;
        let mut requests = 4000;

        while let Some(arg) = args.next() {
            // `--flag value` or `--flag=value`.
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_owned())),
                _ => (arg.as_str(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            match flag {
                "-h" | "--help" => return Ok(None),
                "--token-url" => token_url = Some(value()?),
                "--client-id" => client_id = Some(value()?),
                "--client-secret" => client_secret = Some(value()?),
                "--audience" => audience = Some(value()?),
                "--auth-style" => auth_style = Some(value()?),
                "--scope" => {
                    if !scopes_given {
                        scopes.clear(); // arguments replace SCOPE
                        scopes_given = true;
                    }
                    scopes.push(value()?);
                }
                "--requests" => {
                    requests = value()?
                        .parse()
                        .ok()
                        .filter(|&n: &usize| n > 0)
                        .ok_or("--requests needs a positive number")?;
                }
                // Only flags are echoed: a stray value might be a secret.
                flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
                _ => return Err("unexpected argument: values must follow their option".into()),
            }
        }

        let Some(token_url) = token_url else {
            return Ok(Some(Options {
                provider: None,
                requests,
            }));
        };
        let auth_style = match auth_style
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("basic") => AuthStyle::Basic,
            Some("form") => AuthStyle::Form,
            Some("json") => AuthStyle::Json,
            Some(other) => return Err(format!("--auth-style {other:?}: use basic, form or json")),
        };
        let provider = Provider {
            token_url,
            client_id: client_id.ok_or("--token-url needs --client-id (or CLIENT_ID)")?,
            client_secret: client_secret
                .ok_or("--token-url needs --client-secret (or CLIENT_SECRET)")?,
            audience,
            scopes,
            auth_style,
        };
        Ok(Some(Options {
            provider: Some(provider),
            requests,
        }))
    }
}
