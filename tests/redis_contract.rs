//! The shared limiter's contract against a real `redis-server`: strict window,
//! FIFO by arrival, work conservation to the microsecond of Redis's clock,
//! deadlines, cancellation, pause, reconfiguration, close, expiry, coalescing.
#![cfg(feature = "redis")]

mod redis_server;

use std::time::Duration;

use paceline::redis::{RedisLimiterError, RedisRateLimiter};
use paceline::{AcquireError, Cost, Quota, TryAcquireError, Unit};
use redis_server::{RedisServer, micros, most_in_any_window, raw};

async fn limiter(server: &RedisServer, name: &str, quotas: &[Quota]) -> RedisRateLimiter {
    let mut builder = RedisRateLimiter::builder(server.url(), name);
    for quota in quotas {
        builder = builder.quota(*quota);
    }
    builder
        .connect()
        .await
        .expect("connects to the test's redis-server")
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_come_max_per_window_each_at_the_earliest_microsecond() {
    let server = RedisServer::start();
    let quota = Quota::new(5, ms(300)).unwrap();
    let limiter = limiter(&server, "schedule", &[quota]).await;
    let tasks: Vec<_> = (0..17)
        .map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(
                async move { micros(limiter.acquire().await.unwrap().recorded_at().unwrap()) },
            )
        })
        .collect();
    let mut times = Vec::new();
    for task in tasks {
        times.push(task.await.unwrap());
    }
    times.sort_unstable();
    let grants: Vec<(u64, u64)> = times.iter().map(|t| (*t, 1)).collect();
    assert_eq!(most_in_any_window(&grants, 300_000), 5);
    // Work-conserving: each grant past the fifth comes exactly one window
    // after the grant five before it, on Redis's clock.
    for k in 5..times.len() {
        assert_eq!(times[k], times[k - 5] + 300_000, "grant {k}");
    }
    let stats = limiter.stats().await.unwrap();
    assert_eq!(stats.granted, 17);
    assert_eq!(stats.max, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_small_request_never_overtakes_an_earlier_large_one() {
    let server = RedisServer::start();
    let a = limiter(&server, "fifo", &[Quota::new(4, ms(200)).unwrap()]).await;
    let b = limiter(&server, "fifo", &[Quota::new(4, ms(200)).unwrap()]).await;
    let first = a.acquire_many(3).await.unwrap();
    // Three of four used: a cost of 2 must wait for the window ...
    let large = tokio::spawn({
        let a = a.clone();
        async move { a.acquire_many(2).await.unwrap() }
    });
    while a.stats().await.unwrap().queued == 0 {
        tokio::time::sleep(ms(1)).await;
    }
    // ... and a cost of 1, which would fit now, waits behind it (no barging).
    let err = b.try_acquire().await.unwrap_err();
    assert!(
        matches!(err, TryAcquireError::RateLimited { .. }),
        "{err:?}"
    );
    let small = b.acquire().await.unwrap();
    let large = large.await.unwrap();
    let (first, large, small) = (
        micros(first.recorded_at().unwrap()),
        micros(large.recorded_at().unwrap()),
        micros(small.recorded_at().unwrap()),
    );
    assert_eq!(large, first + 200_000);
    assert!(small >= large, "small at {small}, large at {large}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_acquire_says_when_to_retry() {
    let server = RedisServer::start();
    let limiter = limiter(
        &server,
        "try",
        &[Quota::new(2, Duration::from_secs(60)).unwrap()],
    )
    .await;
    limiter.try_acquire().await.unwrap();
    limiter.try_acquire().await.unwrap();
    let retry_after = limiter
        .try_acquire()
        .await
        .unwrap_err()
        .retry_after()
        .unwrap();
    assert!(retry_after > Duration::from_secs(59) && retry_after <= Duration::from_secs(60));
    assert!(matches!(
        limiter.try_acquire_many(3).await.unwrap_err(),
        TryAcquireError::CostExceedsQuota {
            cost: 3,
            max: 2,
            ..
        }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_that_cannot_be_met_fails_at_once_and_reserves_nothing() {
    let server = RedisServer::start();
    let limiter = limiter(&server, "deadline", &[Quota::per_day(1).unwrap()]).await;
    limiter.acquire().await.unwrap();
    let asked = tokio::time::Instant::now();
    let err = limiter
        .acquire_before(asked + Duration::from_secs(30))
        .await
        .unwrap_err();
    let AcquireError::DeadlineExceeded {
        earliest: Some(earliest),
    } = err
    else {
        panic!("{err:?}");
    };
    assert!(earliest > asked + Duration::from_secs(86_000));
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "refused without waiting"
    );
    let stats = limiter.stats().await.unwrap();
    assert_eq!((stats.in_window, stats.queued), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_quotas_and_tokens_are_charged_at_once() {
    let server = RedisServer::start();
    let quotas = [
        Quota::new(10, Duration::from_secs(60)).unwrap(),
        Quota::new(1_000, Duration::from_secs(60))
            .unwrap()
            .counting(Unit::Tokens),
    ];
    let limiter = limiter(&server, "tokens", &quotas).await;
    limiter.acquire_cost(Cost::tokens(600)).await.unwrap();
    // 400 tokens left: 500 must wait though 9 requests are left.
    let err = limiter
        .try_acquire_cost(Cost::tokens(500))
        .await
        .unwrap_err();
    assert!(err.retry_after().unwrap() > Duration::from_secs(59));
    limiter.acquire_cost(Cost::tokens(400)).await.unwrap();
    let stats = limiter.stats().await.unwrap();
    assert_eq!(stats.quotas[0].in_window, 2);
    assert_eq!(stats.quotas[1].in_window, 1_000);
    let err = limiter.acquire_cost(Cost::tokens(1_001)).await.unwrap_err();
    assert!(matches!(
        err,
        AcquireError::CostExceedsQuota {
            unit: Unit::Tokens,
            cost: 1_001,
            max: 1_000,
            ..
        }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_waiter_gives_its_reservation_back() {
    let server = RedisServer::start();
    let limiter = limiter(
        &server,
        "cancel",
        &[Quota::new(1, Duration::from_secs(60)).unwrap()],
    )
    .await;
    limiter.acquire().await.unwrap();
    let waiter = tokio::spawn({
        let limiter = limiter.clone();
        async move { limiter.acquire().await }
    });
    while limiter.stats().await.unwrap().queued == 0 {
        tokio::time::sleep(ms(1)).await;
    }
    waiter.abort();
    let _ = waiter.await;
    let mut queued = 1;
    for _ in 0..1_000 {
        queued = limiter.stats().await.unwrap().queued;
        if queued == 0 {
            break;
        }
        tokio::time::sleep(ms(1)).await;
    }
    assert_eq!(queued, 0, "the reservation is gone from Redis");
    let mut conn = raw(&server).await;
    let logged: u64 = redis::cmd("ZCARD")
        .arg("{paceline:cancel}:log:0")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(logged, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_pause_holds_every_process_and_moves_reservations_made_before() {
    let server = RedisServer::start();
    let quota = Quota::new(1, ms(100)).unwrap();
    let a = limiter(&server, "pause", &[quota]).await;
    let b = limiter(&server, "pause", &[quota]).await;
    let first = micros(a.acquire().await.unwrap().recorded_at().unwrap());
    // b reserves the next slot, 100 ms after the first grant ...
    let waiting = tokio::spawn({
        let b = b.clone();
        async move { micros(b.acquire().await.unwrap().recorded_at().unwrap()) }
    });
    while a.stats().await.unwrap().queued == 0 {
        tokio::time::sleep(ms(1)).await;
    }
    // ... then a hears 429 and pauses everyone for 400 ms.
    a.pause_for(ms(400)).await.unwrap();
    let mut conn = raw(&server).await;
    let pause_end: u64 = redis::cmd("HGET")
        .arg("{paceline:pause}:meta")
        .arg("p")
        .query_async(&mut conn)
        .await
        .unwrap();
    let moved = waiting.await.unwrap();
    assert!(
        moved >= pause_end,
        "granted at {moved}, the pause ends at {pause_end}"
    );
    assert!(pause_end >= first + 400_000);
    // Nothing is granted before the pause's end, in any process.
    let next = micros(b.acquire().await.unwrap().recorded_at().unwrap());
    assert_eq!(next, moved + 100_000);
    assert!(b.stats().await.unwrap().paused_until.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_with_free_capacity_grants_exactly_at_its_end() {
    let server = RedisServer::start();
    let limiter = limiter(
        &server,
        "pause-end",
        &[Quota::new(100, Duration::from_secs(1)).unwrap()],
    )
    .await;
    limiter.pause_for(ms(150)).await.unwrap();
    assert!(limiter.stats().await.unwrap().paused_until.is_some());
    let mut conn = raw(&server).await;
    let pause_end: u64 = redis::cmd("HGET")
        .arg("{paceline:pause-end}:meta")
        .arg("p")
        .query_async(&mut conn)
        .await
        .unwrap();
    let granted = micros(limiter.acquire().await.unwrap().recorded_at().unwrap());
    assert_eq!(granted, pause_end);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconfiguration_reaches_every_process() {
    let server = RedisServer::start();
    let a = limiter(
        &server,
        "tier",
        &[Quota::new(2, Duration::from_secs(60)).unwrap()],
    )
    .await;
    let b = limiter(
        &server,
        "tier",
        &[Quota::new(2, Duration::from_secs(60)).unwrap()],
    )
    .await;
    b.acquire_many(2).await.unwrap();
    assert!(b.try_acquire().await.is_err());
    // A tier upgrade from a: b's next call follows it.
    a.set_quotas([Quota::new(5, Duration::from_secs(60)).unwrap()])
        .await
        .unwrap();
    b.acquire_many(3).await.unwrap();
    assert_eq!(b.quotas()[0].max(), 5);
    assert!(
        b.try_acquire().await.is_err(),
        "the two granted before count against the new quota"
    );
    assert!(matches!(
        a.set_quotas([Quota::per_minute(1).unwrap(), Quota::per_day(9).unwrap()])
            .await,
        Err(RedisLimiterError::Config(
            paceline::ConfigError::QuotaCount {
                expected: 1,
                given: 2
            }
        ))
    ));
    assert!(matches!(
        a.set_quota(0, Quota::per_minute(1).unwrap().counting(Unit::Tokens))
            .await,
        Err(RedisLimiterError::Config(
            paceline::ConfigError::UnitChanged { index: 0, .. }
        ))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_fails_waiters_and_gives_their_reservations_back() {
    let server = RedisServer::start();
    let limiter = limiter(
        &server,
        "close",
        &[Quota::new(1, Duration::from_secs(60)).unwrap()],
    )
    .await;
    let other = RedisRateLimiter::builder(server.url(), "close")
        .quota(Quota::new(1, Duration::from_secs(60)).unwrap())
        .connect()
        .await
        .unwrap();
    limiter.acquire().await.unwrap();
    let waiter = tokio::spawn({
        let limiter = limiter.clone();
        async move { limiter.acquire().await }
    });
    while other.stats().await.unwrap().queued == 0 {
        tokio::time::sleep(ms(1)).await;
    }
    limiter.close();
    assert_eq!(waiter.await.unwrap().unwrap_err(), AcquireError::Closed);
    assert_eq!(limiter.acquire().await.unwrap_err(), AcquireError::Closed);
    assert_eq!(
        limiter.try_acquire().await.unwrap_err(),
        TryAcquireError::Closed
    );
    let mut queued = 1;
    for _ in 0..1_000 {
        queued = other.stats().await.unwrap().queued;
        if queued == 0 {
            break;
        }
        tokio::time::sleep(ms(1)).await;
    }
    assert_eq!(queued, 0);
    // Other processes go on.
    assert!(!other.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_limiters_expire() {
    let server = RedisServer::start();
    let limiter = limiter(&server, "expiry", &[Quota::new(3, ms(500)).unwrap()]).await;
    limiter.acquire().await.unwrap();
    let mut conn = raw(&server).await;
    for key in ["{paceline:expiry}:meta", "{paceline:expiry}:log:0"] {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        // The window, a second, and a second of slack so that the expiry is
        // not moved on every call.
        assert!(ttl > 1_400 && ttl <= 2_501, "{key} expires in {ttl} ms");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dense_grants_are_coalesced_strictly() {
    let server = RedisServer::start();
    // Above 1,024 per window: grants are merged per 10 ms bucket.
    let quota = Quota::new(1_000_000, Duration::from_secs(10)).unwrap();
    let bucket = 10_000;
    let limiter = limiter(&server, "dense", &[quota]).await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let mut grants = Vec::new();
                for _ in 0..500 {
                    let grant = limiter.acquire_many(3).await.unwrap();
                    grants.push(micros(grant.recorded_at().unwrap()));
                }
                grants
            })
        })
        .collect();
    let mut grants = Vec::new();
    for task in tasks {
        grants.extend(task.await.unwrap());
    }
    let stats = limiter.stats().await.unwrap();
    assert_eq!(stats.in_window, 12_000, "every grant counted");
    let mut conn = raw(&server).await;
    let entries: Vec<(String, u64)> = redis::cmd("ZRANGE")
        .arg("{paceline:dense}:log:0")
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        entries.len() < grants.len() / 4,
        "{} entries for {} grants",
        entries.len(),
        grants.len()
    );
    // Every bucket that is over is one entry, dated at its latest grant and
    // holding its whole cost: counted as long as its last grant, never less.
    let mut by_bucket = std::collections::BTreeMap::<u64, (u64, u64)>::new();
    for grant in &grants {
        let entry = by_bucket.entry(grant / bucket).or_default();
        entry.0 = entry.0.max(*grant);
        entry.1 += 3;
    }
    let newest = *by_bucket.keys().last().unwrap();
    for (member, score) in &entries {
        let cost: u64 = member.rsplit(':').next().unwrap().parse().unwrap();
        let (latest, total) = by_bucket[&(score / bucket)];
        if score / bucket != newest {
            assert_eq!((*score, cost), (latest, total), "the entry {member}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_error() {
    let server = RedisServer::start();
    let quota = Quota::per_minute(5).unwrap();
    let err = RedisRateLimiter::builder("http://nowhere", "x")
        .quota(quota)
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(err, RedisLimiterError::InvalidUrl { .. }),
        "{err:?}"
    );
    let err = RedisRateLimiter::builder(server.url(), "x")
        .prefix("")
        .quota(quota)
        .connect()
        .await
        .unwrap_err();
    assert_eq!(err, RedisLimiterError::EmptyKeyPart { part: "prefix" });
    let err = RedisRateLimiter::builder(server.url(), "")
        .quota(quota)
        .connect()
        .await
        .unwrap_err();
    assert_eq!(err, RedisLimiterError::EmptyKeyPart { part: "name" });
    let err = RedisRateLimiter::builder(server.url(), "x")
        .connect()
        .await
        .unwrap_err();
    assert_eq!(
        err,
        RedisLimiterError::Config(paceline::ConfigError::NoQuota)
    );
    let err = RedisRateLimiter::builder(server.url(), "x")
        .quota(Quota::new(1 << 60, Duration::from_secs(1)).unwrap())
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        RedisLimiterError::Config(paceline::ConfigError::MaxTooLarge { .. })
    ));
    let err = RedisRateLimiter::builder(server.url(), "x")
        .quota(quota)
        .on_failure(paceline::redis::FailurePolicy::FallBackLocal { share: 0.0 })
        .connect()
        .await
        .unwrap_err();
    assert_eq!(err, RedisLimiterError::InvalidShare(0.0));
    let mut conn = raw(&server).await;
    let (): () = redis::cmd("SET")
        .arg("{paceline:taken}:log:0")
        .arg("a string")
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = RedisRateLimiter::builder(server.url(), "taken")
        .quota(quota)
        .connect()
        .await
        .unwrap_err();
    assert_eq!(
        err,
        RedisLimiterError::WrongType {
            key: "{paceline:taken}:log:0".into(),
            found: "string".into(),
            expected: "zset",
        }
    );
    // Nothing listens on port 1: a clear error, within the timeout.
    let started = std::time::Instant::now();
    let err = RedisRateLimiter::builder("redis://127.0.0.1:1/", "x")
        .quota(quota)
        .timeout(ms(300))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, RedisLimiterError::Redis(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Waits (polling Redis) until `count` reservations are queued.
async fn until_queued(limiter: &RedisRateLimiter, count: usize) {
    for _ in 0..5_000 {
        if limiter.stats().await.unwrap().queued >= count {
            return;
        }
        tokio::time::sleep(ms(1)).await;
    }
    panic!("{count} reservations never queued");
}

fn spawn_acquire(
    limiter: &RedisRateLimiter,
    n: u64,
) -> tokio::task::JoinHandle<Result<u64, AcquireError>> {
    let limiter = limiter.clone();
    tokio::spawn(async move {
        Ok(micros(
            limiter.acquire_many(n).await?.recorded_at().unwrap(),
        ))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_keeps_the_queue_in_order_ahead_of_later_arrivals() {
    let server = RedisServer::start();
    let quota = Quota::new(1, ms(100)).unwrap();
    let a = limiter(&server, "pause-fifo", &[quota]).await;
    let b = limiter(&server, "pause-fifo", &[quota]).await;
    let first = micros(a.acquire().await.unwrap().recorded_at().unwrap());
    let queued = spawn_acquire(&b, 1);
    until_queued(&a, 1).await;
    a.pause_for(ms(300)).await.unwrap();
    let mut conn = raw(&server).await;
    let pause_end: u64 = redis::cmd("HGET")
        .arg("{paceline:pause-fifo}:meta")
        .arg("p")
        .query_async(&mut conn)
        .await
        .unwrap();
    // Arrives during the pause, after b's reservation: it must come after b.
    let later = spawn_acquire(&a, 1);
    let (queued, later) = (
        queued.await.unwrap().unwrap(),
        later.await.unwrap().unwrap(),
    );
    assert!(pause_end >= first + 300_000);
    assert_eq!(queued, pause_end, "the head is granted when the pause ends");
    assert_eq!(
        later,
        queued + 100_000,
        "and the later arrival one window after it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smaller_quota_moves_the_reservations_already_made() {
    let server = RedisServer::start();
    let limiter = limiter(&server, "downgrade", &[Quota::new(4, ms(300)).unwrap()]).await;
    let first = micros(
        limiter
            .acquire_many(4)
            .await
            .unwrap()
            .recorded_at()
            .unwrap(),
    );
    let waiters: Vec<_> = (0..4).map(|_| spawn_acquire(&limiter, 1)).collect();
    until_queued(&limiter, 4).await;
    limiter
        .set_quotas([Quota::new(2, ms(300)).unwrap()])
        .await
        .unwrap();
    let mut times = Vec::new();
    for waiter in waiters {
        times.push(waiter.await.unwrap().unwrap());
    }
    times.sort_unstable();
    // The four granted at `first` count against the new quota: two of the
    // queued go when they leave the window, the other two a window after
    // those (no two reservations share a microsecond: each comes after the
    // one before it).
    let slot = first + 300_000;
    assert_eq!(times, [slot, slot + 1, slot + 300_000, slot + 300_001]);
    let queued: Vec<(u64, u64)> = times.iter().map(|t| (*t, 1)).collect();
    assert_eq!(most_in_any_window(&queued, 300_000), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_cost_above_a_new_smaller_max_fails() {
    let server = RedisServer::start();
    let limiter = limiter(
        &server,
        "shrink",
        &[Quota::new(4, Duration::from_secs(60)).unwrap()],
    )
    .await;
    limiter.acquire_many(4).await.unwrap();
    let waiter = spawn_acquire(&limiter, 3);
    until_queued(&limiter, 1).await;
    limiter
        .set_quotas([Quota::new(2, Duration::from_secs(60)).unwrap()])
        .await
        .unwrap();
    // Its slot is a minute away, but it learns at once.
    let started = std::time::Instant::now();
    let err = waiter.await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            AcquireError::CostExceedsQuota {
                cost: 3,
                max: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        limiter.stats().await.unwrap().queued,
        0,
        "its reservation is gone from Redis"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_learns_a_smaller_max_on_its_next_answer() {
    let server = RedisServer::start();
    let quota = Quota::new(4, Duration::from_secs(60)).unwrap();
    let a = limiter(&server, "shrink-elsewhere", &[quota]).await;
    let b = limiter(&server, "shrink-elsewhere", &[quota]).await;
    a.acquire_many(4).await.unwrap();
    let waiter = spawn_acquire(&a, 3);
    until_queued(&b, 1).await;
    b.set_quotas([Quota::new(2, Duration::from_secs(60)).unwrap()])
        .await
        .unwrap();
    // a's next answer from Redis carries the new quotas; its waiter confirms.
    assert!(a.try_acquire().await.is_err());
    let err = waiter.await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            AcquireError::CostExceedsQuota {
                cost: 3,
                max: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(a.quotas()[0].max(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_moved_past_its_deadline_fails_when_it_confirms() {
    let server = RedisServer::start();
    let limiter = limiter(
        &server,
        "moved-deadline",
        &[Quota::new(1, ms(100)).unwrap()],
    )
    .await;
    limiter.acquire().await.unwrap();
    let waiter = tokio::spawn({
        let limiter = limiter.clone();
        async move {
            limiter
                .acquire_before(tokio::time::Instant::now() + ms(500))
                .await
        }
    });
    until_queued(&limiter, 1).await;
    limiter.pause_for(Duration::from_secs(5)).await.unwrap();
    let started = std::time::Instant::now();
    let err = waiter.await.unwrap().unwrap_err();
    assert!(
        matches!(err, AcquireError::DeadlineExceeded { earliest: Some(_) }),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "it fails at its old slot, not at the pause's end"
    );
    assert_eq!(
        limiter.stats().await.unwrap().queued,
        0,
        "and gives its reservation back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_longer_window_keeps_the_keys_alive_as_long() {
    let server = RedisServer::start();
    let limiter = limiter(&server, "longer", &[Quota::new(10, ms(200)).unwrap()]).await;
    limiter.acquire_many(10).await.unwrap();
    limiter
        .set_quotas([Quota::new(10, Duration::from_secs(60)).unwrap()])
        .await
        .unwrap();
    // The ten grants count for a minute now: every key must live that long.
    let mut conn = raw(&server).await;
    for key in ["{paceline:longer}:meta", "{paceline:longer}:log:0"] {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 59_000, "{key} expires in {ttl} ms");
    }
    assert!(limiter.try_acquire().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_dropped_by_a_smaller_quota_is_counted_if_the_quota_grows_back() {
    let server = RedisServer::start();
    let quota = Quota::new(10, ms(300)).unwrap();
    let a = limiter(&server, "shrink-grow", &[quota]).await;
    let b = limiter(&server, "shrink-grow", &[quota]).await;
    a.acquire_many(10).await.unwrap();
    let waiter = spawn_acquire(&a, 8);
    until_queued(&b, 1).await;
    // From another process: a's waiter hears of neither change.
    b.set_quotas([Quota::new(5, ms(300)).unwrap()])
        .await
        .unwrap();
    b.set_quotas([quota]).await.unwrap();
    waiter.await.unwrap().unwrap();
    // Granted again behind the others, and counted.
    let stats = b.stats().await.unwrap();
    assert_eq!(stats.in_window, 8, "{stats:?}");
    assert!(b.try_acquire_many(3).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_moved_by_a_smaller_quota_keep_their_order_of_arrival() {
    let server = RedisServer::start();
    let limiter = limiter(&server, "order", &[Quota::new(6, ms(300)).unwrap()]).await;
    limiter.acquire_many(6).await.unwrap();
    let mut waiters = Vec::new();
    for n in 1..=6 {
        waiters.push(spawn_acquire(&limiter, 1));
        until_queued(&limiter, n).await;
    }
    limiter
        .set_quotas([Quota::new(1, ms(300)).unwrap()])
        .await
        .unwrap();
    let mut times = Vec::new();
    for waiter in waiters {
        times.push(waiter.await.unwrap().unwrap());
    }
    // One per window now, first come first served.
    for k in 1..times.len() {
        assert!(
            times[k] >= times[k - 1] + 300_000,
            "waiter {k} at {}, {} before",
            times[k],
            times[k - 1]
        );
    }
}
