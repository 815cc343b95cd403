//! The counters of DPoP traffic, through the metrics facade.

use tower::retry::RetryLayer;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_oauth2::client_auth::JwsAlgorithm;
use tower_oauth2::layer::RetryOnUnauthorized;
use tower_oauth2::BearerAuthLayer;

use super::*;

/// The counters: tokens attached, requests replayed, nonce retries at both ends, labelled with
/// the client. A local recorder on a current-thread runtime keeps them this test's own.
#[cfg(feature = "metrics")]
#[test]
fn the_counters_count_attached_tokens_replays_and_nonce_retries() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use tower_oauth2::cache::CachePolicy;

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let (tokens, _) = token_server(Some("token-nonce")).await;
            let resource = Resource::start(tokens.clone(), Some("resource-nonce")).await;
            let credentials = ClientCredentials::builder()
                .token_url(tokens.url())
                .client_id("test-client")
                .client_secret("test-secret")
                .dpop(DpopKey::generate(JwsAlgorithm::ES256).unwrap())
                .cache_policy(CachePolicy::default().name("dpop-metrics"))
                .build()
                .unwrap();
            let mut client = ServiceBuilder::new()
                .layer(RetryLayer::new(RetryOnUnauthorized::default()))
                .layer(BearerAuthLayer::new(credentials))
                .service(http_client());
            for _ in 0..3 {
                let response = client
                    .ready()
                    .await
                    .unwrap()
                    .call(request(Method::GET, &resource.url("/counted")))
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::OK);
            }
        })
    });
    // Reading drains the counters: read once.
    let recorded = snapshotter.snapshot().into_vec();
    let counted = |name: &str, endpoint: Option<&str>| -> u64 {
        recorded
            .iter()
            .filter(|(key, ..)| {
                let labels: Vec<(String, String)> = key
                    .key()
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                key.key().name() == name
                    && labels.contains(&("client".into(), "dpop-metrics".into()))
                    && endpoint.is_none_or(|e| labels.contains(&("endpoint".into(), e.into())))
            })
            .map(|(.., value)| match value {
                DebugValue::Counter(count) => *count,
                other => panic!("{name} is a {other:?}"),
            })
            .sum()
    };
    assert_eq!(counted("tower_oauth2_tokens_attached_total", None), 4);
    assert_eq!(counted("tower_oauth2_requests_replayed_total", None), 1);
    assert_eq!(
        counted("tower_oauth2_dpop_nonce_retries_total", Some("token")),
        1
    );
    assert_eq!(
        counted("tower_oauth2_dpop_nonce_retries_total", Some("resource")),
        1
    );
}
