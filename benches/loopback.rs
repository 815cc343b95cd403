//! End-to-end costs over real HTTP on loopback, against baselines in the same run:
//! a cold start with 10,000 callers vs one lone fetch, hyper round trips with and without the
//! layer, and p99 latency across token refreshes vs a token that never expires.
//!
//! `cargo bench -p tower-oauth2-benches --bench loopback`

#[path = "../tests/it/support/servers.rs"]
mod servers;
#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::Criterion;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use servers::{json, Api};
use support::Row;
use tokio::runtime::Runtime;
use tower::{Layer, ServiceExt};
use tower_oauth2::test_util::TokenServer;
use tower_oauth2::{BearerAuthLayer, ClientCredentials};

/// What a real identity provider takes to issue a token; on loopback it would otherwise be
/// ~0.2 ms, and the comparison would measure task spawning rather than the fetch.
const ISSUE_LATENCY: Duration = Duration::from_millis(20);
const CALLERS: usize = 10_000;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn token_server(expires_in: u64) -> TokenServer {
    servers::scripted_async(move |_, n| async move {
        tokio::time::sleep(ISSUE_LATENCY).await;
        json(
            StatusCode::OK,
            serde_json::json!({"access_token": format!("token-{n}"), "token_type": "Bearer", "expires_in": expires_in}),
        )
    })
    .await
}

fn credentials(server: &TokenServer) -> ClientCredentials {
    ClientCredentials::builder()
        .token_url(server.url())
        .client_id("bench")
        .client_secret("bench-secret")
        .build()
        .unwrap()
}

fn cold_start(c: &mut Criterion, runtime: &Runtime) {
    let server = runtime.block_on(token_server(3600));
    let mut group = c.benchmark_group("cold_start");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("lone_fetch", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let credentials = credentials(&server);
                let began = Instant::now();
                runtime.block_on(credentials.token()).unwrap();
                total += began.elapsed();
            }
            total
        })
    });
    group.bench_function("callers_10000", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let credentials = credentials(&server);
                let before = server.requests();
                let began = Instant::now();
                runtime.block_on(async {
                    let callers: Vec<_> = (0..CALLERS)
                        .map(|_| {
                            let credentials = credentials.clone();
                            tokio::spawn(async move { credentials.token().await })
                        })
                        .collect();
                    for caller in callers {
                        caller.await.unwrap().unwrap();
                    }
                });
                total += began.elapsed();
                assert_eq!(server.requests() - before, 1, "exactly one token request");
            }
            total
        })
    });
    group.finish();
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// `count` sequential GETs through `client`, each read to the end.
async fn round_trips<S>(client: S, url: &str, count: u64) -> Vec<Duration>
where
    S: tower::Service<http::Request<Full<Bytes>>, Response = http::Response<hyper::body::Incoming>>
        + Clone,
    S::Error: std::fmt::Debug,
{
    let mut latencies = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let request = http::Request::get(url)
            .header(http::header::AUTHORIZATION, "Bearer fixed-token")
            .body(Full::default())
            .unwrap();
        let sent = Instant::now();
        let response = client.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body().collect().await.unwrap();
        latencies.push(sent.elapsed());
    }
    latencies
}

/// A loopback API, and a hyper client to it with and without the layer, both warmed up
/// (connections pooled, token cached). The servers live as long as the returned handles.
struct HyperPair {
    _server: TokenServer,
    _api: Api,
    url: String,
    plain: HttpClient,
    layered: tower_oauth2::BearerAuth<HttpClient>,
}

fn hyper_pair(runtime: &Runtime) -> HyperPair {
    let (server, api) =
        runtime.block_on(async { (token_server(3600).await, Api::start(|_| true).await) });
    let url = api.url();
    let plain = http_client();
    let layered = BearerAuthLayer::new(credentials(&server)).layer(http_client());
    runtime.block_on(async {
        round_trips(plain.clone(), &url, 10).await;
        round_trips(strip_authorization(layered.clone()), &url, 10).await;
    });
    HyperPair {
        _server: server,
        _api: api,
        url,
        plain,
        layered,
    }
}

/// Throughput with the layer over without; the median of alternating rounds.
fn paired_hyper_throughput(runtime: &Runtime) -> f64 {
    const ROUNDS: usize = 21;
    const TRIPS: u64 = 1_000;
    let HyperPair {
        url,
        plain,
        layered,
        ..
    } = &hyper_pair(runtime);
    let time = |trips: &mut dyn FnMut()| {
        let began = Instant::now();
        trips();
        began.elapsed().as_secs_f64()
    };
    let rounds = support::alternate(
        ROUNDS,
        || time(&mut || drop(runtime.block_on(round_trips(plain.clone(), url, TRIPS)))),
        || {
            time(&mut || {
                let client = strip_authorization(layered.clone());
                drop(runtime.block_on(round_trips(client, url, TRIPS)))
            })
        },
    );
    let ratio = |(plain, layered): &(f64, f64)| plain / layered;
    ratio(&support::median_round(rounds, ratio))
}

fn hyper_round_trip(c: &mut Criterion, runtime: &Runtime) {
    let HyperPair {
        url,
        plain,
        layered,
        ..
    } = &hyper_pair(runtime);
    let mut group = c.benchmark_group("hyper");
    group.bench_function("no_layer", |b| {
        b.iter_custom(|iters| {
            let began = Instant::now();
            runtime.block_on(round_trips(plain.clone(), url, iters));
            began.elapsed()
        })
    });
    group.bench_function("bearer_auth", |b| {
        b.iter_custom(|iters| {
            let began = Instant::now();
            runtime.block_on(round_trips(
                strip_authorization(layered.clone()),
                url,
                iters,
            ));
            began.elapsed()
        })
    });
    group.finish();
}

/// The baseline sends a fixed header; through the layer the same request arrives without it,
/// so that the layer adds its own and both requests are the same size.
fn strip_authorization<S>(
    service: S,
) -> impl tower::Service<
    http::Request<Full<Bytes>>,
    Response = http::Response<hyper::body::Incoming>,
    Error = tower::BoxError,
    Future: Send,
> + Clone
       + Send
where
    S: tower::Service<
            http::Request<Full<Bytes>>,
            Response = http::Response<hyper::body::Incoming>,
            Error = tower::BoxError,
        > + Clone
        + Send,
    S::Future: Send,
{
    service.map_request(|mut request: http::Request<Full<Bytes>>| {
        request.headers_mut().remove(http::header::AUTHORIZATION);
        request
    })
}

/// p99 of `tasks` concurrent request loops through the layer for `duration`.
fn p99_under_load(runtime: &Runtime, expires_in: u64, duration: Duration) -> (Duration, usize) {
    runtime.block_on(async {
        let server = token_server(expires_in).await;
        let api = Api::start(|_| true).await;
        let url = api.url();
        let client =
            strip_authorization(BearerAuthLayer::new(credentials(&server)).layer(http_client()));
        round_trips(client.clone(), &url, 10).await;
        let end = Instant::now() + duration;
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    while Instant::now() < end {
                        latencies.extend(round_trips(client.clone(), &url, 50).await);
                    }
                    latencies
                })
            })
            .collect();
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.unwrap());
        }
        latencies.sort();
        let p99 = latencies[latencies.len() * 99 / 100];
        (p99, server.requests())
    })
}

/// p99 with tokens living 2 s (refreshed about every second) over p99 with tokens that outlive
/// the run; the median of alternating rounds, and that round's two p99s.
fn refresh_ahead(runtime: &Runtime) -> (f64, Duration, Duration, usize) {
    const ROUNDS: usize = 9;
    const WINDOW: Duration = Duration::from_secs(2);
    let mut fetches = 0;
    let rounds = support::alternate(
        ROUNDS,
        || {
            let (p99, hits) = p99_under_load(runtime, 2, WINDOW);
            fetches = fetches.max(hits);
            p99
        },
        || p99_under_load(runtime, 3600, WINDOW).0,
    );
    let ratio = |(refreshing, steady): &(Duration, Duration)| {
        refreshing.as_secs_f64() / steady.as_secs_f64()
    };
    let median = support::median_round(rounds, ratio);
    (ratio(&median), median.0, median.1, fetches)
}

fn main() {
    let runtime = runtime();
    let mut c = support::criterion();
    cold_start(&mut c, &runtime);
    hyper_round_trip(&mut c, &runtime);
    c.final_summary();

    let mut rows = Vec::new();
    if let Some(ratio) = support::ratio("cold_start", "callers_10000", "lone_fetch") {
        rows.push(Row {
            name: "10,000 callers at cold start vs one lone fetch (1 token request)",
            ratio,
            unit: "x",
            goal: "<= 2x",
            met: ratio <= 2.0,
        });
    }
    let filtered = support::filtered();
    if !filtered {
        let ratio = paired_hyper_throughput(&runtime);
        rows.push(Row {
            name: "hyper round trips, layer vs no layer (throughput, paired)",
            ratio,
            unit: "x",
            goal: ">= 0.97x",
            met: ratio >= 0.97,
        });
    }
    if let Some(ratio) = support::ratio("hyper", "no_layer", "bearer_auth") {
        rows.push(Row::reference(
            "  the same from criterion's two medians (for reference)",
            ratio,
        ));
    }
    if !filtered {
        let (ratio, refreshing, steady, fetches) = refresh_ahead(&runtime);
        println!(
            "\np99 with refreshes: {refreshing:?} (up to {fetches} token requests in a 2 s round); without: {steady:?}"
        );
        rows.push(Row {
            name: "p99 latency across token refreshes vs a never-expiring token",
            ratio,
            unit: "x",
            goal: "<= 1.05x",
            met: ratio <= 1.05,
        });
    }
    support::report("loopback ratios (same run)", &rows);
}
