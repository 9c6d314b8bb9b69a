//! Close, pause and live reconfiguration.
mod common;

use common::{ms, queue_grant, secs, spawn_queued};
use futures::future::join_all;
use paceline::{AcquireError, Quota, RateLimiter, TryAcquireError};
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn close_fails_queued_and_later_acquires_and_keeps_grants() {
    let limiter = RateLimiter::new(1, secs(60)).unwrap();
    limiter.acquire().await.unwrap();
    let queued: Vec<_> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            let l = limiter.clone();
            v.push(spawn_queued(async move { l.acquire().await }).await);
        }
        v
    };
    limiter.close();
    for handle in queued {
        assert_eq!(handle.await.unwrap(), Err(AcquireError::Closed));
    }
    assert_eq!(limiter.acquire().await, Err(AcquireError::Closed));
    assert_eq!(limiter.try_acquire(), Err(TryAcquireError::Closed));
    let stats = limiter.stats();
    assert!(stats.closed);
    assert_eq!((stats.queued, stats.in_window), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_pause_holds_every_grant_until_it_ends_and_keeps_the_order() {
    let limiter = RateLimiter::new(100, secs(60)).unwrap();
    let start = Instant::now();
    limiter.pause_for(secs(7));
    assert_eq!(limiter.stats().paused_until, Some(start + secs(7)));
    assert_eq!(
        limiter.try_acquire(),
        Err(TryAcquireError::RateLimited {
            retry_after: secs(7)
        })
    );
    let grants = join_all((0..5).map(|_| limiter.acquire())).await;
    for grant in grants {
        assert_eq!(grant.unwrap().granted_at() - start, secs(7));
    }
    assert_eq!(limiter.stats().paused_until, None);
}

#[tokio::test(start_paused = true)]
async fn a_pause_while_waiters_queue_delays_them_and_a_shorter_one_does_not_cut_it() {
    let limiter = RateLimiter::new(1, secs(1)).unwrap();
    let start = Instant::now();
    limiter.acquire().await.unwrap();
    let waiter = queue_grant(&limiter, 1).await;
    tokio::time::sleep(ms(500)).await;
    limiter.pause_for(secs(3)); // a 429 asking for 3 s
    limiter.pause_for(secs(1)); // an earlier retry time does not shorten it
    assert_eq!(waiter.await.unwrap() - start, ms(3_500));
}

#[tokio::test(start_paused = true)]
async fn resume_ends_a_pause_at_once() {
    let limiter = RateLimiter::new(5, secs(1)).unwrap();
    let start = Instant::now();
    limiter.pause_for(secs(30));
    let waiter = queue_grant(&limiter, 1).await;
    tokio::time::sleep(secs(2)).await;
    limiter.resume();
    assert_eq!(waiter.await.unwrap() - start, secs(2));
}

#[tokio::test(start_paused = true)]
async fn an_upgrade_grants_queued_waiters_at_once() {
    let limiter = RateLimiter::new(15, secs(60)).unwrap();
    let start = Instant::now();
    limiter.acquire_many(15).await.unwrap();
    let waiters: Vec<_> = {
        let mut v = Vec::new();
        for _ in 0..10 {
            let l = limiter.clone();
            v.push(spawn_queued(async move { l.acquire().await.unwrap().granted_at() }).await);
        }
        v
    };
    tokio::time::sleep(secs(5)).await;
    limiter
        .set_quota(0, Quota::per_minute(500).unwrap())
        .unwrap();
    for handle in waiters {
        assert_eq!(handle.await.unwrap() - start, secs(5));
    }
    assert_eq!(limiter.stats().in_window, 25);
}

#[tokio::test(start_paused = true)]
async fn a_downgrade_holds_queued_waiters_to_the_new_quota() {
    let limiter = RateLimiter::new(10, ms(1_000)).unwrap();
    let start = Instant::now();
    limiter.acquire_many(8).await.unwrap();
    tokio::time::sleep(ms(500)).await;
    limiter.acquire_many(2).await.unwrap();
    let waiter = queue_grant(&limiter, 4).await;
    tokio::time::sleep(ms(100)).await;
    limiter
        .set_quota(0, Quota::new(5, ms(1_000)).unwrap())
        .unwrap();
    // Under 10/s it would come at 1,000 ms; under 5/s the 2 granted at
    // 500 ms leave room for 4 only once they leave, at 1,500 ms.
    assert_eq!(waiter.await.unwrap() - start, ms(1_500));
}

#[tokio::test(start_paused = true)]
async fn a_shorter_window_applies_to_queued_waiters() {
    let limiter = RateLimiter::new(15, secs(60)).unwrap();
    let start = Instant::now();
    limiter.acquire_many(15).await.unwrap();
    let waiter = queue_grant(&limiter, 1).await;
    limiter
        .set_quota(0, Quota::new(15, secs(30)).unwrap())
        .unwrap();
    assert_eq!(waiter.await.unwrap() - start, secs(30));
}

#[tokio::test(start_paused = true)]
async fn a_downgrade_below_a_queued_cost_fails_that_waiter() {
    let limiter = RateLimiter::new(10, secs(1)).unwrap();
    limiter.acquire_many(10).await.unwrap();
    let big = spawn_queued({
        let l = limiter.clone();
        async move { l.acquire_many(8).await }
    })
    .await;
    let small = spawn_queued({
        let l = limiter.clone();
        async move { l.acquire_many(2).await.map(|g| g.granted_at()) }
    })
    .await;
    let start = Instant::now();
    limiter.set_quota(0, Quota::per_second(5).unwrap()).unwrap();
    assert!(matches!(
        big.await.unwrap(),
        Err(AcquireError::CostExceedsQuota {
            cost: 8,
            max: 5,
            ..
        })
    ));
    assert_eq!(small.await.unwrap().unwrap() - start, secs(1));
}

#[tokio::test(start_paused = true)]
async fn reconfiguration_errors_are_typed() {
    let limiter = RateLimiter::new(10, secs(1)).unwrap();
    use paceline::{ConfigError, Unit};
    assert_eq!(
        limiter.set_quota(1, Quota::per_second(5).unwrap()),
        Err(ConfigError::NoSuchQuota { index: 1, count: 1 })
    );
    assert_eq!(
        limiter.set_quota(0, Quota::per_second(5).unwrap().counting(Unit::Tokens)),
        Err(ConfigError::UnitChanged {
            index: 0,
            from: Unit::Requests,
            to: Unit::Tokens
        })
    );
    assert_eq!(
        limiter.set_quotas([]),
        Err(ConfigError::QuotaCount {
            expected: 1,
            given: 0
        })
    );
    assert_eq!(limiter.quotas(), vec![Quota::per_second(10).unwrap()]);
}
