//! The cache's promises, against a real token server on loopback: single flight, refresh
//! ahead, backoff, invalidation on 401, cancel safety.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{self, json, raw};
use http::{Request, Response, StatusCode};
use tokio::sync::{mpsc, Barrier, Notify};
use tokio::time::Instant;
use tower::{service_fn, Service, ServiceExt};
use tower_oauth2::test_util::TokenServer;
use tower_oauth2::{
    cache::CachePolicy, source::from_fn, AccessToken, BearerAuthLayer, ClientCredentials,
    ErrorKind, TokenCache, TokenSource,
};

fn credentials(server: &TokenServer) -> ClientCredentials {
    credentials_with(server, CachePolicy::default())
}

fn credentials_with(server: &TokenServer, policy: CachePolicy) -> ClientCredentials {
    ClientCredentials::builder()
        .token_url(server.url())
        .client_id("client")
        .client_secret("secret")
        .cache_policy(policy)
        .build()
        .expect("valid configuration")
}

/// The token an inner service received, as `token-N`.
fn bearer_of<B>(request: &Request<B>) -> String {
    request.headers()[http::header::AUTHORIZATION]
        .to_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned()
}

/// An inner service that echoes the bearer token it received.
fn echo() -> impl Service<
    Request<()>,
    Response = Response<String>,
    Error = std::convert::Infallible,
    Future: Send,
> + Clone
       + Send {
    service_fn(|request: Request<()>| async move { Ok(Response::new(bearer_of(&request))) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_callers_at_cold_start_cause_one_token_request() {
    let server = support::scripted_async(|_, n| async move {
        // Long enough that every caller arrives while the one fetch is in flight.
        tokio::time::sleep(Duration::from_millis(200)).await;
        json(
            StatusCode::OK,
            serde_json::json!({"access_token": format!("token-{n}"), "token_type": "Bearer", "expires_in": 3600}),
        )
    })
    .await;
    let service = BearerAuthLayer::new(credentials(&server)).layer_service(echo());
    let start = Arc::new(Barrier::new(1000));
    let callers: Vec<_> = (0..1000)
        .map(|_| {
            let service = service.clone();
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                service.oneshot(Request::new(())).await
            })
        })
        .collect();
    for caller in callers {
        let response = caller.await.unwrap().expect("every caller gets a token");
        assert_eq!(response.body(), "token-1");
    }
    assert_eq!(server.requests(), 1);
}

trait LayerExt {
    fn layer_service<S>(&self, inner: S) -> tower_oauth2::BearerAuth<S>;
}

impl LayerExt for BearerAuthLayer {
    fn layer_service<S>(&self, inner: S) -> tower_oauth2::BearerAuth<S> {
        tower::Layer::layer(self, inner)
    }
}

/// A token server that records when each token it issues expires, for an upstream to check.
async fn issuing_with_ledger(
    expires_in: u64,
    delay: Duration,
) -> (TokenServer, Arc<Mutex<HashMap<String, Instant>>>) {
    let ledger = Arc::new(Mutex::new(HashMap::new()));
    let issued = ledger.clone();
    let server = support::scripted_async(move |_, n| {
        let issued = issued.clone();
        async move {
            tokio::time::sleep(delay).await;
            let token = format!("token-{n}");
            issued.lock().unwrap().insert(
                token.clone(),
                Instant::now() + Duration::from_secs(expires_in),
            );
            json(
                StatusCode::OK,
                serde_json::json!({"access_token": token, "token_type": "Bearer", "expires_in": expires_in}),
            )
        }
    })
    .await;
    (server, ledger)
}

#[tokio::test(start_paused = true)]
async fn continuous_load_across_three_lifetimes_refreshes_ahead_without_making_callers_wait() {
    const LIFETIME: u64 = 60;
    const FETCH_TAKES: Duration = Duration::from_millis(500);
    let _ticker = support::ticker();
    let (server, ledger) = issuing_with_ledger(LIFETIME, FETCH_TAKES).await;
    let upstream = {
        let ledger = ledger.clone();
        service_fn(move |request: Request<()>| {
            let ledger = ledger.clone();
            async move {
                let token = bearer_of(&request);
                let valid = ledger
                    .lock()
                    .unwrap()
                    .get(&token)
                    .is_some_and(|expiry| Instant::now() < *expiry);
                let status = if valid {
                    StatusCode::OK
                } else {
                    StatusCode::UNAUTHORIZED
                };
                let mut response = Response::new(token);
                *response.status_mut() = status;
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    let service = BearerAuthLayer::new(credentials(&server)).layer_service(upstream);
    service.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(server.requests(), 1);

    let began = Instant::now();
    let end = began + Duration::from_secs(3 * LIFETIME);
    let callers: Vec<_> = (0..20)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move {
                let (mut calls, mut slowest) = (0usize, Duration::ZERO);
                while Instant::now() < end {
                    let sent = Instant::now();
                    let response = service.clone().oneshot(Request::new(())).await.unwrap();
                    assert_eq!(response.status(), StatusCode::OK, "{}", response.body());
                    slowest = slowest.max(sent.elapsed());
                    calls += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                (calls, slowest)
            })
        })
        .collect();
    for caller in callers {
        let (calls, slowest) = caller.await.unwrap();
        assert!(calls > 1000, "{calls} calls");
        // A caller that waited for the token server would have taken FETCH_TAKES.
        assert!(slowest < FETCH_TAKES, "a caller waited {slowest:?}");
    }
    // Refresh starts between half-way and the last quarter of each lifetime: over three
    // lifetimes that is three to six refreshes, never one per request.
    let refreshes = server.requests() - 1;
    assert!((3..=6).contains(&refreshes), "{refreshes} refreshes");
}

#[tokio::test(start_paused = true)]
async fn a_failing_token_server_is_called_no_more_often_than_the_backoff_schedule() {
    let _ticker = support::ticker();
    let outage_ends = Instant::now() + Duration::from_secs(60);
    let server = support::scripted(move |_, n| {
        if Instant::now() < outage_ends {
            raw(StatusCode::SERVICE_UNAVAILABLE, "text/html", "<html>down</html>")
        } else {
            json(
                StatusCode::OK,
                serde_json::json!({"access_token": format!("token-{n}"), "token_type": "Bearer", "expires_in": 3600}),
            )
        }
    })
    .await;
    let credentials = credentials(&server);
    let (mut failures, mut recovered_at) = (0usize, None);
    let began = Instant::now();
    while recovered_at.is_none() {
        let sent = Instant::now();
        match credentials.token().await {
            Ok(token) => recovered_at = Some((Instant::now(), token)),
            Err(error) => {
                assert_eq!(error.kind(), ErrorKind::Rejected);
                assert!(error.is_transient());
                failures += 1;
                // During a backoff step the last error comes back at once.
                assert!(sent.elapsed() < Duration::from_millis(100));
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(
            began.elapsed() < Duration::from_secs(180),
            "never recovered"
        );
    }
    let (recovered_at, token) = recovered_at.unwrap();
    assert!(failures > 1000, "callers kept calling: {failures}");
    // Waits of at least 0.5, 1, 2, 4, 8, 16, 30 s: at most 7 attempts fit in the 60 s outage,
    // and one more succeeds within a minute of its end.
    let attempts = server.requests();
    assert!((5..=8).contains(&attempts), "{attempts} token requests");
    assert!(recovered_at < outage_ends + Duration::from_secs(61));
    assert_eq!(token.secret(), format!("token-{attempts}"));
}

#[tokio::test(start_paused = true)]
async fn a_token_server_down_while_the_token_is_valid_fails_no_call() {
    let _ticker = support::ticker();
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = {
        let down = down.clone();
        support::scripted(move |_, n| {
            if down.load(Ordering::SeqCst) {
                raw(StatusCode::BAD_GATEWAY, "text/plain", "upstream down")
            } else {
                json(
                    StatusCode::OK,
                    serde_json::json!({"access_token": format!("token-{n}"), "token_type": "Bearer", "expires_in": 60}),
                )
            }
        })
        .await
    };
    let service = BearerAuthLayer::new(credentials(&server)).layer_service(echo());
    service.clone().oneshot(Request::new(())).await.unwrap();
    down.store(true, Ordering::SeqCst);

    // The token counts as expired at 54 s and refresh starts around 38–41 s; run to 53 s.
    let end = Instant::now() + Duration::from_secs(53);
    let mut calls = 0;
    while Instant::now() < end {
        let response = service.clone().oneshot(Request::new(())).await;
        assert_eq!(response.expect("no call fails").body(), "token-1");
        calls += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(calls > 1000);
    let refresh_attempts = server.requests() - 1;
    assert!(
        (1..=5).contains(&refresh_attempts),
        "{refresh_attempts} refresh attempts in ~15 s of backoff"
    );
}

#[tokio::test]
async fn a_hundred_concurrent_rejections_cause_one_refetch() {
    let server = support::issuing(3600).await;
    let credentials = credentials(&server);
    credentials.token().await.unwrap();
    // Every request is held until all hundred carry a token, then token-1 is rejected.
    let gate = Arc::new(Barrier::new(100));
    let upstream = service_fn(move |request: Request<()>| {
        let gate = gate.clone();
        async move {
            let token = bearer_of(&request);
            if token == "token-1" {
                gate.wait().await;
            }
            let mut response = Response::new(token.clone());
            if token == "token-1" {
                *response.status_mut() = StatusCode::UNAUTHORIZED;
            }
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let service = BearerAuthLayer::new(credentials).layer_service(upstream);
    let calls: Vec<_> = (0..100)
        .map(|_| tokio::spawn(service.clone().oneshot(Request::new(()))))
        .collect();
    for call in calls {
        assert_eq!(
            call.await.unwrap().unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let next = service.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(next.status(), StatusCode::OK);
    assert_eq!(next.body(), "token-2");
    assert_eq!(server.requests(), 2);
}

/// Callers that found no token while a fetch was finishing must not start a second one: the
/// cache re-checks for a token under the lock before it launches a fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_rejections_costs_one_fetch_per_invalidation_interval() {
    const INTERVAL: Duration = Duration::from_millis(200);
    const STORM: Duration = Duration::from_millis(2100);
    // A source that answers at once gives the widest window for the race.
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let source = TokenCache::with_policy(
        from_fn(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                Ok(AccessToken::new(format!("token-{n}")).with_lifetime(Duration::from_secs(3600)))
            }
        }),
        CachePolicy::default().invalidation_interval(INTERVAL),
    );
    let rejecting = service_fn(|request: Request<()>| async move {
        let mut response = Response::new(bearer_of(&request));
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        Ok::<_, std::convert::Infallible>(response)
    });
    let service = BearerAuthLayer::new(source).layer_service(rejecting);
    let end = Instant::now() + STORM;
    let callers: Vec<_> = (0..64)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move {
                while Instant::now() < end {
                    let _ = service.clone().oneshot(Request::new(())).await;
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    // The first token, then one per interval: at most 1 + 2100 / 200 + 1.
    let fetches = fetches.load(Ordering::SeqCst);
    assert!((3..=12).contains(&fetches), "{fetches} fetches");
}

/// The cache sets no tokio timer: a paused runtime waiting for something outside it does not
/// auto-advance to a token's refresh point or expiry.
#[tokio::test(start_paused = true)]
async fn waiting_on_the_real_world_while_paused_does_not_expire_a_cached_token() {
    let server = support::issuing(3600).await;
    let credentials = credentials(&server);
    let service = BearerAuthLayer::new(credentials).layer_service(echo());
    service.clone().oneshot(Request::new(())).await.unwrap();
    let (answer, answered) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        let _ = answer.send(());
    });
    let waited = Instant::now();
    answered.await.unwrap();
    assert!(
        waited.elapsed() < Duration::from_secs(1),
        "the paused clock ran {:?} while waiting 100 ms for another thread",
        waited.elapsed()
    );
    let response = service.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(response.body(), "token-1");
    assert_eq!(server.requests(), 1);
}

/// Under a paused clock, advancing it expires a token, on the fast path too.
#[tokio::test(start_paused = true)]
async fn advancing_a_paused_clock_past_expiry_fetches_a_new_token() {
    let server = support::issuing(3600).await;
    let service = BearerAuthLayer::new(credentials(&server)).layer_service(echo());
    for _ in 0..3 {
        let response = service.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(response.body(), "token-1");
    }
    tokio::time::advance(Duration::from_secs(3600)).await;
    let response = service.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(response.body(), "token-2");
}

#[tokio::test]
async fn a_caller_cancelled_mid_fetch_breaks_neither_the_fetch_nor_other_callers() {
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let server = {
        let release = release.clone();
        support::scripted_async(move |_, n| {
            let (arrived_tx, release) = (arrived_tx.clone(), release.clone());
            async move {
                arrived_tx.send(n).unwrap();
                release.notified().await;
                json(
                    StatusCode::OK,
                    serde_json::json!({"access_token": format!("token-{n}"), "token_type": "Bearer", "expires_in": 3600}),
                )
            }
        })
        .await
    };
    let credentials = credentials(&server);

    // The first caller starts the fetch and gives up once the server has the request.
    let first = tokio::spawn({
        let credentials = credentials.clone();
        async move { credentials.token().await }
    });
    assert_eq!(arrived.recv().await, Some(1));
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());

    // A second caller joins the same flight rather than starting another.
    let second = tokio::spawn({
        let credentials = credentials.clone();
        async move { credentials.token().await }
    });
    tokio::task::yield_now().await;
    release.notify_one();
    assert_eq!(second.await.unwrap().unwrap().secret(), "token-1");
    assert_eq!(credentials.token().await.unwrap().secret(), "token-1");
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn a_fetch_whose_callers_all_gave_up_still_fills_the_cache() {
    let release = Arc::new(Notify::new());
    let server = {
        let release = release.clone();
        support::scripted_async(move |_, n| {
            let release = release.clone();
            async move {
                release.notified().await;
                json(
                    StatusCode::OK,
                    serde_json::json!({"access_token": format!("token-{n}"), "token_type": "Bearer", "expires_in": 3600}),
                )
            }
        })
        .await
    };
    let credentials = credentials(&server);
    let gave_up = tokio::time::timeout(Duration::from_millis(50), credentials.token()).await;
    assert!(gave_up.is_err());
    release.notify_one();
    assert_eq!(credentials.token().await.unwrap().secret(), "token-1");
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn callers_waiting_on_a_failed_fetch_share_its_error_and_the_backoff() {
    let release = Arc::new(Notify::new());
    let server = {
        let release = release.clone();
        support::scripted_async(move |_, _| {
            let release = release.clone();
            async move {
                release.notified().await;
                json(
                    StatusCode::UNAUTHORIZED,
                    serde_json::json!({"error": "invalid_client"}),
                )
            }
        })
        .await
    };
    let credentials = credentials(&server);
    let waiting = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..50)
        .map(|_| {
            let (credentials, waiting) = (credentials.clone(), waiting.clone());
            tokio::spawn(async move {
                waiting.fetch_add(1, Ordering::SeqCst);
                credentials.token().await
            })
        })
        .collect();
    while waiting.load(Ordering::SeqCst) < 50 || server.requests() == 0 {
        tokio::task::yield_now().await;
    }
    release.notify_one();
    for caller in callers {
        let error = caller.await.unwrap().unwrap_err();
        assert_eq!(error.oauth_error().unwrap().code(), "invalid_client");
        assert!(!error.is_transient());
    }
    // Permanent errors back off too: the next caller gets the same error without a request.
    let again = credentials.token().await.unwrap_err();
    assert_eq!(again.status(), Some(StatusCode::UNAUTHORIZED));
    assert_eq!(server.requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn tokens_living_one_second_do_not_cause_a_refresh_loop() {
    let _ticker = support::ticker();
    let server = support::issuing(1).await;
    let service = BearerAuthLayer::new(credentials(&server)).layer_service(echo());
    let end = Instant::now() + Duration::from_secs(10);
    let mut calls = 0;
    while Instant::now() < end {
        service.clone().oneshot(Request::new(())).await.unwrap();
        calls += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(calls > 1000);
    // Usable for 0.9 s and never refreshed before half of that: one fetch per 0.45 s at most.
    let fetches = server.requests();
    assert!((10..=24).contains(&fetches), "{fetches} fetches in 10 s");
}

#[tokio::test]
async fn a_cache_is_shared_by_every_layer_built_from_one_source() {
    let server = support::issuing(3600).await;
    let credentials = credentials(&server);
    let first = BearerAuthLayer::new(credentials.clone()).layer_service(echo());
    let second = BearerAuthLayer::new(credentials.clone()).layer_service(echo());
    let shared: Arc<dyn TokenSource> = Arc::new(credentials);
    let third = BearerAuthLayer::new(shared).layer_service(echo());
    for service in [first, second, third] {
        let response = service.oneshot(Request::new(())).await.unwrap();
        assert_eq!(response.body(), "token-1");
    }
    assert_eq!(server.requests(), 1);
}

/// A cache in front of another cache (or of a `ClientCredentials`) takes the tokens it is
/// handed as they are: it never uses one past when the cache behind stops using it, even for
/// tokens so short that the cache behind stretched them to `min_lifetime`.
#[tokio::test(start_paused = true)]
async fn a_cache_in_front_of_a_cache_never_outlives_its_tokens() {
    let fetched_at = Arc::new(Mutex::new(HashMap::new()));
    let record = fetched_at.clone();
    // 500 ms tokens: the cache behind uses each for min_lifetime, 2 s from its fetch.
    let behind = TokenCache::new(from_fn(move || {
        let mut fetched_at = record.lock().unwrap();
        let secret = format!("t{}", fetched_at.len() + 1);
        fetched_at.insert(secret.clone(), Instant::now());
        let token = AccessToken::new(secret).with_lifetime(Duration::from_millis(500));
        async move { Ok(token) }
    }));
    let in_front = TokenCache::new(behind.clone());
    let mut seen = Vec::new();
    for _ in 0..40 {
        let token = in_front.token().await.unwrap();
        let fetched = fetched_at.lock().unwrap()[token.secret()];
        assert!(
            Instant::now() < fetched + Duration::from_secs(2),
            "{} used {:?} after its fetch",
            token.secret(),
            Instant::now() - fetched
        );
        seen.push(token.secret().to_owned());
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    seen.dedup();
    assert!(seen.len() >= 2, "the tokens were renewed: {seen:?}");
    // The cache behind refreshes its 2 s tokens ahead, at the earliest 0.9 s after each fetch
    // (jitter can take the refresh point back to half the usable life): at most 6 in 4 s. The
    // cache in front adds none of its own.
    let fetches = fetched_at.lock().unwrap().len();
    assert!(fetches <= 6, "{fetches} fetches in 4 s of 2 s tokens");
}
