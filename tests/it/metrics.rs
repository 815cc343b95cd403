//! What the cache reports through the `metrics` facade, read back with a debugging recorder:
//! one fetch for many callers, the waiters, the token's expiry, an invalidation, failures in a
//! row. Labels carry the cache's name and never a secret.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::{self, raw};
use http::StatusCode;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower_oauth2::{cache::CachePolicy, ClientCredentials};

/// One metric as recorded: name, labels, values.
type Recorded = Vec<(String, Vec<(String, String)>, Vec<f64>)>;

/// Everything recorded since the last read (counters and histograms are drained by reading).
fn read(snapshotter: &Snapshotter) -> Recorded {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let labels = key
                .key()
                .labels()
                .map(|label| (label.key().to_owned(), label.value().to_owned()))
                .collect();
            let values = match value {
                DebugValue::Counter(count) => vec![count as f64],
                DebugValue::Gauge(gauge) => vec![gauge.into_inner()],
                DebugValue::Histogram(samples) => {
                    samples.into_iter().map(|s| s.into_inner()).collect()
                }
            };
            (key.key().name().to_owned(), labels, values)
        })
        .collect()
}

/// The values of `name` for the client labelled `client` (and `outcome`, if given).
fn values(recorded: &Recorded, name: &str, client: &str, outcome: Option<&str>) -> Vec<f64> {
    let has = |labels: &[(String, String)], key: &str, value: &str| {
        labels.iter().any(|(k, v)| k == key && v == value)
    };
    recorded
        .iter()
        .filter(|(n, labels, _)| {
            n == name
                && has(labels, "client", client)
                && outcome.is_none_or(|outcome| has(labels, "outcome", outcome))
        })
        .flat_map(|(.., values)| values.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_reports_fetches_waiters_expiry_invalidations_and_failures() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder in this test binary");

    let tokens = support::issuing(3600).await;
    let orders = ClientCredentials::builder()
        .token_url(tokens.url())
        .client_id("client-1")
        .client_secret("m3trics-secret")
        .cache_policy(CachePolicy::default().name("orders"))
        .build()
        .unwrap();
    let callers = (0..20).map(|_| {
        let orders = orders.clone();
        tokio::spawn(async move { orders.token().await.unwrap() })
    });
    let token = futures_util::future::join_all(callers)
        .await
        .remove(0)
        .unwrap();

    assert_eq!(tokens.requests(), 1);
    let recorded = read(&snapshotter);
    assert_eq!(
        values(
            &recorded,
            "tower_oauth2_token_fetches_total",
            "orders",
            Some("ok")
        ),
        [1.0]
    );
    let took = values(
        &recorded,
        "tower_oauth2_token_fetch_duration_seconds",
        "orders",
        None,
    );
    assert!(
        took.len() == 1 && took[0] > 0.0 && took[0] < 10.0,
        "{took:?}"
    );
    let waiters = values(&recorded, "tower_oauth2_flight_waiters", "orders", None);
    assert!(waiters.len() == 1 && waiters[0] >= 1.0, "{waiters:?}");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let expires = values(
        &recorded,
        "tower_oauth2_token_expires_at_seconds",
        "orders",
        None,
    );
    assert!(
        expires.len() == 1 && (now + 3000.0..now + 3600.0).contains(&expires[0]),
        "{expires:?}"
    );
    assert_eq!(
        values(
            &recorded,
            "tower_oauth2_consecutive_failures",
            "orders",
            None
        ),
        [0.0]
    );

    orders.invalidate(&token);
    orders.token().await.unwrap();
    let recorded = read(&snapshotter);
    assert_eq!(
        values(
            &recorded,
            "tower_oauth2_token_invalidations_total",
            "orders",
            None
        ),
        [1.0]
    );
    // The recorder hands counters out as increments since the last read.
    assert_eq!(
        values(
            &recorded,
            "tower_oauth2_token_fetches_total",
            "orders",
            Some("ok")
        ),
        [1.0],
        "one more fetch"
    );

    let down =
        support::scripted(|_, _| raw(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "")).await;
    let billing = ClientCredentials::builder()
        .token_url(down.url())
        .client_id("client-1")
        .client_secret("m3trics-secret")
        .cache_policy(
            CachePolicy::default()
                .name("billing")
                .backoff(Duration::ZERO, Duration::ZERO),
        )
        .build()
        .unwrap();
    for _ in 0..3 {
        billing.token().await.unwrap_err();
    }
    let recorded = read(&snapshotter);
    assert_eq!(
        values(
            &recorded,
            "tower_oauth2_token_fetches_total",
            "billing",
            Some("error")
        ),
        [3.0]
    );
    assert_eq!(
        values(
            &recorded,
            "tower_oauth2_consecutive_failures",
            "billing",
            None
        ),
        [3.0]
    );

    let everything = format!("{:?}", read(&snapshotter));
    assert!(!everything.contains("m3trics-secret") && !everything.contains("token-"));
}

/// Siblings made with `with_audience` report apart: one failing does not read as healthy once
/// another succeeds. A local recorder on a current-thread runtime keeps this test's metrics its
/// own.
#[test]
fn siblings_report_their_own_failures_and_expiry() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let tokens = tower_oauth2::test_util::TokenServer::builder()
                .script(|request, n| async move {
                    let broken = request.form().get("audience").map(String::as_str) == Some("b");
                    broken.then(|| {
                        raw(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "text/plain",
                            format!("down {n}"),
                        )
                    })
                })
                .start()
                .await
                .unwrap();
            let parent = ClientCredentials::builder()
                .token_url(tokens.url())
                .client_id("test-client")
                .client_secret("test-secret")
                .cache_policy(CachePolicy::default().name("siblings"))
                .build()
                .unwrap();
            let healthy = parent.with_audience("a");
            let failing = parent.with_audience("b");
            assert!(failing.token().await.is_err());
            healthy.token().await.unwrap();
            let recorded = read(&snapshotter);
            let gauge = |audience: &str, name: &str| {
                recorded
                    .iter()
                    .filter(|(n, labels, _)| {
                        n == name
                            && labels.contains(&("client".into(), "siblings".into()))
                            && labels.contains(&("audience".into(), audience.into()))
                    })
                    .flat_map(|(.., values)| values.clone())
                    .collect::<Vec<f64>>()
            };
            assert_eq!(gauge("b", "tower_oauth2_consecutive_failures"), [1.0]);
            assert_eq!(gauge("a", "tower_oauth2_consecutive_failures"), [0.0]);
            assert_eq!(gauge("a", "tower_oauth2_token_expires_at_seconds").len(), 1);
            assert!(gauge("b", "tower_oauth2_token_expires_at_seconds").is_empty());
        })
    });
}
