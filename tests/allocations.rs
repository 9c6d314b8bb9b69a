//! No heap allocation per acquire in steady state.
//!
//! Allocation counts are deterministic, unlike timings, so they can be
//! asserted exactly in a test.

use std::alloc::System;
use std::time::Duration;

use paceline::{Quota, RateLimiter};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

// One test in this binary: the counter is process-wide, and tests running
// side by side would count each other's allocations.
#[test]
fn acquires_do_not_allocate_in_steady_state() {
    immediate_grants_do_not_allocate();
    queued_grants_do_not_allocate();
}

fn immediate_grants_do_not_allocate() {
    let rt = runtime();
    rt.block_on(async {
        let limiter = RateLimiter::builder()
            .quota(Quota::per_second(1_000_000_000).unwrap())
            .quota(Quota::per_minute(1_000).unwrap())
            .build()
            .unwrap();
        for _ in 0..100 {
            limiter.try_acquire().unwrap();
            limiter.acquire().await.unwrap();
        }
        let region = Region::new(GLOBAL);
        for _ in 0..400 {
            limiter.try_acquire().unwrap();
            limiter.acquire().await.unwrap();
        }
        assert_eq!(region.change().allocations, 0);
    });
}

fn queued_grants_do_not_allocate() {
    let rt = runtime();
    rt.block_on(async {
        // One grant per millisecond: every acquire after the first waits.
        let limiter = RateLimiter::new(1, Duration::from_millis(1)).unwrap();
        let worker = |limiter: RateLimiter, n: usize| async move {
            for _ in 0..n {
                limiter.acquire().await.unwrap();
            }
        };
        // Warm up: the queue's slots, the timer wheel and the task set grow once.
        let a = tokio::spawn(worker(limiter.clone(), 200));
        let b = tokio::spawn(worker(limiter.clone(), 200));
        a.await.unwrap();
        b.await.unwrap();
        let a = tokio::spawn(worker(limiter.clone(), 2_000));
        let b = tokio::spawn(worker(limiter.clone(), 2_000));
        // Let both tasks queue before counting.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let region = Region::new(GLOBAL);
        tokio::time::sleep(Duration::from_millis(3_000)).await;
        let allocations = region.change().allocations;
        a.await.unwrap();
        b.await.unwrap();
        assert_eq!(allocations, 0);
        assert_eq!(limiter.stats().granted, 4_400);
    });
}
