//! Several quotas, the tokens unit, deadlines and bad input.
mod common;

use std::time::Duration;

use common::{ms, queue_grant, secs, spawn_queued};
use futures::future::join_all;
use paceline::{AcquireError, ConfigError, Cost, Quota, RateLimiter, TryAcquireError, Unit};
use tokio::time::Instant;

fn gemini_free_tier() -> RateLimiter {
    RateLimiter::builder()
        .quota(Quota::per_minute(15).unwrap())
        .quota(Quota::per_day(20).unwrap())
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn every_quota_binds_and_a_grant_is_charged_to_all() {
    let limiter = gemini_free_tier();
    let start = Instant::now();
    let grants = join_all((0..25).map(|_| limiter.acquire())).await;
    let at: Vec<Duration> = grants
        .into_iter()
        .map(|g| g.unwrap().granted_at() - start)
        .collect();
    assert!(at[..15].iter().all(|&t| t == secs(0)));
    assert!(
        at[15..20].iter().all(|&t| t == secs(60)),
        "the minute quota binds"
    );
    assert!(
        at[20..].iter().all(|&t| t == secs(86_400)),
        "then the day quota"
    );
    let stats = limiter.stats();
    // The day still counts the 5 granted at 60 s, plus the 5 new ones.
    assert_eq!(
        (stats.quotas[0].in_window, stats.quotas[1].in_window),
        (5, 10)
    );
}

#[tokio::test(start_paused = true)]
async fn requests_and_tokens_are_enforced_in_one_grant() {
    let limiter = RateLimiter::builder()
        .quota(Quota::per_minute(15).unwrap())
        .quota(Quota::per_minute(1_000).unwrap().counting(Unit::Tokens))
        .build()
        .unwrap();
    let start = Instant::now();
    limiter.acquire_cost(Cost::tokens(600)).await.unwrap();
    // Requests have room, tokens do not: the whole grant waits.
    let grant = limiter.acquire_cost(Cost::tokens(600)).await.unwrap();
    assert_eq!(grant.granted_at() - start, secs(60));
    let stats = limiter.stats();
    assert_eq!(
        (stats.quotas[0].in_window, stats.quotas[1].in_window),
        (1, 600)
    );
    // A request-only cost does not touch the token quota.
    limiter.acquire_many(14).await.unwrap();
    assert_eq!(limiter.stats().quotas[1].in_window, 600);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_holds_nothing_in_one_quota_while_it_waits_on_another() {
    let limiter = RateLimiter::builder()
        .quota(Quota::new(10, secs(1)).unwrap())
        .quota(Quota::new(100, secs(10)).unwrap().counting(Unit::Tokens))
        .build()
        .unwrap();
    limiter.acquire_cost(Cost::new(1, 100)).await.unwrap();
    let _waiting = spawn_queued({
        let l = limiter.clone();
        async move { l.acquire_cost(Cost::new(5, 50)).await }
    })
    .await;
    assert_eq!(
        limiter.stats().quotas[0].in_window,
        1,
        "no request held while tokens wait"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cost_above_a_quota_fails_at_once() {
    let limiter = gemini_free_tier();
    let err = limiter.acquire_many(16).await.unwrap_err();
    assert_eq!(
        err,
        AcquireError::CostExceedsQuota {
            unit: Unit::Requests,
            cost: 16,
            max: 15,
            window: secs(60)
        }
    );
    assert!(matches!(
        limiter.try_acquire_many(21),
        Err(TryAcquireError::CostExceedsQuota { max: 15, .. })
    ));
    assert_eq!(limiter.stats().queued, 0);
}

#[tokio::test(start_paused = true)]
async fn a_zero_cost_is_granted_without_spending() {
    let limiter = RateLimiter::new(1, secs(1)).unwrap();
    limiter.acquire_many(0).await.unwrap();
    limiter.acquire().await.unwrap();
    assert_eq!(limiter.stats().in_window, 1);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_that_cannot_be_met_fails_at_once_with_the_earliest_instant() {
    let limiter = gemini_free_tier();
    let start = Instant::now();
    limiter.acquire_many(15).await.unwrap();
    let err = limiter.acquire_before(start + secs(30)).await.unwrap_err();
    assert_eq!(
        err,
        AcquireError::DeadlineExceeded {
            earliest: Some(start + secs(60))
        }
    );
    assert_eq!(Instant::now(), start, "refused without waiting");
    // Behind waiters ahead: 5 more fit the day at t = 60 s, then the day is full.
    let _ahead = spawn_queued({
        let l = limiter.clone();
        async move { l.acquire_many(5).await }
    })
    .await;
    let err = limiter
        .acquire_before(start + secs(3_600))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        AcquireError::DeadlineExceeded {
            earliest: Some(start + secs(86_400))
        }
    );
    assert_eq!(limiter.stats().queued, 1);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_is_met_exactly_when_the_grant_comes_at_it() {
    let limiter = RateLimiter::new(1, secs(10)).unwrap();
    let start = Instant::now();
    limiter.acquire().await.unwrap();
    let grant = limiter.acquire_before(start + secs(10)).await.unwrap();
    assert_eq!(grant.granted_at(), start + secs(10));
}

#[tokio::test(start_paused = true)]
async fn a_deadline_that_passes_while_queued_fails_then_and_frees_the_queue() {
    let limiter = RateLimiter::new(1, secs(10)).unwrap();
    let start = Instant::now();
    limiter.acquire().await.unwrap();
    let with_deadline = spawn_queued({
        let l = limiter.clone();
        async move { l.acquire_before(start + secs(10)).await }
    })
    .await;
    let behind = queue_grant(&limiter, 1).await;
    tokio::time::sleep(secs(1)).await;
    limiter.pause_for(secs(60)); // a 429 pushes the grant past the deadline
    assert_eq!(
        with_deadline.await.unwrap(),
        Err(AcquireError::DeadlineExceeded { earliest: None })
    );
    assert_eq!(
        Instant::now(),
        start + secs(10),
        "failed at the deadline, not before"
    );
    assert_eq!(behind.await.unwrap() - start, secs(61));
}

#[tokio::test(start_paused = true)]
async fn a_past_deadline_fails_even_with_capacity() {
    let limiter = RateLimiter::new(1, secs(1)).unwrap();
    let past = Instant::now();
    tokio::time::sleep(ms(1)).await;
    assert!(matches!(
        limiter.acquire_before(past).await,
        Err(AcquireError::DeadlineExceeded { .. })
    ));
    assert_eq!(limiter.stats().in_window, 0);
}

#[test]
fn bad_configuration_is_a_typed_error() {
    assert_eq!(
        RateLimiter::new(0, secs(1)).unwrap_err(),
        ConfigError::ZeroMax
    );
    assert_eq!(
        RateLimiter::new(1, Duration::ZERO).unwrap_err(),
        ConfigError::ZeroWindow
    );
    assert_eq!(
        Quota::new(u64::MAX, secs(1)).unwrap_err(),
        ConfigError::MaxTooLarge {
            max: u64::MAX,
            limit: Quota::MAX_MAX
        }
    );
    assert!(matches!(
        Quota::new(1, Duration::MAX).unwrap_err(),
        ConfigError::WindowTooLarge { .. }
    ));
    assert_eq!(
        RateLimiter::builder().build().unwrap_err(),
        ConfigError::NoQuota
    );
    assert!(Quota::new(Quota::MAX_MAX, Quota::MAX_WINDOW).is_ok());
    assert!(ConfigError::ZeroMax.to_string().contains("at least 1"));
}

#[tokio::test(start_paused = true)]
async fn the_largest_quota_works_without_overflow() {
    let limiter = RateLimiter::builder()
        .quota(Quota::new(Quota::MAX_MAX, Quota::MAX_WINDOW).unwrap())
        .build()
        .unwrap();
    limiter.acquire_many(Quota::MAX_MAX).await.unwrap();
    let err = limiter.try_acquire().unwrap_err();
    assert_eq!(err.retry_after(), Some(Quota::MAX_WINDOW));
    limiter.pause_for(Duration::MAX);
    assert!(limiter.stats().paused_until.is_some());
}
