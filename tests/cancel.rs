//! Cancel safety: a dropped acquire leaks nothing and lets the next through.
mod common;

use std::pin::pin;

use common::{ms, queue_grant, secs, since};
use futures::poll;
use paceline::{Quota, RateLimiter};
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn dropping_the_head_grants_the_next_waiter_at_once() {
    let limiter = RateLimiter::new(2, secs(1)).unwrap();
    let start = Instant::now();
    limiter.acquire().await.unwrap();
    let mut head = Box::pin(limiter.acquire_many(2));
    assert!(poll!(head.as_mut()).is_pending());
    let next = queue_grant(&limiter, 1).await;
    assert_eq!(limiter.stats().queued, 2);
    drop(head);
    assert_eq!(
        next.await.unwrap(),
        start,
        "granted the instant the head left"
    );
    assert_eq!(limiter.stats().in_window, 2);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_middle_waiter_leaves_the_others_their_instants() {
    let limiter = RateLimiter::new(1, secs(1)).unwrap();
    let start = Instant::now();
    limiter.acquire().await.unwrap();
    let first = queue_grant(&limiter, 1).await;
    let middle = queue_grant(&limiter, 1).await;
    let last = queue_grant(&limiter, 1).await;
    middle.abort();
    assert!(middle.await.unwrap_err().is_cancelled());
    assert_eq!(first.await.unwrap() - start, secs(1));
    assert_eq!(last.await.unwrap() - start, secs(2));
    assert_eq!(limiter.stats().queued, 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_granted_but_unpolled_waiter_gives_its_grant_back() {
    let limiter = RateLimiter::new(1, secs(1)).unwrap();
    let start = Instant::now();
    limiter.acquire().await.unwrap();
    let mut granted = Box::pin(limiter.acquire());
    assert!(poll!(granted.as_mut()).is_pending());
    let next = queue_grant(&limiter, 1).await;
    // Room for one more: the head is granted, but its future is not polled.
    limiter.set_quota(0, Quota::per_second(2).unwrap()).unwrap();
    assert_eq!(limiter.stats().in_window, 2);
    assert_eq!(limiter.stats().queued, 1);
    drop(granted);
    assert_eq!(
        next.await.unwrap(),
        start,
        "the refunded grant went to the next waiter"
    );
    let stats = limiter.stats();
    assert_eq!((stats.in_window, stats.granted, stats.queued), (2, 2, 0));
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_acquire_leaves_nothing_behind() {
    let limiter = RateLimiter::new(1, secs(1)).unwrap();
    let start = Instant::now();
    limiter.acquire().await.unwrap();
    for _ in 0..10 {
        let timed_out = tokio::time::timeout(ms(10), limiter.acquire()).await;
        assert!(timed_out.is_err());
    }
    assert_eq!(limiter.stats().queued, 0);
    assert_eq!(limiter.stats().in_window, 1);
    let grant = limiter.acquire().await.unwrap();
    assert_eq!(grant.granted_at() - start, secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_future_dropped_before_its_first_poll_never_queues() {
    let limiter = RateLimiter::new(1, secs(1)).unwrap();
    drop(limiter.acquire());
    assert_eq!(limiter.stats().queued, 0);
    assert!(limiter.try_acquire().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_select_that_loses_the_race_cancels_cleanly() {
    let limiter = RateLimiter::new(1, secs(60)).unwrap();
    let start = Instant::now();
    limiter.acquire().await.unwrap();
    let mut acquire = pin!(limiter.acquire());
    tokio::select! {
        _ = &mut acquire => panic!("no capacity for a minute"),
        _ = tokio::time::sleep(secs(5)) => {}
    }
    assert_eq!(
        limiter.stats().queued,
        1,
        "still queued while the future lives"
    );
    // Polling it again later keeps its place and its exact instant.
    let grant = acquire.await.unwrap();
    assert_eq!(grant.granted_at() - start, secs(60));
    assert_eq!(since(start), secs(60));
}
