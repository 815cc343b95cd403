//! Adversarial repros for the `tower-oauth2` command-line tool (issue #23): the binary as a
//! subprocess against `test_util::TokenServer` and hand-rolled servers on loopback. Each test
//! failed on the branch it was written against and passes once its defect is fixed.

use std::process::{Command, Output, Stdio};

use tower_oauth2::test_util::TokenServer;

const SECRET: &str = "cli-adversary-secret";

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tower-oauth2"));
    command.env("CLI_SECRET", SECRET).env_remove("RUST_LOG");
    command
}

/// Runs the binary with `args` off the runtime's threads (the token server needs them).
async fn run(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    tokio::task::spawn_blocking(move || binary().args(&args).output().expect("run tower-oauth2"))
        .await
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

async fn server() -> TokenServer {
    TokenServer::builder()
        .client("cli-client", SECRET)
        .start()
        .await
        .unwrap()
}

/// Issue #23: `token` takes "the credentials-made-elsewhere options once they exist"; issue
/// #20 (merged) added `.client_assertion_file`, but the CLI has no `--client-assertion-file`
/// (nor token exchange options): an operator cannot check a Kubernetes/SPIFFE federated setup
/// with it. clap exits 2 ("unexpected argument").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_assertion_file_can_be_used() {
    let server = TokenServer::builder()
        .client("cli-client", "")
        .client_assertions(|assertion, _| assertion == "header.eyJleHAiOjQxMDI0NDQ4MDB9.sig")
        .start()
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("tower-oauth2-cli-adv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    // A JWT-shaped assertion expiring in 2100; the server compares it verbatim.
    std::fs::write(&file, "header.eyJleHAiOjQxMDI0NDQ4MDB9.sig\n").unwrap();
    let output = run(&[
        "token",
        "--token-url",
        &server.url(),
        "--client-id",
        "cli-client",
        "--client-assertion-file",
        file.to_str().unwrap(),
    ])
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

/// `--print-token | head -c0` (or any reader that exits first): Rust ignores SIGPIPE, so
/// `println!` panics on EPIPE ("failed printing to stdout: Broken pipe"), exit code 101 and a
/// panic message with a RUST_BACKTRACE hint on stderr, instead of a quiet exit as every Unix
/// tool does (or one of the documented codes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn print_token_into_a_closed_pipe_does_not_panic() {
    let server = server().await;
    let url = server.url();
    let output = tokio::task::spawn_blocking(move || {
        let mut child = binary()
            .args([
                "token",
                "--token-url",
                &url,
                "--client-id",
                "cli-client",
                "--client-secret-env",
                "CLI_SECRET",
                "--print-token",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before the token is written.
        drop(child.stdout.take());
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stderr = stderr(&output);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(output.status.code(), Some(101), "{stderr}");
}

/// A wrong token URL (404) is a configuration error: issue #23 says so for gRPC (A54: not
/// UNAUTHENTICATED, INTERNAL), and the crate's own hint says "check the token URL". The CLI
/// exits 4, documented as "the token endpoint refused the request (credentials, grant,
/// scope)", sending the operator to rotate a secret that is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_path_exits_as_a_configuration_error() {
    let server = server().await;
    let wrong = server.url().replace("/oauth/token", "/oauth2/token");
    let output = run(&[
        "token",
        "--token-url",
        &wrong,
        "--client-id",
        "cli-client",
        "--client-secret-env",
        "CLI_SECRET",
    ])
    .await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
}

/// `--timeout 0` is accepted and every request then times out at once: exit 5, "transient
/// failure ... try again later", which no retry fixes. A zero timeout is a command-line
/// mistake (exit 2 from clap or 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_timeout_is_refused_as_a_usage_error() {
    let server = server().await;
    let output = run(&[
        "token",
        "--token-url",
        &server.url(),
        "--client-id",
        "cli-client",
        "--client-secret-env",
        "CLI_SECRET",
        "--timeout",
        "0",
    ])
    .await;
    let code = output.status.code();
    assert!(
        code == Some(2) || code == Some(3),
        "exit {code:?}: {}",
        stderr(&output)
    );
}

/// On a failure the crate's `Display` already ends with the hint ("…; check token_url: …");
/// `Failure::print` prints it again on a `hint:` line, so every hinted error shows its advice
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hint_is_printed_once() {
    let server = server().await;
    let output = tokio::task::spawn_blocking({
        let url = server.url();
        move || {
            binary()
                .env("CLI_SECRET", "not-the-secret")
                .args([
                    "token",
                    "--token-url",
                    &url,
                    "--client-id",
                    "cli-client",
                    "--client-secret-env",
                    "CLI_SECRET",
                ])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stderr = stderr(&output);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    let hint = "check the client id and secret";
    assert_eq!(stderr.matches(hint).count(), 1, "{stderr}");
}

/// The hints are the library's: a CLI user whose secret is refused is told to call
/// `.auth_style(AuthStyle::Form)`, a Rust builder method, instead of `--auth-style form`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_secret_hints_at_the_cli_flag() {
    let server = server().await;
    let url = server.url();
    let output = tokio::task::spawn_blocking(move || {
        binary()
            .env("CLI_SECRET", "not-the-secret")
            .args([
                "token",
                "--token-url",
                &url,
                "--client-id",
                "cli-client",
                "--client-secret-env",
                "CLI_SECRET",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = stderr(&output);
    assert!(stderr.contains("--auth-style"), "{stderr}");
    assert!(!stderr.contains(".auth_style("), "{stderr}");
}

/// The library's `.client_secret_file` trims surrounding whitespace (src/client_auth/external.rs);
/// the CLI's `--client-secret-file` strips one `\n` (and one `\r`) only. The same mounted file
/// that the service reads fine (an editor's extra blank line, `echo "$S" >> file` twice) is
/// refused by the tool meant to debug that service: exit 3 with "client_secret has leading or
/// trailing whitespace ... pass it trimmed, e.g. .client_secret(secret.trim())", a Rust hint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_file_is_read_as_the_library_reads_it() {
    let server = server().await;
    let dir = std::env::temp_dir().join(format!("tower-oauth2-cli-sec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("client-secret");
    std::fs::write(&file, format!("{SECRET}\n\n")).unwrap();
    let output = run(&[
        "token",
        "--token-url",
        &server.url(),
        "--client-id",
        "cli-client",
        "--client-secret-file",
        file.to_str().unwrap(),
    ])
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}
