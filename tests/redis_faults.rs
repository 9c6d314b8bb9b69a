//! The shared limiter when Redis fails: killed mid-run and restarted empty,
//! its scripts flushed, too slow to answer, a key overwritten. Failing closed
//! never grants what Redis did not record; falling back grants at most the
//! local share; both recover when Redis answers again.
#![cfg(feature = "redis")]

mod redis_server;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use paceline::redis::{FailurePolicy, RedisRateLimiter};
use paceline::{AcquireError, Quota, TryAcquireError};
use parking_lot::Mutex;
use redis_server::{RedisServer, micros, most_in_any_window, raw};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// What a group of tasks hammering one limiter saw.
#[derive(Debug, Default)]
struct Record {
    /// Every grant's instant on Redis's clock, in µs.
    grants: Vec<u64>,
    /// Every failed acquire: when it started (µs of the system clock) and
    /// how long it took.
    failures: Vec<(u64, Duration, AcquireError)>,
}

/// Runs `tasks` tasks acquiring one request at a time from `limiter` until
/// `stop` is set; a failure is recorded and followed by a short rest.
fn hammer(
    limiter: &RedisRateLimiter,
    tasks: usize,
    record: &Arc<Mutex<Record>>,
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    use std::sync::atomic::Ordering;
    (0..tasks)
        .map(|_| {
            let (limiter, record, stop) = (limiter.clone(), Arc::clone(record), Arc::clone(stop));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let started = std::time::Instant::now();
                    let at = micros(SystemTime::now());
                    match limiter.acquire().await {
                        Ok(grant) => record
                            .lock()
                            .grants
                            .push(micros(grant.recorded_at().unwrap())),
                        Err(err) => {
                            record.lock().failures.push((at, started.elapsed(), err));
                            tokio::time::sleep(ms(10)).await;
                        }
                    }
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_closed_grants_nothing_while_redis_is_down_and_recovers_after_a_restart() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut server = RedisServer::start();
    let window = ms(200);
    let timeout = ms(250);
    let limiter = RedisRateLimiter::builder(server.url(), "crash")
        .quota(Quota::new(20, window).unwrap())
        .timeout(timeout)
        .retry_interval(ms(100))
        .connect()
        .await
        .unwrap();
    let record = Arc::new(Mutex::new(Record::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = hammer(&limiter, 8, &record, &stop);

    tokio::time::sleep(ms(700)).await;
    let killed = micros(SystemTime::now());
    server.kill();
    tokio::time::sleep(ms(600)).await;
    server.restart();
    let restarted = micros(SystemTime::now());
    tokio::time::sleep(ms(1_200)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }

    let record = record.lock();
    let before: Vec<(u64, u64)> = record
        .grants
        .iter()
        .filter(|t| **t < killed)
        .map(|t| (*t, 1))
        .collect();
    let after: Vec<(u64, u64)> = record
        .grants
        .iter()
        .filter(|t| **t >= restarted)
        .map(|t| (*t, 1))
        .collect();
    let between = record
        .grants
        .iter()
        .filter(|t| **t >= killed && **t < restarted)
        .count();
    assert!(
        before.len() >= 40,
        "{} grants before the crash",
        before.len()
    );
    assert_eq!(between, 0, "nothing granted while Redis was down");
    assert!(
        after.len() >= 80,
        "{} grants after the restart: it recovered",
        after.len()
    );
    assert_eq!(most_in_any_window(&before, 200_000), 20);
    // The restarted server knows nothing of the grants before: from the
    // restart on, the quota holds again.
    assert_eq!(most_in_any_window(&after, 200_000), 20);
    assert!(!record.failures.is_empty());
    // A failing acquire may have waited for a slot reserved before the
    // crash (a window ahead at most), then for the timeout: never more, give
    // or take a busy machine's scheduling.
    let slack = ms(1_000);
    let longest = window + timeout + slack;
    let longest_micros = u64::try_from(longest.as_micros()).unwrap();
    for (at, took, err) in &record.failures {
        assert!(matches!(err, AcquireError::Unavailable(_)), "{err:?}");
        assert!(
            *at + longest_micros >= killed && *at < restarted + 1_000_000,
            "a failure at {at}"
        );
        assert!(*took <= longest, "a failure took {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_redis_dies_fails_at_its_slot_instead_of_hanging() {
    let mut server = RedisServer::start();
    let limiter = RedisRateLimiter::builder(server.url(), "orphan")
        .quota(Quota::new(1, ms(2_000)).unwrap())
        .timeout(ms(200))
        .connect()
        .await
        .unwrap();
    limiter.acquire().await.unwrap();
    let waiter = tokio::spawn({
        let limiter = limiter.clone();
        async move { limiter.acquire().await }
    });
    let asked = std::time::Instant::now();
    while limiter.snapshot().queued == 0 {
        assert!(asked.elapsed() < ms(1_500), "the waiter never queued");
        tokio::time::sleep(ms(1)).await;
    }
    let killed = std::time::Instant::now();
    server.kill();
    let err = waiter.await.unwrap().unwrap_err();
    assert!(matches!(err, AcquireError::Unavailable(_)), "{err:?}");
    // Its slot (2 s at most), then the timeout (200 ms), with room for a
    // busy machine: an error, not a hang.
    assert!(
        killed.elapsed() < ms(2_000 + 200 + 1_500),
        "failed after {:?}",
        killed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_flush_mid_run_is_survived() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let server = RedisServer::start();
    let limiter = RedisRateLimiter::builder(server.url(), "flush")
        .quota(Quota::new(50, ms(100)).unwrap())
        .connect()
        .await
        .unwrap();
    let record = Arc::new(Mutex::new(Record::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = hammer(&limiter, 8, &record, &stop);
    let mut conn = raw(&server).await;
    for _ in 0..5 {
        tokio::time::sleep(ms(100)).await;
        let (): () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let last_flush = micros(SystemTime::now());
    tokio::time::sleep(ms(200)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let record = record.lock();
    assert!(record.failures.is_empty(), "{:?}", record.failures);
    let grants: Vec<(u64, u64)> = record.grants.iter().map(|t| (*t, 1)).collect();
    // About 350 fit in the run; well over a window's worth came, and some
    // after the last flush: the script was loaded again each time.
    assert!(grants.len() >= 150, "{} grants in 700 ms", grants.len());
    assert!(
        grants.iter().any(|(t, _)| *t > last_flush),
        "granted after the last flush"
    );
    assert_eq!(most_in_any_window(&grants, 100_000), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_too_slow_to_answer_fails_closed_within_the_timeout() {
    let server = RedisServer::start();
    let timeout = ms(200);
    let limiter = RedisRateLimiter::builder(server.url(), "slow")
        .quota(Quota::new(10, Duration::from_secs(10)).unwrap())
        .timeout(timeout)
        .retry_interval(ms(50))
        .connect()
        .await
        .unwrap();
    limiter.acquire().await.unwrap();
    let mut conn = raw(&server).await;
    let (): () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(800)
        .arg("ALL")
        .query_async(&mut conn)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let err = limiter.acquire().await.unwrap_err();
    assert!(matches!(err, AcquireError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() >= timeout && started.elapsed() < timeout + ms(1_000));
    // Within the retry interval the limiter does not even try.
    assert!(matches!(
        limiter.try_acquire().await,
        Err(TryAcquireError::Unavailable(_))
    ));
    tokio::time::sleep(ms(900)).await;
    let mut granted = None;
    for _ in 0..50 {
        if let Ok(grant) = limiter.acquire().await {
            granted = Some(grant);
            break;
        }
        tokio::time::sleep(ms(50)).await;
    }
    assert!(
        granted.is_some(),
        "acquires succeed once Redis answers again"
    );
    // The acquire that timed out may have been recorded by Redis after the
    // pause: counted, never used, so never more admitted than the quota.
    let stats = limiter.stats().await.unwrap();
    assert!(
        (2..=3).contains(&stats.in_window),
        "{} in window",
        stats.in_window
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_fallback_grants_its_share_while_redis_is_down_then_hands_back() {
    let mut server = RedisServer::start();
    let window = Duration::from_secs(10);
    let limiter = RedisRateLimiter::builder(server.url(), "fallback")
        .quota(Quota::new(10, window).unwrap())
        .timeout(ms(200))
        .retry_interval(ms(200))
        .on_failure(FailurePolicy::FallBackLocal { share: 0.5 })
        .connect()
        .await
        .unwrap();
    let shared = limiter.acquire().await.unwrap();
    assert!(shared.recorded_at().is_some(), "granted through Redis");
    server.kill();
    // Half the quota, in-process: five grants, then a refusal that says when.
    for _ in 0..5 {
        let grant = limiter.try_acquire().await.unwrap();
        assert_eq!(grant.recorded_at(), None, "granted locally");
    }
    let err = limiter.try_acquire().await.unwrap_err();
    let retry_after = err.retry_after().expect("rate limited locally");
    assert!(retry_after > window - ms(2_000) && retry_after <= window);
    server.restart();
    tokio::time::sleep(ms(300)).await;
    let mut back = None;
    for _ in 0..50 {
        match limiter.try_acquire().await {
            Ok(grant) if grant.recorded_at().is_some() => {
                back = Some(grant);
                break;
            }
            _ => tokio::time::sleep(ms(50)).await,
        }
    }
    assert!(
        back.is_some(),
        "grants go through Redis again once it answers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_overwritten_with_another_type_is_a_clear_error() {
    let server = RedisServer::start();
    let limiter = RedisRateLimiter::builder(server.url(), "clobbered")
        .quota(Quota::per_minute(5).unwrap())
        .connect()
        .await
        .unwrap();
    limiter.acquire().await.unwrap();
    let mut conn = raw(&server).await;
    let (): () = redis::cmd("SET")
        .arg("{paceline:clobbered}:log:0")
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = limiter.acquire().await.unwrap_err();
    let AcquireError::Unavailable(reason) = &err else {
        panic!("{err:?}");
    };
    assert!(reason.contains("WRONGTYPE"), "{reason}");
}
