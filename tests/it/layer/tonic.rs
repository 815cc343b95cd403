use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Request, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tower::ServiceBuilder;
use tower_oauth2::{cache::CachePolicy, BearerAuth, BearerAuthLayer, ClientCredentials, ErrorKind};

use crate::support::{self, json};
use tower_oauth2::test_util::TokenServer;

type Client = HealthClient<BearerAuth<Channel>>;

/// What the gRPC server accepts: any `token-N` not revoked. Records every token it saw.
#[derive(Clone, Default)]
struct Gate {
    revoked: Arc<Mutex<HashSet<String>>>,
    /// `(token, accepted)` for each call that reached the server.
    seen: Arc<Mutex<Vec<(String, bool)>>>,
}

impl Gate {
    fn revoke(&self, token: &str) {
        self.revoked.lock().unwrap().insert(token.to_owned());
    }

    fn seen(&self) -> Vec<(String, bool)> {
        self.seen.lock().unwrap().clone()
    }

    fn check(&self, request: Request<()>) -> Result<Request<()>, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or_default()
            .to_owned();
        let accepted =
            token.starts_with("token-") && !self.revoked.lock().unwrap().contains(&token);
        self.seen.lock().unwrap().push((token, accepted));
        if accepted {
            Ok(request)
        } else {
            Err(Status::unauthenticated("invalid or revoked token"))
        }
    }
}

/// A tonic server on loopback serving grpc.health.v1 behind `gate`.
async fn grpc_server(gate: Gate) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (_reporter, health) = tonic_health::server::health_reporter();
    let service = InterceptedService::new(health, move |request| gate.check(request));
    tokio::spawn(
        Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    addr
}

fn credentials(server: &TokenServer) -> ClientCredentials {
    ClientCredentials::builder()
        .token_url(server.url())
        .client_id("client")
        .client_secret("s3cr3t-value")
        // Every rejection drops the token, so that only the generation check keeps late
        // rejections of an old token from dropping the new one.
        .cache_policy(CachePolicy::default().invalidation_interval(Duration::ZERO))
        .build()
        .expect("valid credentials")
}

fn client(addr: SocketAddr, credentials: ClientCredentials) -> Client {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_lazy();
    HealthClient::new(
        ServiceBuilder::new()
            .layer(BearerAuthLayer::new(credentials))
            .service(channel),
    )
}

async fn check(client: &mut Client) -> Result<ServingStatus, Status> {
    let response = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    Ok(response.into_inner().status())
}

/// The `tower_oauth2::Error` a failed call carries in its source chain.
fn token_error(status: &Status) -> Option<&tower_oauth2::Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(status);
    while let Some(error) = current {
        if let Some(ours) = error.downcast_ref::<tower_oauth2::Error>() {
            return Some(ours);
        }
        current = error.source();
    }
    None
}

#[tokio::test]
async fn calls_carry_the_token_and_share_one_token_request() {
    let tokens = support::issuing(3600).await;
    let gate = Gate::default();
    let addr = grpc_server(gate.clone()).await;
    let mut client = client(addr, credentials(&tokens));

    for _ in 0..10 {
        let status = check(&mut client).await.expect("an authenticated call");
        assert_eq!(status, ServingStatus::Serving);
    }
    assert_eq!(tokens.requests(), 1, "ten calls, one token request");
    let seen = gate.seen();
    assert_eq!(seen.len(), 10);
    assert!(
        seen.iter().all(|(token, ok)| token == "token-1" && *ok),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_revoked_token_fails_one_call_and_the_next_call_refetches_once() {
    let tokens = support::issuing(3600).await;
    let gate = Gate::default();
    let addr = grpc_server(gate.clone()).await;
    let mut client = client(addr, credentials(&tokens));

    check(&mut client).await.expect("token-1 is valid");
    gate.revoke("token-1");

    let status = check(&mut client).await.expect_err("token-1 was revoked");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(tokens.requests(), 1);

    for _ in 0..3 {
        check(&mut client).await.expect("token-2 is valid");
    }
    assert_eq!(tokens.requests(), 2, "exactly one refetch");
    let seen = gate.seen();
    assert_eq!(
        seen.iter()
            .map(|(token, ok)| (token.as_str(), *ok))
            .collect::<Vec<_>>(),
        [
            ("token-1", true),
            ("token-1", false),
            ("token-2", true),
            ("token-2", true),
            ("token-2", true),
        ]
    );
}

#[tokio::test]
async fn concurrent_calls_after_a_revocation_cause_one_refetch() {
    let tokens = support::issuing(3600).await;
    let gate = Gate::default();
    let addr = grpc_server(gate.clone()).await;
    let mut client = client(addr, credentials(&tokens));

    check(&mut client).await.expect("token-1 is valid");
    gate.revoke("token-1");

    let calls = (0..20).map(|_| {
        let mut client = client.clone();
        async move { check(&mut client).await }
    });
    let results = futures_util::future::join_all(calls).await;

    let failures = results
        .iter()
        .filter_map(|result| result.as_ref().err())
        .collect::<Vec<_>>();
    assert!(
        !failures.is_empty(),
        "the revoked token was sent at least once"
    );
    for status in &failures {
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    // Every rejected call carried the revoked token; none carried a rejected newer one.
    let seen = gate.seen();
    assert_eq!(seen.len(), 21);
    let rejected = seen.iter().filter(|(_, ok)| !ok).collect::<Vec<_>>();
    assert_eq!(rejected.len(), failures.len());
    assert!(
        rejected.iter().all(|(token, _)| token == "token-1"),
        "{seen:?}"
    );

    for _ in 0..5 {
        check(&mut client).await.expect("token-2 is valid");
    }
    assert_eq!(
        tokens.requests(),
        2,
        "twenty rejections, exactly one refetch"
    );
    assert!(gate.seen()[21..]
        .iter()
        .all(|(token, ok)| token == "token-2" && *ok));
}

#[tokio::test]
async fn a_failing_token_endpoint_fails_the_call_before_it_reaches_the_server() {
    let tokens = support::scripted(|_, _| {
        json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({ "error": "invalid_client" }),
        )
    })
    .await;
    let gate = Gate::default();
    let addr = grpc_server(gate.clone()).await;
    let mut client = client(addr, credentials(&tokens));

    let status = check(&mut client).await.expect_err("no token, no call");
    let error = token_error(&status)
        .unwrap_or_else(|| panic!("a tower_oauth2::Error in the chain of {status:?}"));
    assert_eq!(error.kind(), ErrorKind::Rejected);
    assert_eq!(error.status(), Some(StatusCode::UNAUTHORIZED));
    assert!(gate.seen().is_empty(), "the server was never called");
    assert_eq!(tokens.requests(), 1);
}

#[cfg(feature = "tonic")]
mod grpc_status {
    use super::*;
    use crate::support::raw;

    async fn failed_call(tokens: &TokenServer) -> Status {
        let gate = Gate::default();
        let addr = grpc_server(gate.clone()).await;
        let mut client = client(addr, credentials(tokens));
        let status = check(&mut client).await.expect_err("no token, no call");
        assert!(gate.seen().is_empty(), "the server was never called");
        status
    }

    #[tokio::test]
    async fn an_unavailable_token_endpoint_maps_to_unavailable() {
        let tokens = support::scripted(|_, _| {
            raw(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "down for maintenance",
            )
        })
        .await;
        let status = failed_call(&tokens).await;

        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            status.message().contains("token endpoint"),
            "says where it came from: {status:?}"
        );
        let mapped = tower_oauth2::error::grpc_status(&status).expect("a token failure");
        assert_eq!(mapped.code(), Code::Unavailable, "{mapped:?}");
        assert!(token_error(&status).unwrap().is_transient());
    }

    #[tokio::test]
    async fn rejected_client_credentials_map_to_unauthenticated() {
        let tokens = support::scripted(|_, _| {
            json(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({ "error": "invalid_client" }),
            )
        })
        .await;
        let status = failed_call(&tokens).await;

        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert!(
            status.message().contains("token endpoint")
                && status.message().contains("invalid_client"),
            "says where it came from and why: {status:?}"
        );
        assert!(
            !status.message().contains("s3cr3t-value"),
            "no secret in {status:?}"
        );
        let mapped = tower_oauth2::error::grpc_status(&status).expect("a token failure");
        assert_eq!(mapped.code(), Code::Unauthenticated, "{mapped:?}");
        assert!(
            !mapped.message().contains("s3cr3t-value"),
            "no secret in {mapped:?}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_token_endpoint_maps_to_unavailable() {
        // A port nothing listens on any more.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let credentials = ClientCredentials::builder()
            .token_url(format!("http://{addr}/oauth/token"))
            .client_id("client")
            .client_secret("s3cr3t-value")
            .build()
            .unwrap();
        let gate = Gate::default();
        let grpc = grpc_server(gate.clone()).await;
        let mut client = client(grpc, credentials);

        let status = check(&mut client).await.expect_err("no token, no call");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(token_error(&status).unwrap().kind(), ErrorKind::Transport);
        let mapped = tower_oauth2::error::grpc_status(&status).expect("a token failure");
        assert_eq!(mapped.code(), Code::Unavailable, "{mapped:?}");
        assert!(gate.seen().is_empty());
    }

    #[tokio::test]
    async fn a_server_rejection_is_not_a_token_failure() {
        let tokens = support::issuing(3600).await;
        let gate = Gate::default();
        let addr = grpc_server(gate.clone()).await;
        let mut client = client(addr, credentials(&tokens));
        check(&mut client).await.unwrap();
        gate.revoke("token-1");

        let status = check(&mut client).await.expect_err("revoked");
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(tower_oauth2::error::grpc_status(&status).is_none());
    }

    /// A call through a real tonic client and server with a token endpoint that answers
    /// `status` with `body`: the code the caller sees and the one `grpc_status` maps to.
    async fn code_for(status: StatusCode, body: serde_json::Value) -> Code {
        let tokens = support::scripted(move |_, _| json(status, body.clone())).await;
        let failed = failed_call(&tokens).await;
        let mapped = tower_oauth2::error::grpc_status(&failed).expect("a token failure");
        assert_eq!(mapped.code(), failed.code(), "{failed:?}");
        failed.code()
    }

    /// Every row of the table in `tower_oauth2::error::grpc` (gRFC A54): only refused
    /// credentials are `UNAUTHENTICATED`; a wrong token URL or a bad request is the client's
    /// configuration (`INTERNAL`), not its credentials.
    #[tokio::test]
    async fn each_row_of_the_a54_table_reaches_a_grpc_caller_with_its_code() {
        let no_body = serde_json::json!({});
        let error = |code: &str| serde_json::json!({ "error": code });
        let rows = [
            (
                StatusCode::SERVICE_UNAVAILABLE,
                no_body.clone(),
                Code::Unavailable,
            ),
            (
                StatusCode::TOO_MANY_REQUESTS,
                no_body.clone(),
                Code::Unavailable,
            ),
            (
                StatusCode::BAD_REQUEST,
                error("temporarily_unavailable"),
                Code::Unavailable,
            ),
            (
                StatusCode::UNAUTHORIZED,
                no_body.clone(),
                Code::Unauthenticated,
            ),
            (
                StatusCode::UNAUTHORIZED,
                error("invalid_client"),
                Code::Unauthenticated,
            ),
            (
                StatusCode::BAD_REQUEST,
                error("invalid_grant"),
                Code::Unauthenticated,
            ),
            (
                StatusCode::FORBIDDEN,
                no_body.clone(),
                Code::PermissionDenied,
            ),
            (
                StatusCode::BAD_REQUEST,
                error("unauthorized_client"),
                Code::PermissionDenied,
            ),
            (
                StatusCode::FORBIDDEN,
                error("access_denied"),
                Code::PermissionDenied,
            ),
            (StatusCode::NOT_FOUND, no_body.clone(), Code::Internal),
            (
                StatusCode::METHOD_NOT_ALLOWED,
                no_body.clone(),
                Code::Internal,
            ),
            (
                StatusCode::BAD_REQUEST,
                error("invalid_request"),
                Code::Internal,
            ),
            (
                StatusCode::BAD_REQUEST,
                error("invalid_scope"),
                Code::Internal,
            ),
            (
                StatusCode::BAD_REQUEST,
                error("unsupported_grant_type"),
                Code::Internal,
            ),
            (
                StatusCode::OK,
                serde_json::json!({ "no": "token" }),
                Code::Internal,
            ),
        ];
        for (status, body, expected) in rows {
            let code = code_for(status, body.clone()).await;
            assert_eq!(code, expected, "HTTP {status} {body}");
        }
    }

    /// A token server that answers on its token path only (404 elsewhere), given the wrong
    /// path: a configuration error, which must not tell gRPC callers their credentials were
    /// rejected.
    #[tokio::test]
    async fn a_wrong_token_path_is_internal_not_unauthenticated() {
        let tokens = TokenServer::start().await.unwrap();
        let credentials = ClientCredentials::builder()
            .token_url(format!("http://{}/wrong/path", tokens.addr()))
            .client_id("test-client")
            .client_secret("test-secret")
            .build()
            .unwrap();
        let gate = Gate::default();
        let mut client = client(grpc_server(gate.clone()).await, credentials);

        let status = check(&mut client).await.expect_err("no token, no call");
        assert_eq!(status.code(), Code::Internal, "{status:?}");
        assert_eq!(
            token_error(&status).unwrap().status(),
            Some(StatusCode::NOT_FOUND)
        );
        assert!(gate.seen().is_empty());
    }

    /// Failures that are not the endpoint's answer: a source's own errors and panics.
    #[tokio::test]
    async fn a_failing_or_panicking_source_maps_by_what_it_says() {
        let cases: [(tower_oauth2::Error, Code); 2] = [
            (
                tower_oauth2::Error::custom(true, "vault sealed"),
                Code::Unavailable,
            ),
            (
                tower_oauth2::Error::custom(false, "no such key"),
                Code::Internal,
            ),
        ];
        for (error, expected) in cases {
            let source = tower_oauth2::source::from_fn(move || {
                let error = error.clone();
                async move { Err::<tower_oauth2::AccessToken, _>(error) }
            });
            let gate = Gate::default();
            let addr = grpc_server(gate.clone()).await;
            let channel = Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect_lazy();
            let mut client = HealthClient::new(
                ServiceBuilder::new()
                    .layer(BearerAuthLayer::new(source))
                    .service(channel),
            );
            let status = check(&mut client).await.expect_err("no token, no call");
            assert_eq!(status.code(), expected, "{status:?}");
        }
        let panicking = tower_oauth2::source::from_fn(|| async {
            if true {
                panic!("a source bug");
            }
            Ok(tower_oauth2::AccessToken::new("never"))
        });
        let addr = grpc_server(Gate::default()).await;
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let mut client = HealthClient::new(
            ServiceBuilder::new()
                .layer(BearerAuthLayer::new(panicking))
                .service(channel),
        );
        let status = check(&mut client).await.expect_err("no token, no call");
        assert_eq!(status.code(), Code::Internal, "{status:?}");
    }
}
