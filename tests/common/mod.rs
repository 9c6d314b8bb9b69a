//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use paceline::RateLimiter;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A current-thread runtime whose clock starts paused: for a limiter built
/// before it, outside any runtime.
pub(crate) fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

/// Seconds as a `Duration`.
pub(crate) fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Milliseconds as a `Duration`.
pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Spawns `fut` and lets it run until it blocks, so that it takes its place
/// in the queue before the next one is spawned.
pub(crate) async fn spawn_queued<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handle = tokio::spawn(fut);
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
    handle
}

/// The time elapsed since `start`.
pub(crate) fn since(start: Instant) -> Duration {
    Instant::now() - start
}

/// Queues an acquire of `n` requests in its own task; the task returns the
/// grant's instant.
pub(crate) async fn queue_grant(limiter: &RateLimiter, n: u64) -> JoinHandle<Instant> {
    let limiter = limiter.clone();
    spawn_queued(async move { limiter.acquire_many(n).await.unwrap().granted_at() }).await
}
