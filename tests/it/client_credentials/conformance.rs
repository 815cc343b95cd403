//! The conformance cases of the crate's spec: request encoding, builder validation, response
//! decoding, error typing and secrecy, each against a real token endpoint on loopback.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::support::{self, json, raw, Body};
use bytes::Bytes;
use http::header::{HeaderValue, RETRY_AFTER};
use http::{Method, StatusCode};
use serde_json::json as j;
use tower_oauth2::test_util::{Received, TokenServer};
use tower_oauth2::{
    client_auth::AuthStyle, client_credentials::ClientCredentialsBuilder, AccessToken,
    ClientCredentials, Error, ErrorKind,
};

const SECRET: &str = "Zq8!w/P+x~Kd3;v";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn builder(server: &TokenServer) -> ClientCredentialsBuilder {
    ClientCredentials::builder()
        .token_url(server.url())
        .client_id("client-1")
        .client_secret(SECRET)
}

/// Fetch once from an endpoint that sends the given response, with the client as configured
/// by `configure` on top of [`builder`].
async fn fetch_answer(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
    configure: impl FnOnce(ClientCredentialsBuilder) -> ClientCredentialsBuilder,
) -> (TokenServer, Result<AccessToken, Error>) {
    let body: Bytes = body.into();
    let server = support::scripted(move |_, _| raw(status, content_type, body.clone())).await;
    let credentials = configure(builder(&server)).build().unwrap();
    let result = credentials.fetch_uncached().await;
    assert_eq!(server.requests(), 1, "fetch() sends exactly one request");
    (server, result)
}

async fn answer_json(value: serde_json::Value) -> Result<AccessToken, Error> {
    let server = support::scripted(move |_, _| json(StatusCode::OK, value.clone())).await;
    let result = builder(&server).build().unwrap().fetch_uncached().await;
    assert_eq!(server.requests(), 1, "fetch() sends exactly one request");
    result
}

/// Fetch a token from a well-behaved endpoint and return what it saw.
async fn request_seen(
    configure: impl FnOnce(ClientCredentialsBuilder) -> ClientCredentialsBuilder,
) -> Received {
    let server = support::issuing(3600).await;
    let credentials = configure(builder(&server)).build().unwrap();
    let token = credentials.fetch_uncached().await.expect("a token");
    assert_eq!(token.secret(), "token-1");
    assert_eq!(server.requests(), 1);
    support::last(&server)
}

fn content_type(request: &Received) -> Option<String> {
    request
        .header("content-type")
        .and_then(|value| value.split(';').next())
        .map(|essence| essence.trim().to_ascii_lowercase())
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn assert_expires_in(token: &AccessToken, before: Instant, after: Instant, lifetime: Duration) {
    let slack = Duration::from_secs(2);
    let at = token.expires_at().expect("the token has an expiry time");
    assert!(
        at + slack >= before + lifetime,
        "expires {:?} after the request started, expected about {lifetime:?}",
        at.saturating_duration_since(before)
    );
    assert!(
        at <= after + lifetime + slack,
        "expires {:?} after the response arrived, expected about {lifetime:?}",
        at.saturating_duration_since(after)
    );
}

/// Answer `value` with 200 and check the token expires `lifetime` from now.
async fn assert_lifetime_of(value: serde_json::Value, lifetime: Duration) {
    let before = Instant::now();
    let token = answer_json(value.clone())
        .await
        .unwrap_or_else(|e| panic!("{value} should be accepted: {e}"));
    let after = Instant::now();
    assert_expires_in(&token, before, after, lifetime);
}

fn config_error(builder: ClientCredentialsBuilder) -> Error {
    let err = Error::from(builder.build().expect_err("build() must refuse this"));
    assert_eq!(err.kind(), ErrorKind::Config, "{err:?}");
    assert!(!err.is_transient());
    err
}

fn assert_invalid_response(result: Result<AccessToken, Error>, what: &str) -> Error {
    let err = result.expect_err(what);
    assert_eq!(err.kind(), ErrorKind::InvalidResponse, "{what}: {err:?}");
    assert!(!err.is_transient(), "{what}");
    err
}

// ---------------------------------------------------------------------------------------------
// Client authentication
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn basic_auth_urlencodes_id_and_secret() {
    let seen = request_seen(|b| {
        b.client_id("CLIENT_ID??")
            .client_secret("CLIENT_SECRET??")
            .auth_style(AuthStyle::Basic)
    })
    .await;
    assert_eq!(
        seen.basic(),
        Some((
            "CLIENT_ID%3F%3F".to_owned(),
            "CLIENT_SECRET%3F%3F".to_owned()
        ))
    );
    // The credentials are in the header only; the body carries the grant type.
    assert_eq!(seen.form(), map(&[("grant_type", "client_credentials")]));
    assert_eq!(&seen.body[..], b"grant_type=client_credentials");
}

#[tokio::test]
async fn basic_auth_urlencodes_reserved_characters() {
    // A colon in the id would otherwise split the pair in the wrong place.
    let seen = request_seen(|b| b.client_id("id:with space").client_secret("a+b/c%d&e=f")).await;
    assert_eq!(
        seen.basic(),
        Some((
            "id%3Awith%20space".to_owned(),
            "a%2Bb%2Fc%25d%26e%3Df".to_owned()
        ))
    );
}

/// Percent-decoding only, as Authlib reads Basic credentials: `+` stays a plus sign.
fn percent_decode(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

#[tokio::test]
async fn basic_auth_is_understood_by_a_server_that_only_percent_decodes() {
    const AUTHLIB_SECRET: &str = "Sp3c!al:+/&=% ~secret";
    let server = support::scripted(|request, _| {
        let decoded = request
            .basic()
            .and_then(|(id, secret)| Some((percent_decode(&id)?, percent_decode(&secret)?)));
        if decoded == Some(("my client".to_owned(), AUTHLIB_SECRET.to_owned())) {
            json(
                StatusCode::OK,
                j!({"access_token": "ok", "token_type": "Bearer", "expires_in": 60}),
            )
        } else {
            json(StatusCode::UNAUTHORIZED, j!({"error": "invalid_client"}))
        }
    })
    .await;
    let credentials = ClientCredentials::builder()
        .token_url(server.url())
        .client_id("my client")
        .client_secret(AUTHLIB_SECRET)
        .auth_style(AuthStyle::Basic)
        .build()
        .unwrap();
    let token = credentials
        .fetch_uncached()
        .await
        .expect("accepted by a percent-decoding server");
    assert_eq!(token.secret(), "ok");
}

#[tokio::test]
async fn basic_auth_without_urlencoding_sends_raw_credentials() {
    let seen = request_seen(|b| {
        b.client_id("CLIENT_ID??")
            .client_secret("CLIENT_SECRET??")
            .basic_auth_urlencode(false)
    })
    .await;
    assert_eq!(
        seen.basic(),
        Some(("CLIENT_ID??".to_owned(), "CLIENT_SECRET??".to_owned()))
    );
    assert_eq!(seen.form(), map(&[("grant_type", "client_credentials")]));
}

#[tokio::test]
async fn basic_auth_body_carries_only_grant_type_and_parameters() {
    let seen = request_seen(|b| {
        b.auth_style(AuthStyle::Basic)
            .scope("read")
            .audience("https://api.example")
            .param("resource", "https://res.example")
    })
    .await;
    assert_eq!(seen.basic(), Some(("client-1".to_owned(), urlenc(SECRET))));
    assert_eq!(
        seen.form(),
        map(&[
            ("grant_type", "client_credentials"),
            ("scope", "read"),
            ("audience", "https://api.example"),
            ("resource", "https://res.example"),
        ])
    );
    let body = String::from_utf8_lossy(&seen.body);
    assert!(!body.contains("client_id"), "{body}");
    assert!(!body.contains("client_secret"), "{body}");
    assert!(
        !body.contains(SECRET) && !body.contains(&urlenc(SECRET)),
        "{body}"
    );
}

fn urlenc(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[tokio::test]
async fn form_and_json_styles_send_credentials_in_the_body_only() {
    let form = request_seen(|b| b.auth_style(AuthStyle::Form)).await;
    assert_eq!(form.header("authorization"), None);
    assert_eq!(
        form.form(),
        map(&[
            ("grant_type", "client_credentials"),
            ("client_id", "client-1"),
            ("client_secret", SECRET),
        ])
    );

    let json_body = request_seen(|b| b.auth_style(AuthStyle::Json)).await;
    assert_eq!(json_body.header("authorization"), None);
    assert_eq!(
        json_body.json(),
        j!({
            "grant_type": "client_credentials",
            "client_id": "client-1",
            "client_secret": SECRET,
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn scopes_are_sent_space_joined() {
    for style in [AuthStyle::Basic, AuthStyle::Form] {
        let seen = request_seen(|b| b.auth_style(style).scope("scope1").scope("scope2")).await;
        assert_eq!(
            seen.form().get("scope").map(String::as_str),
            Some("scope1 scope2"),
            "{style:?}"
        );
        // One scope parameter, not one per scope.
        let scopes = form_urlencoded::parse(&seen.body)
            .filter(|(name, _)| name == "scope")
            .count();
        assert_eq!(scopes, 1, "{style:?}");
    }
    let seen = request_seen(|b| {
        b.auth_style(AuthStyle::Json)
            .scope("scope1")
            .scope("scope2")
    })
    .await;
    assert_eq!(seen.json()["scope"], "scope1 scope2");
}

#[tokio::test]
async fn audience_and_extra_parameters_in_every_body_format() {
    let configure = |style| {
        move |b: ClientCredentialsBuilder| {
            b.auth_style(style)
                .audience("https://api.example/")
                .param("resource", "https://api.example")
        }
    };
    for style in [AuthStyle::Basic, AuthStyle::Form] {
        let seen = request_seen(configure(style)).await;
        let form = seen.form();
        assert_eq!(form["audience"], "https://api.example/", "{style:?}");
        assert_eq!(form["resource"], "https://api.example", "{style:?}");
        assert_eq!(form["grant_type"], "client_credentials", "{style:?}");
        assert_eq!(seen.method, Method::POST);
        assert_eq!(
            content_type(&seen).as_deref(),
            Some("application/x-www-form-urlencoded"),
            "{style:?}"
        );
        assert_eq!(seen.header("accept"), Some("application/json"), "{style:?}");
    }
    let seen = request_seen(configure(AuthStyle::Json)).await;
    assert_eq!(
        seen.json(),
        j!({
            "grant_type": "client_credentials",
            "client_id": "client-1",
            "client_secret": SECRET,
            "audience": "https://api.example/",
            "resource": "https://api.example",
        })
    );
    assert_eq!(seen.method, Method::POST);
    assert_eq!(content_type(&seen).as_deref(), Some("application/json"));
    assert_eq!(seen.header("accept"), Some("application/json"));
}

#[tokio::test]
async fn grant_type_parameter_overrides_the_grant_type() {
    for style in [AuthStyle::Basic, AuthStyle::Form] {
        let seen = request_seen(|b| b.auth_style(style).param("grant_type", "urn:custom")).await;
        let grant_types: Vec<String> = form_urlencoded::parse(&seen.body)
            .filter(|(name, _)| name == "grant_type")
            .map(|(_, value)| value.into_owned())
            .collect();
        assert_eq!(grant_types, ["urn:custom"], "{style:?}");
    }
    let seen = request_seen(|b| {
        b.auth_style(AuthStyle::Json)
            .param("grant_type", "urn:custom")
    })
    .await;
    assert_eq!(seen.json()["grant_type"], "urn:custom");
}

#[tokio::test]
async fn scope_as_a_plain_parameter_is_allowed_alone() {
    let seen = request_seen(|b| b.param("scope", "a b")).await;
    assert_eq!(seen.form()["scope"], "a b");
}

// ---------------------------------------------------------------------------------------------
// Builder validation
// ---------------------------------------------------------------------------------------------

fn valid() -> ClientCredentialsBuilder {
    ClientCredentials::builder()
        .token_url("https://idp.example.com/oauth/token")
        .client_id("client-1")
        .client_secret(SECRET)
}

#[test]
fn config_valid_https_builds() {
    valid()
        .build()
        .expect("a complete https configuration builds");
}

#[test]
fn config_missing_token_url() {
    let err = config_error(ClientCredentials::builder().client_id("client-1"));
    assert!(err.to_string().contains("token_url"), "{err}");
}

#[test]
fn config_missing_client_id() {
    let err = config_error(
        ClientCredentials::builder()
            .token_url("https://idp.example.com/oauth/token")
            .client_secret(SECRET),
    );
    assert!(err.to_string().contains("client_id"), "{err}");
    let err = config_error(valid().client_id(""));
    assert!(err.to_string().contains("client_id"), "{err}");
}

#[test]
fn config_unparsable_url() {
    for url in [
        "https://idp example.com/token",
        "http://[::1/token",
        "ht tp://x",
    ] {
        let err = config_error(valid().token_url(url));
        let message = err.to_string();
        assert!(message.contains("token_url"), "{message}");
        assert!(message.contains(url), "{message}");
        assert!(message.contains("URL"), "{message}");
    }
}

#[test]
fn config_url_without_host() {
    let err = config_error(valid().token_url("/oauth/token"));
    let message = err.to_string();
    assert!(message.contains("/oauth/token"), "{message}");
    assert!(message.contains("host"), "{message}");
}

#[test]
fn config_ftp_url() {
    let err = config_error(valid().token_url("ftp://idp.example.com/token"));
    let message = err.to_string();
    assert!(message.contains("ftp://idp.example.com/token"), "{message}");
    assert!(message.contains("https"), "{message}");
}

#[test]
fn config_plain_http_to_a_remote_host() {
    for url in [
        "http://idp.example.com/token",
        "http://localhost.evil.example/token",
        "http://127.0.0.1.nip.io/token",
        "http://10.0.0.1/token",
    ] {
        let err = config_error(valid().token_url(url));
        let message = err.to_string();
        assert!(message.contains(url), "{message}");
        assert!(message.contains("http"), "{message}");
        assert!(message.contains("allow_insecure_http"), "{message}");
    }
}

#[test]
fn config_plain_http_allowed_when_opted_in() {
    valid()
        .token_url("http://idp.example.com/token")
        .allow_insecure_http()
        .build()
        .expect("allowed with .allow_insecure_http()");
}

#[test]
fn config_plain_http_allowed_for_loopback() {
    for url in [
        "http://127.0.0.1/token",
        "http://127.0.0.1:8080/token",
        "http://[::1]/token",
        "http://[::1]:8080/token",
        "http://localhost/token",
        "http://localhost:8080/token",
        "http://LOCALHOST/token",
    ] {
        if let Err(err) = valid().token_url(url).build() {
            panic!("{url} is loopback and must be allowed: {err}");
        }
    }
}

#[test]
fn config_param_clashing_with_client_authentication() {
    let err = config_error(valid().param("client_id", "other"));
    assert!(err.to_string().contains("client_id"), "{err}");
    let err = config_error(valid().param("client_secret", "other"));
    assert!(err.to_string().contains("client_secret"), "{err}");
    assert!(!err.to_string().contains("other"), "{err}");
}

#[test]
fn config_scope_given_twice() {
    let err = config_error(valid().scope("read").param("scope", "write"));
    assert!(err.to_string().contains("scope"), "{err}");
    // Whichever comes first.
    let err = config_error(valid().param("scope", "write").scope("read"));
    assert!(err.to_string().contains("scope"), "{err}");
}

#[test]
fn config_audience_given_twice() {
    let err = config_error(valid().audience("https://a").param("audience", "https://b"));
    assert!(err.to_string().contains("audience"), "{err}");
    let err = config_error(valid().param("audience", "https://b").audience("https://a"));
    assert!(err.to_string().contains("audience"), "{err}");
}

#[test]
fn config_same_parameter_twice() {
    let err = config_error(
        valid()
            .param("resource", "https://one.example")
            .param("resource", "https://two.example"),
    );
    let message = err.to_string();
    assert!(message.contains("resource"), "{message}");
    assert!(message.contains("twice"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// expires_in
// ---------------------------------------------------------------------------------------------

fn token_with_expires_in(expires_in: serde_json::Value) -> serde_json::Value {
    j!({ "access_token": "t", "token_type": "Bearer", "expires_in": expires_in })
}

#[tokio::test]
async fn expires_in_as_number_or_string_of_digits() {
    let day = Duration::from_secs(86400);
    assert_lifetime_of(token_with_expires_in(j!(86400)), day).await;
    assert_lifetime_of(token_with_expires_in(j!("86400")), day).await;
}

#[tokio::test]
async fn expires_in_null_or_absent_uses_the_default_lifetime() {
    assert_eq!(
        ClientCredentialsBuilder::DEFAULT_LIFETIME,
        Duration::from_secs(3600)
    );
    let absent = j!({ "access_token": "t", "token_type": "Bearer" });
    for body in [token_with_expires_in(j!(null)), absent] {
        assert_lifetime_of(body.clone(), ClientCredentialsBuilder::DEFAULT_LIFETIME).await;

        let custom = Duration::from_secs(120);
        let before = Instant::now();
        let (_, result) = fetch_answer(StatusCode::OK, "application/json", body.to_string(), |b| {
            b.default_lifetime(custom)
        })
        .await;
        let after = Instant::now();
        assert_expires_in(&result.expect("a token"), before, after, custom);
    }
}

#[tokio::test]
async fn expires_in_that_is_not_a_whole_number_of_seconds_is_refused() {
    for expires_in in [
        j!(false),
        j!({}),
        j!("zzz"),
        j!(3599.5),
        j!(-1),
        j!([3600]),
        j!(""),
    ] {
        let result = answer_json(token_with_expires_in(expires_in.clone())).await;
        let err = assert_invalid_response(result, &format!("expires_in {expires_in}"));
        assert!(err.to_string().contains("expires_in"), "{err}");
    }
}

#[tokio::test]
async fn huge_expires_in_is_clamped() {
    let far = Duration::from_secs(365 * 24 * 3600);
    for body in [
        r#"{"access_token":"t","token_type":"Bearer","expires_in":9223372036854775808}"#,
        r#"{"access_token":"t","token_type":"Bearer","expires_in":18446744073709551615}"#,
        r#"{"access_token":"t","token_type":"Bearer","expires_in":"18446744073709551616"}"#,
        r#"{"access_token":"t","token_type":"Bearer","expires_in":"99999999999999999999999999999999"}"#,
    ] {
        let (_, result) = fetch_answer(StatusCode::OK, "application/json", body, |b| b).await;
        let token = result.unwrap_or_else(|e| panic!("{body}: {e}"));
        let at = token.expires_at().expect("an expiry");
        assert!(at > Instant::now() + far, "{body}: clamped too far");
    }
}

// ---------------------------------------------------------------------------------------------
// Response formats
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn form_encoded_success_response() {
    for content_type in [
        "application/x-www-form-urlencoded",
        "text/plain; charset=utf-8",
    ] {
        let before = Instant::now();
        let (_, result) = fetch_answer(
            StatusCode::OK,
            content_type,
            "access_token=abc&token_type=bearer&expires_in=60",
            |b| b,
        )
        .await;
        let after = Instant::now();
        let token = result.unwrap_or_else(|e| panic!("{content_type}: {e}"));
        assert_eq!(token.secret(), "abc", "{content_type}");
        assert_expires_in(&token, before, after, Duration::from_secs(60));
    }
}

#[tokio::test]
async fn scope_in_the_response_is_kept() {
    let token = answer_json(j!({ "access_token": "t", "token_type": "Bearer", "scope": "a b" }))
        .await
        .unwrap();
    assert_eq!(token.scope(), Some("a b"));
}

#[tokio::test]
async fn unusable_access_token_is_refused() {
    let cases = [
        ("absent", j!({ "token_type": "Bearer", "expires_in": 60 })),
        ("null", j!({ "access_token": null, "token_type": "Bearer" })),
        (
            "a number",
            j!({ "access_token": 12345, "token_type": "Bearer" }),
        ),
        ("empty", j!({ "access_token": "", "token_type": "Bearer" })),
    ];
    for (what, body) in cases {
        let err = assert_invalid_response(answer_json(body).await, what);
        assert!(err.to_string().contains("access_token"), "{what}: {err}");
    }
    // Not JSON at all.
    let (_, result) = fetch_answer(StatusCode::OK, "text/html", "<html>ok</html>", |b| b).await;
    assert_invalid_response(result, "an HTML 200");
}

#[tokio::test]
async fn token_type_bearer_in_any_case() {
    for kind in ["Bearer", "bearer", "BEARER"] {
        let token = answer_json(j!({ "access_token": "t", "token_type": kind }))
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(token.secret(), "t");
        assert_eq!(token.token_type(), "Bearer");
    }
    let err = assert_invalid_response(
        answer_json(j!({ "access_token": "t", "token_type": "mac" })).await,
        "mac",
    );
    assert!(err.to_string().contains("mac"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Errors from the endpoint
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn oauth_error_bodies_are_typed() {
    let (_, result) = fetch_answer(
        StatusCode::BAD_REQUEST,
        "application/json",
        r#"{"error":"invalid_client"}"#,
        |b| b,
    )
    .await;
    let err = result.expect_err("400");
    assert_eq!(err.kind(), ErrorKind::Rejected);
    assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST));
    assert!(!err.is_transient());
    let oauth = err.oauth_error().expect("the RFC 6749 error");
    assert_eq!(oauth.code(), "invalid_client");
    assert_eq!(oauth.description(), None);
    assert_eq!(oauth.uri(), None);
    assert!(err.to_string().contains("invalid_client"), "{err}");

    let (_, result) = fetch_answer(
        StatusCode::BAD_REQUEST,
        "application/json;charset=UTF-8",
        j!({
            "error": "invalid_scope",
            "error_description": "The requested scope is invalid: admin",
            "error_uri": "https://idp.example.com/docs/errors#invalid_scope",
        })
        .to_string(),
        |b| b,
    )
    .await;
    let err = result.expect_err("400");
    assert_eq!(err.kind(), ErrorKind::Rejected);
    assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST));
    assert!(!err.is_transient());
    let oauth = err.oauth_error().expect("the RFC 6749 error");
    assert_eq!(oauth.code(), "invalid_scope");
    assert_eq!(
        oauth.description(),
        Some("The requested scope is invalid: admin")
    );
    assert_eq!(
        oauth.uri(),
        Some("https://idp.example.com/docs/errors#invalid_scope")
    );
}

#[tokio::test]
async fn oauth_error_in_a_200_is_a_rejection() {
    let (_, result) = fetch_answer(
        StatusCode::OK,
        "application/json",
        r#"{"error":"invalid_grant","error_description":"grant revoked"}"#,
        |b| b,
    )
    .await;
    let err = result.expect_err("an error body, whatever the status");
    assert_eq!(err.kind(), ErrorKind::Rejected);
    assert!(!err.is_transient());
    let oauth = err.oauth_error().expect("the RFC 6749 error");
    assert_eq!(oauth.code(), "invalid_grant");
    assert_eq!(oauth.description(), Some("grant revoked"));
}

#[tokio::test]
async fn rejections_with_empty_bodies_are_distinguishable() {
    let mut statuses = Vec::new();
    for status in [
        StatusCode::UNAUTHORIZED,
        StatusCode::FORBIDDEN,
        StatusCode::METHOD_NOT_ALLOWED,
    ] {
        let (_, result) = fetch_answer(status, "", "", |b| b).await;
        let err = result.expect_err("rejected");
        assert_eq!(err.kind(), ErrorKind::Rejected, "{status}");
        assert_eq!(err.status(), Some(status));
        assert!(!err.is_transient(), "{status} must not be retried");
        assert!(err.oauth_error().is_none(), "{status}");
        assert!(err.body_excerpt().is_none(), "{status}: the body was empty");
        statuses.push(err.status());
    }
    statuses.dedup();
    assert_eq!(statuses.len(), 3);
}

#[tokio::test]
async fn server_error_with_a_large_html_page() {
    let mut page = String::from(
        "<!DOCTYPE html>\r\n<html>\n<head><title>503 Service Unavailable</title></head>\n<body>\n",
    );
    while page.len() < 12 * 1024 {
        page.push_str("\t<p>The server is temporarily unable to service your request.\u{7}</p>\n");
    }
    page.push_str("</body>\n</html>\n");
    assert!(page.len() > 10 * 1024);

    let body = Bytes::from(page);
    let server = support::scripted(move |_, _| {
        let mut response = raw(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/html; charset=utf-8",
            body.clone(),
        );
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("120"));
        response
    })
    .await;
    let err = builder(&server)
        .build()
        .unwrap()
        .fetch_uncached()
        .await
        .expect_err("503");
    assert_eq!(err.kind(), ErrorKind::Rejected);
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert!(err.is_transient());
    assert!(err.oauth_error().is_none());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));
    let excerpt = err.body_excerpt().expect("an excerpt of the page");
    assert!(
        excerpt.chars().count() <= 201,
        "{} chars: {excerpt:?}",
        excerpt.chars().count()
    );
    assert!(excerpt.starts_with("<!DOCTYPE html>"), "{excerpt:?}");
    assert!(excerpt.contains("503 Service Unavailable"), "{excerpt:?}");
    assert!(
        !excerpt.chars().any(char::is_control),
        "control characters in {excerpt:?}"
    );
    let display = err.to_string();
    assert!(display.len() < 1024, "Display is bounded: {display}");
    assert!(!display.chars().any(char::is_control), "{display:?}");
}

#[tokio::test]
async fn server_errors_and_throttling_are_transient() {
    for status in [
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::BAD_GATEWAY,
        StatusCode::SERVICE_UNAVAILABLE,
        StatusCode::GATEWAY_TIMEOUT,
        StatusCode::TOO_MANY_REQUESTS,
        StatusCode::REQUEST_TIMEOUT,
    ] {
        let (_, result) = fetch_answer(status, "text/plain", "try later", |b| b).await;
        let err = result.expect_err("rejected");
        assert_eq!(err.kind(), ErrorKind::Rejected, "{status}");
        assert_eq!(err.status(), Some(status));
        assert!(err.is_transient(), "{status} is worth retrying");
        assert_eq!(err.body_excerpt(), Some("try later"));
    }
    let (_, result) = fetch_answer(
        StatusCode::BAD_REQUEST,
        "application/json",
        r#"{"error":"temporarily_unavailable"}"#,
        |b| b,
    )
    .await;
    assert!(result.expect_err("rejected").is_transient());
}

// ---------------------------------------------------------------------------------------------
// Secrets never leak
// ---------------------------------------------------------------------------------------------

/// Every place an error shows text that contains one of `secrets`.
fn leaks(err: &Error, secrets: &[&str]) -> Vec<String> {
    let mut texts = vec![format!("{err}"), format!("{err:?}")];
    texts.extend(err.body_excerpt().map(str::to_owned));
    if let Some(oauth) = err.oauth_error() {
        texts.push(oauth.code().to_owned());
        texts.extend(oauth.description().map(str::to_owned));
        texts.extend(oauth.uri().map(str::to_owned));
        texts.push(oauth.to_string());
    }
    texts
        .into_iter()
        .filter(|text| secrets.iter().any(|secret| text.contains(secret)))
        .collect()
}

fn assert_no_secret(err: &Error, secrets: &[&str], what: &str) {
    let leaks = leaks(err, secrets);
    assert!(leaks.is_empty(), "{what}: the secret leaks in {leaks:?}");
}

#[tokio::test]
async fn errors_never_echo_the_client_secret() {
    let encoded = urlenc(SECRET);
    let basic = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("client-1:{encoded}"))
    };
    let secrets = [SECRET, encoded.as_str(), basic.as_str()];
    let cases: Vec<(&str, StatusCode, &'static str, String)> = vec![
        (
            "500 text echo",
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("bad secret: {SECRET}"),
        ),
        (
            "400 error_description echo",
            StatusCode::BAD_REQUEST,
            "application/json",
            j!({ "error": "invalid_client", "error_description": format!("secret {SECRET} is wrong") })
                .to_string(),
        ),
        (
            "401 echo of the form-encoded secret",
            StatusCode::UNAUTHORIZED,
            "text/html",
            format!("<p>client_secret={encoded} rejected</p>"),
        ),
        (
            "401 echo of the Basic header",
            StatusCode::UNAUTHORIZED,
            "text/plain",
            format!("Authorization: Basic {basic} is not valid"),
        ),
        (
            "200 that is not a token",
            StatusCode::OK,
            "text/html",
            format!("<html>login failed for {SECRET}</html>"),
        ),
        (
            "200 with an error code echoing it",
            StatusCode::OK,
            "application/json",
            j!({ "error": format!("bad_{SECRET}") }).to_string(),
        ),
    ];
    for (what, status, content_type, body) in cases {
        let (_, result) = fetch_answer(status, content_type, body, |b| b).await;
        let err = result.expect_err(what);
        assert_no_secret(&err, &secrets, what);
    }

    // The same with the secret in a JSON body, echoed JSON-escaped.
    let secret = r#"q"uo\te"#;
    let escaped = serde_json::to_string(secret).unwrap();
    let escaped = escaped.trim_matches('"');
    let (_, result) = fetch_answer(
        StatusCode::BAD_REQUEST,
        "text/plain",
        format!(r#"cannot parse {{"client_secret":"{escaped}"}}"#),
        |b| b.auth_style(AuthStyle::Json).client_secret(secret),
    )
    .await;
    let err = result.expect_err("400");
    let excerpt = err.body_excerpt().expect("an excerpt");
    assert!(excerpt.contains("cannot parse"), "{excerpt}");
    assert!(!excerpt.contains(escaped), "{excerpt}");
    assert!(!excerpt.contains(secret), "{excerpt}");
}

#[tokio::test]
async fn errors_about_token_fields_never_echo_the_client_secret() {
    // A broken endpoint that puts what it got into the fields of a 200.
    let mut found = Vec::new();
    for body in [
        j!({ "access_token": "t", "token_type": SECRET }),
        j!({ "access_token": "t", "token_type": "Bearer", "expires_in": SECRET }),
    ] {
        let err = answer_json(body.clone()).await.expect_err("not a token");
        assert_eq!(err.kind(), ErrorKind::InvalidResponse);
        found.extend(
            leaks(&err, &[SECRET])
                .into_iter()
                .map(|leak| (body.to_string(), leak)),
        );
    }
    assert!(found.is_empty(), "the secret leaks: {found:#?}");
}

#[test]
fn debug_never_shows_the_secret() {
    let builder = valid()
        .scope("read")
        .audience("https://api.example")
        .auth_style(AuthStyle::Form);
    let debug = format!("{builder:?}");
    assert!(debug.contains("client-1"), "{debug}");
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(!debug.contains(&urlenc(SECRET)), "{debug}");

    for style in [AuthStyle::Basic, AuthStyle::Form, AuthStyle::Json] {
        let credentials = valid().auth_style(style).build().unwrap();
        for debug in [format!("{credentials:?}"), format!("{credentials:#?}")] {
            assert!(debug.contains("client-1"), "{debug}");
            assert!(!debug.contains(SECRET), "{debug}");
            assert!(!debug.contains(&urlenc(SECRET)), "{debug}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Transport failures
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_endpoint_that_never_answers_times_out() {
    let server =
        support::scripted_async(|_, _| std::future::pending::<http::Response<Body>>()).await;
    let credentials = builder(&server)
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = credentials.fetch_uncached().await.expect_err("no answer");
    let elapsed = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
    assert!(err.is_transient());
    assert!(
        elapsed >= Duration::from_millis(250),
        "gave up early: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    assert_eq!(server.requests(), 1, "the request did reach the endpoint");

    // Through the cache as well.
    let started = Instant::now();
    let err = credentials.token().await.expect_err("no answer");
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_closed_port_is_a_transport_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let credentials = ClientCredentials::builder()
        .token_url(format!("http://127.0.0.1:{port}/oauth/token"))
        .client_id("client-1")
        .client_secret(SECRET)
        .build()
        .unwrap();
    let err = credentials
        .fetch_uncached()
        .await
        .expect_err("nothing listens");
    assert_eq!(err.kind(), ErrorKind::Transport, "{err:?}");
    assert!(err.is_transient());
    assert_eq!(err.status(), None);
    assert_no_secret(&err, &[SECRET], "transport");
}

/// A `ClientAuth` value sends exactly what the shorthands it stands for send.
#[tokio::test]
async fn client_auth_values_send_what_their_shorthands_send() {
    use tower_oauth2::ClientAuth;

    async fn seen(
        configure: impl FnOnce(ClientCredentialsBuilder) -> ClientCredentialsBuilder,
    ) -> (Option<String>, String) {
        let server = support::issuing(3600).await;
        let credentials = configure(ClientCredentials::builder().token_url(server.url()))
            .build()
            .unwrap();
        credentials.token().await.expect("a token");
        let request = support::last(&server);
        let body = String::from_utf8(request.body.to_vec()).unwrap();
        (request.header("authorization").map(str::to_owned), body)
    }

    for style in [AuthStyle::Basic, AuthStyle::Form, AuthStyle::Json] {
        let shorthand = seen(|b| {
            b.client_id("client-1")
                .client_secret(SECRET)
                .auth_style(style)
        })
        .await;
        let value = match style {
            AuthStyle::Basic => ClientAuth::basic("client-1", SECRET),
            AuthStyle::Form => ClientAuth::post("client-1", SECRET),
            _ => ClientAuth::json("client-1", SECRET),
        };
        let name = value.method_name();
        let explicit = seen(|b| b.client_auth(value)).await;
        assert_eq!(shorthand, explicit, "{style:?}");
        let expected = match style {
            AuthStyle::Basic => Some("client_secret_basic"),
            AuthStyle::Form => Some("client_secret_post"),
            _ => None,
        };
        assert_eq!(name, expected);
    }
}
