//! An axum server with a limit per API key, and clients to try it.
//!
//! `GET /` is behind a [`KeyedRateLimitLayer`] keyed by the `x-api-key`
//! header: five requests per second per key, answered `429 Too Many
//! Requests` (with `Retry-After`) rather than queued. `GET /stats` returns
//! the keyed limiter's figures and each key's stats as JSON.
//!
//! `main` starts the server on a free port of 127.0.0.1, runs a few clients
//! for two seconds (a greedy key, a polite one and one in between), prints
//! what each key got and the `/stats` JSON, and exits.
//!
//! ```sh
//! cargo run --example service --features tower,serde
//! ```

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use paceline::tower::{KeyedRateLimitLayer, RateLimitError};
use paceline::{AcquireError, KeyedError, KeyedRateLimiter, Quota};
use tokio::time::Instant;
use tower::ServiceBuilder;

/// The limit of every key.
const PER_KEY: u64 = 5;
const WINDOW: Duration = Duration::from_secs(1);
/// How long the clients run.
const RUN: Duration = Duration::from_secs(2);

/// The clients: a key, how many send at once, and the pause between a
/// client's requests.
const CLIENTS: [(&str, usize, Duration); 3] = [
    ("greedy", 4, Duration::from_millis(10)),
    ("steady", 1, Duration::from_millis(250)),
    ("bursty", 2, Duration::from_millis(50)),
];

fn api_key(request: &Request<Body>) -> String {
    let key = request
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok());
    key.unwrap_or("anonymous").to_owned()
}

/// A refusal as an HTTP answer: 429 with the wait for a rate limit, 503 when
/// the server holds too many keys to take a new one.
async fn refused(err: RateLimitError<Infallible, KeyedError<AcquireError>>) -> Response {
    let status = match err {
        RateLimitError::Limited(KeyedError::TooManyKeys { .. }) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::TOO_MANY_REQUESTS,
    };
    let mut response = (status, err.to_string()).into_response();
    if let Some(wait) = err.retry_after() {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn app(limiter: KeyedRateLimiter<String>) -> Router {
    let limited = Router::new().route("/", get(|| async { "hello" })).layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(refused))
            .layer(KeyedRateLimitLayer::new(limiter.clone(), api_key).max_wait(Duration::ZERO)),
    );
    let stats = get(move || async move {
        let keys: BTreeMap<&str, _> = CLIENTS
            .iter()
            .filter_map(|(key, _, _)| Some((*key, limiter.key_stats(*key)?)))
            .collect();
        Json(serde_json::json!({ "limiter": limiter.stats(), "keys": keys }))
    });
    limited.route("/stats", stats)
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    limited: AtomicU64,
    other: AtomicU64,
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

async fn get_from(
    client: &HttpClient,
    url: &str,
    key: &str,
) -> Result<(StatusCode, Bytes), Box<dyn Error + Send + Sync>> {
    let request = Request::get(url)
        .header("x-api-key", key)
        .body(Empty::new())?;
    let response = client.request(request).await?;
    let status = response.status();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}

/// One client: a request, a pause, until the run is over.
async fn client(
    client: HttpClient,
    url: String,
    key: &'static str,
    pause: Duration,
    stop: Instant,
    tally: Arc<Tally>,
) {
    while Instant::now() < stop {
        let counter = match get_from(&client, &url, key).await {
            Ok((StatusCode::OK, _)) => &tally.ok,
            Ok((StatusCode::TOO_MANY_REQUESTS, _)) => &tally.limited,
            _ => &tally.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(pause).await;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let limiter = KeyedRateLimiter::<String>::builder()
        .quota(Quota::new(PER_KEY, WINDOW)?)
        .max_keys(1_000)
        .build()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(listener, app(limiter.clone()))
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .into_future(),
    );
    println!("serving on http://{address}, {PER_KEY} requests per {WINDOW:?} per API key");

    let http: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let url = format!("http://{address}/");
    let start = Instant::now();
    let stop = start + RUN;
    let mut tasks = Vec::new();
    let mut tallies = Vec::new();
    for (key, concurrent, pause) in CLIENTS {
        let tally = Arc::new(Tally::default());
        for _ in 0..concurrent {
            tasks.push(tokio::spawn(client(
                http.clone(),
                url.clone(),
                key,
                pause,
                stop,
                tally.clone(),
            )));
        }
        tallies.push((key, concurrent, pause, tally));
    }
    for task in tasks {
        task.await?;
    }
    let elapsed = start.elapsed();

    // In a sliding window of 1 s, at most 5 grants: over the run, at most 5
    // per started second.
    let bound = PER_KEY * elapsed.as_secs_f64().div_euclid(WINDOW.as_secs_f64()) as u64 + PER_KEY;
    println!(
        "\nafter {:.2} s (a strict window lets at most {bound} through per key):",
        elapsed.as_secs_f64()
    );
    for (key, concurrent, pause, tally) in &tallies {
        let (ok, limited, other) = (
            tally.ok.load(Ordering::Relaxed),
            tally.limited.load(Ordering::Relaxed),
            tally.other.load(Ordering::Relaxed),
        );
        println!(
            "  {key:<7} {concurrent} client(s), a request every {pause:?}: {:>4} sent, {ok:>3} ok, {limited:>4} limited (429){}",
            ok + limited + other,
            if other > 0 {
                format!(", {other} other")
            } else {
                String::new()
            },
        );
        if ok > bound || other > 0 {
            return Err(format!("{key}: {ok} ok and {other} other answers").into());
        }
    }

    let (status, body) = get_from(&http, &format!("http://{address}/stats"), "").await?;
    let stats: serde_json::Value = serde_json::from_slice(&body)?;
    println!(
        "\nGET /stats ({status}):\n{}",
        serde_json::to_string_pretty(&stats)?
    );

    let _ = stop_server.send(());
    server.await??;
    Ok(())
}
