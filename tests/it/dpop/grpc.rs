//! tonic: the proof names the gRPC method URL (a client made with `with_origin` sends it), and
//! UNAUTHENTICATED asking for a nonce is a nonce request like HTTP's 401: the token is kept.

use tonic::metadata::MetadataMap;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};
use tonic::{Code, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tower::ServiceBuilder;
use tower_oauth2::client_auth::JwsAlgorithm;
use tower_oauth2::BearerAuthLayer;

use super::*;

/// A gRPC health server on loopback that verifies each call's DPoP proof for the method
/// URL `http://addr/grpc.health.v1.Health/Check` and the token's binding.
async fn grpc_server(tokens: Arc<TokenServer>) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let checker = Arc::new(ProofChecker::default());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counting = accepted.clone();
    let htu = format!("http://{addr}/grpc.health.v1.Health/Check");
    let (_reporter, health) = tonic_health::server::health_reporter();
    let check = move |request: tonic::Request<()>| {
        let metadata = request.metadata();
        let text = |name: &str| {
            metadata
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let authorization = text("authorization");
        let token = authorization
            .strip_prefix("DPoP ")
            .ok_or_else(|| Status::unauthenticated("not DPoP"))?;
        let expect = Expect {
            htm: "POST",
            htu: &htu,
            token: Some(token),
            nonce: None,
        };
        let checked = checker
            .check(&text("dpop"), &expect)
            .map_err(Status::unauthenticated)?;
        if tokens.cnf_jkt(token).as_deref() != Some(checked.jkt.as_str()) {
            return Err(Status::unauthenticated("bound to another key"));
        }
        counting.fetch_add(1, Ordering::SeqCst);
        Ok(request)
    };
    tokio::spawn(
        Server::builder()
            .add_service(InterceptedService::new(health, check))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    (addr, accepted)
}

#[tokio::test]
async fn a_tonic_client_with_an_origin_sends_a_proof_for_the_method_url() {
    let (tokens, _) = token_server(None).await;
    let (addr, accepted) = grpc_server(tokens.clone()).await;
    let credentials = credentials(&tokens, DpopKey::generate(JwsAlgorithm::ES256).unwrap());
    let origin = format!("http://{addr}");
    let channel = Endpoint::from_shared(origin.clone())
        .unwrap()
        .connect_lazy();
    let service = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(credentials.clone()))
        .service(channel);
    let mut client = HealthClient::with_origin(service.clone(), origin.parse().unwrap());
    for _ in 0..3 {
        client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap();
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    assert_eq!(tokens.requests(), 1);

    // Without an origin the request's URI is the path alone, which no proof can name.
    let status = HealthClient::new(service)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap_err();
    assert!(status.message().contains("with_origin"), "{status:?}");
}

/// gRPC has no `401`: a gRPC resource server asks for its DPoP nonce with `UNAUTHENTICATED`
/// (trailers-only, so `grpc-status: 16` in the response headers) carrying
/// `www-authenticate: DPoP error="use_dpop_nonce"` and `dpop-nonce`. The layer takes it as a
/// nonce request, like HTTP's `401`, not as a rejected token (issue #21: "a `use_dpop_nonce`
/// answer never drops the token"): the next call carries the nonce, and one token request
/// serves both calls.
#[tokio::test]
async fn a_grpc_use_dpop_nonce_answer_keeps_the_token() {
    use tonic::service::interceptor::InterceptedService;
    use tonic::transport::server::TcpIncoming;
    use tonic::transport::{Endpoint, Server};
    use tonic::Status;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let tokens = token_server(None).await.0;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let demand_nonce = |request: tonic::Request<()>| {
        let proof = request
            .metadata()
            .get("dpop")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if decode(&proof).1["nonce"] == "grpc-nonce" {
            return Ok(request);
        }
        let mut metadata = MetadataMap::new();
        metadata.insert(
            "www-authenticate",
            "DPoP error=\"use_dpop_nonce\"".parse().unwrap(),
        );
        metadata.insert("dpop-nonce", "grpc-nonce".parse().unwrap());
        Err(Status::with_metadata(
            Code::Unauthenticated,
            "use_dpop_nonce",
            metadata,
        ))
    };
    tokio::spawn(
        Server::builder()
            .add_service(InterceptedService::new(health, demand_nonce))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let credentials = credentials(&tokens, DpopKey::generate(JwsAlgorithm::ES256).unwrap());
    let origin = format!("http://{addr}");
    let channel = Endpoint::from_shared(origin.clone())
        .unwrap()
        .connect_lazy();
    let service = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(credentials))
        .service(channel);
    let mut client = HealthClient::with_origin(service, origin.parse().unwrap());
    let check = || HealthCheckRequest {
        service: String::new(),
    };
    let first = client.check(check()).await.unwrap_err();
    assert_eq!(first.code(), Code::Unauthenticated);
    // Calling again once, as the layer's docs tell tonic users to: the nonce is remembered.
    client.check(check()).await.unwrap();
    assert_eq!(
        tokens.requests(),
        1,
        "the use_dpop_nonce answer dropped the token"
    );
}
