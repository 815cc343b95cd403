//! Every provider of the team's shared/PROVIDERS.md, reproduced over real HTTP on loopback exactly as
//! its documentation describes the token endpoint, and the client configured as a user of that
//! provider would configure it.
//!
//! Each emulated endpoint checks what its documentation requires (method, path, content type,
//! client authentication, grant type, audience, Accept) and answers with the documented success
//! or error response; the tests then check both the token the client produced and the request
//! the endpoint really saw.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::support::{self, json, raw, Body};
use http::header::{HeaderValue, ALLOW};
use http::{Method, Response, StatusCode};
use serde_json::json as j;
use tower_oauth2::test_util::{Received, TokenServer};
use tower_oauth2::{client_auth::AuthStyle, AccessToken, ClientCredentials, ErrorKind};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The media type of the request's `Content-Type`, lowercased, without parameters.
fn content_type(request: &Received) -> Option<String> {
    request
        .header("content-type")
        .and_then(|value| value.split(';').next())
        .map(|essence| essence.trim().to_ascii_lowercase())
}

fn empty(status: StatusCode) -> Response<Body> {
    raw(status, "", "")
}

/// `expires_at` is `lifetime` after the moment the token was decoded, which lies between
/// `before` and `after` (a little slack either side for rounding).
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

fn keys(map: &serde_json::Map<String, serde_json::Value>) -> BTreeSet<&str> {
    map.keys().map(String::as_str).collect()
}

// ---------------------------------------------------------------------------------------------
// Miden (seeds/000): HTTP Basic, form body `grant_type=client_credentials`, JSON answer with
// access_token, token_type, numeric expires_in and scope; 400 / 401 / 403 / 405 with no body.
// ---------------------------------------------------------------------------------------------

const MIDEN_PATH: &str = "/v1/auth/token";
const MIDEN_ID: &str = "mdn_sbx_4f7c2a91";
const MIDEN_SECRET: &str = "sk_sbx_Qm9L2xT7vR3pW8zK";
/// Valid credentials of an account that has no permission for the resource (documented 403).
const MIDEN_NO_PERMISSION_ID: &str = "mdn_sbx_0000restricted";
/// Deliberately not the crate's default lifetime (1 h), so a fallback could not pass for it.
const MIDEN_EXPIRES_IN: u64 = 900;
const MIDEN_SCOPE: &str = "payments:read payments:write";

async fn miden_endpoint() -> TokenServer {
    support::scripted(|request, n| {
        if request.method != Method::POST {
            return empty(StatusCode::METHOD_NOT_ALLOWED);
        }
        if request.uri.path() != MIDEN_PATH {
            return empty(StatusCode::NOT_FOUND);
        }
        let id = match request.basic() {
            Some((id, secret))
                if secret == MIDEN_SECRET && (id == MIDEN_ID || id == MIDEN_NO_PERMISSION_ID) =>
            {
                id
            }
            _ => return empty(StatusCode::UNAUTHORIZED),
        };
        if content_type(request).as_deref() != Some("application/x-www-form-urlencoded") {
            return empty(StatusCode::BAD_REQUEST);
        }
        let form = request.form();
        if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
            return empty(StatusCode::BAD_REQUEST);
        }
        if id == MIDEN_NO_PERMISSION_ID {
            return empty(StatusCode::FORBIDDEN);
        }
        json(
            StatusCode::OK,
            j!({
                "access_token": format!("miden-access-{n}"),
                "token_type": "Bearer",
                "expires_in": MIDEN_EXPIRES_IN,
                "scope": MIDEN_SCOPE,
            }),
        )
    })
    .await
}

fn miden_url(server: &TokenServer) -> String {
    format!("http://{}{MIDEN_PATH}", server.addr())
}

#[tokio::test]
async fn miden() {
    let server = miden_endpoint().await;
    let credentials = ClientCredentials::builder()
        .token_url(miden_url(&server))
        .client_id(MIDEN_ID)
        .client_secret(MIDEN_SECRET)
        .auth_style(AuthStyle::Basic)
        .build()
        .unwrap();

    let before = Instant::now();
    let token = credentials.token().await.expect("Miden issues a token");
    let after = Instant::now();

    assert_eq!(token.secret(), "miden-access-1");
    assert_eq!(token.token_type(), "Bearer");
    assert_eq!(token.scope(), Some(MIDEN_SCOPE));
    assert_expires_in(&token, before, after, Duration::from_secs(MIDEN_EXPIRES_IN));

    // Cached: a second call does not ask Miden again.
    let again = credentials.token().await.unwrap();
    assert_eq!(again.secret(), "miden-access-1");
    assert_eq!(server.requests(), 1);

    // What Miden saw: POST, Basic credentials, a form body with grant_type and nothing else.
    let seen = support::last(&server);
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.uri.path(), MIDEN_PATH);
    assert_eq!(
        seen.basic(),
        Some((MIDEN_ID.to_owned(), MIDEN_SECRET.to_owned()))
    );
    assert_eq!(
        content_type(&seen).as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(&seen.body[..], b"grant_type=client_credentials");
    let form = seen.form();
    assert!(!form.contains_key("client_id"), "two client-auth methods");
    assert!(
        !form.contains_key("client_secret"),
        "two client-auth methods"
    );
    let body = String::from_utf8_lossy(&seen.body);
    assert!(!body.contains(MIDEN_SECRET), "the secret is in the body");
}

#[tokio::test]
async fn miden_errors() {
    let server = miden_endpoint().await;
    let client = |id: &str, secret: &str| {
        ClientCredentials::builder()
            .token_url(miden_url(&server))
            .client_id(id)
            .client_secret(secret)
            .auth_style(AuthStyle::Basic)
    };

    // 401: invalid client id or secret. Through the cache, and asked exactly once: retrying
    // cannot help, so nothing may retry it in a loop.
    let wrong_secret = client(MIDEN_ID, "sk_sbx_wrong").build().unwrap();
    let unauthorized = wrong_secret.token().await.expect_err("wrong secret");
    assert_eq!(server.requests(), 1);
    assert_eq!(unauthorized.kind(), ErrorKind::Rejected);
    assert_eq!(unauthorized.status(), Some(StatusCode::UNAUTHORIZED));
    assert!(!unauthorized.is_transient());
    assert!(unauthorized.oauth_error().is_none());
    assert!(unauthorized.body_excerpt().is_none(), "the body was empty");
    assert!(unauthorized.to_string().contains("401"), "{unauthorized}");
    assert!(!format!("{unauthorized} {unauthorized:?}").contains("sk_sbx_wrong"));

    // 403: the credentials are valid, the account may not have this.
    let no_permission = client(MIDEN_NO_PERMISSION_ID, MIDEN_SECRET)
        .build()
        .unwrap();
    let forbidden = no_permission
        .fetch_uncached()
        .await
        .expect_err("no permission");
    assert_eq!(forbidden.kind(), ErrorKind::Rejected);
    assert_eq!(forbidden.status(), Some(StatusCode::FORBIDDEN));
    assert!(!forbidden.is_transient());
    assert!(forbidden.oauth_error().is_none());
    assert!(forbidden.body_excerpt().is_none(), "the body was empty");
    assert!(forbidden.to_string().contains("403"), "{forbidden}");

    // 401 and 403 must be told apart by a caller.
    assert_ne!(unauthorized.status(), forbidden.status());

    // 400: invalid request parameters (a grant type Miden does not know).
    let bad_request = client(MIDEN_ID, MIDEN_SECRET)
        .param("grant_type", "password")
        .build()
        .unwrap();
    let invalid = bad_request
        .fetch_uncached()
        .await
        .expect_err("bad grant type");
    assert_eq!(support::last(&server).form()["grant_type"], "password");
    assert_eq!(invalid.kind(), ErrorKind::Rejected);
    assert_eq!(invalid.status(), Some(StatusCode::BAD_REQUEST));
    assert!(!invalid.is_transient());
    assert!(invalid.body_excerpt().is_none(), "the body was empty");

    // 405: the configured URL is an endpoint that does not take POST.
    let get_only = support::scripted(|_, _| {
        let mut response = empty(StatusCode::METHOD_NOT_ALLOWED);
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        response
    })
    .await;
    let misrouted = ClientCredentials::builder()
        .token_url(get_only.url())
        .client_id(MIDEN_ID)
        .client_secret(MIDEN_SECRET)
        .build()
        .unwrap();
    let not_allowed = misrouted.fetch_uncached().await.expect_err("405");
    assert_eq!(support::last(&get_only).method, Method::POST);
    assert_eq!(not_allowed.kind(), ErrorKind::Rejected);
    assert_eq!(not_allowed.status(), Some(StatusCode::METHOD_NOT_ALLOWED));
    assert!(!not_allowed.is_transient());
    assert!(not_allowed.body_excerpt().is_none(), "the body was empty");

    // The Miden endpoint itself answered every one of those requests (none short-circuited).
    assert_eq!(server.requests(), 3);
}

// ---------------------------------------------------------------------------------------------
// Auth0 (seeds/001 current docs: form body; seeds/002 older docs: JSON body). Client id and
// secret in the body, `audience` required, `scope` optional; success `token_type: "Bearer"`,
// `expires_in: 86400`; errors as RFC 6749 §5.2 JSON.
// ---------------------------------------------------------------------------------------------

const AUTH0_PATH: &str = "/oauth/token";
const AUTH0_ID: &str = "4Xa9QzL1cVb7Nm2Kp0RtYw3EuI8oPs6D";
const AUTH0_SECRET: &str = "q1W2e3R4t5Y6u7I8o9P0-aSdFgHjKlZxCvBnM_1234567890abcdefGHIJKLmnop";
const AUTH0_AUDIENCE: &str = "https://api.northwind.example/";
const AUTH0_GRANTED_SCOPES: [&str; 2] = ["read:orders", "write:orders"];
const AUTH0_TOKEN: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJhdWQiOiJodHRwczovL2FwaS5ub3J0aHdpbmQuZXhhbXBsZS8ifQ.k4laUWwZ93a";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Auth0Docs {
    /// Current docs: `application/x-www-form-urlencoded`.
    Current,
    /// Older docs: `application/json`.
    Older,
}

fn access_denied(status: StatusCode, description: String) -> Response<Body> {
    json(
        status,
        j!({ "error": "access_denied", "error_description": description }),
    )
}

async fn auth0_endpoint(docs: Auth0Docs) -> TokenServer {
    support::scripted(move |request, _| {
        if request.method != Method::POST {
            return empty(StatusCode::METHOD_NOT_ALLOWED);
        }
        if request.uri.path() != AUTH0_PATH {
            return empty(StatusCode::NOT_FOUND);
        }
        let expected_type = match docs {
            Auth0Docs::Current => "application/x-www-form-urlencoded",
            Auth0Docs::Older => "application/json",
        };
        if content_type(request).as_deref() != Some(expected_type) {
            return json(
                StatusCode::BAD_REQUEST,
                j!({ "error": "invalid_request", "error_description": "unsupported content type" }),
            );
        }
        // Every field as a string; a JSON body must hold nothing but strings.
        let fields: std::collections::HashMap<String, String> = match docs {
            Auth0Docs::Current => request.form(),
            Auth0Docs::Older => {
                let Ok(serde_json::Value::Object(object)) =
                    serde_json::from_slice::<serde_json::Value>(&request.body)
                else {
                    return json(
                        StatusCode::BAD_REQUEST,
                        j!({ "error": "invalid_request", "error_description": "bad JSON" }),
                    );
                };
                let mut fields = std::collections::HashMap::new();
                for (name, value) in object {
                    let serde_json::Value::String(value) = value else {
                        return json(
                            StatusCode::BAD_REQUEST,
                            j!({ "error": "invalid_request", "error_description": format!("{name} must be a string") }),
                        );
                    };
                    fields.insert(name, value);
                }
                fields
            }
        };
        let field = |name: &str| fields.get(name).map(String::as_str);
        // RFC 6749 §2.3: never more than one client authentication method per request.
        if request.header("authorization").is_some() {
            return json(
                StatusCode::BAD_REQUEST,
                j!({ "error": "invalid_request", "error_description": "multiple client authentication methods" }),
            );
        }
        if field("grant_type") != Some("client_credentials") {
            return json(
                StatusCode::BAD_REQUEST,
                j!({ "error": "unsupported_grant_type", "error_description": "Unsupported grant type" }),
            );
        }
        if field("client_id") != Some(AUTH0_ID) || field("client_secret") != Some(AUTH0_SECRET) {
            return access_denied(StatusCode::UNAUTHORIZED, "Unauthorized".into());
        }
        match field("audience") {
            Some(AUTH0_AUDIENCE) => {}
            Some(other) => {
                return access_denied(StatusCode::FORBIDDEN, format!("Service not found: {other}"))
            }
            None => {
                return access_denied(
                    StatusCode::FORBIDDEN,
                    "No audience parameter was provided, and no default audience has been configured"
                        .into(),
                )
            }
        }
        if let Some(scope) = field("scope") {
            let missing: Vec<&str> = scope
                .split(' ')
                .filter(|s| !AUTH0_GRANTED_SCOPES.contains(s))
                .collect();
            if !missing.is_empty() {
                return access_denied(
                    StatusCode::FORBIDDEN,
                    format!("Client has not been granted scopes: {}", missing.join(" ")),
                );
            }
        }
        json(
            StatusCode::OK,
            j!({ "access_token": AUTH0_TOKEN, "token_type": "Bearer", "expires_in": 86400 }),
        )
    })
    .await
}

fn auth0_client(
    server: &TokenServer,
    docs: Auth0Docs,
) -> tower_oauth2::client_credentials::ClientCredentialsBuilder {
    ClientCredentials::builder()
        .token_url(format!("http://{}{AUTH0_PATH}", server.addr()))
        .client_id(AUTH0_ID)
        .client_secret(AUTH0_SECRET)
        .auth_style(match docs {
            Auth0Docs::Current => AuthStyle::Form,
            Auth0Docs::Older => AuthStyle::Json,
        })
        .audience(AUTH0_AUDIENCE)
}

#[tokio::test]
async fn auth0_current_docs() {
    let server = auth0_endpoint(Auth0Docs::Current).await;
    let credentials = auth0_client(&server, Auth0Docs::Current)
        .scope("read:orders")
        .build()
        .unwrap();

    let before = Instant::now();
    let token = credentials.token().await.expect("Auth0 issues a token");
    let after = Instant::now();

    assert_eq!(token.secret(), AUTH0_TOKEN);
    assert_eq!(token.token_type(), "Bearer");
    assert_eq!(
        token.scope(),
        None,
        "Auth0's documented response has no scope"
    );
    assert_expires_in(&token, before, after, Duration::from_secs(86400));
    credentials.token().await.unwrap();
    assert_eq!(server.requests(), 1, "the token is cached");

    let seen = support::last(&server);
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.uri.path(), AUTH0_PATH);
    assert_eq!(
        content_type(&seen).as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        seen.header("authorization"),
        None,
        "two client-auth methods"
    );
    let form = seen.form();
    let expected: std::collections::HashMap<String, String> = [
        ("grant_type", "client_credentials"),
        ("client_id", AUTH0_ID),
        ("client_secret", AUTH0_SECRET),
        ("audience", AUTH0_AUDIENCE),
        ("scope", "read:orders"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(form, expected);
    // Each field once.
    assert_eq!(form_urlencoded::parse(&seen.body).count(), expected.len());
}

#[tokio::test]
async fn auth0_current_docs_errors() {
    auth0_errors(Auth0Docs::Current).await;
}

#[tokio::test]
async fn auth0_older_docs() {
    let server = auth0_endpoint(Auth0Docs::Older).await;
    let credentials = auth0_client(&server, Auth0Docs::Older).build().unwrap();

    let before = Instant::now();
    let token = credentials.token().await.expect("Auth0 issues a token");
    let after = Instant::now();

    assert_eq!(token.secret(), AUTH0_TOKEN);
    assert_eq!(token.token_type(), "Bearer");
    assert_eq!(token.scope(), None);
    assert_expires_in(&token, before, after, Duration::from_secs(86400));
    credentials.token().await.unwrap();
    assert_eq!(server.requests(), 1, "the token is cached");

    let seen = support::last(&server);
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.uri.path(), AUTH0_PATH);
    assert_eq!(content_type(&seen).as_deref(), Some("application/json"));
    assert_eq!(
        seen.header("authorization"),
        None,
        "two client-auth methods"
    );
    assert_eq!(
        seen.json(),
        j!({
            "grant_type": "client_credentials",
            "client_id": AUTH0_ID,
            "client_secret": AUTH0_SECRET,
            "audience": AUTH0_AUDIENCE,
        })
    );
}

#[tokio::test]
async fn auth0_older_docs_errors() {
    auth0_errors(Auth0Docs::Older).await;
}

async fn auth0_errors(docs: Auth0Docs) {
    let server = auth0_endpoint(docs).await;

    // Wrong secret: 401 access_denied "Unauthorized".
    let wrong_secret = auth0_client(&server, docs)
        .client_secret("not-the-secret-at-all")
        .build()
        .unwrap();
    let unauthorized = wrong_secret
        .fetch_uncached()
        .await
        .expect_err("wrong secret");
    assert_eq!(unauthorized.kind(), ErrorKind::Rejected);
    assert_eq!(unauthorized.status(), Some(StatusCode::UNAUTHORIZED));
    assert!(!unauthorized.is_transient());
    let oauth = unauthorized.oauth_error().expect("an RFC 6749 error body");
    assert_eq!(oauth.code(), "access_denied");
    assert_eq!(oauth.description(), Some("Unauthorized"));
    assert_eq!(oauth.uri(), None);
    assert!(
        unauthorized.body_excerpt().is_none(),
        "parsed, not excerpted"
    );
    assert!(unauthorized.to_string().contains("access_denied"));
    assert!(!format!("{unauthorized} {unauthorized:?}").contains("not-the-secret-at-all"));

    // Valid client, unknown API: 403 access_denied "Service not found: …".
    let wrong_audience = auth0_client(&server, docs)
        .audience("https://api.wrong.example/")
        .build()
        .unwrap();
    let forbidden = wrong_audience
        .fetch_uncached()
        .await
        .expect_err("unknown audience");
    assert_eq!(forbidden.kind(), ErrorKind::Rejected);
    assert_eq!(forbidden.status(), Some(StatusCode::FORBIDDEN));
    assert!(!forbidden.is_transient());
    let oauth = forbidden.oauth_error().expect("an RFC 6749 error body");
    assert_eq!(oauth.code(), "access_denied");
    assert_eq!(
        oauth.description(),
        Some("Service not found: https://api.wrong.example/")
    );
    assert_ne!(unauthorized.status(), forbidden.status());

    // A scope the client was not granted: 403 access_denied naming it.
    let too_much = auth0_client(&server, docs)
        .scope("read:orders")
        .scope("delete:orders")
        .build()
        .unwrap();
    let denied = too_much
        .fetch_uncached()
        .await
        .expect_err("scope not granted");
    assert_eq!(denied.status(), Some(StatusCode::FORBIDDEN));
    assert_eq!(
        denied.oauth_error().map(|e| (e.code(), e.description())),
        Some((
            "access_denied",
            Some("Client has not been granted scopes: delete:orders")
        ))
    );
    assert!(!denied.is_transient());

    // Through the cache, a rejection is asked once and not retried in a loop.
    let hits = server.requests();
    let cached = auth0_client(&server, docs)
        .client_secret("not-the-secret-at-all")
        .build()
        .unwrap();
    let error = cached.token().await.expect_err("wrong secret");
    assert_eq!(error.status(), Some(StatusCode::UNAUTHORIZED));
    assert_eq!(server.requests(), hits + 1);
}

// ---------------------------------------------------------------------------------------------
// Regional API (seeds/003): `{environment_url}/api/v2/oauth2/token`, one per region; JSON body
// with client id and secret, `Accept: application/json`; success has `expires_in: "3600"`, a
// string. Errors refer to a separate guide that is not part of the seeds, so no error test.
// ---------------------------------------------------------------------------------------------

const REGIONAL_PATH: &str = "/api/v2/oauth2/token";
const REGIONAL_ID: &str = "d2f1c0de-7a8b-4c3d-9e0f-1a2b3c4d5e6f";
const REGIONAL_SECRET: &str = "rg_9b8a7c6d5e4f3a2b1c0d";

async fn regional_endpoint(region: &'static str) -> TokenServer {
    support::scripted(move |request, n| {
        if request.method != Method::POST {
            return empty(StatusCode::METHOD_NOT_ALLOWED);
        }
        if request.uri.path() != REGIONAL_PATH {
            return empty(StatusCode::NOT_FOUND);
        }
        if content_type(request).as_deref() != Some("application/json") {
            return empty(StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
        if request.header("accept") != Some("application/json") {
            return empty(StatusCode::NOT_ACCEPTABLE);
        }
        if request.header("authorization").is_some() {
            return empty(StatusCode::BAD_REQUEST);
        }
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(&request.body) else {
            return empty(StatusCode::BAD_REQUEST);
        };
        if body["grant_type"] != "client_credentials" {
            return empty(StatusCode::BAD_REQUEST);
        }
        if body["client_id"] != REGIONAL_ID || body["client_secret"] != REGIONAL_SECRET {
            return empty(StatusCode::UNAUTHORIZED);
        }
        json(
            StatusCode::OK,
            j!({
                "token_type": "Bearer",
                "access_token": format!("{region}-access-{n}"),
                "expires_in": "3600",
            }),
        )
    })
    .await
}

#[tokio::test]
async fn regional_api() {
    let eu = regional_endpoint("eu").await;
    let us = regional_endpoint("us").await;
    let client = |server: &TokenServer| {
        ClientCredentials::builder()
            .token_url(format!("http://{}{REGIONAL_PATH}", server.addr()))
            .client_id(REGIONAL_ID)
            .client_secret(REGIONAL_SECRET)
            .auth_style(AuthStyle::Json)
            // Not the documented 1 h, so that the test can tell `"3600"` being parsed from the
            // default lifetime being applied.
            .default_lifetime(Duration::from_secs(300))
            .build()
            .unwrap()
    };
    let (eu_credentials, us_credentials) = (client(&eu), client(&us));

    for (server, credentials, region) in
        [(&eu, &eu_credentials, "eu"), (&us, &us_credentials, "us")]
    {
        let before = Instant::now();
        let token = credentials
            .token()
            .await
            .expect("the regional API issues a token");
        let after = Instant::now();

        assert_eq!(token.secret(), format!("{region}-access-1"));
        assert_eq!(token.token_type(), "Bearer");
        assert_eq!(token.scope(), None);
        assert_expires_in(&token, before, after, Duration::from_secs(3600));
        credentials.token().await.unwrap();
        assert_eq!(server.requests(), 1, "{region}: the token is cached");

        let seen = support::last(server);
        assert_eq!(seen.method, Method::POST);
        assert_eq!(seen.uri.path(), REGIONAL_PATH);
        assert_eq!(seen.header("accept"), Some("application/json"));
        assert_eq!(content_type(&seen).as_deref(), Some("application/json"));
        assert_eq!(
            seen.header("authorization"),
            None,
            "two client-auth methods"
        );
        let body = seen.json();
        let object = body.as_object().expect("a JSON object");
        assert_eq!(
            keys(object),
            BTreeSet::from(["grant_type", "client_id", "client_secret"])
        );
        assert_eq!(
            body,
            j!({
                "grant_type": "client_credentials",
                "client_id": REGIONAL_ID,
                "client_secret": REGIONAL_SECRET,
            })
        );
    }
}
