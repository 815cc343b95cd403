//! Errors that say where they came from and what to fix. Full messages are compared (with the
//! port replaced by `PORT`), so any change to them shows up here as a reviewed diff.

use std::time::Duration;

use crate::support::{self, json, raw};
use http::StatusCode;
use tower_oauth2::{
    cache::CachePolicy, client_auth::AuthStyle, client_credentials::ClientCredentialsBuilder,
    ClientCredentials, ErrorKind,
};

const SECRET: &str = "n0t-in-any-message";

fn builder(url: String) -> ClientCredentialsBuilder {
    ClientCredentials::builder()
        .token_url(url)
        .client_id("client-1")
        .client_secret(SECRET)
}

/// `message` with the loopback port replaced, for comparing whole messages.
fn snapshot(message: String, port: u16) -> String {
    assert!(!message.contains(SECRET), "the secret leaked: {message}");
    message.replace(&port.to_string(), "PORT")
}

fn config_message(builder: ClientCredentialsBuilder) -> String {
    let error = builder.build().expect_err("refused");
    assert_eq!(
        tower_oauth2::Error::from(error.clone()).kind(),
        ErrorKind::Config
    );
    let message = error.to_string();
    assert!(!message.contains(SECRET), "the secret leaked: {message}");
    message
}

#[test]
fn build_refuses_a_missing_or_empty_secret() {
    let expected = "client_secret is required: call .client_secret(..) with the secret the \
                    identity provider issued for this client";
    let without = || {
        ClientCredentials::builder()
            .token_url("https://idp.example.com/oauth/token")
            .client_id("client-1")
    };
    assert_eq!(config_message(without()), expected);
    assert_eq!(config_message(without().client_secret("")), expected);
}

#[test]
fn build_refuses_a_secret_or_id_with_surrounding_whitespace() {
    let url = || "https://idp.example.com/oauth/token".to_owned();
    assert_eq!(
        config_message(builder(url()).client_secret(format!("{SECRET}\n"))),
        "client_secret has leading or trailing whitespace (a newline at the end of a mounted \
         secret file?): pass it trimmed, e.g. .client_secret(secret.trim())"
    );
    assert!(
        config_message(builder(url()).client_secret(format!(" {SECRET}")))
            .starts_with("client_secret has leading or trailing whitespace")
    );
    assert_eq!(
        config_message(builder(url()).client_id("client-1\n")),
        "client_id has leading or trailing whitespace (a newline at the end of a file or \
         variable?): pass it trimmed, e.g. .client_id(id.trim())"
    );
}

#[test]
fn build_refuses_a_url_without_a_scheme() {
    assert_eq!(
        config_message(builder("idp.example.com/oauth/token".into())),
        "token_url \"idp.example.com/oauth/token\" is not an absolute URL (it has no scheme, so \
         no host either): give an absolute https://… URL, like \
         https://idp.example.com/oauth/token"
    );
}

#[tokio::test]
async fn a_404_names_the_endpoint_and_says_to_check_token_url() {
    let server = support::scripted(|_, _| raw(StatusCode::NOT_FOUND, "text/plain", "")).await;
    let url = server.url().replace("/oauth/token", "/oauth/tokn");
    let error = builder(url)
        .build()
        .unwrap()
        .fetch_uncached()
        .await
        .unwrap_err();

    assert_eq!(
        error.endpoint(),
        Some(format!("127.0.0.1:{}/oauth/tokn", server.addr().port()).as_str())
    );
    assert_eq!(
        snapshot(error.to_string(), server.addr().port()),
        "the token endpoint rejected the request: HTTP 404 Not Found (token endpoint \
         127.0.0.1:PORT/oauth/tokn); check token_url: the server has no token endpoint at this \
         path (for an issuer URL, its metadata at /.well-known/openid-configuration names the \
         token_endpoint)"
    );
    assert!(!error.is_transient());
}

#[tokio::test]
async fn an_html_page_says_the_url_is_not_a_token_endpoint_and_keeps_an_excerpt() {
    let server = support::scripted(|_, _| {
        raw(
            StatusCode::OK,
            "text/html",
            "<!DOCTYPE html><html><body>Sign in</body></html>",
        )
    })
    .await;
    let error = builder(server.url())
        .build()
        .unwrap()
        .fetch_uncached()
        .await
        .unwrap_err();

    assert_eq!(error.kind(), ErrorKind::InvalidResponse);
    assert!(error
        .body_excerpt()
        .is_some_and(|excerpt| excerpt.starts_with("<!DOCTYPE html>")));
    assert_eq!(
        snapshot(error.to_string(), server.addr().port()),
        "the token endpoint answered 200 OK, but the body is neither a JSON object nor a form \
         (expected value at line 1 column 1): body \"<!DOCTYPE html><html><body>Sign \
         in</body></html>\" (token endpoint 127.0.0.1:PORT/oauth/token); this URL does not look \
         like a token endpoint: check token_url (the token endpoint, not the issuer or an \
         authorization page)"
    );
}

#[tokio::test]
async fn invalid_client_suggests_the_other_client_authentication() {
    let server = support::scripted(|_, _| {
        json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({ "error": "invalid_client" }),
        )
    })
    .await;
    let basic = builder(server.url())
        .build()
        .unwrap()
        .fetch_uncached()
        .await
        .unwrap_err();
    assert!(
        basic
            .hint()
            .unwrap()
            .ends_with(".auth_style(AuthStyle::Form)"),
        "{basic}"
    );
    let form = builder(server.url())
        .auth_style(AuthStyle::Form)
        .build()
        .unwrap()
        .fetch_uncached()
        .await
        .unwrap_err();
    assert!(
        form.hint()
            .unwrap()
            .ends_with(".auth_style(AuthStyle::Basic)"),
        "{form}"
    );
    assert_eq!(
        snapshot(basic.to_string(), server.addr().port()),
        "the token endpoint rejected the request: HTTP 401 Unauthorized: invalid_client (token \
         endpoint 127.0.0.1:PORT/oauth/token); check the client id and secret; if they are \
         right, the server may want them in the body: .auth_style(AuthStyle::Form)"
    );
}

#[tokio::test]
async fn https_to_a_plain_http_port_says_so_and_is_permanent() {
    let server = support::issuing(3600).await;
    let url = format!("https://127.0.0.1:{}/oauth/token", server.addr().port());
    let error = builder(url)
        .build()
        .unwrap()
        .fetch_uncached()
        .await
        .unwrap_err();

    assert_eq!(error.kind(), ErrorKind::Transport);
    assert!(!error.is_transient(), "retrying cannot help: {error}");
    let message = snapshot(error.to_string(), server.addr().port());
    assert!(
        message.starts_with("the token endpoint does not speak TLS on this port"),
        "{message}"
    );
    assert!(
        message.ends_with(
            "(token endpoint 127.0.0.1:PORT/oauth/token); check the port and scheme of \
             token_url: an https:// URL pointing at a plain HTTP port"
        ),
        "{message}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_error_served_during_backoff_says_when_the_next_attempt_is() {
    let _ticker = support::ticker();
    let server =
        support::scripted(|_, _| raw(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "down")).await;
    let credentials = builder(server.url())
        .cache_policy(
            CachePolicy::default().backoff(Duration::from_secs(8), Duration::from_secs(8)),
        )
        .build()
        .unwrap();

    let first = credentials.token().await.unwrap_err();
    assert_eq!(first.next_attempt_in(), None);
    tokio::time::advance(Duration::from_secs(1)).await;
    let again = credentials.token().await.unwrap_err();

    assert_eq!(server.requests(), 1, "served from the backoff step");
    let next = again.next_attempt_in().expect("says when");
    assert!(
        next > Duration::from_secs(2) && next < Duration::from_secs(8),
        "{next:?}"
    );
    assert!(again.to_string().contains("; next attempt in "), "{again}");
}

/// A discovery endpoint at `/issuer`: its metadata document names `metadata_issuer`, or there
/// is none (404) when that is `None`.
async fn issuer_publishing(
    metadata_issuer: Option<&'static str>,
) -> tower_oauth2::test_util::TokenServer {
    tower_oauth2::test_util::TokenServer::builder()
        .script(move |request, _| async move {
            let path = request.uri.path().to_owned();
            let port = request
                .headers
                .get("host")
                .and_then(|host| host.to_str().ok())
                .map(str::to_owned)
                .unwrap_or_default();
            Some(match metadata_issuer {
                Some(issuer) if path.contains(".well-known") => json(
                    StatusCode::OK,
                    serde_json::json!({
                        "issuer": issuer.replace("HOST", &port),
                        "token_endpoint": format!("http://{port}/oauth/token"),
                    }),
                ),
                _ => raw(StatusCode::NOT_FOUND, "text/plain", "not found"),
            })
        })
        .start()
        .await
        .unwrap()
}

/// Every message is one line of prose: no line break, no stray backslash (a `\\` before a line
/// break in a string literal keeps both, and the indentation after them).
fn assert_one_line(error: &tower_oauth2::Error) {
    for text in [
        error.to_string(),
        error.hint().unwrap_or_default().to_owned(),
    ] {
        assert!(
            !text.contains('\n') && !text.contains('\\') && !text.contains("  "),
            "not one clean line: {text:?}"
        );
    }
}

#[tokio::test]
async fn discovery_errors_are_one_line_and_name_the_metadata_not_a_token_endpoint() {
    let nowhere = issuer_publishing(None).await;
    let issuer = format!("http://{}/issuer", nowhere.addr());
    let error = ClientCredentials::builder()
        .issuer(issuer)
        .client_id("client-1")
        .client_secret(SECRET)
        .build()
        .unwrap()
        .token()
        .await
        .unwrap_err();
    assert_one_line(&error);
    assert_eq!(
        snapshot(error.to_string(), nowhere.addr().port()),
        "the issuer publishes no metadata at /.well-known/oauth-authorization-server or \
         /.well-known/openid-configuration (issuer 127.0.0.1:PORT/issuer); \
         check the issuer URL, or give the token endpoint with .token_url(..)"
    );

    let other = issuer_publishing(Some("http://HOST/another-issuer")).await;
    let error = ClientCredentials::builder()
        .issuer(format!("http://{}/issuer", other.addr()))
        .client_id("client-1")
        .client_secret(SECRET)
        .build()
        .unwrap()
        .token()
        .await
        .unwrap_err();
    assert_one_line(&error);
    let message = snapshot(error.to_string(), other.addr().port());
    assert!(
        message.contains(
            "(issuer metadata 127.0.0.1:PORT/.well-known/oauth-authorization-server/issuer)"
        ),
        "{message}"
    );
    assert!(!message.contains("token endpoint 127.0.0.1"), "{message}");
    assert!(
        error.hint().unwrap().starts_with("check the issuer"),
        "{message}"
    );
}

#[test]
fn a_client_assertion_param_clash_is_not_about_the_client_secret() {
    let message = config_message(
        ClientCredentials::builder()
            .token_url("http://127.0.0.1:1/oauth/token")
            .client_id("client-1")
            .client_secret("a-client-secret-of-at-least-32-bytes")
            .client_secret_jwt()
            .param("client_assertion", "from-elsewhere"),
    );
    assert!(!message.contains(".client_id/.client_secret"), "{message}");
    assert!(message.contains("client assertion"), "{message}");
}

/// Credentials made elsewhere: errors name the file and say what to check.
#[tokio::test]
async fn credentials_made_elsewhere_name_the_file() {
    let server = support::issuing(3600).await;
    let port = server.addr().port();
    let dir = std::env::temp_dir().join(format!("tower-oauth2-messages-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("token");
    let assertion = || {
        ClientCredentials::builder()
            .token_url(server.url())
            .client_id("client-1")
            .client_assertion_file(&missing)
    };
    let message = |error: tower_oauth2::Error| {
        snapshot(error.to_string(), port).replace(&dir.display().to_string(), "DIR")
    };
    let credentials = assertion().build().unwrap();
    assert_eq!(
        message(credentials.token().await.unwrap_err()),
        "the client assertion file DIR/token does not exist (yet): \
         is the volume mounted and the path right? It is read again at the next token request \
         (token endpoint 127.0.0.1:PORT/oauth/token)"
    );
    std::fs::write(&missing, "a.eyJleHAiOjF9.c").unwrap();
    let credentials = assertion().build().unwrap();
    let text = message(credentials.token().await.unwrap_err());
    assert!(
        text.starts_with(
            "the client assertion from the file DIR/token expired "
        ) && text.ends_with(
            " s ago (its exp, read without verifying): whatever writes it has not refreshed it \
             (token endpoint 127.0.0.1:PORT/oauth/token)"
        ),
        "{text}"
    );
    std::fs::write(&missing, "\n").unwrap();
    let credentials = assertion().build().unwrap();
    assert_eq!(
        message(credentials.token().await.unwrap_err()),
        "the client assertion file DIR/token is empty; it is read \
         again at the next token request (token endpoint 127.0.0.1:PORT/oauth/token)"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
