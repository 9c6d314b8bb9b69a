//! The shared limiter's contract against a real `redis-server`: strict window,
//! FIFO by arrival, work conservation to the microsecond of Redis's clock,
//! deadlines, cancellation, pause, reconfiguration, close, expiry, coalescing.
//!
//! Some tests need a step (a task spawned, a call to Redis) to land before a
//! slot comes. Those slots are a second or more away, and each such test
//! checks, on Redis's clock or from the reservations it sees queued, that
//! its steps did land in time: a run in which a stall of the machine made one
//! miss its slot proves nothing either way, and is made again on a fresh
//! limiter (see [`until_conclusive`]).
#![cfg(feature = "redis")]

mod redis_server;

use std::collections::BTreeMap;
use std::time::Duration;

use paceline::redis::{RedisLimiterError, RedisRateLimiter};
use paceline::{AcquireError, Cost, Quota, Stats, TryAcquireError, Unit};
use redis::aio::MultiplexedConnection;
use redis_server::{RedisServer, micros, most_in_any_window, raw};
use tokio::time::Instant;

/// A second, in microseconds (Redis's clock, as the grants record it).
const SECOND: u64 = 1_000_000;

/// How long a poll for what must come (a reservation queued, one gone) may
/// take before the test fails.
const POLL_BOUND: Duration = Duration::from_secs(10);

/// How long a test waits to see a step land before a slot a second away:
/// past it the slot has come, and the run proves nothing.
const MISSED: Duration = Duration::from_secs(2);

/// How many runs [`until_conclusive`] makes before it fails the test.
const ATTEMPTS: usize = 5;

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

/// Runs `attempt` on a fresh limiter name (`name-1`, `name-2`, ...) until a
/// run is conclusive. A run returns `false` when it finds that a step it
/// needed before a slot (a task spawned, a call to Redis) came after it: the
/// machine stalled, and the run says nothing of the limiter, either way.
async fn until_conclusive(name: &str, mut attempt: impl AsyncFnMut(String) -> bool) {
    for n in 1..=ATTEMPTS {
        if attempt(format!("{name}-{n}")).await {
            return;
        }
        eprintln!("{name}: run {n} inconclusive (a step missed its slot), running again");
    }
    panic!(
        "{name}: none of {ATTEMPTS} runs conclusive: in each, a step did not land before \
         a slot a second or more away (or the limiter never queued what it should have)"
    );
}

/// Polls Redis until `count` reservations are queued, and returns the stats
/// that showed them; `None` if they were not seen by `give_up`.
async fn queued_before(
    limiter: &RedisRateLimiter,
    count: usize,
    give_up: Instant,
) -> Option<Stats> {
    loop {
        let stats = limiter.stats().await.unwrap();
        if stats.queued >= count {
            return Some(stats);
        }
        if Instant::now() >= give_up {
            return None;
        }
        tokio::time::sleep(ms(1)).await;
    }
}

/// Waits (polling Redis) until `count` reservations are queued.
async fn until_queued(limiter: &RedisRateLimiter, count: usize) {
    let seen = queued_before(limiter, count, Instant::now() + POLL_BOUND).await;
    assert!(
        seen.is_some(),
        "{count} reservations never queued (polled for {POLL_BOUND:?})"
    );
}

/// Waits (polling Redis) until no reservation is queued.
async fn until_none_queued(limiter: &RedisRateLimiter, what: &str) {
    let give_up = Instant::now() + POLL_BOUND;
    while limiter.stats().await.unwrap().queued > 0 {
        assert!(
            Instant::now() < give_up,
            "{what}: still queued after {POLL_BOUND:?}"
        );
        tokio::time::sleep(ms(1)).await;
    }
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

/// Redis's clock now, in microseconds since the Unix epoch.
async fn redis_now(conn: &mut MultiplexedConnection) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await.unwrap();
    secs * SECOND + micros
}

/// A number the limiter keeps in its hash: "p" the end of the pause, "x"
/// the instant its keys expire at (both in µs of Redis's clock).
async fn meta_field(conn: &mut MultiplexedConnection, name: &str, field: &str) -> u64 {
    redis::cmd("HGET")
        .arg(format!("{{paceline:{name}}}:meta"))
        .arg(field)
        .query_async(conn)
        .await
        .unwrap()
}

/// Checks that `key` expires at `expiry` (µs, set in whole milliseconds
/// rounded up): Redis answers PTTL at an instant between two readings of its
/// clock, so the answer is known to within them, however slow the calls.
async fn assert_expires_at(conn: &mut MultiplexedConnection, key: &str, expiry: u64) {
    let millis = |micros: u64| i64::try_from(micros / 1_000).unwrap();
    let before = redis_now(conn).await;
    let ttl: i64 = redis::cmd("PTTL").arg(key).query_async(conn).await.unwrap();
    let after = redis_now(conn).await;
    let at = i64::try_from(expiry.div_ceil(1_000)).unwrap();
    let (earliest, latest) = (at - millis(after), at - millis(before));
    assert!(
        (earliest..=latest).contains(&ttl),
        "{key} expires in {ttl} ms, not in {earliest}..={latest} (at {at} ms)"
    );
}

/// Two processes' limiters of one a second, with a grant at `first`, `b`'s
/// next acquire (`waiting`) reserved for the slot a second later, and a pause
/// of 1.5 s set through `a` before that slot came, ending at `pause_end`.
struct PausedAhead {
    a: RedisRateLimiter,
    b: RedisRateLimiter,
    first: u64,
    waiting: tokio::task::JoinHandle<Result<u64, AcquireError>>,
    pause_end: u64,
}

/// Sets up [`PausedAhead`] on the limiter `name`; `None` if a step came too
/// late for it (the run proves nothing).
async fn pause_ahead_of_a_reservation(
    server: &RedisServer,
    conn: &mut MultiplexedConnection,
    name: &str,
) -> Option<PausedAhead> {
    let quota = Quota::new(1, ms(1_000)).unwrap();
    let a = limiter(server, name, &[quota]).await;
    let b = limiter(server, name, &[quota]).await;
    let first = micros(a.acquire().await.unwrap().recorded_at().unwrap());
    let waiting = spawn_acquire(&b, 1);
    if queued_before(&a, 1, Instant::now() + MISSED)
        .await
        .is_none()
    {
        waiting.abort();
        return None;
    }
    a.pause_for(ms(1_500)).await.unwrap();
    // Set at its end less 1.5 s: if not before b's slot, b was granted
    // there.
    let pause_end = meta_field(conn, name, "p").await;
    if pause_end - 1_500_000 >= first + SECOND {
        waiting.abort();
        return None;
    }
    Some(PausedAhead {
        a,
        b,
        first,
        waiting,
        pause_end,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_come_max_per_window_each_at_the_earliest_microsecond() {
    let server = RedisServer::start();
    until_conclusive("schedule", async |name| {
        let limiter = limiter(&server, &name, &[Quota::new(5, ms(1_000)).unwrap()]).await;
        let tasks: Vec<_> = (0..17).map(|_| spawn_acquire(&limiter, 1)).collect();
        // Five are granted at once and twelve reserve slots. Seen queued
        // together, the twelve all reached Redis before the first of their
        // slots (a window after the first grant) came; else the run proves
        // nothing.
        if queued_before(&limiter, 12, Instant::now() + MISSED)
            .await
            .is_none()
        {
            tasks.iter().for_each(|task| task.abort());
            return false;
        }
        let mut times = Vec::new();
        for task in tasks {
            times.push(task.await.unwrap().unwrap());
        }
        times.sort_unstable();
        let grants: Vec<(u64, u64)> = times.iter().map(|t| (*t, 1)).collect();
        assert_eq!(most_in_any_window(&grants, SECOND), 5);
        // Work-conserving: each grant past the fifth comes exactly one window
        // after the grant five before it, on Redis's clock.
        for k in 5..times.len() {
            assert_eq!(times[k], times[k - 5] + SECOND, "grant {k}");
        }
        let stats = limiter.stats().await.unwrap();
        assert_eq!(stats.granted, 17);
        assert_eq!(stats.max, 5);
        true
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_small_request_never_overtakes_an_earlier_large_one() {
    let server = RedisServer::start();
    let mut conn = raw(&server).await;
    until_conclusive("fifo", async |name| {
        let quota = Quota::new(4, ms(1_000)).unwrap();
        let a = limiter(&server, &name, &[quota]).await;
        let b = limiter(&server, &name, &[quota]).await;
        let first = micros(a.acquire_many(3).await.unwrap().recorded_at().unwrap());
        // Three of four used: a cost of 2 must wait for the window ...
        let large = spawn_acquire(&a, 2);
        if queued_before(&a, 1, Instant::now() + MISSED)
            .await
            .is_none()
        {
            large.abort();
            return false;
        }
        // ... and a cost of 1, which would fit now, waits behind it (no
        // barging): asked before the window is over, on Redis's clock, or
        // the run proves nothing.
        let tried = b.try_acquire().await;
        if redis_now(&mut conn).await >= first + SECOND {
            large.abort();
            return false;
        }
        let err = tried.unwrap_err();
        assert!(
            matches!(err, TryAcquireError::RateLimited { .. }),
            "{err:?}"
        );
        let small = micros(b.acquire().await.unwrap().recorded_at().unwrap());
        let large = large.await.unwrap().unwrap();
        assert_eq!(large, first + SECOND);
        assert!(small >= large, "small at {small}, large at {large}");
        true
    })
    .await;
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
    let mut conn = raw(&server).await;
    let first = micros(limiter.try_acquire().await.unwrap().recorded_at().unwrap());
    let second = micros(limiter.try_acquire().await.unwrap().recorded_at().unwrap());
    let retry_after = limiter
        .try_acquire()
        .await
        .unwrap_err()
        .retry_after()
        .unwrap();
    let now = redis_now(&mut conn).await;
    // Refused between the second grant and `now`: retry when the first
    // leaves the window, a minute after it.
    let retry = first + 60 * SECOND;
    assert!(
        (Duration::from_micros(retry - now)..=Duration::from_micros(retry - second))
            .contains(&retry_after),
        "retry after {retry_after:?}"
    );
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
    let mut conn = raw(&server).await;
    let first = micros(
        limiter
            .acquire_cost(Cost::tokens(600))
            .await
            .unwrap()
            .recorded_at()
            .unwrap(),
    );
    // 400 tokens left: 500 must wait though 9 requests are left, until the
    // 600 leave the window, a minute after they came (refused before `now`).
    let err = limiter
        .try_acquire_cost(Cost::tokens(500))
        .await
        .unwrap_err();
    let now = redis_now(&mut conn).await;
    let retry_after = err.retry_after().unwrap();
    assert!(
        (Duration::from_micros(first + 60 * SECOND - now)..=Duration::from_secs(60))
            .contains(&retry_after),
        "retry after {retry_after:?}"
    );
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
    until_queued(&limiter, 1).await;
    waiter.abort();
    let _ = waiter.await;
    until_none_queued(&limiter, "the dropped waiter's reservation").await;
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
    let mut conn = raw(&server).await;
    until_conclusive("pause", async |name| {
        // b reserves the next slot, a second after the first grant, then a
        // hears 429 and pauses everyone for 1.5 s.
        let Some(PausedAhead {
            a,
            b,
            first,
            waiting,
            pause_end,
        }) = pause_ahead_of_a_reservation(&server, &mut conn, &name).await
        else {
            return false;
        };
        // Nothing is granted before the pause's end, in any process: b asks
        // again during the pause (seen queued behind its first reservation
        // before the pause ends, or the run proves nothing) ...
        let next = spawn_acquire(&b, 1);
        if queued_before(&a, 2, Instant::now() + MISSED)
            .await
            .is_none()
        {
            waiting.abort();
            next.abort();
            return false;
        }
        let moved = waiting.await.unwrap().unwrap();
        assert!(
            moved >= pause_end,
            "granted at {moved}, the pause ends at {pause_end}"
        );
        assert!(pause_end >= first + 1_500_000);
        // ... and comes one window after the moved reservation.
        let next = next.await.unwrap().unwrap();
        assert_eq!(next, moved + SECOND);
        assert!(b.stats().await.unwrap().paused_until.is_none());
        true
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_with_free_capacity_grants_exactly_at_its_end() {
    let server = RedisServer::start();
    let mut conn = raw(&server).await;
    until_conclusive("pause-end", async |name| {
        let limiter = limiter(
            &server,
            &name,
            &[Quota::new(100, Duration::from_secs(1)).unwrap()],
        )
        .await;
        limiter.pause_for(ms(1_000)).await.unwrap();
        // Asked during the pause, with room in the window: it is reserved
        // for the pause's end (seen queued, so asked before it; else the run
        // proves nothing), and the stats that show it show the pause.
        let acquired = spawn_acquire(&limiter, 1);
        let Some(stats) = queued_before(&limiter, 1, Instant::now() + MISSED).await else {
            acquired.abort();
            return false;
        };
        assert!(stats.paused_until.is_some(), "{stats:?}");
        let granted = acquired.await.unwrap().unwrap();
        let pause_end = meta_field(&mut conn, &name, "p").await;
        assert_eq!(granted, pause_end);
        true
    })
    .await;
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
    until_queued(&other, 1).await;
    limiter.close();
    assert_eq!(waiter.await.unwrap().unwrap_err(), AcquireError::Closed);
    assert_eq!(limiter.acquire().await.unwrap_err(), AcquireError::Closed);
    assert_eq!(
        limiter.try_acquire().await.unwrap_err(),
        TryAcquireError::Closed
    );
    until_none_queued(&other, "the closed waiter's reservation").await;
    // Other processes go on.
    assert!(!other.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_limiters_expire() {
    let server = RedisServer::start();
    let limiter = limiter(
        &server,
        "expiry",
        &[Quota::new(3, Duration::from_secs(5)).unwrap()],
    )
    .await;
    let granted = micros(limiter.acquire().await.unwrap().recorded_at().unwrap());
    let mut conn = raw(&server).await;
    let expiry = meta_field(&mut conn, "expiry", "x").await;
    // The window, a second, and a second of slack so that the expiry is not
    // moved on every call: between 6 and 7 s after the grant.
    assert!(
        (granted + 6 * SECOND..=granted + 7 * SECOND).contains(&expiry),
        "the keys expire {} µs after the grant",
        expiry.wrapping_sub(granted)
    );
    for key in ["{paceline:expiry}:meta", "{paceline:expiry}:log:0"] {
        assert_expires_at(&mut conn, key, expiry).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dense_grants_are_coalesced_strictly() {
    let server = RedisServer::start();
    // Above 1,024 per window: grants are merged per bucket of window / 1000,
    // 120 ms. Two minutes is far longer than the grants take, however slow
    // the machine: every one of them is still in the window when counted.
    let quota = Quota::new(1_000_000, Duration::from_secs(120)).unwrap();
    let bucket = 120_000;
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
    // Every bucket that is over is one entry, dated at its latest grant and
    // holding its whole cost: counted as long as its last grant, never less.
    let mut by_bucket = BTreeMap::<u64, (u64, u64)>::new();
    for grant in &grants {
        let entry = by_bucket.entry(grant / bucket).or_default();
        entry.0 = entry.0.max(*grant);
        entry.1 += 3;
    }
    // Once the bucket of the last grant is over too (on Redis's clock),
    // the next call merges it as well: then every bucket is one entry.
    let mut conn = raw(&server).await;
    let over = (by_bucket.keys().last().unwrap() + 1) * bucket;
    let now = redis_now(&mut conn).await;
    if now < over {
        tokio::time::sleep(Duration::from_micros(over - now) + ms(1)).await;
    }
    let stats = limiter.stats().await.unwrap();
    assert_eq!(stats.in_window, 12_000, "every grant counted");
    let entries: Vec<(String, u64)> = redis::cmd("ZRANGE")
        .arg("{paceline:dense}:log:0")
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await
        .unwrap();
    // The grants came dense enough for the merging to matter.
    assert!(
        by_bucket.len() < grants.len() / 4,
        "{} grants in {} buckets",
        grants.len(),
        by_bucket.len()
    );
    let logged: BTreeMap<u64, (u64, u64)> = entries
        .iter()
        .map(|(member, score)| {
            let cost: u64 = member.rsplit(':').next().unwrap().parse().unwrap();
            (score / bucket, (*score, cost))
        })
        .collect();
    assert_eq!(
        entries.len(),
        logged.len(),
        "one entry per bucket: {} entries in {} buckets",
        entries.len(),
        logged.len()
    );
    assert_eq!(logged, by_bucket);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_keeps_the_queue_in_order_ahead_of_later_arrivals() {
    let server = RedisServer::start();
    let mut conn = raw(&server).await;
    until_conclusive("pause-fifo", async |name| {
        // b reserves the next slot, a second after the first grant; a pauses
        // everyone for 1.5 s before it comes.
        let Some(PausedAhead {
            a,
            first,
            waiting: queued,
            pause_end,
            ..
        }) = pause_ahead_of_a_reservation(&server, &mut conn, &name).await
        else {
            return false;
        };
        // Arrives during the pause, after b's reservation: it must come
        // after b. (Seen queued with b's, it arrived before the pause's end;
        // else the run proves nothing.)
        let later = spawn_acquire(&a, 1);
        if queued_before(&a, 2, Instant::now() + MISSED)
            .await
            .is_none()
        {
            queued.abort();
            later.abort();
            return false;
        }
        let (queued, later) = (
            queued.await.unwrap().unwrap(),
            later.await.unwrap().unwrap(),
        );
        assert!(pause_end >= first + 1_500_000);
        assert_eq!(queued, pause_end, "the head is granted when the pause ends");
        assert_eq!(
            later,
            queued + SECOND,
            "and the later arrival one window after it"
        );
        true
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smaller_quota_moves_the_reservations_already_made() {
    let server = RedisServer::start();
    let mut conn = raw(&server).await;
    until_conclusive("downgrade", async |name| {
        let limiter = limiter(&server, &name, &[Quota::new(4, ms(1_000)).unwrap()]).await;
        let first = micros(
            limiter
                .acquire_many(4)
                .await
                .unwrap()
                .recorded_at()
                .unwrap(),
        );
        // Four reserve the slots a window after `first`; the new quota must
        // reach Redis before those come, or the run proves nothing.
        let waiters: Vec<_> = (0..4).map(|_| spawn_acquire(&limiter, 1)).collect();
        let seen = queued_before(&limiter, 4, Instant::now() + MISSED)
            .await
            .is_some();
        if seen {
            limiter
                .set_quotas([Quota::new(2, ms(1_000)).unwrap()])
                .await
                .unwrap();
        }
        if !seen || redis_now(&mut conn).await >= first + SECOND {
            waiters.iter().for_each(|waiter| waiter.abort());
            return false;
        }
        let mut times = Vec::new();
        for waiter in waiters {
            times.push(waiter.await.unwrap().unwrap());
        }
        times.sort_unstable();
        // The four granted at `first` count against the new quota: two of
        // the queued go when they leave the window, the other two a window
        // after those (no two reservations share a microsecond: each comes
        // after the one before it).
        let slot = first + SECOND;
        assert_eq!(times, [slot, slot + 1, slot + SECOND, slot + SECOND + 1]);
        let queued: Vec<(u64, u64)> = times.iter().map(|t| (*t, 1)).collect();
        assert_eq!(most_in_any_window(&queued, SECOND), 2);
        true
    })
    .await;
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
    let mut conn = raw(&server).await;
    until_conclusive("moved-deadline", async |name| {
        let limiter = limiter(&server, &name, &[Quota::new(1, ms(1_000)).unwrap()]).await;
        let first = micros(limiter.acquire().await.unwrap().recorded_at().unwrap());
        // Its slot, a second after `first`, is within its deadline, two
        // seconds away ...
        let waiter = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.acquire_before(Instant::now() + ms(2_000)).await }
        });
        if queued_before(&limiter, 1, Instant::now() + MISSED)
            .await
            .is_none()
        {
            waiter.abort();
            return false;
        }
        // ... until a pause of 5 s moves it past the deadline. (The pause was
        // set at its end less 5 s: if not before the waiter's slot, the
        // waiter was granted there and the run proves nothing.)
        limiter.pause_for(Duration::from_secs(5)).await.unwrap();
        if meta_field(&mut conn, &name, "p").await - 5 * SECOND >= first + SECOND {
            waiter.abort();
            return false;
        }
        let started = std::time::Instant::now();
        let err = waiter.await.unwrap().unwrap_err();
        assert!(
            matches!(err, AcquireError::DeadlineExceeded { earliest: Some(_) }),
            "{err:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "it fails by its old slot (a second away), not at the pause's end (five)"
        );
        assert_eq!(
            limiter.stats().await.unwrap().queued,
            0,
            "and gives its reservation back"
        );
        true
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_longer_window_keeps_the_keys_alive_as_long() {
    let server = RedisServer::start();
    let limiter = limiter(&server, "longer", &[Quota::new(10, ms(1_000)).unwrap()]).await;
    let granted = micros(
        limiter
            .acquire_many(10)
            .await
            .unwrap()
            .recorded_at()
            .unwrap(),
    );
    limiter
        .set_quotas([Quota::new(10, Duration::from_secs(60)).unwrap()])
        .await
        .unwrap();
    // The ten grants count for a minute now: every key must live that long,
    // and a second more, past them; set by the change (before `now`), the
    // expiry is at most the window and two seconds past `now`.
    let mut conn = raw(&server).await;
    let now = redis_now(&mut conn).await;
    let expiry = meta_field(&mut conn, "longer", "x").await;
    assert!(
        (granted + 61 * SECOND..=now + 62 * SECOND).contains(&expiry),
        "the keys expire {} µs after the grants",
        expiry.wrapping_sub(granted)
    );
    for key in ["{paceline:longer}:meta", "{paceline:longer}:log:0"] {
        assert_expires_at(&mut conn, key, expiry).await;
    }
    assert!(limiter.try_acquire().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_dropped_by_a_smaller_quota_is_counted_if_the_quota_grows_back() {
    let server = RedisServer::start();
    let mut conn = raw(&server).await;
    until_conclusive("shrink-grow", async |name| {
        let quota = Quota::new(10, ms(1_000)).unwrap();
        let a = limiter(&server, &name, &[quota]).await;
        let b = limiter(&server, &name, &[quota]).await;
        let first = micros(a.acquire_many(10).await.unwrap().recorded_at().unwrap());
        let waiter = spawn_acquire(&a, 8);
        if queued_before(&b, 1, Instant::now() + MISSED)
            .await
            .is_none()
        {
            waiter.abort();
            return false;
        }
        // From another process: a's waiter hears of neither change, which
        // must both come before its slot, a second after `first` (or the run
        // proves nothing).
        b.set_quotas([Quota::new(5, ms(1_000)).unwrap()])
            .await
            .unwrap();
        b.set_quotas([quota]).await.unwrap();
        if redis_now(&mut conn).await >= first + SECOND {
            waiter.abort();
            return false;
        }
        // Granted again behind the others, and counted (while still in the
        // window, or the run proves nothing).
        let granted = waiter.await.unwrap().unwrap();
        assert!(
            granted >= first + SECOND,
            "granted at {granted}, first at {first}"
        );
        let stats = b.stats().await.unwrap();
        let refused = b.try_acquire_many(3).await.is_err();
        if redis_now(&mut conn).await >= granted + SECOND {
            return false;
        }
        assert_eq!(stats.in_window, 8, "{stats:?}");
        assert!(refused);
        true
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_moved_by_a_smaller_quota_keep_their_order_of_arrival() {
    let server = RedisServer::start();
    let mut conn = raw(&server).await;
    until_conclusive("order", async |name| {
        let limiter = limiter(&server, &name, &[Quota::new(6, ms(1_000)).unwrap()]).await;
        let first = micros(
            limiter
                .acquire_many(6)
                .await
                .unwrap()
                .recorded_at()
                .unwrap(),
        );
        // Six waiters, one after the other, reserve the slots a window after
        // `first`; a smaller quota, two per window, must reach Redis before
        // those come, or the run proves nothing.
        let give_up = Instant::now() + MISSED;
        let mut waiters = Vec::new();
        let mut seen = true;
        for n in 1..=6 {
            waiters.push(spawn_acquire(&limiter, 1));
            if queued_before(&limiter, n, give_up).await.is_none() {
                seen = false;
                break;
            }
        }
        if seen {
            limiter
                .set_quotas([Quota::new(2, ms(1_000)).unwrap()])
                .await
                .unwrap();
        }
        if !seen || redis_now(&mut conn).await >= first + SECOND {
            waiters.iter().for_each(|waiter| waiter.abort());
            return false;
        }
        let mut times = Vec::new();
        for waiter in waiters {
            times.push(waiter.await.unwrap().unwrap());
        }
        // Two per window now, first come first served: the first two keep
        // their slots, and the others are moved, in their order of arrival,
        // a window after the two before them.
        let slot = first + SECOND;
        let expected = [0, 1, SECOND, SECOND + 1, 2 * SECOND, 2 * SECOND + 1].map(|t| slot + t);
        assert_eq!(times, expected);
        true
    })
    .await;
}
