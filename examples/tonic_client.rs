//! A tonic gRPC client that authenticates every call with an OAuth 2.0 bearer token.
//!
//! It starts, on 127.0.0.1, a stand-in token endpoint (see `examples/support/mod.rs`) and a
//! tonic server with the standard `grpc.health.v1.Health` service (from `tonic-health`, so no
//! `protoc` is needed) behind an interceptor that answers `UNAUTHENTICATED` unless the call
//! carries `authorization: Bearer <token>` with a token the endpoint issued. Then it wraps a
//! `tonic::transport::Channel` in `BearerAuthLayer` and calls `Health/Check` a few times.
//! Your own generated clients take the wrapped channel the same way.
//!
//! ```text
//! cargo run --example tonic_client
//! ```

#[path = "support/mod.rs"]
mod support;

use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};
use tonic::{Code, Request, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tower::ServiceBuilder;
use tower_oauth2::{error::BoxError, BearerAuthLayer, ClientCredentials};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let token_server = support::token_server().await?;

    // The gRPC server: Health, behind a bearer token check.
    let issued = token_server.validator();
    let check = move |request: Request<()>| -> Result<Request<()>, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(support::bearer_token);
        match token {
            Some(token) if issued(token) => Ok(request),
            _ => Err(Status::unauthenticated("a valid bearer token is required")),
        }
    };
    let (_reporter, health) = tonic_health::server::health_reporter();
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse()?)?;
    let address = incoming.local_addr()?;
    tokio::spawn(
        Server::builder()
            .layer(tonic::service::InterceptorLayer::new(check))
            .add_service(health)
            .serve_with_incoming(incoming),
    );

    let channel = Endpoint::from_shared(format!("http://{address}"))?
        .connect()
        .await?;
    let request = || HealthCheckRequest {
        service: String::new(), // "": the server as a whole
    };

    // Without the layer, the server turns the call away.
    let refused = HealthClient::new(channel.clone()).check(request()).await;
    match refused {
        Err(status) if status.code() == Code::Unauthenticated => {
            println!("without BearerAuthLayer: {:?}", status.code());
        }
        other => return Err(format!("expected UNAUTHENTICATED, got {other:?}").into()),
    }

    // With it, every call carries a token, fetched once and cached.
    let credentials = ClientCredentials::builder()
        .token_url(token_server.url())
        .client_id(support::CLIENT_ID)
        .client_secret(support::CLIENT_SECRET)
        .build()?;
    let channel = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(credentials))
        .service(channel);
    let mut client = HealthClient::new(channel);
    for call in 1..=3 {
        let status = client.check(request()).await?.into_inner().status();
        println!("with BearerAuthLayer, Check #{call}: {status:?}");
        if status != ServingStatus::Serving {
            return Err(format!("expected SERVING, got {status:?}").into());
        }
    }

    let token_requests = token_server.requests();
    println!("token requests: {token_requests}");
    if token_requests != 1 {
        return Err(
            format!("expected 1 token request, the token server got {token_requests}").into(),
        );
    }
    Ok(())
}
