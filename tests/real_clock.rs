//! The limiter on a running clock, where grants far from the quota take the
//! lock-free fast lane and waits end on the fine timer. No assertion here
//! depends on how fast the machine is: windows are long next to the work
//! between their checks, and the one test that must land a poll in a narrow
//! stretch of time tries again until it does.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use futures::poll;
use paceline::{Cost, KeyedRateLimiter, Quota, RateLimiter, TryAcquireError, Unit};

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn threads_racing_through_the_lane_never_take_more_than_max() {
    let limiter = RateLimiter::new(10_000, MINUTE).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let limiter = limiter.clone();
            std::thread::spawn(move || (0..5_000).filter(|_| limiter.try_acquire().is_ok()).count())
        })
        .collect();
    let granted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(granted, 10_000);
    let stats = limiter.stats();
    assert_eq!(
        (stats.granted, stats.in_window, stats.available),
        (10_000, 10_000, 0)
    );
    let retry = limiter.try_acquire().unwrap_err().retry_after().unwrap();
    assert!(
        retry <= MINUTE && retry > MINUTE - Duration::from_secs(10),
        "{retry:?}"
    );
}

#[test]
fn tasks_on_a_multi_thread_runtime_are_all_counted() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let limiter = RateLimiter::builder()
        .quota(Quota::per_minute(20_000).unwrap())
        .quota(Quota::per_hour(100_000).unwrap())
        .build()
        .unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    for _ in 0..2_000 {
                        let grant = limiter.acquire().await.unwrap();
                        assert!(grant.waited().is_zero());
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    let stats = limiter.stats();
    assert_eq!(
        (stats.granted, stats.in_window, stats.available),
        (16_000, 16_000, 4_000)
    );
    assert_eq!(stats.quotas[1].in_window, 16_000);
    assert!(matches!(
        limiter.try_acquire_many(4_001),
        Err(TryAcquireError::RateLimited { .. })
    ));
    limiter.try_acquire_many(4_000).unwrap();
}

/// A key over its limit is refused from the gate in its map entry, on a
/// running clock: a refusal never overstates the wait, and a call made once
/// the window has moved on is granted.
#[test]
fn keyed_refusals_on_a_running_clock_are_exact_enough_to_rely_on() {
    let window = Duration::from_millis(20);
    let limiter = KeyedRateLimiter::<u64>::new(1, window).unwrap();
    let mut first = limiter.try_acquire(&7).unwrap().granted_at();
    let mut refused = 0u64;
    let mut granted = 1;
    while granted < 5 {
        let asked = tokio::time::Instant::now();
        match limiter.try_acquire(&7) {
            Ok(grant) => {
                assert!(grant.granted_at() >= first + window, "granted early");
                first = grant.granted_at();
                granted += 1;
            }
            Err(err) => {
                let retry_after = err.retry_after().expect("rate-limited");
                assert!(asked < first + window, "refused after the window moved on");
                assert!(asked + retry_after <= first + window, "overstated");
                refused += 1;
            }
        }
    }
    assert!(refused > 0);
}

#[test]
fn a_queued_waiter_closes_the_lane() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let limiter = RateLimiter::new(2_000, MINUTE).unwrap();
    rt.block_on(async {
        limiter.acquire_many(1_999).await.unwrap();
        let mut big = pin!(limiter.acquire_many(2));
        assert!(poll!(big.as_mut()).is_pending());
        assert_eq!(limiter.stats().queued, 1);
        // One unit is free, but the waiter came first.
        assert!(matches!(
            limiter.try_acquire(),
            Err(TryAcquireError::RateLimited { .. })
        ));
    });
    assert_eq!(limiter.stats().queued, 0, "the dropped waiter left");
    limiter.try_acquire().unwrap();
    assert_eq!(limiter.stats().in_window, 2_000);
}

#[test]
fn pause_close_and_tokens_bypass_the_lane() {
    let limiter = RateLimiter::builder()
        .quota(Quota::per_minute(5_000).unwrap())
        .quota(Quota::per_minute(100_000).unwrap().counting(Unit::Tokens))
        .build()
        .unwrap();
    limiter.try_acquire().unwrap();
    limiter.try_acquire_cost(Cost::tokens(60_000)).unwrap();
    assert!(limiter.try_acquire_cost(Cost::tokens(60_000)).is_err());
    limiter.pause_for(MINUTE);
    assert!(limiter.try_acquire().is_err());
    limiter.resume();
    limiter.try_acquire().unwrap();
    let stats = limiter.stats();
    assert_eq!(
        (stats.granted, stats.in_window, stats.quotas[1].in_window),
        (3, 3, 60_000)
    );
    limiter.close();
    assert_eq!(limiter.try_acquire(), Err(TryAcquireError::Closed));
    assert!(limiter.is_closed());
}

/// Waits on a running clock end on a fine timer for their last two
/// milliseconds: a grant never comes before its instant, whatever the timers
/// do, and every waiter is granted.
#[test]
fn waits_on_a_running_clock_are_strict_to_the_instant() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let window = Duration::from_millis(20);
    let limiter = RateLimiter::new(5, window).unwrap();
    let mut times = rt.block_on(async {
        let tasks: Vec<_> = (0..30)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move { limiter.acquire().await.unwrap().granted_at() })
            })
            .collect();
        let mut times = Vec::new();
        for task in tasks {
            times.push(
                tokio::time::timeout(Duration::from_secs(10), task)
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        times
    });
    times.sort_unstable();
    for k in 5..times.len() {
        assert!(times[k] >= times[k - 5] + window, "grant {k} came early");
    }
    assert_eq!(limiter.stats().granted, 30);
}

#[test]
fn a_waiter_whose_deadline_comes_first_fails_at_the_deadline_not_before() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let limiter = RateLimiter::new(1, Duration::from_millis(400)).unwrap();
    rt.block_on(async {
        limiter.acquire().await.unwrap();
        let asked = tokio::time::Instant::now();
        let deadline = asked + Duration::from_millis(500);
        let waiter = limiter.acquire_before(deadline);
        let mut waiter = pin!(waiter);
        assert!(
            poll!(waiter.as_mut()).is_pending(),
            "feasible in 400 ms: admitted"
        );
        // A pause moves the grant past the deadline: the wait ends there.
        limiter.pause_for(Duration::from_secs(5));
        let err = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(err, paceline::AcquireError::DeadlineExceeded { .. }),
            "{err:?}"
        );
        assert!(tokio::time::Instant::now() >= deadline);
    });
    assert_eq!(limiter.stats().queued, 0);
}

/// A waiter polled in its last two milliseconds by one waker and then by
/// another (a `select!` moving it between tasks) is woken through the second.
///
/// Landing a poll inside those two milliseconds takes a real sleep and a
/// short spin, which a busy machine may overshoot; an attempt that overshoots
/// finds the grant already due, proves nothing, and is run again on a fresh
/// limiter, for up to a minute.
#[test]
fn a_waiter_polled_again_with_another_waker_is_still_woken() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let window = Duration::from_millis(50);
    let trying = std::time::Instant::now();
    let mut landed = false;
    while !landed && trying.elapsed() < MINUTE {
        let limiter = RateLimiter::new(1, window).unwrap();
        landed = rt.block_on(async {
            let first = limiter.acquire().await.unwrap().granted_at();
            let mut second = pin!(limiter.acquire());
            // Into the last stretch of the wait, then one poll with a waker
            // that wakes nobody.
            let aim = first + window - Duration::from_micros(1_200);
            std::thread::sleep(aim.saturating_duration_since(tokio::time::Instant::now()) / 2);
            while tokio::time::Instant::now() < aim {
                std::hint::spin_loop();
            }
            let mut noop = std::task::Context::from_waker(std::task::Waker::noop());
            if second.as_mut().poll(&mut noop).is_ready() {
                return false;
            }
            let granted = tokio::time::timeout(Duration::from_secs(5), second)
                .await
                .expect("woken through the second waker")
                .unwrap();
            assert!(granted.granted_at() >= first + window);
            // Woken by the fine timer, not by the timeout's own timer firing
            // five seconds on (which polls the acquire too).
            assert!(tokio::time::Instant::now() < first + Duration::from_secs(4));
            true
        });
    }
    assert!(landed, "no attempt polled inside the last two milliseconds");
}
