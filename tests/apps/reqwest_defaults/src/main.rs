//! With reqwest's default features and ours, `rustls::ClientConfig::builder()` finds one
//! process-level crypto provider (it panics when rustls was compiled with two), and a token is
//! fetched over TLS.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tower_oauth2::ClientCredentials;

#[tokio::main]
async fn main() {
    // What any crate in the application may call; panics if the providers are ambiguous.
    let _client_config = rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let _reqwest = reqwest::Client::new();

    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("a self-signed certificate");
    let server_config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![certified.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into()),
        )
        .expect("a server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let Ok(mut tls) = acceptor.accept(stream).await else {
                continue;
            };
            // One request per connection: read its head and body, answer a token, close.
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            while !complete(&request) {
                match tls.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
            }
            let body = r#"{"access_token":"tls-token","token_type":"Bearer","expires_in":3600}"#;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(response.as_bytes()).await;
            let _ = tls.shutdown().await;
        }
    });

    let credentials = ClientCredentials::builder()
        .token_url(format!("https://localhost:{port}/oauth/token"))
        .client_id("app")
        .client_secret("app-secret")
        .root_certificate_pem(certified.cert.pem())
        .build()
        .expect("builds");
    let token = credentials.token().await.expect("a token over TLS");
    assert_eq!(token.secret(), "tls-token");
    println!("ok: one crypto provider, token fetched over TLS");
}

/// Whether `request` holds a whole HTTP/1.1 request with a `content-length` body.
fn complete(request: &[u8]) -> bool {
    let text = String::from_utf8_lossy(request);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    body.len() >= length
}
