//! The token endpoint through an HTTP `CONNECT` proxy: explicit, or from `HTTPS_PROXY` and
//! `NO_PROXY`. The proxy is a real one on loopback that records everything it relays; the
//! identity provider is `idp.test`, a name only the proxy resolves (to a TLS token server on
//! 127.0.0.1), so a request that reaches it went through the proxy.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower_oauth2::{client_auth::AuthStyle, ClientCredentials, ErrorKind};

#[path = "it/support/tls.rs"]
mod tls;

const SECRET: &str = "pr0xy-must-not-see-this";

/// What a proxy saw: the head of each `CONNECT`, and every byte it relayed either way.
#[derive(Default)]
struct Seen {
    connects: Vec<String>,
    relayed: Vec<u8>,
}

/// A `CONNECT` proxy on loopback that resolves `idp.test` to `idp`.
async fn connect_proxy(idp: SocketAddr) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let (client, _) = listener.accept().await.unwrap();
            tokio::spawn(tunnel(client, idp, record.clone()));
        }
    });
    (addr, seen)
}

async fn tunnel(mut client: TcpStream, idp: SocketAddr, seen: Arc<Mutex<Seen>>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    seen.lock().unwrap().connects.push(head.clone());
    let target = head
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let upstream = match target.split_once(':') {
        Some(("idp.test", port)) if port == idp.port().to_string() => {
            TcpStream::connect(idp).await.ok()
        }
        _ => None,
    };
    let Some(upstream) = upstream else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
        return;
    };
    client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await
        .unwrap();
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    tokio::join!(
        relay(client_read, upstream_write, seen.clone()),
        relay(upstream_read, client_write, seen),
    );
}

async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    seen: Arc<Mutex<Seen>>,
) {
    let mut buffer = [0u8; 8192];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        seen.lock().unwrap().relayed.extend_from_slice(&buffer[..n]);
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// An HTTPS token endpoint for `idp.test` on 127.0.0.1, and its certificate (PEM) to trust.
async fn idp() -> (SocketAddr, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["idp.test".to_owned()]).unwrap();
    let config = tls::server_config(
        vec![certified.cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into()),
        None,
    );
    let addr = tls::serve_tls(config, |_, _| async {
        tls::token_response("proxied-token")
    })
    .await;
    (addr, certified.cert.pem())
}

fn builder(
    idp: SocketAddr,
    ca: &str,
) -> tower_oauth2::client_credentials::ClientCredentialsBuilder {
    ClientCredentials::builder()
        .token_url(format!("https://idp.test:{}/oauth/token", idp.port()))
        .client_id("client")
        .client_secret(SECRET)
        // The secret in the body, where a proxy reading plain text would see it.
        .auth_style(AuthStyle::Form)
        .root_certificate_pem(ca.to_owned())
}

/// Whether `haystack` contains `needle`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[tokio::test]
async fn an_explicit_proxy_sees_a_connect_and_only_tls() {
    let (idp, ca) = idp().await;
    let (proxy, seen) = connect_proxy(idp).await;
    let credentials = builder(idp, &ca)
        .proxy(format!("http://ops:pr0xy-pass@{proxy}"))
        .build()
        .unwrap();

    let token = credentials.token().await.unwrap();

    assert_eq!(token.secret(), "proxied-token");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.connects.len(), 1, "{:?}", seen.connects);
    let connect = &seen.connects[0];
    assert!(
        connect.starts_with(&format!("CONNECT idp.test:{} HTTP/1.1\r\n", idp.port())),
        "{connect:?}"
    );
    // Basic ops:pr0xy-pass
    assert!(
        connect.contains("Proxy-Authorization: Basic b3BzOnByMHh5LXBhc3M="),
        "{connect:?}"
    );
    assert_eq!(seen.relayed.first(), Some(&0x16), "a TLS handshake first");
    for plain in [
        SECRET.as_bytes(),
        b"client_credentials",
        b"POST ",
        b"proxied-token",
    ] {
        assert!(
            !contains(&seen.relayed, plain),
            "{:?} crossed the proxy in clear text",
            String::from_utf8_lossy(plain)
        );
    }
}

#[tokio::test]
async fn a_proxy_password_stays_out_of_debug_output() {
    let builder = ClientCredentials::builder()
        .token_url("https://idp.example.com/oauth/token")
        .client_id("client")
        .client_secret(SECRET)
        .proxy("http://ops:pr0xy-pass@127.0.0.1:3128");
    assert!(!format!("{builder:?}").contains("pr0xy-pass"));
    let credentials = builder.build().unwrap();
    assert!(!format!("{credentials:?}").contains("pr0xy-pass"));
}

#[tokio::test]
async fn a_proxy_that_is_not_an_http_url_is_a_configuration_error() {
    for proxy in [
        "socks5://127.0.0.1:1080",
        "not a url",
        "https://127.0.0.1:3128",
    ] {
        let error = ClientCredentials::builder()
            .token_url("https://idp.example.com/oauth/token")
            .client_id("client")
            .client_secret(SECRET)
            .proxy(proxy)
            .build()
            .unwrap_err();
        assert_eq!(
            tower_oauth2::Error::from(error.clone()).kind(),
            ErrorKind::Config,
            "{proxy}"
        );
        assert!(error.to_string().contains("proxy"), "{error}");
    }
}

#[tokio::test]
async fn a_proxy_refusing_the_tunnel_is_a_transport_error() {
    let (idp, ca) = idp().await;
    // A proxy that knows a different idp: it answers 502 to this one.
    let (proxy, seen) = connect_proxy("127.0.0.1:1".parse().unwrap()).await;
    let credentials = builder(idp, &ca)
        .proxy(format!("http://{proxy}"))
        .build()
        .unwrap();

    let error = credentials.fetch_uncached().await.unwrap_err();

    assert_eq!(error.kind(), ErrorKind::Transport, "{error}");
    assert!(error.to_string().contains("proxy"), "{error}");
    assert_eq!(seen.lock().unwrap().connects.len(), 1);
}

/// Everything that reads the environment in one test, so that no other test in this binary
/// sees it change (the others set their proxy explicitly).
#[tokio::test]
async fn the_environment_names_the_proxy_and_the_exceptions() {
    let (idp, ca) = idp().await;
    let (proxy, seen) = connect_proxy(idp).await;
    std::env::set_var("HTTPS_PROXY", format!("http://{proxy}"));
    std::env::remove_var("NO_PROXY");
    std::env::remove_var("no_proxy");

    let through_proxy = builder(idp, &ca).build().unwrap();
    assert_eq!(
        through_proxy.fetch_uncached().await.unwrap().secret(),
        "proxied-token"
    );
    assert_eq!(seen.lock().unwrap().connects.len(), 1);

    // `.no_proxy()` ignores the environment: `idp.test` does not resolve without the proxy.
    let direct = builder(idp, &ca).no_proxy().build().unwrap();
    assert_eq!(
        direct.fetch_uncached().await.unwrap_err().kind(),
        ErrorKind::Transport
    );
    assert_eq!(
        seen.lock().unwrap().connects.len(),
        1,
        "not through the proxy"
    );

    // NO_PROXY names the host: direct too.
    std::env::set_var("NO_PROXY", "example.com, .idp.test");
    let excepted = builder(idp, &ca).build().unwrap();
    assert_eq!(
        excepted.fetch_uncached().await.unwrap_err().kind(),
        ErrorKind::Transport
    );
    assert_eq!(
        seen.lock().unwrap().connects.len(),
        1,
        "not through the proxy"
    );

    // Loopback token URLs never go through a proxy, whatever the environment says.
    std::env::remove_var("NO_PROXY");
    let tokens = loopback_token_server().await;
    let loopback = ClientCredentials::builder()
        .token_url(format!("http://127.0.0.1:{}/oauth/token", tokens.port()))
        .client_id("client")
        .client_secret(SECRET)
        .build()
        .unwrap();
    std::env::set_var("HTTP_PROXY", format!("http://{proxy}"));
    assert_eq!(
        loopback.fetch_uncached().await.unwrap().secret(),
        "loopback-token"
    );
    assert_eq!(
        seen.lock().unwrap().connects.len(),
        1,
        "not through the proxy"
    );

    // A SOCKS proxy is not silently bypassed: the error says what is supported.
    std::env::remove_var("HTTPS_PROXY");
    std::env::remove_var("HTTP_PROXY");
    std::env::set_var("ALL_PROXY", "socks5://user:s0cks-pass@127.0.0.1:1");
    let socks = builder(idp, &ca).build().unwrap();
    let error = socks.fetch_uncached().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Transport);
    let message = error.to_string();
    assert!(message.contains("only http:// proxies"), "{message}");
    assert!(!message.contains("s0cks-pass"), "{message}");
    std::env::remove_var("ALL_PROXY");
}

/// A plain-HTTP token endpoint on 127.0.0.1 issuing `loopback-token`.
async fn loopback_token_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request| async {
                    let body = r#"{"access_token":"loopback-token","token_type":"Bearer"}"#;
                    let mut response = http::Response::new(Full::new(Bytes::from(body)));
                    response.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, std::convert::Infallible>(response)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}
