//! Limiter edge cases: the fast lane after a long lock hold, deadlines
//! projected through coalesced entries, far deadlines, token quotas cut below
//! their window.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::{ArcWake, waker};
use paceline::{Acquire, AcquireError, Quota, RateLimiter};
use tokio::time::Instant;

/// A waker that takes a while to wake (as any long lock hold would).
struct SlowWaker {
    slow: bool,
}

impl ArcWake for SlowWaker {
    fn wake_by_ref(this: &Arc<Self>) {
        if this.slow {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Queues 17 waiters of one request each; the first 16 wake slowly. When
/// they are all granted under one lock, `WakeList::push` wakes those 16 under
/// the lock, so the lock is held for about 80 ms: a stand-in for any long
/// lock hold or wait (preemption, a long queue served at once).
fn queue_slow_waiters(limiter: &RateLimiter) -> Vec<(Pin<Box<Acquire<'_>>>, std::task::Waker)> {
    (0..17)
        .map(|i| {
            let w = waker(Arc::new(SlowWaker { slow: i < 16 }));
            let mut fut = Box::pin(limiter.acquire());
            assert!(fut.as_mut().poll(&mut Context::from_waker(&w)).is_pending());
            (fut, w)
        })
        .collect()
}

fn real_time_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// The lane opened when a long-held lock is released is anchored at that
/// release, not when the lock was taken: a grant taken through it right after
/// is dated when the caller asked, to within the time-stamp counter's
/// accuracy (its skew between cores, microseconds at most).
#[test]
fn a_lane_grant_is_never_dated_before_the_call() {
    real_time_runtime().block_on(async {
        let limiter = RateLimiter::new(2_000, Duration::from_secs(1)).unwrap();
        limiter.try_acquire_many(2_000).unwrap();
        let waiters = queue_slow_waiters(&limiter);
        limiter
            .set_quota(0, Quota::per_second(4_000).unwrap())
            .unwrap();
        let before = Instant::now();
        let grant = limiter.try_acquire().unwrap();
        assert!(
            grant.granted_at() + Duration::from_micros(50) >= before,
            "granted {:?} before try_acquire was called",
            before - grant.granted_at()
        );
        drop(waiters);
    });
}

/// The projection behind a deadline coalesces the waiters ahead as the real
/// window does: a deadline the coalesced entry cannot meet fails at once,
/// instead of queueing and failing at the deadline.
#[tokio::test(start_paused = true)]
async fn a_deadline_that_cannot_be_met_fails_at_once() {
    let ms = Duration::from_millis;
    let secs = Duration::from_secs;
    let t0 = Instant::now();
    // 2,000 per 10 s: entries coalesce over 10 ms.
    let limiter = RateLimiter::new(2_000, secs(10)).unwrap();
    limiter.try_acquire_many(500).unwrap(); // entry A opened at 0
    tokio::time::advance(ms(9)).await;
    limiter.try_acquire_many(500).unwrap(); // joins A, dated 9 ms
    tokio::time::advance(ms(1)).await;
    limiter.try_acquire_many(1_000).unwrap(); // entry B at 10 ms
    let limiter2 = limiter.clone();
    let w1 = tokio::spawn(async move { limiter2.acquire_many(1_000).await.unwrap().granted_at() });
    tokio::task::yield_now().await;
    let limiter3 = limiter.clone();
    let w2 = tokio::spawn(async move { limiter3.acquire_many(1_000).await.unwrap().granted_at() });
    tokio::task::yield_now().await;
    // W1 at 10.009 s and W2 at 10.010 s coalesce into one entry dated
    // 10.010 s: one more request fits at 20.010 s. `project` says 20.009 s.
    let deadline = t0 + secs(20) + ms(9);
    let w3 = limiter.acquire_before(deadline).await;
    assert_eq!(w1.await.unwrap() - t0, secs(10) + ms(9));
    assert_eq!(w2.await.unwrap() - t0, secs(10) + ms(10));
    match w3 {
        Err(AcquireError::DeadlineExceeded { earliest: Some(_) }) => {}
        other => panic!(
            "{other:?}, returned {:?} after the start (the acquire was made at 10 ms)",
            Instant::now() - t0
        ),
    }
}

/// A deadline (or pause) near the largest representable instant arms no
/// overflowing timer.
#[test]
fn a_far_deadline_does_not_panic() {
    real_time_runtime().block_on(async {
        let limiter = RateLimiter::new(1, Duration::from_secs(1)).unwrap();
        limiter.try_acquire().unwrap();
        let start = Instant::now();
        // The largest instant `start` can reach.
        let (mut lo, mut hi) = (0u64, u64::MAX);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if start.checked_add(Duration::from_secs(mid)).is_some() {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let secs = Duration::from_secs(lo);
        let (mut lo, mut hi) = (0u32, 999_999_999u32);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if start
                .checked_add(secs + Duration::from_nanos(mid.into()))
                .is_some()
            {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let far = start + secs + Duration::from_nanos(lo.into());
        let mut head = Box::pin(limiter.acquire());
        let mut behind = Box::pin(limiter.acquire_before(far));
        let w = futures::task::noop_waker();
        let mut cx = Context::from_waker(&w);
        assert!(head.as_mut().poll(&mut cx).is_pending());
        // Not the head: its timer is armed for its deadline.
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            matches!(behind.as_mut().poll(&mut cx), Poll::Pending)
        }));
        assert!(
            polled.is_ok(),
            "polling an acquire with a far deadline panicked"
        );
    });
}

/// After a token quota is cut below what its window holds, every acquire
/// (even one with no tokens) waits until the window has room, through the
/// fast lane too.
#[test]
fn a_token_quota_over_its_max_holds_the_lane_too() {
    let limiter = RateLimiter::builder()
        .quota(Quota::per_minute(5_000).unwrap())
        .quota(
            Quota::per_minute(100)
                .unwrap()
                .counting(paceline::Unit::Tokens),
        )
        .build()
        .unwrap();
    limiter
        .try_acquire_cost(paceline::Cost::tokens(100))
        .unwrap();
    limiter
        .set_quota(
            1,
            Quota::per_minute(50)
                .unwrap()
                .counting(paceline::Unit::Tokens),
        )
        .unwrap();
    // The lock path refuses a zero-token request now (Cost::requests(1) has
    // no tokens): `fits(0)` is false while 100 > 50.
    assert!(
        limiter.try_acquire().is_err(),
        "a request was granted while the token window is over its new max"
    );
}
