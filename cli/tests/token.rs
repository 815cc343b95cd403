//! `tower-oauth2 token` end to end: the binary as a subprocess against the crate's
//! `test_util::TokenServer` on loopback.

use std::process::Output;

use base64::Engine as _;
use tower_oauth2::test_util::{AssertionContext, TokenServer};

const SECRET: &str = "cli-test-secret-value";

/// Runs the binary with `args` and `CLI_SECRET` set, off the runtime's threads (the token
/// server needs them while the child waits on it).
async fn run(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tower-oauth2"))
            .args(&args)
            .env("CLI_SECRET", SECRET)
            .env_remove("RUST_LOG")
            .output()
            .expect("run tower-oauth2")
    })
    .await
    .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_described_but_never_printed() {
    let server = server().await;
    let url = server.url();
    let output = run(&[
        "token",
        "--token-url",
        &url,
        "--client-id",
        "cli-client",
        "--client-secret-env",
        "CLI_SECRET",
        "--scope",
        "orders.read",
    ])
    .await;

    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains(&format!("endpoint:    {url}")), "{text}");
    assert!(text.contains("token type:  Bearer"), "{text}");
    assert!(text.contains("expires in:  3"), "{text}");
    assert!(text.contains("scope:       orders.read"), "{text}");
    assert!(text.contains("opaque (not a JWT)"), "{text}");
    assert!(!text.contains("token-1"), "the token itself: {text}");
    assert!(!text.contains(SECRET) && !stderr(&output).contains(SECRET));
    assert_eq!(server.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn print_token_prints_the_token_alone_for_piping() {
    let server = server().await;
    let output = run(&[
        "token",
        "--token-url",
        &server.url(),
        "--client-id",
        "cli-client",
        "--client-secret-env",
        "CLI_SECRET",
        "--print-token",
    ])
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "token-1\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_for_scripts_with_a_secret_from_a_file() {
    let server = server().await;
    let dir = std::env::temp_dir().join(format!("tower-oauth2-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("secret");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let output = run(&[
        "token",
        "--token-url",
        &server.url(),
        "--client-id",
        "cli-client",
        "--client-secret-file",
        file.to_str().unwrap(),
        "--auth-style",
        "form",
        "--json",
    ])
    .await;
    std::fs::remove_dir_all(&dir).unwrap();

    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["endpoint"], server.url());
    assert_eq!(report["token_type"], "Bearer");
    assert!(report["expires_in"].as_u64().unwrap() > 3500, "{report}");
    assert!(
        report["expires_at"].as_str().unwrap().ends_with('Z'),
        "{report}"
    );
    assert!(report["jwt"].is_null());
    assert!(!stdout(&output).contains("token-1"));
    assert_eq!(
        server.last_client_auth(),
        Some(tower_oauth2::test_util::ClientAuth::Form)
    );
}

/// A base64url JSON part of a JWT.
fn part(value: serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_access_token_shows_its_header_and_claims_marked_not_verified() {
    let jwt = format!(
        "{}.{}.c2lnbmF0dXJlLXNob3VsZC1ub3Qtc2hvdw",
        part(serde_json::json!({ "alg": "RS256", "kid": "idp-key-7", "typ": "at+jwt" })),
        part(serde_json::json!({ "aud": "https://orders.example.com", "sub": "cli-client" }))
    );
    let body = serde_json::json!({
        "access_token": jwt, "token_type": "Bearer", "expires_in": 600, "scope": "a b"
    });
    let server = TokenServer::builder()
        .script(move |_, _| {
            let body = body.to_string();
            async move {
                let mut response = http::Response::new(body.into());
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                Some(response)
            }
        })
        .start()
        .await
        .unwrap();
    let output = run(&[
        "token",
        "--token-url",
        &server.url(),
        "--client-id",
        "cli-client",
        "--client-secret-env",
        "CLI_SECRET",
    ])
    .await;

    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("JWT header (not verified)"), "{text}");
    assert!(text.contains("\"kid\": \"idp-key-7\""), "{text}");
    assert!(text.contains("JWT claims (not verified)"), "{text}");
    assert!(
        text.contains("\"aud\": \"https://orders.example.com\""),
        "{text}"
    );
    assert!(text.contains("scope:       a b"), "{text}");
    assert!(
        !text.contains(&jwt) && !text.contains("c2lnbmF0dXJl"),
        "the token: {text}"
    );

    let output = run(&[
        "token",
        "--token-url",
        &server.url(),
        "--client-id",
        "cli-client",
        "--client-secret-env",
        "CLI_SECRET",
        "--json",
    ])
    .await;
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["jwt"]["verified"], false);
    assert_eq!(report["jwt"]["header"]["kid"], "idp-key-7");
    assert_eq!(report["jwt"]["claims"]["sub"], "cli-client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_key_jwt_sends_an_assertion_for_the_servers_token_url() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let dir = std::env::temp_dir().join(format!("tower-oauth2-cli-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pem = dir.join("client.key.pem");
    std::fs::write(&pem, key.serialize_pem()).unwrap();
    let server = TokenServer::builder()
        .client("jwt-client", "")
        .client_assertions(|assertion: &str, server: &AssertionContext| {
            let claims = assertion.split('.').nth(1).unwrap_or_default();
            let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(claims)
                .unwrap_or_default();
            let claims: serde_json::Value = serde_json::from_slice(&claims).unwrap_or_default();
            claims["aud"] == server.token_url() && claims["iss"] == "jwt-client"
        })
        .start()
        .await
        .unwrap();
    let output = run(&[
        "token",
        "--token-url",
        &server.url(),
        "--client-id",
        "jwt-client",
        "--private-key",
        pem.to_str().unwrap(),
        "--key-id",
        "k1",
        "--print-token",
    ])
    .await;
    std::fs::remove_dir_all(&dir).unwrap();

    assert!(output.status.success(), "{}", stderr(&output));
    assert!(server.accepts(stdout(&output).trim()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_secret_is_a_rejection_with_the_crates_error_and_exit_code_4() {
    let server = TokenServer::builder()
        .client("cli-client", "another-secret")
        .start()
        .await
        .unwrap();
    let output = run(&[
        "token",
        "--token-url",
        &server.url(),
        "--client-id",
        "cli-client",
        "--client-secret-env",
        "CLI_SECRET",
    ])
    .await;

    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    let error = stderr(&output);
    assert!(error.contains("error (rejected)"), "{error}");
    assert!(
        error.contains("invalid_client") && error.contains("token endpoint"),
        "{error}"
    );
    assert!(error.contains("hint:"), "{error}");
    assert!(!error.contains(SECRET), "{error}");
    assert!(stdout(&output).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_transient_with_exit_code_5() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = format!("http://{addr}/oauth/token");
    let output = run(&[
        "token",
        "--token-url",
        &url,
        "--client-id",
        "cli-client",
        "--client-secret-env",
        "CLI_SECRET",
    ])
    .await;
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    assert!(stderr(&output).contains("error (transient failure)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_errors_exit_with_code_3_before_any_request() {
    let server = server().await;
    let url = server.url();
    let missing_variable = run(&[
        "token",
        "--token-url",
        &url,
        "--client-id",
        "cli-client",
        "--client-secret-env",
        "CLI_SECRET_THAT_IS_NOT_SET",
    ])
    .await;
    assert_eq!(missing_variable.status.code(), Some(3));
    assert!(stderr(&missing_variable).contains("CLI_SECRET_THAT_IS_NOT_SET is not set"));

    let not_a_url = run(&[
        "token",
        "--token-url",
        "not a url",
        "--client-id",
        "cli-client",
        "--client-secret-env",
        "CLI_SECRET",
    ])
    .await;
    assert_eq!(not_a_url.status.code(), Some(3), "{}", stderr(&not_a_url));
    assert!(stderr(&not_a_url).contains("error (configuration error)"));
    assert_eq!(server.requests(), 0);
}

#[test]
fn a_secret_cannot_be_given_on_the_command_line() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tower-oauth2"))
        .args([
            "token",
            "--token-url",
            "https://idp.example.com/t",
            "--client-id",
            "x",
        ])
        .args(["--client-secret", SECRET])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&output.stderr).contains(SECRET));
}

/// A file of `content` in a directory of this process, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, content: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("tower-oauth2-cli-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
    }
}

/// A JWT-shaped token expiring in 2100 (its `exp` is read, not verified).
const WORKLOAD_JWT: &str = "eyJhbGciOiJub25lIn0.eyJleHAiOjQxMDI0NDQ4MDB9.c2ln";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_exchange_sends_the_subject_token_file_and_shows_the_issued_type() {
    let server = TokenServer::builder()
        .client("cli-client", SECRET)
        .grant(
            "urn:ietf:params:oauth:grant-type:token-exchange",
            |params| params.get("subject_token").map(String::as_str) == Some(WORKLOAD_JWT),
        )
        .start()
        .await
        .unwrap();
    let subject = TempFile::new("subject-token", &format!("{WORKLOAD_JWT}\n"));
    let output = run(&[
        "token",
        "--token-url",
        &server.url(),
        "--client-id",
        "cli-client",
        "--client-secret-env",
        "CLI_SECRET",
        "--subject-token-file",
        subject.path(),
        "--subject-token-type",
        "jwt",
        "--audience",
        "orders-api",
        "--resource",
        "https://orders.example.com/",
        "--requested-token-type",
        "access_token",
        "--json",
    ])
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(
        report["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    let form = server.received()[0].form();
    assert_eq!(
        form["subject_token_type"],
        "urn:ietf:params:oauth:token-type:jwt"
    );
    assert_eq!(form["audience"], "orders-api");
    assert_eq!(form["resource"], "https://orders.example.com/");
    assert_eq!(
        form["requested_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert!(!stdout(&output).contains(WORKLOAD_JWT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_exchange_needs_no_client_authentication() {
    let server = TokenServer::builder()
        .grant(
            "urn:ietf:params:oauth:grant-type:token-exchange",
            |params| params.get("subject_token").map(String::as_str) == Some("the-service-token"),
        )
        .public_clients()
        .start()
        .await
        .unwrap();
    let subject = TempFile::new("public-subject", "the-service-token");
    let output = run(&[
        "token",
        "--token-url",
        &server.url(),
        "--subject-token-file",
        subject.path(),
        "--subject-token-type",
        "urn:ietf:params:oauth:token-type:access_token",
    ])
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(server.received()[0].header("authorization").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwt_bearer_grant_sends_the_assertion_file() {
    let server = TokenServer::builder()
        .client("cli-client", SECRET)
        .grant("urn:ietf:params:oauth:grant-type:jwt-bearer", |params| {
            params.get("assertion").map(String::as_str) == Some(WORKLOAD_JWT)
        })
        .start()
        .await
        .unwrap();
    let assertion = TempFile::new("jwt-bearer", WORKLOAD_JWT);
    let output = run(&[
        "token",
        "--token-url",
        &server.url(),
        "--client-id",
        "cli-client",
        "--client-secret-env",
        "CLI_SECRET",
        "--jwt-bearer-assertion-file",
        assertion.path(),
        "--scope",
        "orders.read",
    ])
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(server.received()[0].form()["scope"], "orders.read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_subject_token_file_is_a_configuration_error_naming_it() {
    let output = run(&[
        "token",
        "--token-url",
        "http://127.0.0.1:9/oauth/token",
        "--subject-token-file",
        "/nonexistent/tower-oauth2-cli/subject",
        "--subject-token-type",
        "jwt",
    ])
    .await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(stderr(&output).contains("/nonexistent/tower-oauth2-cli/subject"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_token_type_is_a_usage_error() {
    let output = run(&[
        "token",
        "--token-url",
        "http://127.0.0.1:9/oauth/token",
        "--subject-token-file",
        "/nonexistent",
        "--subject-token-type",
        "jwtt",
    ])
    .await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}
