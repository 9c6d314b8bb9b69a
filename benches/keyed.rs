//! paceline's keyed limiter against governor's keyed limiter (its DashMap
//! store), in one run, side by side: one `try_acquire` on an existing key,
//! with 1 key and with 100,000 keys (visited in turn, so that every call
//! lands on another key).
//!
//! - `grant`: a quota the run never reaches, so every call is granted:
//!   10^9 per second for the single key (called tens of millions of times a
//!   second), 1,000 per second per key for 100,000 keys (each called about
//!   a hundred times a second).
//! - `refuse`: a quota already spent, 1 per hour, so every call is refused
//!   with the time to wait: the path a key over its limit takes on every
//!   request.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion};
use governor::DefaultKeyedRateLimiter;
use paceline::{KeyedRateLimiter, Quota};

/// Per second, a rate the run never reaches: for one key called in a loop,
/// and for each of 100,000 keys called in turn.
fn unbound_per_second(keys: u64) -> u32 {
    if keys == 1 { 1_000_000_000 } else { 1_000 }
}

const KEY_COUNTS: [u64; 2] = [1, 100_000];

fn paceline_limiter(spent: bool, keys: u64) -> KeyedRateLimiter<u64> {
    let quota = if spent {
        Quota::per_hour(1)
    } else {
        Quota::per_second(u64::from(unbound_per_second(keys)))
    };
    let limiter = KeyedRateLimiter::builder()
        .quota(quota.expect("valid quota"))
        .max_keys(2 * keys as usize)
        .build()
        .expect("valid keyed limiter");
    for key in 0..keys {
        let first = limiter.try_acquire(&key);
        assert!(first.is_ok(), "the first call of a key is granted");
    }
    limiter
}

fn governor_limiter(spent: bool, keys: u64) -> DefaultKeyedRateLimiter<u64> {
    let quota = if spent {
        governor::Quota::per_hour(NonZeroU32::MIN)
    } else {
        governor::Quota::per_second(NonZeroU32::new(unbound_per_second(keys)).expect("non-zero"))
    };
    let limiter = governor::RateLimiter::dashmap(quota);
    for key in 0..keys {
        assert!(
            limiter.check_key(&key).is_ok(),
            "the first call of a key is granted"
        );
    }
    limiter
}

fn try_acquire(c: &mut Criterion) {
    for (mode, spent) in [("grant", false), ("refuse", true)] {
        let mut group = c.benchmark_group(format!("keyed_try_acquire_{mode}"));
        for keys in KEY_COUNTS {
            // Each peer counts the calls that went the other way than the
            // group says, at the same cost to each, to prove afterwards that
            // none did.
            let mut wrong = [0u64; 2];

            let limiter = paceline_limiter(spent, keys);
            let count = &mut wrong[0];
            let mut key = 0;
            group.bench_function(BenchmarkId::new("paceline", keys), |b| {
                b.iter(|| {
                    key = if key + 1 == keys { 0 } else { key + 1 };
                    *count += u64::from(limiter.try_acquire(black_box(&key)).is_ok() == spent);
                });
            });
            drop(limiter);

            let limiter = governor_limiter(spent, keys);
            let count = &mut wrong[1];
            let mut key = 0;
            group.bench_function(BenchmarkId::new("governor", keys), |b| {
                b.iter(|| {
                    key = if key + 1 == keys { 0 } else { key + 1 };
                    *count += u64::from(limiter.check_key(black_box(&key)).is_ok() == spent);
                });
            });
            drop(limiter);

            for (peer, count) in ["paceline", "governor"].into_iter().zip(wrong) {
                assert_eq!(count, 0, "{peer}: {count} calls did not {mode}");
            }
        }
        group.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args()
}

criterion::criterion_group! {
    name = benches;
    config = config();
    targets = try_acquire
}
criterion::criterion_main!(benches);
