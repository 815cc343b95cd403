//! Invariant 4: no client secret and no issued token ever appears in `Debug`, `Display`, errors
//! or logs. The main scenarios run with every `tracing` event captured at TRACE level, every
//! public type and error is formatted with `{:?}`, `{:#?}` and `{}`, and the lot is searched.

use crate::support::{self, keys};

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{json, raw, Api};
use base64::Engine as _;
use http::{Request, Response, StatusCode};
use tower::{service_fn, Layer, ServiceExt};
use tower_oauth2::test_util::TokenServer;
use tower_oauth2::{
    cache::CachePolicy, client_auth::AuthStyle, client_auth::PrivateKeyJwt, source::StaticToken,
    AccessToken, BearerAuthLayer, ClientCredentials, Error, TokenCache,
};

const CLIENT_ID: &str = "hygiene-client";
const SECRET: &str = "S3cr3t/With+Odd=Chars&Stuff";
/// Every token the server issues starts with this, so any leak of one is found.
const TOKEN_PREFIX: &str = "tok3n-HYGIENE-";
/// The secret of the `client_secret_jwt` client (HS256 wants 32 bytes or more).
const HS256_SECRET: &str = "Hm4c-S3cr3t/long+enough=for&HS256-assertions";

/// A `tracing` writer that keeps everything.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every form in which the secret could leak.
fn secret_forms() -> Vec<String> {
    let urlencoded: String = form_urlencoded::byte_serialize(SECRET.as_bytes()).collect();
    let basic = |id: &str, secret: &str| {
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    };
    vec![
        SECRET.to_owned(),
        urlencoded.clone(),
        basic(CLIENT_ID, &urlencoded),
        basic(CLIENT_ID, SECRET),
        TOKEN_PREFIX.to_owned(),
    ]
}

/// A token endpoint that issues tokens to the right secret in any style, and otherwise answers
/// with errors that echo what it was sent (as a careless or hostile server might).
async fn echoing_token_server() -> TokenServer {
    support::scripted(|request, n| {
        let body = String::from_utf8_lossy(&request.body).into_owned();
        let basic = request.basic();
        let authenticated = basic.as_ref().is_some_and(|(_, secret)| {
            form_urlencoded::parse(secret.as_bytes()).next().is_some()
                && secret.contains("S3cr3t")
        }) || body.contains("S3cr3t");
        let echo = format!("you sent {body} with {:?}", request.header("authorization"));
        match request.uri.path() {
            "/oauth/token" if authenticated => json(
                StatusCode::OK,
                serde_json::json!({
                    "access_token": format!("{TOKEN_PREFIX}{n}"),
                    "token_type": "Bearer",
                    "expires_in": 3600,
                }),
            ),
            "/oauth/token" => json(StatusCode::UNAUTHORIZED, serde_json::json!({"error": "invalid_client"})),
            "/echo-oauth" => json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": "invalid_request", "error_description": echo, "error_uri": echo}),
            ),
            "/echo-html" => raw(StatusCode::INTERNAL_SERVER_ERROR, "text/html", format!("<p>{echo}</p>")),
            "/echo-token-type" => json(
                StatusCode::OK,
                serde_json::json!({"access_token": "x", "token_type": SECRET, "expires_in": 60}),
            ),
            "/echo-expires-in" => json(
                StatusCode::OK,
                serde_json::json!({"access_token": "x", "token_type": "Bearer", "expires_in": SECRET}),
            ),
            _ => raw(StatusCode::NOT_FOUND, "text/plain", echo),
        }
    })
    .await
}

fn credentials(server: &TokenServer, path: &str, style: AuthStyle) -> ClientCredentials {
    ClientCredentials::builder()
        .token_url(format!("http://{}{path}", server.addr()))
        .client_id(CLIENT_ID)
        .client_secret(SECRET)
        .auth_style(style)
        .cache_policy(CachePolicy::default().invalidation_interval(Duration::ZERO))
        .build()
        .unwrap()
}

/// `{:?}`, `{:#?}` and `{}` (where there is one) of a value.
macro_rules! formats {
    ($out:expr, $value:expr) => {{
        let value = &$value;
        $out.push(format!("{value:?}"));
        $out.push(format!("{value:#?}"));
    }};
    ($out:expr, $value:expr, display) => {{
        let value = &$value;
        $out.push(format!("{value:?}"));
        $out.push(format!("{value:#?}"));
        $out.push(format!("{value}"));
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_token_appears_in_any_output() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let server = echoing_token_server().await;
    let mut outputs: Vec<String> = Vec::new();
    let mut tokens = Vec::new();

    // Fetches with each client authentication style.
    for style in [AuthStyle::Basic, AuthStyle::Form, AuthStyle::Json] {
        let credentials = credentials(&server, "/oauth/token", style);
        let token = credentials.token().await.unwrap();
        assert!(token.secret().starts_with(TOKEN_PREFIX), "the scenario ran");
        formats!(outputs, token);
        formats!(outputs, credentials);
        formats!(outputs, TokenCache::from(credentials.clone()));
        formats!(outputs, BearerAuthLayer::new(credentials.clone()));
        tokens.push(token);
        formats!(outputs, style);
    }
    formats!(
        outputs,
        ClientCredentials::builder()
            .client_id(CLIENT_ID)
            .client_secret(SECRET)
    );

    // Errors from the endpoint, including ones that echo the request back.
    let mut errors: Vec<Error> = Vec::new();
    for style in [AuthStyle::Basic, AuthStyle::Form, AuthStyle::Json] {
        for path in [
            "/echo-oauth",
            "/echo-html",
            "/echo-token-type",
            "/echo-expires-in",
            "/missing",
        ] {
            errors.push(
                credentials(&server, path, style)
                    .fetch_uncached()
                    .await
                    .unwrap_err(),
            );
        }
    }
    let wrong = ClientCredentials::builder()
        .token_url(server.url())
        .client_id(CLIENT_ID)
        .client_secret("wrong")
        .build()
        .unwrap();
    errors.push(wrong.token().await.unwrap_err());
    // The server did echo the secret: redaction, not luck, keeps it out.
    assert!(errors
        .iter()
        .any(|e| e.body_excerpt().is_some_and(|x| x.contains("[redacted]"))));
    assert!(errors.iter().any(|e| e
        .oauth_error()
        .and_then(|o| o.description())
        .is_some_and(|x| x.contains("[redacted]"))));
    assert!(errors
        .iter()
        .any(|e| e.to_string().contains("token_type \"[redacted]\"")));
    for error in &errors {
        formats!(outputs, error, display);
        if let Some(oauth) = error.oauth_error() {
            formats!(outputs, oauth, display);
        }
        let boxed: tower::BoxError = Box::new(error.clone());
        outputs.push(format!("{boxed:?} {boxed}"));
    }

    // The layer under load, and a 401 that makes it fetch again.
    let credentials = credentials(&server, "/oauth/token", AuthStyle::Basic);
    let first = credentials.token().await.unwrap();
    let rejected = first.secret().to_owned();
    let api = Api::start(move |token| token != rejected).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let layer = BearerAuthLayer::new(credentials.clone());
    let service = layer.layer(client);
    formats!(outputs, service);
    let calls: Vec<_> = (0..200)
        .map(|_| {
            let request = Request::get(api.url()).body(Default::default()).unwrap();
            tokio::spawn(service.clone().oneshot(request))
        })
        .collect();
    for call in calls {
        let response = call.await.unwrap().unwrap();
        formats!(outputs, response.headers());
    }
    let after = service
        .clone()
        .oneshot(Request::get(api.url()).body(Default::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::OK, "the 401 caused a refetch");
    tokens.push(credentials.token().await.unwrap());

    // What an inner service sees: the header it gets is marked sensitive.
    let inner = service_fn(|request: Request<()>| async move {
        Ok::<_, std::convert::Infallible>(Response::new(format!(
            "{:?} {:#?}",
            request.headers(),
            request
        )))
    });
    let seen = layer.layer(inner).oneshot(Request::new(())).await.unwrap();
    outputs.push(seen.into_body());

    // Other public types.
    let static_token = StaticToken::from(AccessToken::new(format!("{TOKEN_PREFIX}static")));
    formats!(outputs, static_token);
    formats!(outputs, TokenCache::new(static_token.clone()));
    formats!(outputs, CachePolicy::default());

    // Client assertions: the key and every assertion sent stay out of all output, even when
    // the endpoint echoes the request back.
    let key = keys::p256_pkcs8();
    let private_key = PrivateKeyJwt::from_pem(&key.private_pem)
        .unwrap()
        .key_id("hygiene-key");
    formats!(outputs, private_key);
    let requests_before = server.received().len();
    let mut assertion_errors = Vec::new();
    for path in ["/echo-oauth", "/echo-html", "/missing"] {
        let signed = ClientCredentials::builder()
            .token_url(format!("http://{}{path}", server.addr()))
            .client_id(CLIENT_ID)
            .private_key_jwt(PrivateKeyJwt::from_pem(&key.private_pem).unwrap())
            .build()
            .unwrap();
        formats!(outputs, signed);
        let error = signed.fetch_uncached().await.unwrap_err();
        formats!(assertion_errors, error, display);
        let hmac = ClientCredentials::builder()
            .token_url(format!("http://{}{path}", server.addr()))
            .client_id(CLIENT_ID)
            .client_secret(HS256_SECRET)
            .client_secret_jwt()
            .build()
            .unwrap();
        formats!(outputs, hmac);
        let error = hmac.fetch_uncached().await.unwrap_err();
        formats!(assertion_errors, error, display);
    }
    let assertions: Vec<String> = server.received()[requests_before..]
        .iter()
        .filter_map(|request| request.form().get("client_assertion").cloned())
        .collect();
    assert_eq!(assertions.len(), 6, "every client sent an assertion");
    assert!(
        assertion_errors
            .iter()
            .any(|o| o.contains("[redacted]") && o.contains("client_assertion=")),
        "the server echoed the assertion: redaction, not luck, keeps it out"
    );
    outputs.extend(assertion_errors);

    // Credentials made elsewhere, read at each request: a secret file, an assertion file and a
    // subject token file, against endpoints that echo them back.
    let mounted = crate::support::issuer::Mounted::new();
    let secret_file = mounted.write("client-secret", &format!("{SECRET}\n"));
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(br#"{"sub":"hygiene","exp":4102444800}"#);
    let mounted_jwt = format!("eyJhbGciOiJFUzI1NiJ9.{payload}.M0unted-Sig-HYGIENE");
    let assertion_file = mounted.write("token", &mounted_jwt);
    let mut elsewhere_errors = Vec::new();
    for path in ["/echo-oauth", "/echo-html", "/missing"] {
        let url = format!("http://{}{path}", server.addr());
        for style in [AuthStyle::Basic, AuthStyle::Form, AuthStyle::Json] {
            let from_file = ClientCredentials::builder()
                .token_url(&url)
                .client_id(CLIENT_ID)
                .client_secret_file(&secret_file)
                .auth_style(style)
                .build()
                .unwrap();
            formats!(outputs, from_file);
            let error = from_file.fetch_uncached().await.unwrap_err();
            formats!(elsewhere_errors, error, display);
        }
        let federated = ClientCredentials::builder()
            .token_url(&url)
            .client_id(CLIENT_ID)
            .client_assertion_file(&assertion_file)
            .build()
            .unwrap();
        formats!(outputs, federated);
        let error = federated.fetch_uncached().await.unwrap_err();
        formats!(elsewhere_errors, error, display);
        let exchange = tower_oauth2::token_exchange::TokenExchange::builder()
            .token_url(&url)
            .subject_token_file(
                &assertion_file,
                tower_oauth2::token_exchange::TokenType::Jwt,
            )
            .build()
            .unwrap();
        formats!(outputs, exchange);
        let error = exchange.fetch_uncached().await.unwrap_err();
        formats!(elsewhere_errors, error, display);
    }
    assert!(
        elsewhere_errors
            .iter()
            .any(|o| o.contains("[redacted]") && o.contains("subject_token=")),
        "the server echoed the subject token: redaction, not luck, keeps it out"
    );
    outputs.extend(elsewhere_errors);

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("fetched a token"), "TRACE logs were captured");
    assert!(
        logs.contains("token rejected by the server"),
        "the 401 was logged"
    );
    let mut forbidden = secret_forms();
    forbidden.extend(tokens.iter().map(|token| token.secret().to_owned()));
    forbidden.push(HS256_SECRET.to_owned());
    forbidden.push(mounted_jwt.clone());
    forbidden.push("M0unted-Sig-HYGIENE".to_owned());
    // Each assertion whole, and its signature alone.
    for assertion in &assertions {
        forbidden.push(assertion.clone());
        forbidden.push(assertion.rsplit('.').next().unwrap().to_owned());
    }
    // Any line of the private key's PEM.
    forbidden.extend(
        key.private_pem
            .lines()
            .filter(|line| !line.starts_with("-----") && line.len() > 16)
            .map(str::to_owned),
    );
    for needle in &forbidden {
        assert!(
            !logs.contains(needle.as_str()),
            "the logs contain {needle:?}"
        );
        for output in &outputs {
            assert!(
                !output.contains(needle.as_str()),
                "{needle:?} appears in: {output}"
            );
        }
    }
    assert!(outputs.len() > 100);
}
