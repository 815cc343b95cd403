//! Fault injection: a token endpoint that misbehaves on command, and the exact typed outcome
//! each misbehaviour must produce. Never a panic, never a hang past the fetch timeout, never a
//! read past the body limit.
//!
//! Well-formed HTTP comes from the crate's `test_util::TokenServer` with a script
//! ([`support::scripted`]); broken HTTP (stalls, resets, drips, oversized streams) from
//! [`RawServer`], which writes the bytes by hand.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::support::{self, json, raw, Body};
use bytes::Bytes;
use http::header::{HeaderValue, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_oauth2::{
    cache::CachePolicy, client_credentials::ClientCredentialsBuilder, AccessToken, BearerAuth,
    BearerAuthLayer, ClientCredentials, Error, ErrorKind,
};

const SECRET: &str = "fault-injection-secret";

/// The longest lifetime the crate believes a token has (`token::MAX_LIFETIME`): ten years.
const MAX_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// A short fetch timeout for the cases where the endpoint stalls.
const SHORT_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a stalled case may take on the wall clock, all included.
const WALL_LIMIT: Duration = Duration::from_secs(3);

/// The body limit of the oversized-body cases.
const LIMIT: usize = 1024;

/// What the oversized-body cases try to send: far more than any socket buffer holds.
const HUGE: usize = 100 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 server that breaks the protocol on purpose
// ---------------------------------------------------------------------------------------------

/// A loopback TCP server whose every connection is handed to `behave(stream, n)`, `n` counting
/// connections from 1. The behaviour writes whatever bytes it likes.
struct RawServer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl RawServer {
    async fn start<F, Fut>(behave: F) -> RawServer
    where
        F: Fn(TcpStream, usize) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(behave(stream, n));
            }
        });
        RawServer { addr, connections }
    }

    fn url(&self) -> String {
        format!("http://{}/oauth/token", self.addr)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Read one whole HTTP/1.1 request (head and `Content-Length` body) off `stream`.
async fn read_request(stream: &mut TcpStream) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}

/// A response head: status line, the given header lines, blank line.
fn head(status: &str, headers: &[&str]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n");
    for header in headers {
        out.push_str(header);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// A complete, well-formed response that closes the connection after it.
fn complete(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    let mut out = head(
        status,
        &[
            &format!("Content-Type: {content_type}"),
            &format!("Content-Length: {}", body.len()),
            "Connection: close",
        ],
    );
    out.extend_from_slice(body.as_bytes());
    out
}

/// One HTTP/1.1 chunk.
fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// How the oversized body is framed.
#[derive(Clone, Copy, Debug)]
enum Framing {
    /// `Content-Length: 104857600`.
    Declared,
    /// `Transfer-Encoding: chunked`, 64 KiB chunks.
    Chunked,
    /// Neither: the body runs until the connection closes.
    CloseDelimited,
}

/// A server that answers `status` and then tries to stream [`HUGE`] bytes of body; it reports
/// how many body bytes it got out before the client hung up.
async fn oversized_server(
    status: &'static str,
    framing: Framing,
) -> (RawServer, mpsc::UnboundedReceiver<usize>) {
    let (sent_tx, sent_rx) = mpsc::unbounded_channel();
    let server = RawServer::start(move |mut stream, _| {
        let sent_tx = sent_tx.clone();
        async move {
            if read_request(&mut stream).await.is_err() {
                return;
            }
            let length = format!("Content-Length: {HUGE}");
            let framing_header = match framing {
                Framing::Declared => length.as_str(),
                Framing::Chunked => "Transfer-Encoding: chunked",
                Framing::CloseDelimited => "Connection: close",
            };
            let head = head(status, &["Content-Type: application/json", framing_header]);
            if stream.write_all(&head).await.is_err() {
                let _ = sent_tx.send(0);
                return;
            }
            let piece = vec![b' '; 64 * 1024];
            let framed = match framing {
                Framing::Chunked => chunk(&piece),
                Framing::Declared | Framing::CloseDelimited => piece.clone(),
            };
            let mut sent = 0;
            while sent < HUGE {
                if stream.write_all(&framed).await.is_err() {
                    break;
                }
                sent += piece.len();
            }
            if sent >= HUGE && matches!(framing, Framing::Chunked) {
                let _ = stream.write_all(b"0\r\n\r\n").await;
            }
            let _ = sent_tx.send(sent);
        }
    })
    .await;
    (server, sent_rx)
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn builder(url: &str) -> ClientCredentialsBuilder {
    ClientCredentials::builder()
        .token_url(url)
        .client_id("client-1")
        .client_secret(SECRET)
}

/// One uncached fetch, bounded on the wall clock well past any timeout the client was given,
/// so that a hang fails the test instead of stalling it.
async fn fetch_timed(
    url: &str,
    configure: impl FnOnce(ClientCredentialsBuilder) -> ClientCredentialsBuilder,
) -> (Result<AccessToken, Error>, Duration) {
    let credentials = configure(builder(url))
        .build()
        .expect("valid configuration");
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(15), credentials.fetch_uncached())
        .await
        .expect("fetch() hung past its own timeout");
    (result, started.elapsed())
}

/// Fetch once from a token server ([`support::scripted`]) answering `response()`; check that
/// exactly one request went out.
async fn fetch_from(
    response: impl Fn() -> Response<Body> + Send + Sync + 'static,
    configure: impl FnOnce(ClientCredentialsBuilder) -> ClientCredentialsBuilder,
) -> Result<AccessToken, Error> {
    let server = support::scripted(move |_, _| response()).await;
    let (result, _) = fetch_timed(&server.url(), configure).await;
    assert_eq!(server.requests(), 1, "fetch() sends exactly one request");
    result
}

/// Fetch once from an endpoint answering `status`, `content_type` and `body`.
async fn answer(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Result<AccessToken, Error> {
    let body = body.into();
    fetch_from(move || raw(status, content_type, body.clone()), |b| b).await
}

/// Fetch once from an endpoint answering 200 with this JSON text.
async fn answer_ok(json_text: impl Into<Bytes>) -> Result<AccessToken, Error> {
    answer(StatusCode::OK, "application/json", json_text).await
}

/// A 200 token response whose `expires_in` is the raw JSON text `expires_in`.
fn with_expires_in(expires_in: &str) -> String {
    format!(r#"{{"access_token":"t","token_type":"Bearer","expires_in":{expires_in}}}"#)
}

/// A 200 token response whose `access_token` is `token` (JSON-encoded here).
fn with_access_token(token: serde_json::Value) -> String {
    serde_json::json!({"access_token": token, "token_type": "Bearer", "expires_in": 60}).to_string()
}

#[track_caller]
fn expect_error(result: Result<AccessToken, Error>, kind: ErrorKind, transient: bool) -> Error {
    let err = match result {
        Ok(token) => panic!("expected a {kind:?} error, got {token:?}"),
        Err(err) => err,
    };
    assert_eq!(err.kind(), kind, "{err:?}");
    assert_eq!(err.is_transient(), transient, "is_transient() of {err:?}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(SECRET), "the client secret leaks: {shown}");
    err
}

#[track_caller]
fn expect_invalid(result: Result<AccessToken, Error>) -> Error {
    let err = expect_error(result, ErrorKind::InvalidResponse, false);
    assert_eq!(err.status(), None, "{err:?}");
    assert!(err.oauth_error().is_none(), "{err:?}");
    err
}

#[track_caller]
fn expect_rejected(result: Result<AccessToken, Error>, status: u16, transient: bool) -> Error {
    let err = expect_error(result, ErrorKind::Rejected, transient);
    assert_eq!(err.status().map(|s| s.as_u16()), Some(status), "{err:?}");
    err
}

#[track_caller]
fn expect_transport(result: Result<AccessToken, Error>, elapsed: Duration) -> Error {
    let err = expect_error(result, ErrorKind::Transport, true);
    assert_eq!(err.status(), None);
    assert!(elapsed < WALL_LIMIT, "took {elapsed:?}");
    err
}

/// A timeout after about `SHORT_TIMEOUT`: not early, and not stacked behind anything.
#[track_caller]
fn expect_timeout(result: Result<AccessToken, Error>, elapsed: Duration) -> Error {
    let err = expect_error(result, ErrorKind::Timeout, true);
    assert_eq!(err.status(), None);
    assert!(
        elapsed >= SHORT_TIMEOUT - Duration::from_millis(50),
        "gave up early: {elapsed:?}"
    );
    assert!(elapsed < WALL_LIMIT, "took {elapsed:?}");
    err
}

/// The token's expiry is `lifetime` after some instant in `[before, after]`.
#[track_caller]
fn assert_lifetime(token: &AccessToken, before: Instant, after: Instant, lifetime: Duration) {
    let at = token.expires_at().expect("an expiry");
    assert!(
        at >= before + lifetime && at <= after + lifetime,
        "expires {:?} after the request, expected {lifetime:?}",
        at.saturating_duration_since(before)
    );
}

/// An HTML error page as a proxy in front of an identity provider sends it.
fn html_page(status: StatusCode) -> String {
    format!(
        "<html>\r\n<head><title>{status}</title></head>\r\n<body>\r\n<center><h1>{status}</h1>\
         </center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )
}

// ---------------------------------------------------------------------------------------------
// Non-success statuses
// ---------------------------------------------------------------------------------------------

async fn html_server_error(status: StatusCode) {
    let result = answer(status, "text/html; charset=utf-8", html_page(status)).await;
    let err = expect_rejected(result, status.as_u16(), true);
    assert!(err.oauth_error().is_none());
    assert_eq!(err.retry_after(), None);
    let excerpt = err.body_excerpt().expect("an excerpt of the page");
    assert!(excerpt.starts_with("<html>"), "{excerpt:?}");
    assert!(excerpt.contains(&status.to_string()), "{excerpt:?}");
    assert!(!excerpt.chars().any(char::is_control), "{excerpt:?}");
}

#[tokio::test]
async fn status_500_with_an_html_page() {
    html_server_error(StatusCode::INTERNAL_SERVER_ERROR).await;
}

#[tokio::test]
async fn status_502_with_an_html_page() {
    html_server_error(StatusCode::BAD_GATEWAY).await;
}

#[tokio::test]
async fn status_503_with_an_html_page() {
    html_server_error(StatusCode::SERVICE_UNAVAILABLE).await;
}

/// A throttling answer carrying `Retry-After: value`.
async fn retry_after_of(status: StatusCode, value: &str) -> Error {
    let value = HeaderValue::from_str(value).expect("a header value");
    let result = fetch_from(
        move || {
            let mut response = raw(status, "text/plain", "slow down");
            response.headers_mut().insert(RETRY_AFTER, value.clone());
            response
        },
        |b| b,
    )
    .await;
    let err = expect_rejected(result, status.as_u16(), true);
    assert_eq!(err.body_excerpt(), Some("slow down"));
    err
}

fn http_date_in(seconds: u64) -> String {
    httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(seconds))
}

/// An HTTP-date has whole seconds: it may land up to a second early, minus the exchange.
#[track_caller]
fn assert_about(actual: Option<Duration>, seconds: u64) {
    let actual = actual.expect("a Retry-After");
    let expected = Duration::from_secs(seconds);
    assert!(
        actual <= expected && actual + Duration::from_secs(3) >= expected,
        "retry_after {actual:?}, expected about {expected:?}"
    );
}

#[tokio::test]
async fn status_429_with_retry_after_in_seconds() {
    let err = retry_after_of(StatusCode::TOO_MANY_REQUESTS, "30").await;
    assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));
}

#[tokio::test]
async fn status_503_with_retry_after_in_seconds() {
    let err = retry_after_of(StatusCode::SERVICE_UNAVAILABLE, "120").await;
    assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));
}

#[tokio::test]
async fn status_429_with_retry_after_as_an_http_date() {
    let err = retry_after_of(StatusCode::TOO_MANY_REQUESTS, &http_date_in(90)).await;
    assert_about(err.retry_after(), 90);
}

#[tokio::test]
async fn status_503_with_retry_after_as_an_http_date() {
    let err = retry_after_of(StatusCode::SERVICE_UNAVAILABLE, &http_date_in(120)).await;
    assert_about(err.retry_after(), 120);
}

#[tokio::test]
async fn retry_after_in_the_past_means_now_and_garbage_means_absent() {
    let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(3600));
    let err = retry_after_of(StatusCode::SERVICE_UNAVAILABLE, &past).await;
    assert_eq!(err.retry_after(), Some(Duration::ZERO));
    for garbage in ["soon", "-5", "1.5", "", "60 seconds"] {
        let err = retry_after_of(StatusCode::TOO_MANY_REQUESTS, garbage).await;
        assert_eq!(err.retry_after(), None, "Retry-After: {garbage}");
    }
}

#[tokio::test]
async fn retry_after_with_more_seconds_than_fit_in_64_bits_is_clamped() {
    // A huge delta-seconds that fits in a u64 is clamped to the longest lifetime...
    let err = retry_after_of(StatusCode::SERVICE_UNAVAILABLE, "99999999999").await;
    assert_eq!(err.retry_after(), Some(MAX_LIFETIME));
    // ...and one that does not is still a valid delta-seconds (RFC 9110 §10.2.3: 1*DIGIT;
    // RFC 9111 §1.2.2: an overflowing one counts as the greatest value representable), so it
    // must be clamped the same way, not dropped as if the server had not asked to wait.
    let err = retry_after_of(StatusCode::SERVICE_UNAVAILABLE, "99999999999999999999999").await;
    assert_eq!(err.retry_after(), Some(MAX_LIFETIME));
}

/// A 4xx with an RFC 6749 §5.2 body: typed, permanent, and no excerpt beside the error.
async fn oauth_rejection(status: StatusCode, code: &str) {
    let body = serde_json::json!({
        "error": code,
        "error_description": format!("{code} described"),
        "error_uri": "https://idp.example/errors",
    });
    let result = fetch_from(move || json(status, body.clone()), |b| b).await;
    let err = expect_rejected(result, status.as_u16(), false);
    let oauth = err.oauth_error().expect("the RFC 6749 error body");
    assert_eq!(oauth.code(), code);
    assert_eq!(
        oauth.description(),
        Some(format!("{code} described").as_str())
    );
    assert_eq!(oauth.uri(), Some("https://idp.example/errors"));
    assert_eq!(err.body_excerpt(), None);
    assert_eq!(err.retry_after(), None);
}

#[tokio::test]
async fn status_400_with_an_oauth_error() {
    oauth_rejection(StatusCode::BAD_REQUEST, "invalid_scope").await;
}

#[tokio::test]
async fn status_401_with_an_oauth_error() {
    oauth_rejection(StatusCode::UNAUTHORIZED, "invalid_client").await;
}

#[tokio::test]
async fn status_403_with_an_oauth_error() {
    oauth_rejection(StatusCode::FORBIDDEN, "unauthorized_client").await;
}

#[tokio::test]
async fn status_400_401_403_without_an_oauth_error() {
    for status in [
        StatusCode::BAD_REQUEST,
        StatusCode::UNAUTHORIZED,
        StatusCode::FORBIDDEN,
    ] {
        // An HTML page: no OAuth error, an excerpt instead.
        let result = answer(status, "text/html", html_page(status)).await;
        let err = expect_rejected(result, status.as_u16(), false);
        assert!(err.oauth_error().is_none(), "{status}");
        assert!(
            err.body_excerpt()
                .is_some_and(|e| e.contains(&status.to_string())),
            "{err:?}"
        );
        // Nothing at all.
        let result = answer(status, "", Bytes::new()).await;
        let err = expect_rejected(result, status.as_u16(), false);
        assert!(err.oauth_error().is_none(), "{status}");
        assert_eq!(err.body_excerpt(), None, "{status}");
        // JSON that is not an RFC 6749 error (`error` must be a string).
        let result = answer(status, "application/json", r#"{"error":{"code":7}}"#).await;
        let err = expect_rejected(result, status.as_u16(), false);
        assert!(err.oauth_error().is_none(), "{status}");
        assert_eq!(err.body_excerpt(), Some(r#"{"error":{"code":7}}"#));
    }
}

// ---------------------------------------------------------------------------------------------
// Transport: stalls, drips, resets, refusals
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn never_answering_times_out() {
    // Accept, read the request, never write a byte.
    let server = RawServer::start(|mut stream, _| async move {
        let _ = read_request(&mut stream).await;
        std::future::pending::<()>().await;
        drop(stream);
    })
    .await;
    let (result, elapsed) = fetch_timed(&server.url(), |b| b.timeout(SHORT_TIMEOUT)).await;
    expect_timeout(result, elapsed);
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn accepting_and_never_reading_times_out() {
    let server = RawServer::start(|stream, _| async move {
        std::future::pending::<()>().await;
        drop(stream);
    })
    .await;
    let (result, elapsed) = fetch_timed(&server.url(), |b| b.timeout(SHORT_TIMEOUT)).await;
    expect_timeout(result, elapsed);
}

#[tokio::test]
async fn a_listener_that_never_accepts_times_out() {
    // The kernel completes the handshake from the backlog; nobody ever reads.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/oauth/token", listener.local_addr().unwrap());
    let (result, elapsed) = fetch_timed(&url, |b| b.timeout(SHORT_TIMEOUT)).await;
    expect_timeout(result, elapsed);
    drop(listener);
}

#[tokio::test]
async fn headers_then_a_stall_times_out() {
    let server = RawServer::start(|mut stream, _| async move {
        let _ = read_request(&mut stream).await;
        let head = head(
            "200 OK",
            &["Content-Type: application/json", "Content-Length: 100"],
        );
        let _ = stream.write_all(&head).await;
        std::future::pending::<()>().await;
        drop(stream);
    })
    .await;
    let (result, elapsed) = fetch_timed(&server.url(), |b| b.timeout(SHORT_TIMEOUT)).await;
    expect_timeout(result, elapsed);
}

#[tokio::test]
async fn half_a_status_line_then_a_stall_times_out() {
    let server = RawServer::start(|mut stream, _| async move {
        let _ = read_request(&mut stream).await;
        let _ = stream.write_all(b"HTTP/1.1 20").await;
        std::future::pending::<()>().await;
        drop(stream);
    })
    .await;
    let (result, elapsed) = fetch_timed(&server.url(), |b| b.timeout(SHORT_TIMEOUT)).await;
    expect_timeout(result, elapsed);
}

/// Headers at once, then the body one byte per `every`.
async fn dripping_server(every: Duration) -> RawServer {
    RawServer::start(move |mut stream, _| async move {
        let _ = read_request(&mut stream).await;
        let body = with_access_token(serde_json::json!("dripped"));
        let head = head(
            "200 OK",
            &[
                "Content-Type: application/json",
                &format!("Content-Length: {}", body.len()),
            ],
        );
        if stream.write_all(&head).await.is_err() {
            return;
        }
        for byte in body.bytes() {
            if stream.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_body_dripping_one_byte_a_second_times_out() {
    let server = dripping_server(Duration::from_secs(1)).await;
    let (result, elapsed) = fetch_timed(&server.url(), |b| b.timeout(SHORT_TIMEOUT)).await;
    expect_timeout(result, elapsed);
}

#[tokio::test]
async fn a_body_dripping_faster_than_any_idle_timeout_still_times_out() {
    // A byte every 50 ms: a per-read idle timeout would never fire; the whole-exchange
    // deadline must.
    let server = dripping_server(Duration::from_millis(50)).await;
    let (result, elapsed) = fetch_timed(&server.url(), |b| b.timeout(SHORT_TIMEOUT)).await;
    expect_timeout(result, elapsed);
}

/// Headers declaring 1000 bytes, 10 bytes of body, then the connection ends.
async fn cut_mid_body(reset: bool) -> (Result<AccessToken, Error>, Duration) {
    let server = RawServer::start(move |mut stream, _| async move {
        let _ = read_request(&mut stream).await;
        let mut bytes = head(
            "200 OK",
            &["Content-Type: application/json", "Content-Length: 1000"],
        );
        bytes.extend_from_slice(br#"{"access_t"#);
        let _ = stream.write_all(&bytes).await;
        let _ = stream.flush().await;
        if reset {
            // SO_LINGER 0: close with RST instead of FIN. (`set_zero_linger` says the same
            // but needs a newer tokio than Cargo.toml asks for; a zero linger never blocks.)
            #[allow(deprecated)]
            let _ = stream.set_linger(Some(Duration::ZERO));
        }
        drop(stream);
    })
    .await;
    fetch_timed(&server.url(), |b| b.timeout(Duration::from_secs(5))).await
}

#[tokio::test]
async fn a_connection_closed_mid_body_is_a_transport_error() {
    let (result, elapsed) = cut_mid_body(false).await;
    expect_transport(result, elapsed);
}

#[tokio::test]
async fn a_connection_reset_mid_body_is_a_transport_error() {
    let (result, elapsed) = cut_mid_body(true).await;
    expect_transport(result, elapsed);
}

#[tokio::test]
async fn a_connection_closed_before_any_answer_is_a_transport_error() {
    let server = RawServer::start(|mut stream, _| async move {
        let _ = read_request(&mut stream).await;
        drop(stream);
    })
    .await;
    let (result, elapsed) = fetch_timed(&server.url(), |b| b.timeout(Duration::from_secs(5))).await;
    expect_transport(result, elapsed);
    assert_eq!(server.connections(), 1, "a failed fetch is not retried");
}

#[tokio::test]
async fn an_answer_that_is_not_http_is_a_transport_error() {
    let server = RawServer::start(|mut stream, _| async move {
        let _ = read_request(&mut stream).await;
        let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
        std::future::pending::<()>().await;
        drop(stream);
    })
    .await;
    let (result, elapsed) = fetch_timed(&server.url(), |b| b.timeout(Duration::from_secs(5))).await;
    expect_transport(result, elapsed);
}

#[tokio::test]
async fn an_unparsable_content_length_is_a_transport_error() {
    let server = RawServer::start(|mut stream, _| async move {
        let _ = read_request(&mut stream).await;
        let mut bytes = head(
            "200 OK",
            &[
                "Content-Type: application/json",
                "Content-Length: 99999999999999999999999",
            ],
        );
        bytes.extend_from_slice(with_access_token(serde_json::json!("t")).as_bytes());
        let _ = stream.write_all(&bytes).await;
        std::future::pending::<()>().await;
        drop(stream);
    })
    .await;
    let (result, elapsed) = fetch_timed(&server.url(), |b| b.timeout(Duration::from_secs(5))).await;
    expect_transport(result, elapsed);
}

#[tokio::test]
async fn an_endless_response_head_is_a_transport_error_and_is_not_read_to_its_end() {
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel();
    let server = RawServer::start(move |mut stream, _| {
        let sent_tx = sent_tx.clone();
        async move {
            let _ = read_request(&mut stream).await;
            let mut sent = 0;
            if stream.write_all(b"HTTP/1.1 200 OK\r\n").await.is_ok() {
                let line = format!("X-Filler: {}\r\n", "a".repeat(1000));
                while sent < HUGE {
                    if stream.write_all(line.as_bytes()).await.is_err() {
                        break;
                    }
                    sent += line.len();
                }
            }
            let _ = sent_tx.send(sent);
        }
    })
    .await;
    let (result, elapsed) =
        fetch_timed(&server.url(), |b| b.timeout(Duration::from_secs(10))).await;
    expect_transport(result, elapsed);
    let sent = tokio::time::timeout(Duration::from_secs(5), sent_rx.recv())
        .await
        .expect("the client neither read on nor hung up")
        .unwrap();
    assert!(sent < HUGE / 4, "the server got {sent} bytes of head out");
}

#[tokio::test]
async fn informational_responses_before_the_answer_are_skipped() {
    let server = RawServer::start(|mut stream, _| async move {
        let _ = read_request(&mut stream).await;
        let mut bytes = head("103 Early Hints", &["Link: </style.css>; rel=preload"]);
        bytes.extend(head("100 Continue", &[]));
        bytes.extend(complete(
            "200 OK",
            "application/json",
            &with_access_token(serde_json::json!("after-hints")),
        ));
        let _ = stream.write_all(&bytes).await;
    })
    .await;
    let (result, _) = fetch_timed(&server.url(), |b| b.timeout(Duration::from_secs(5))).await;
    assert_eq!(result.expect("a token").secret(), "after-hints");
}

#[tokio::test]
async fn a_close_delimited_body_within_the_limit_is_read() {
    let server = RawServer::start(|mut stream, _| async move {
        let _ = read_request(&mut stream).await;
        let mut bytes = head(
            "200 OK",
            &["Content-Type: application/json", "Connection: close"],
        );
        bytes.extend_from_slice(with_access_token(serde_json::json!("until-eof")).as_bytes());
        let _ = stream.write_all(&bytes).await;
        let _ = stream.shutdown().await;
    })
    .await;
    let (result, _) = fetch_timed(&server.url(), |b| b.body_limit(LIMIT)).await;
    assert_eq!(result.expect("a token").secret(), "until-eof");
}

#[tokio::test]
async fn a_timed_out_fetch_hangs_up_its_connection() {
    // Headers, then a stall mid-body; once the client gives up, the server must see it hang
    // up rather than keep a connection per timed-out fetch open.
    let (closed_tx, mut closed_rx) = mpsc::unbounded_channel();
    let server = RawServer::start(move |mut stream, _| {
        let closed_tx = closed_tx.clone();
        async move {
            let _ = read_request(&mut stream).await;
            let head = head(
                "200 OK",
                &["Content-Type: application/json", "Content-Length: 100"],
            );
            let _ = stream.write_all(&head).await;
            let mut rest = [0u8; 64];
            // 0 bytes (EOF) or an error: the client closed its end.
            let outcome = stream.read(&mut rest).await;
            let _ = closed_tx.send(outcome.map_err(|e| e.kind()));
        }
    })
    .await;
    let (result, elapsed) = fetch_timed(&server.url(), |b| b.timeout(SHORT_TIMEOUT)).await;
    expect_timeout(result, elapsed);
    let closed = tokio::time::timeout(Duration::from_secs(2), closed_rx.recv())
        .await
        .expect("the connection of a timed-out fetch stays open")
        .unwrap();
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
}

#[tokio::test]
async fn a_closed_port_is_a_transport_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/oauth/token");
    let (result, elapsed) = fetch_timed(&url, |b| b.timeout(Duration::from_secs(5))).await;
    expect_transport(result, elapsed);
}

// ---------------------------------------------------------------------------------------------
// The body limit
// ---------------------------------------------------------------------------------------------

/// Fetch from a server streaming [`HUGE`] bytes with `body_limit(LIMIT)`; check the client
/// gave up quickly and the server could not get the whole body out.
async fn oversized(status: &'static str, framing: Framing) -> Result<AccessToken, Error> {
    let (server, mut sent) = oversized_server(status, framing).await;
    let (result, elapsed) = fetch_timed(&server.url(), |b| {
        b.body_limit(LIMIT).timeout(Duration::from_secs(10))
    })
    .await;
    assert!(elapsed < WALL_LIMIT, "{framing:?}: took {elapsed:?}");
    let sent = tokio::time::timeout(Duration::from_secs(5), sent.recv())
        .await
        .unwrap_or_else(|_| panic!("{framing:?}: the client neither read on nor hung up"))
        .expect("the server reports");
    // What the client did not read piles up in socket buffers, a few MiB at most.
    assert!(
        sent < HUGE / 4,
        "{framing:?}: the server got {sent} of {HUGE} bytes out: the client read on"
    );
    result
}

#[tokio::test]
async fn an_oversized_200_with_content_length_is_invalid() {
    let result = oversized("200 OK", Framing::Declared).await;
    let err = expect_invalid(result);
    assert!(err.to_string().contains("limit"), "{err}");
}

#[tokio::test]
async fn an_oversized_chunked_200_is_invalid() {
    let result = oversized("200 OK", Framing::Chunked).await;
    let err = expect_invalid(result);
    assert!(err.to_string().contains("limit"), "{err}");
}

#[tokio::test]
async fn an_oversized_close_delimited_200_is_invalid() {
    let result = oversized("200 OK", Framing::CloseDelimited).await;
    let err = expect_invalid(result);
    assert!(err.to_string().contains("limit"), "{err}");
}

#[tokio::test]
async fn an_oversized_502_with_content_length_is_rejected_with_its_status() {
    let result = oversized("502 Bad Gateway", Framing::Declared).await;
    let err = expect_rejected(result, 502, true);
    assert!(err.oauth_error().is_none());
    assert_eq!(err.body_excerpt(), Some("[body over the size limit]"));
}

#[tokio::test]
async fn an_oversized_chunked_503_is_rejected_with_its_status() {
    let result = oversized("503 Service Unavailable", Framing::Chunked).await;
    let err = expect_rejected(result, 503, true);
    assert_eq!(err.body_excerpt(), Some("[body over the size limit]"));
}

#[tokio::test]
async fn an_oversized_chunked_401_is_rejected_with_its_status() {
    let result = oversized("401 Unauthorized", Framing::Chunked).await;
    let err = expect_rejected(result, 401, false);
    assert_eq!(err.body_excerpt(), Some("[body over the size limit]"));
}

/// A valid token response padded with whitespace to exactly `length` bytes.
fn padded_token(length: usize) -> String {
    let mut body = with_access_token(serde_json::json!("edge"));
    assert!(body.len() <= length);
    body.extend(std::iter::repeat_n(' ', length - body.len()));
    body
}

/// Serve `body` chunked in 100-byte chunks.
async fn chunked_server(body: String) -> RawServer {
    let body = Arc::new(body);
    RawServer::start(move |mut stream, _| {
        let body = body.clone();
        async move {
            let _ = read_request(&mut stream).await;
            let mut out = head(
                "200 OK",
                &[
                    "Content-Type: application/json",
                    "Transfer-Encoding: chunked",
                    "Connection: close",
                ],
            );
            for piece in body.as_bytes().chunks(100) {
                out.extend(chunk(piece));
            }
            out.extend_from_slice(b"0\r\n\r\n");
            let _ = stream.write_all(&out).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_body_of_exactly_the_limit_is_read() {
    let body = padded_token(LIMIT);
    // With Content-Length.
    let result = fetch_from(
        move || raw(StatusCode::OK, "application/json", body.clone()),
        |b| b.body_limit(LIMIT),
    )
    .await;
    assert_eq!(result.expect("a token at the limit").secret(), "edge");
    // Chunked.
    let server = chunked_server(padded_token(LIMIT)).await;
    let (result, _) = fetch_timed(&server.url(), |b| b.body_limit(LIMIT)).await;
    assert_eq!(
        result.expect("a chunked token at the limit").secret(),
        "edge"
    );
}

#[tokio::test]
async fn a_body_one_byte_over_the_limit_is_invalid() {
    let body = padded_token(LIMIT + 1);
    let result = fetch_from(
        move || raw(StatusCode::OK, "application/json", body.clone()),
        |b| b.body_limit(LIMIT),
    )
    .await;
    expect_invalid(result);
    let server = chunked_server(padded_token(LIMIT + 1)).await;
    let (result, _) = fetch_timed(&server.url(), |b| b.body_limit(LIMIT)).await;
    expect_invalid(result);
}

// ---------------------------------------------------------------------------------------------
// Bodies that are not a token object
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn truncated_json_is_invalid() {
    let err = expect_invalid(answer_ok(r#"{"access_token":"abc","token_type":"Bea"#).await);
    assert!(err.to_string().contains("neither a JSON object"), "{err}");
}

#[tokio::test]
async fn invalid_utf8_is_invalid() {
    let mut body = br#"{"access_token":""#.to_vec();
    body.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
    body.extend_from_slice(br#"","token_type":"Bearer"}"#);
    expect_invalid(answer_ok(body).await);
}

#[tokio::test]
async fn a_top_level_array_is_invalid() {
    expect_invalid(answer_ok(r#"[{"access_token":"t","token_type":"Bearer"}]"#).await);
}

#[tokio::test]
async fn a_top_level_number_is_invalid() {
    expect_invalid(answer_ok("3600").await);
}

#[tokio::test]
async fn a_top_level_string_is_invalid() {
    expect_invalid(answer_ok(r#""access_token""#).await);
}

#[tokio::test]
async fn a_top_level_null_is_invalid() {
    expect_invalid(answer_ok("null").await);
}

#[tokio::test]
async fn an_empty_200_is_invalid() {
    expect_invalid(answer_ok(Bytes::new()).await);
}

#[tokio::test]
async fn a_204_is_invalid() {
    expect_invalid(answer(StatusCode::NO_CONTENT, "", Bytes::new()).await);
}

#[tokio::test]
async fn duplicate_keys_keep_the_last_value() {
    // serde_json keeps the last of duplicate keys; so does the decoder.
    let token = answer_ok(
        r#"{"access_token":"a","access_token":"b","token_type":"Bearer","expires_in":60}"#,
    )
    .await
    .expect("duplicate keys are accepted");
    assert_eq!(token.secret(), "b");
}

#[tokio::test]
async fn a_hundred_thousand_nested_arrays_do_not_overflow_the_stack() {
    expect_invalid(answer_ok("[".repeat(100_000)).await);
    let mut balanced = "[".repeat(100_000);
    balanced.push_str(&"]".repeat(100_000));
    expect_invalid(answer_ok(balanced).await);
}

#[tokio::test]
async fn a_hundred_thousand_nested_objects_do_not_overflow_the_stack() {
    let mut body = r#"{"a":"#.repeat(100_000);
    body.push('1');
    body.push_str(&"}".repeat(100_000));
    expect_invalid(answer_ok(body).await);
}

// ---------------------------------------------------------------------------------------------
// access_token
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn access_token_missing_is_invalid() {
    let err = expect_invalid(answer_ok(r#"{"token_type":"Bearer","expires_in":60}"#).await);
    assert!(err.to_string().contains("access_token"), "{err}");
}

#[tokio::test]
async fn access_token_null_is_invalid() {
    expect_invalid(answer_ok(with_access_token(serde_json::Value::Null)).await);
}

#[tokio::test]
async fn access_token_empty_is_invalid() {
    let err = expect_invalid(answer_ok(with_access_token(serde_json::json!(""))).await);
    assert!(err.to_string().contains("empty"), "{err}");
}

#[tokio::test]
async fn access_token_as_a_number_is_invalid() {
    let err = expect_invalid(answer_ok(with_access_token(serde_json::json!(12345))).await);
    assert!(err.to_string().contains("number"), "{err}");
}

#[tokio::test]
async fn access_token_containing_cr_lf_is_invalid() {
    let token = serde_json::json!("abc\r\nX-Injected: yes");
    let err = expect_invalid(answer_ok(with_access_token(token)).await);
    assert!(!err.to_string().contains("X-Injected"), "{err}");
}

#[tokio::test]
async fn access_token_with_bytes_not_allowed_in_a_header_is_invalid() {
    for token in [
        "abc def",
        "abc\tdef",
        "abc\u{0}def",
        "abc\u{7f}def",
        "tök€n",
        "abc\u{85}",
    ] {
        let result = answer_ok(with_access_token(serde_json::json!(token))).await;
        let err = expect_invalid(result);
        assert!(err.to_string().contains("header"), "{token:?}: {err}");
    }
}

#[tokio::test]
async fn access_token_of_100_kb_is_accepted_and_sent() {
    let long = "A".repeat(100_000);
    let token = answer_ok(with_access_token(serde_json::json!(long.clone())))
        .await
        .expect("a long token is still a token");
    assert_eq!(token.secret().len(), 100_000);
    assert_eq!(token.secret(), long);

    // And it makes a usable header through the layer.
    let server = support::scripted(move |_, _| {
        raw(
            StatusCode::OK,
            "application/json",
            with_access_token(serde_json::json!(long.clone())),
        )
    })
    .await;
    let credentials = builder(&server.url()).build().unwrap();
    let service = BearerAuthLayer::new(credentials).layer(echo());
    let response = service
        .oneshot(Request::new(()))
        .await
        .expect("the call succeeds");
    assert_eq!(response.body().len(), "Bearer ".len() + 100_000);
}

// ---------------------------------------------------------------------------------------------
// token_type
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn token_type_absent_is_taken_as_bearer() {
    let token = answer_ok(r#"{"access_token":"untyped","expires_in":60}"#)
        .await
        .expect("absent token_type is Bearer");
    assert_eq!(token.secret(), "untyped");
    assert_eq!(token.token_type(), "Bearer");
}

#[tokio::test]
async fn token_type_mac_is_invalid() {
    let err = expect_invalid(
        answer_ok(r#"{"access_token":"t","token_type":"mac","expires_in":60}"#).await,
    );
    assert!(err.to_string().contains("mac"), "{err}");
}

#[tokio::test]
async fn token_type_in_capitals_is_accepted() {
    let token = answer_ok(r#"{"access_token":"loud","token_type":"BEARER","expires_in":60}"#)
        .await
        .expect("BEARER is Bearer");
    assert_eq!(token.secret(), "loud");
}

#[tokio::test]
async fn token_type_that_is_not_a_string_is_invalid() {
    expect_invalid(answer_ok(r#"{"access_token":"t","token_type":1}"#).await);
}

// ---------------------------------------------------------------------------------------------
// expires_in
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn expires_in_negative_is_invalid() {
    let err = expect_invalid(answer_ok(with_expires_in("-1")).await);
    assert!(err.to_string().contains("negative"), "{err}");
}

#[tokio::test]
async fn expires_in_zero_is_accepted_and_expires_at_once() {
    let before = Instant::now();
    let token = answer_ok(with_expires_in("0"))
        .await
        .expect("expires_in 0 is a token");
    let after = Instant::now();
    assert_lifetime(&token, before, after, Duration::ZERO);
    assert!(token.expires_at().unwrap() <= Instant::now());
}

#[tokio::test]
async fn expires_in_1e309_is_invalid() {
    // serde_json refuses a number out of f64 range, so the body is not JSON at all.
    expect_invalid(answer_ok(with_expires_in("1e309")).await);
}

#[tokio::test]
async fn expires_in_as_a_string_in_exponent_notation_is_invalid() {
    let err = expect_invalid(answer_ok(with_expires_in(r#""1e3""#)).await);
    assert!(err.to_string().contains("expires_in"), "{err}");
}

#[tokio::test]
async fn expires_in_as_a_string_with_a_leading_space_is_invalid() {
    let err = expect_invalid(answer_ok(with_expires_in(r#"" 60""#)).await);
    assert!(err.to_string().contains("expires_in"), "{err}");
}

#[tokio::test]
async fn expires_in_2_pow_63_is_clamped() {
    let before = Instant::now();
    let token = answer_ok(with_expires_in("9223372036854775808"))
        .await
        .expect("a huge lifetime is clamped, not refused");
    assert_lifetime(&token, before, Instant::now(), MAX_LIFETIME);
}

#[tokio::test]
async fn expires_in_2_pow_64_as_a_string_is_clamped() {
    let before = Instant::now();
    let token = answer_ok(with_expires_in(r#""18446744073709551616""#))
        .await
        .expect("a huge lifetime is clamped, not refused");
    assert_lifetime(&token, before, Instant::now(), MAX_LIFETIME);
}

#[tokio::test]
async fn expires_in_2_pow_64_as_a_number_is_clamped() {
    // An integer too large for a u64: the decoder promises "huge values are clamped", and the
    // same value as a string of digits is; as a JSON integer it must be too.
    let before = Instant::now();
    let token = answer_ok(with_expires_in("18446744073709551616"))
        .await
        .expect("a huge integer lifetime is clamped, not refused");
    assert_lifetime(&token, before, Instant::now(), MAX_LIFETIME);
}

#[tokio::test]
async fn expires_in_as_an_object_is_invalid() {
    let err = expect_invalid(answer_ok(with_expires_in(r#"{"seconds":60}"#)).await);
    assert!(err.to_string().contains("object"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Errors in a 200, content types, redirects
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_200_carrying_an_error_is_rejected() {
    let result = answer_ok(r#"{"error":"invalid_client","error_description":"who?"}"#).await;
    let err = expect_rejected(result, 200, false);
    assert_eq!(err.oauth_error().unwrap().code(), "invalid_client");
    assert_eq!(err.oauth_error().unwrap().description(), Some("who?"));
    // An error next to a token still wins: the endpoint said it failed.
    let result = answer_ok(r#"{"access_token":"t","error":"invalid_scope"}"#).await;
    let err = expect_rejected(result, 200, false);
    assert_eq!(err.oauth_error().unwrap().code(), "invalid_scope");
    // A temporarily_unavailable error in a 200 is worth retrying.
    let result = answer_ok(r#"{"error":"temporarily_unavailable"}"#).await;
    expect_rejected(result, 200, true);
}

#[tokio::test]
async fn json_labelled_text_html_is_accepted() {
    let token = answer(
        StatusCode::OK,
        "text/html; charset=iso-8859-1",
        r#"{"access_token":"mislabelled","token_type":"Bearer","expires_in":60}"#,
    )
    .await
    .expect("the body is JSON whatever the label says");
    assert_eq!(token.secret(), "mislabelled");
}

#[tokio::test]
async fn a_form_labelled_application_json_is_invalid() {
    let result = answer(
        StatusCode::OK,
        "application/json",
        "access_token=abc&token_type=bearer&expires_in=60",
    )
    .await;
    expect_invalid(result);
}

/// A redirect to another server: not followed, and typed as a rejection with its status.
async fn redirect(status: StatusCode) {
    let elsewhere = support::issuing(3600).await;
    let location = format!("http://{}/elsewhere/token", elsewhere.addr());
    let result = {
        let location = location.clone();
        fetch_from(
            move || {
                let mut response = raw(status, "text/html", "<a href=elsewhere>moved</a>");
                response
                    .headers_mut()
                    .insert(http::header::LOCATION, location.parse().unwrap());
                response
            },
            |b| b,
        )
        .await
    };
    let err = expect_rejected(result, status.as_u16(), false);
    let message = err.to_string();
    assert!(message.contains("redirect"), "{message}");
    assert!(message.contains(&location), "{message}");
    assert!(err.oauth_error().is_none());
    assert_eq!(
        elsewhere.requests(),
        0,
        "{status}: the redirect was followed"
    );
}

#[tokio::test]
async fn a_301_is_not_followed() {
    redirect(StatusCode::MOVED_PERMANENTLY).await;
}

#[tokio::test]
async fn a_302_is_not_followed() {
    redirect(StatusCode::FOUND).await;
}

#[tokio::test]
async fn a_307_is_not_followed() {
    redirect(StatusCode::TEMPORARY_REDIRECT).await;
}

#[tokio::test]
async fn a_303_and_a_308_are_not_followed() {
    redirect(StatusCode::SEE_OTHER).await;
    redirect(StatusCode::PERMANENT_REDIRECT).await;
}

// ---------------------------------------------------------------------------------------------
// At the layer
// ---------------------------------------------------------------------------------------------

/// An inner service that echoes the `Authorization` header it received.
fn echo() -> impl Service<
    Request<()>,
    Response = Response<String>,
    Error = std::convert::Infallible,
    Future: Send,
> + Clone
       + Send {
    service_fn(|request: Request<()>| async move {
        let auth = request.headers()[http::header::AUTHORIZATION]
            .to_str()
            .unwrap()
            .to_owned();
        Ok(Response::new(auth))
    })
}

fn token_json(n: usize) -> String {
    serde_json::json!({"access_token": format!("token-{n}"), "token_type": "Bearer", "expires_in": 3600})
        .to_string()
}

/// A 3600 s token is fetched; the endpoint then goes down (`down` set) for 30 s across the
/// moment its refresh starts, while callers keep calling. No call may fail, and once the
/// endpoint is back the refresh succeeds. `hits` counts token requests.
async fn outage_across_the_refresh<S>(
    service: BearerAuth<S>,
    down: Arc<AtomicBool>,
    hits: impl Fn() -> usize,
) where
    S: Service<Request<()>, Response = Response<String>, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let ticking = support::ticker();
    let fetched = tokio::time::Instant::now();
    let first = service.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(first.body(), "Bearer token-1");
    assert_eq!(hits(), 1);
    ticking.abort();

    // Without jitter, refresh starts 300 s before the usable end (3590 s): at 3290 s. Jump
    // to just before it with no I/O in flight, then run the outage from 3280 s to 3310 s.
    tokio::time::sleep_until(fetched + Duration::from_secs(3280)).await;
    assert_eq!(hits(), 1, "no refresh before the outage");
    let _ticker = support::ticker();
    down.store(true, Ordering::SeqCst);
    let recovery = fetched + Duration::from_secs(3310);
    let end = fetched + Duration::from_secs(3370);

    let callers: Vec<_> = (0..5)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move {
                let (mut calls, mut failures, mut slowest) = (0usize, 0usize, Duration::ZERO);
                let mut last = String::new();
                while tokio::time::Instant::now() < end {
                    let sent = tokio::time::Instant::now();
                    match service.clone().oneshot(Request::new(())).await {
                        Ok(response) => last = response.into_body(),
                        Err(_) => failures += 1,
                    }
                    slowest = slowest.max(sent.elapsed());
                    calls += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                (calls, failures, slowest, last)
            })
        })
        .collect();

    tokio::time::sleep_until(recovery).await;
    let attempts_while_down = hits() - 1;
    down.store(false, Ordering::SeqCst);

    for caller in callers {
        let (calls, failures, slowest, last) = caller.await.unwrap();
        assert!(calls > 1000, "{calls} calls");
        assert_eq!(failures, 0, "calls failed while a valid token was cached");
        assert!(
            slowest < Duration::from_millis(50),
            "a caller waited {slowest:?}"
        );
        assert_eq!(
            last,
            format!("Bearer token-{}", hits()),
            "after the outage the refreshed token is in use"
        );
    }
    // The refresh did run into the outage, and backed off rather than hammering.
    assert!(
        (2..=8).contains(&attempts_while_down),
        "{attempts_while_down} refresh attempts in 20 s of outage"
    );
    assert!(
        hits() > attempts_while_down + 1,
        "the refresh succeeded after the outage"
    );
}

fn no_jitter() -> CachePolicy {
    CachePolicy::default().jitter(0.0)
}

#[tokio::test(start_paused = true)]
async fn layer_endpoint_answering_503_for_30_s_fails_no_call() {
    let down = Arc::new(AtomicBool::new(false));
    let server = {
        let down = down.clone();
        support::scripted(move |_, n| {
            if down.load(Ordering::SeqCst) {
                raw(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/html",
                    html_page(StatusCode::SERVICE_UNAVAILABLE),
                )
            } else {
                raw(StatusCode::OK, "application/json", token_json(n))
            }
        })
        .await
    };
    let credentials = builder(&server.url())
        .cache_policy(no_jitter())
        .build()
        .unwrap();
    let service = BearerAuthLayer::new(credentials).layer(echo());
    // The closure owns the server, which runs until the test ends.
    let hits = move || server.requests();
    outage_across_the_refresh(service, down, hits).await;
}

#[tokio::test(start_paused = true)]
async fn layer_endpoint_closing_connections_for_30_s_fails_no_call() {
    let down = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let server = {
        let (down, answered) = (down.clone(), answered.clone());
        RawServer::start(move |mut stream, _| {
            let (down, answered) = (down.clone(), answered.clone());
            async move {
                if read_request(&mut stream).await.is_err() {
                    return;
                }
                let n = answered.fetch_add(1, Ordering::SeqCst) + 1;
                if down.load(Ordering::SeqCst) {
                    // Read the request, then hang up without a word.
                    return;
                }
                let response = complete("200 OK", "application/json", &token_json(n));
                let _ = stream.write_all(&response).await;
                let _ = stream.shutdown().await;
            }
        })
        .await
    };
    let credentials = builder(&server.url())
        .cache_policy(no_jitter())
        .build()
        .unwrap();
    let service = BearerAuthLayer::new(credentials).layer(echo());
    let hits = move || answered.load(Ordering::SeqCst);
    outage_across_the_refresh(service, down, hits).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_hung_endpoint_fails_callers_together_and_does_not_hold_later_ones() {
    // The first token request hangs for good; any later one is answered.
    let server = support::scripted_async(|_, n| async move {
        if n == 1 {
            std::future::pending::<()>().await;
        }
        raw(StatusCode::OK, "application/json", token_json(n))
    })
    .await;
    let credentials = builder(&server.url())
        .timeout(SHORT_TIMEOUT)
        .cache_policy(
            CachePolicy::default().backoff(Duration::from_millis(100), Duration::from_millis(200)),
        )
        .build()
        .unwrap();
    let service = BearerAuthLayer::new(credentials).layer(echo());

    let barrier = Arc::new(tokio::sync::Barrier::new(10));
    let began = Instant::now();
    let callers: Vec<_> = (0..10)
        .map(|_| {
            let (service, barrier) = (service.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let sent = Instant::now();
                let result = service.oneshot(Request::new(())).await;
                (result, sent.elapsed())
            })
        })
        .collect();
    for caller in callers {
        let (result, elapsed) = caller.await.unwrap();
        let err = result.expect_err("no token can be had");
        let err = err
            .downcast_ref::<Error>()
            .unwrap_or_else(|| panic!("a tower_oauth2::Error, got {err:?}"));
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
        assert!(err.is_transient());
        // All ten share the one timed-out fetch: none waits a second timeout.
        assert!(
            elapsed < SHORT_TIMEOUT * 2,
            "a caller waited {elapsed:?}, more than one fetch timeout"
        );
    }
    assert!(began.elapsed() < WALL_LIMIT, "took {:?}", began.elapsed());
    assert_eq!(server.requests(), 1, "ten callers, one token request");

    // While the first request still hangs, a caller after the backoff gets a token at once.
    let failed_at = Instant::now();
    let response = loop {
        let sent = Instant::now();
        match service.clone().oneshot(Request::new(())).await {
            Ok(response) => break response,
            Err(err) => {
                let err = err.downcast_ref::<Error>().expect("a tower_oauth2::Error");
                assert_eq!(
                    err.kind(),
                    ErrorKind::Timeout,
                    "the backoff repeats the error"
                );
                assert!(
                    sent.elapsed() < Duration::from_millis(100),
                    "held {:?}",
                    sent.elapsed()
                );
            }
        }
        assert!(
            failed_at.elapsed() < Duration::from_secs(2),
            "never recovered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(response.body(), "Bearer token-2");
    assert!(
        failed_at.elapsed() < Duration::from_secs(1),
        "recovered only after {:?}",
        failed_at.elapsed()
    );
    assert_eq!(server.requests(), 2);
}
