//! FIFO order and exact, work-conserving grant instants.
mod common;

use std::sync::{Arc, Mutex};

use common::{ms, queue_grant, secs, since, spawn_queued};
use futures::future::join_all;
use paceline::{RateLimiter, TryAcquireError};
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn hundred_acquires_on_15_per_minute_come_15_a_minute() {
    let limiter = RateLimiter::new(15, secs(60)).unwrap();
    let start = Instant::now();
    let grants = join_all((0..100).map(|_| limiter.acquire())).await;
    for (i, grant) in grants.into_iter().enumerate() {
        let at = grant.unwrap().granted_at() - start;
        assert_eq!(at, secs(60 * (i as u64 / 15)), "request {i}");
    }
    assert_eq!(since(start), secs(360));
    let stats = limiter.stats();
    assert_eq!(
        (stats.granted, stats.waited, stats.in_window),
        (100, 85, 10)
    );
}

#[tokio::test(start_paused = true)]
async fn spawned_tasks_are_granted_in_the_order_they_queued() {
    let limiter = RateLimiter::new(3, secs(1)).unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for i in 0..30 {
        let (limiter, order) = (limiter.clone(), order.clone());
        handles.push(
            spawn_queued(async move {
                limiter.acquire().await.unwrap();
                order.lock().unwrap().push(i);
            })
            .await,
        );
    }
    join_all(handles).await;
    assert_eq!(*order.lock().unwrap(), (0..30).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn a_large_acquire_at_the_head_holds_back_smaller_ones() {
    let limiter = RateLimiter::new(10, secs(1)).unwrap();
    let start = Instant::now();
    limiter.acquire_many(6).await.unwrap();
    let big = queue_grant(&limiter, 10).await;
    let small = queue_grant(&limiter, 1).await;
    // Four units are free now, but the small acquire may not barge.
    assert!(matches!(
        limiter.try_acquire(),
        Err(TryAcquireError::RateLimited { .. })
    ));
    assert_eq!(big.await.unwrap() - start, secs(1));
    assert_eq!(small.await.unwrap() - start, secs(2));
}

#[tokio::test(start_paused = true)]
async fn try_acquire_reports_the_wait_behind_the_queue() {
    let limiter = RateLimiter::new(2, secs(10)).unwrap();
    limiter.acquire_many(2).await.unwrap();
    let _queued = spawn_queued({
        let l = limiter.clone();
        async move { l.acquire_many(2).await }
    })
    .await;
    // The queued pair takes t = 10 s, so one more fits at t = 20 s.
    let err = limiter.try_acquire().unwrap_err();
    assert_eq!(
        err,
        TryAcquireError::RateLimited {
            retry_after: secs(20)
        }
    );
}

#[tokio::test(start_paused = true)]
async fn each_waiter_is_granted_at_the_instant_its_grant_becomes_feasible() {
    let limiter = RateLimiter::new(3, ms(1_000)).unwrap();
    let start = Instant::now();
    limiter.acquire().await.unwrap();
    tokio::time::sleep(ms(300)).await;
    limiter.acquire().await.unwrap();
    tokio::time::sleep(ms(300)).await;
    limiter.acquire().await.unwrap();
    // Full: grants at 0, 300 and 600 ms leave at 1,000, 1,300 and 1,600 ms.
    let grants = join_all((0..4).map(|_| limiter.acquire())).await;
    let at: Vec<_> = grants
        .into_iter()
        .map(|g| g.unwrap().granted_at() - start)
        .collect();
    assert_eq!(at, [ms(1_000), ms(1_300), ms(1_600), ms(2_000)]);
}

#[tokio::test(start_paused = true)]
async fn a_hundred_thousand_queued_waiters_are_all_granted_in_order() {
    let limiter = RateLimiter::new(1_000, secs(1)).unwrap();
    let start = Instant::now();
    let grants = join_all((0..100_000).map(|_| limiter.acquire())).await;
    let mut last = start;
    for (i, grant) in grants.into_iter().enumerate() {
        let at = grant.unwrap().granted_at();
        assert!(at >= last, "grant {i} came before the one ahead of it");
        assert_eq!(at - start, secs(i as u64 / 1_000), "grant {i}");
        last = at;
    }
    assert_eq!(limiter.stats().queued, 0);
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_limiter() {
    let a = RateLimiter::new(2, secs(1)).unwrap();
    let b = a.clone();
    a.try_acquire().unwrap();
    b.try_acquire().unwrap();
    assert!(a.try_acquire().is_err());
    assert_eq!(b.stats().in_window, 2);
}

#[test]
fn the_limiter_is_send_sync_and_static() {
    fn assert_traits<T: Send + Sync + Clone + 'static>() {}
    assert_traits::<RateLimiter>();
    fn assert_future_send<T: Send>(_: &T) {}
    let limiter = RateLimiter::new(1, secs(1)).unwrap();
    assert_future_send(&limiter.acquire());
}
