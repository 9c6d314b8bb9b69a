//! The keyed limiter: the limiter's contract per key, independent keys,
//! eviction of idle keys only, and the cap on live keys.
mod common;

use std::sync::{Arc, Mutex};

use common::{ms, paused_runtime, secs, since, spawn_queued};
use futures::future::join_all;
use futures::poll;
use paceline::{
    AcquireError, ConfigError, Cost, KeyedError, KeyedRateLimiter, Quota, TryAcquireError,
};
use tokio::time::Instant;

fn keyed(max: u64, window_secs: u64, max_keys: usize) -> KeyedRateLimiter<String> {
    KeyedRateLimiter::builder()
        .quota(Quota::new(max, secs(window_secs)).unwrap())
        .max_keys(max_keys)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn each_key_gets_a_strict_window_of_its_own() {
    let limiter = keyed(15, 60, 10);
    let start = Instant::now();
    let grants = join_all((0..45).map(|_| limiter.acquire("alice"))).await;
    for (i, grant) in grants.into_iter().enumerate() {
        let at = grant.unwrap().granted_at() - start;
        assert_eq!(at, secs(60 * (i as u64 / 15)), "request {i}");
    }
    assert_eq!(since(start), secs(120));
    let stats = limiter.key_stats("alice").unwrap();
    assert_eq!((stats.granted, stats.in_window), (45, 15));
}

#[tokio::test(start_paused = true)]
async fn waiters_of_one_key_are_granted_in_the_order_they_queued() {
    let limiter = keyed(2, 1, 10);
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for i in 0..20 {
        let (limiter, order) = (limiter.clone(), order.clone());
        handles.push(
            spawn_queued(async move {
                limiter.acquire("alice").await.unwrap();
                order.lock().unwrap().push(i);
            })
            .await,
        );
    }
    join_all(handles).await;
    assert_eq!(*order.lock().unwrap(), (0..20).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn a_large_acquire_holds_back_its_own_key_only() {
    let limiter = keyed(10, 1, 10);
    let start = Instant::now();
    limiter
        .acquire_cost("alice", Cost::requests(6))
        .await
        .unwrap();
    let big = {
        let limiter = limiter.clone();
        spawn_queued(async move {
            let grant = limiter.acquire_cost("alice", Cost::requests(10)).await;
            grant.unwrap().granted_at()
        })
        .await
    };
    // Alice may not barge past her own queue; Bob is not in it.
    assert!(matches!(
        limiter.try_acquire("alice"),
        Err(KeyedError::Limiter(TryAcquireError::RateLimited { .. }))
    ));
    let bob = limiter
        .acquire_cost("bob", Cost::requests(10))
        .await
        .unwrap();
    assert_eq!(bob.granted_at(), start);
    assert_eq!(big.await.unwrap() - start, secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_full_key_does_not_slow_down_the_others() {
    let limiter = keyed(1, 60, 1_000);
    let start = Instant::now();
    limiter.acquire("busy").await.unwrap();
    let _queued = spawn_queued({
        let limiter = limiter.clone();
        async move { limiter.acquire("busy").await }
    })
    .await;
    for key in 0..100 {
        let grant = limiter.acquire(&format!("user-{key}")).await.unwrap();
        assert_eq!(grant.granted_at(), start);
    }
    assert_eq!(limiter.key_stats("busy").unwrap().queued, 1);
    assert_eq!(limiter.len(), 101);
}

#[tokio::test(start_paused = true)]
async fn try_acquire_says_when_to_retry_per_key() {
    let limiter = keyed(2, 10, 10);
    limiter.try_acquire("alice").unwrap();
    tokio::time::sleep(secs(4)).await;
    limiter.try_acquire("alice").unwrap();
    let err = limiter.try_acquire("alice").unwrap_err();
    assert_eq!(err.retry_after(), Some(secs(6)));
    assert_eq!(limiter.try_acquire("bob").map(|g| g.waited()), Ok(ms(0)));
}

#[tokio::test(start_paused = true)]
async fn a_key_is_evicted_once_its_last_grant_leaves_the_window_and_not_before() {
    let limiter = keyed(3, 1, 10);
    limiter.try_acquire("alice").unwrap();
    tokio::time::sleep(ms(600)).await;
    limiter.try_acquire("alice").unwrap();
    limiter.try_acquire("bob").unwrap();
    tokio::time::sleep(ms(999)).await; // t = 1,599 ms
    assert_eq!(
        limiter.evict_idle(),
        0,
        "both keys' last grants still count"
    );
    tokio::time::sleep(ms(1)).await; // t = 1,600 ms
    assert_eq!(limiter.evict_idle(), 2);
    assert!(limiter.is_empty());
    assert_eq!(limiter.key_stats("alice"), None);
    assert_eq!(limiter.stats().evicted, 2);
}

#[tokio::test(start_paused = true)]
async fn a_key_with_a_waiter_is_not_evicted() {
    let limiter = keyed(1, 1, 10);
    limiter.try_acquire("alice").unwrap();
    let mut waiting = Box::pin(limiter.acquire("alice"));
    assert!(poll!(waiting.as_mut()).is_pending());
    tokio::time::sleep(secs(5)).await; // its turn came, but nobody polled it
    assert_eq!(limiter.evict_idle(), 0);
    let grant = waiting.await.unwrap();
    assert_eq!(grant.waited(), secs(5));
    assert_eq!(
        limiter.evict_idle(),
        0,
        "the grant it took counts for a second"
    );
    tokio::time::sleep(secs(1)).await;
    assert_eq!(limiter.evict_idle(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_key_whose_handle_is_held_or_that_is_paused_is_not_evicted() {
    let limiter = keyed(5, 1, 10);
    let handle = limiter.limiter("held").unwrap();
    limiter.limiter("paused").unwrap().pause_for(secs(30));
    limiter.try_acquire("plain").unwrap();
    tokio::time::sleep(secs(2)).await;
    assert_eq!(limiter.evict_idle(), 1, "only the plain key is idle");
    assert!(limiter.key_stats("held").is_some());
    drop(handle);
    assert_eq!(limiter.evict_idle(), 1);
    tokio::time::sleep(secs(28)).await;
    assert_eq!(limiter.evict_idle(), 1, "the pause has ended");
    assert!(limiter.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_key_made_anew_after_eviction_keeps_the_window_strict() {
    let limiter = keyed(2, 1, 10);
    let start = Instant::now();
    for _ in 0..2 {
        limiter.acquire("alice").await.unwrap();
    }
    tokio::time::sleep(secs(1)).await;
    assert_eq!(limiter.evict_idle(), 1);
    // The new limiter starts with an empty window, exactly as the old one
    // had become: two at t = 1 s, the third at t = 2 s.
    let grants = join_all((0..3).map(|_| limiter.acquire("alice"))).await;
    let at: Vec<_> = grants
        .into_iter()
        .map(|g| g.unwrap().granted_at() - start)
        .collect();
    assert_eq!(at, [secs(1), secs(1), secs(2)]);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_acquire_leaves_its_key_idle() {
    let limiter = keyed(1, 1, 10);
    limiter.try_acquire("alice").unwrap();
    let timed_out = tokio::time::timeout(ms(100), limiter.acquire("alice")).await;
    assert!(timed_out.is_err());
    assert_eq!(limiter.key_stats("alice").unwrap().queued, 0);
    // A future for a new key, dropped unpolled, makes nothing.
    drop(limiter.acquire("bob"));
    assert_eq!(limiter.key_stats("bob"), None);
    assert_eq!(limiter.len(), 1);
    assert_eq!(limiter.evict_idle(), 0, "alice's grant counts");
    tokio::time::sleep(ms(900)).await;
    assert_eq!(limiter.evict_idle(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_new_key_at_the_cap_is_refused_while_no_key_is_idle() {
    let limiter = keyed(1, 60, 2);
    limiter.try_acquire("a").unwrap();
    tokio::time::sleep(secs(10)).await;
    limiter.try_acquire("b").unwrap();
    assert_eq!(
        limiter.try_acquire("c").unwrap_err(),
        KeyedError::TooManyKeys { max_keys: 2 }
    );
    assert!(matches!(
        limiter.acquire("c").await,
        Err(KeyedError::TooManyKeys { max_keys: 2 })
    ));
    // Live keys are served as before.
    assert!(matches!(
        limiter.try_acquire("a"),
        Err(KeyedError::Limiter(TryAcquireError::RateLimited { .. }))
    ));
    tokio::time::sleep(secs(49)).await; // t = 59 s: a's grant still counts
    assert!(limiter.try_acquire("c").is_err());
    tokio::time::sleep(secs(1)).await; // t = 60 s: a is idle
    assert!(limiter.try_acquire("c").is_ok());
    let stats = limiter.stats();
    assert_eq!(
        (stats.keys, stats.max_keys, stats.evicted, stats.refused),
        (2, 2, 1, 3)
    );
    assert!(limiter.key_stats("a").is_none());
    assert!(limiter.key_stats("b").is_some());
}

#[tokio::test(start_paused = true)]
async fn at_the_cap_a_key_in_use_is_never_evicted() {
    let limiter = keyed(1, 1, 1);
    let handle = limiter.limiter("a").unwrap();
    tokio::time::sleep(secs(5)).await;
    assert!(matches!(
        limiter.try_acquire("b"),
        Err(KeyedError::TooManyKeys { .. })
    ));
    drop(handle);
    // Refused new keys wait for the earliest instant a key in use could be
    // idle (one window after the refusal), not for a sweep per key.
    assert!(limiter.try_acquire("b").is_err());
    tokio::time::sleep(secs(1)).await;
    assert!(limiter.try_acquire("b").is_ok());
    assert_eq!(limiter.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn idle_keys_are_swept_as_the_map_grows() {
    let limiter = keyed(1, 1, 1_000_000);
    let mut most = 0;
    for round in 0..20u32 {
        for key in 0..1_000u32 {
            limiter.try_acquire(&format!("{round}-{key}")).unwrap();
        }
        most = most.max(limiter.len());
        tokio::time::sleep(secs(1)).await;
    }
    // 20,000 keys came, at most 1,000 were live at once: sweeps as the map
    // doubled kept it within about twice that.
    assert!(most <= 2_048, "{most} keys held at once");
    assert!(limiter.stats().evicted >= 18_000);
}

#[test]
fn the_cap_holds_under_contention_across_threads() {
    let limiter = keyed(1, 3_600, 1_000);
    let admitted: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|thread| {
                let limiter = &limiter;
                scope.spawn(move || {
                    (0..5_000)
                        .filter(|key| limiter.try_acquire(&format!("{thread}-{key}")).is_ok())
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(admitted, 1_000);
    assert_eq!(limiter.len(), 1_000);
    assert_eq!(limiter.stats().refused, 19_000);
}

#[tokio::test(start_paused = true)]
async fn errors_from_a_key_limiter_are_typed() {
    let limiter = keyed(5, 1, 10);
    assert!(matches!(
        limiter.acquire_cost("alice", Cost::requests(6)).await,
        Err(KeyedError::Limiter(AcquireError::CostExceedsQuota {
            cost: 6,
            max: 5,
            ..
        }))
    ));
    limiter.limiter("alice").unwrap().close();
    assert_eq!(
        limiter.acquire("alice").await.unwrap_err(),
        KeyedError::Limiter(AcquireError::Closed)
    );
    assert!(limiter.acquire("bob").await.is_ok());
}

#[test]
fn bad_configuration_is_a_typed_error() {
    let no_quota = KeyedRateLimiter::<u32>::builder().build();
    assert_eq!(no_quota.unwrap_err(), ConfigError::NoQuota);
    let zero_keys = KeyedRateLimiter::<u32>::builder()
        .quota(Quota::per_second(1).unwrap())
        .max_keys(0)
        .build();
    assert_eq!(zero_keys.unwrap_err(), ConfigError::ZeroMaxKeys);
    assert_eq!(
        KeyedRateLimiter::<u32>::new(0, secs(1)).unwrap_err(),
        ConfigError::ZeroMax
    );
}

#[test]
fn the_keyed_limiter_and_its_futures_are_send_sync_and_static() {
    fn assert_traits<T: Send + Sync + Clone + 'static>(_: &T) {}
    fn assert_future<T: Send + 'static>(_: T) {}
    let limiter = KeyedRateLimiter::<String>::new(1, secs(1)).unwrap();
    assert_traits(&limiter);
    assert_future(limiter.acquire("alice"));
}

#[tokio::test(start_paused = true)]
async fn a_key_that_comes_to_wait_keeps_the_grants_it_had() {
    let limiter = keyed(2, 10, 10);
    let start = Instant::now();
    limiter.try_acquire("alice").unwrap();
    tokio::time::sleep(secs(4)).await;
    limiter.try_acquire("alice").unwrap();
    // Full now: this one waits until the first grant leaves the window.
    let grant = limiter.acquire("alice").await.unwrap();
    assert_eq!(grant.granted_at() - start, secs(10));
    assert_eq!(grant.waited(), secs(6));
    let err = limiter.try_acquire("alice").unwrap_err();
    assert_eq!(
        err.retry_after(),
        Some(secs(4)),
        "the second leaves at 14 s"
    );
    let stats = limiter.key_stats("alice").unwrap();
    assert_eq!((stats.granted, stats.waited, stats.in_window), (3, 1, 2));
}

#[tokio::test(start_paused = true)]
async fn a_cost_of_several_requests_waits_for_as_many_to_leave() {
    let limiter = keyed(5, 10, 10);
    let start = Instant::now();
    for _ in 0..3 {
        limiter.try_acquire("alice").unwrap();
        tokio::time::sleep(secs(1)).await;
    }
    // Grants at 0, 1 and 2 s; 3 more need two of them gone: at 11 s.
    let err = limiter
        .try_acquire_cost("alice", Cost::requests(4))
        .unwrap_err();
    assert_eq!(err.retry_after(), Some(secs(8)));
    let grant = limiter
        .acquire_cost("alice", Cost::requests(4))
        .await
        .unwrap();
    assert_eq!(grant.granted_at() - start, secs(11));
    assert!(matches!(
        limiter.try_acquire_cost("alice", Cost::requests(6)),
        Err(KeyedError::Limiter(TryAcquireError::CostExceedsQuota {
            cost: 6,
            max: 5,
            ..
        }))
    ));
}

#[tokio::test(start_paused = true)]
async fn several_quotas_hold_per_key() {
    let limiter = KeyedRateLimiter::<String>::builder()
        .quota(Quota::per_second(2).unwrap())
        .quota(Quota::per_minute(3).unwrap())
        .build()
        .unwrap();
    let start = Instant::now();
    let grants = join_all((0..4).map(|_| limiter.acquire("alice"))).await;
    let at: Vec<_> = grants
        .into_iter()
        .map(|g| g.unwrap().granted_at() - start)
        .collect();
    assert_eq!(at, [secs(0), secs(0), secs(1), secs(60)]);
    assert!(limiter.try_acquire("bob").is_ok());
}

/// Keys whose quota is too large for a light record get a full limiter at
/// once; a `try_acquire` then goes to it directly, with the same answers,
/// and the key is still evicted once idle.
#[tokio::test(start_paused = true)]
async fn a_key_with_a_large_quota_answers_alike_and_is_evicted_when_idle() {
    let limiter = keyed(2_000, 1, 10);
    for _ in 0..2_000 {
        limiter.try_acquire("alice").unwrap();
    }
    let err = limiter.try_acquire("alice").unwrap_err();
    assert_eq!(err.retry_after(), Some(secs(1)));
    assert_eq!(limiter.key_stats("alice").unwrap().in_window, 2_000);
    tokio::time::sleep(ms(999)).await;
    assert_eq!(limiter.evict_idle(), 0, "its grants still count");
    assert_eq!(
        limiter.try_acquire("alice").unwrap_err().retry_after(),
        Some(ms(1))
    );
    tokio::time::sleep(ms(1)).await;
    assert_eq!(limiter.evict_idle(), 1);
    assert!(limiter.is_empty());
    // Made anew, and used through the direct path again after a sweep.
    limiter.try_acquire("alice").unwrap();
    assert_eq!(limiter.evict_idle(), 0);
    limiter.try_acquire("alice").unwrap();
    assert_eq!(limiter.key_stats("alice").unwrap().in_window, 2);
}

/// A keyed limiter built on a running clock and used once tokio's clock is
/// paused follows the paused clock exactly: a refusal is lifted as soon as
/// virtual time reaches it, for light and for full keys alike.
#[test]
fn a_limiter_built_before_the_clock_is_paused_follows_the_paused_clock() {
    let light = KeyedRateLimiter::<u64>::new(1, secs(1)).unwrap();
    let full = KeyedRateLimiter::<u64>::new(2_000, secs(1)).unwrap();
    let rt = paused_runtime();
    rt.block_on(async {
        light.try_acquire(&1).unwrap();
        let retry = light.try_acquire(&1).unwrap_err().retry_after().unwrap();
        assert!(retry <= secs(1) && retry > ms(900), "{retry:?}");
        tokio::time::advance(retry).await;
        light
            .try_acquire(&1)
            .expect("granted once virtual time reaches it");

        full.try_acquire_cost(&1, Cost::requests(2_000)).unwrap();
        let retry = full.try_acquire(&1).unwrap_err().retry_after().unwrap();
        assert!(retry <= secs(1) && retry > ms(900), "{retry:?}");
        tokio::time::advance(retry).await;
        full.try_acquire(&1)
            .expect("granted once virtual time reaches it");
    });
}
