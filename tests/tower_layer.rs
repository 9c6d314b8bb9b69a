//! The tower layers: a grant per call, taken in the response future (never
//! by readiness), clones sharing one limiter, a cost per request, typed
//! errors, cancellation, and the keyed variant.
#![cfg(feature = "tower")]
mod common;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use common::{ms, secs, since, spawn_queued};
use futures::poll;
use paceline::tower::{
    KeyedRateLimit, KeyedRateLimitLayer, RateLimit, RateLimitError, RateLimitLayer,
};
use paceline::{
    AcquireError, Cost, Grant, KeyedError, KeyedRateLimiter, Limiter, Quota, RateLimiter, Stats,
    TryAcquireError, Unit,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};
use tower_test::mock::{self, Handle, Mock};

type Arrivals<T> = Arc<Mutex<Vec<(T, Duration)>>>;

/// Answers every request the mock receives with itself, and records when
/// each arrived (since `start`).
fn answer_all<T: Clone + Send + 'static>(
    mut handle: Handle<T, T>,
    start: Instant,
) -> (Arrivals<T>, JoinHandle<()>) {
    let arrivals: Arrivals<T> = Arc::default();
    let seen = arrivals.clone();
    let task = tokio::spawn(async move {
        handle.allow(u64::MAX);
        while let Some((request, reply)) = handle.next_request().await {
            seen.lock().unwrap().push((request.clone(), since(start)));
            reply.send_response(request);
        }
    });
    (arrivals, task)
}

fn limited(limiter: &RateLimiter) -> (RateLimit<Mock<u32, u32>, RateLimiter>, Handle<u32, u32>) {
    let (mock, handle) = mock::pair::<u32, u32>();
    (RateLimitLayer::new(limiter.clone()).layer(mock), handle)
}

#[tokio::test(start_paused = true)]
async fn each_call_waits_for_its_grant_before_the_inner_service_sees_it() {
    let limiter = RateLimiter::new(2, secs(1)).unwrap();
    let (service, handle) = limited(&limiter);
    let start = Instant::now();
    let (arrivals, _answers) = answer_all(handle, start);
    let calls: Vec<_> = (0..5)
        .map(|n| tokio::spawn(service.clone().oneshot(n)))
        .collect();
    for (n, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), n as u32);
    }
    let arrivals = arrivals.lock().unwrap().clone();
    assert_eq!(
        arrivals,
        [
            (0, secs(0)),
            (1, secs(0)),
            (2, secs(1)),
            (3, secs(1)),
            (4, secs(2))
        ]
    );
    assert_eq!(limiter.stats().granted, 5);
}

#[tokio::test(start_paused = true)]
async fn readiness_takes_no_grant() {
    let limiter = RateLimiter::new(1, secs(60)).unwrap();
    let (mut service, mut handle) =
        mock::spawn_layer::<u32, u32, _>(RateLimitLayer::new(limiter.clone()));
    handle.allow(0);
    assert!(
        service.poll_ready().is_pending(),
        "the inner service decides readiness"
    );
    handle.allow(1);
    for _ in 0..10 {
        assert!(service.poll_ready().is_ready());
    }
    assert_eq!(limiter.stats().granted, 0, "ready ten times, called never");
    drop(service);
    let stats = limiter.stats();
    assert_eq!((stats.in_window, stats.queued), (0, 0));
    assert!(limiter.try_acquire().is_ok(), "the window is whole");
}

#[tokio::test(start_paused = true)]
async fn the_grant_is_taken_when_the_response_future_is_polled() {
    let limiter = RateLimiter::new(1, secs(60)).unwrap();
    let (mut service, mut handle) =
        mock::spawn_layer::<u32, u32, _>(RateLimitLayer::new(limiter.clone()));
    handle.allow(2);
    assert!(service.poll_ready().is_ready());
    let first = service.call(1);
    assert_eq!(limiter.stats().granted, 0, "call alone takes nothing");
    assert!(
        handle.poll_request().is_pending(),
        "nor calls the inner service"
    );
    let mut first = Box::pin(first);
    assert!(poll!(first.as_mut()).is_pending());
    assert_eq!(limiter.stats().granted, 1);
    let (request, reply) = handle.next_request().await.unwrap();
    assert_eq!(request, 1);
    reply.send_response(10);
    assert_eq!(first.await.unwrap(), 10);
}

#[tokio::test(start_paused = true)]
async fn clones_of_the_service_share_one_limiter() {
    let limiter = RateLimiter::new(1, secs(1)).unwrap();
    let (service, handle) = limited(&limiter);
    let start = Instant::now();
    let (arrivals, _answers) = answer_all(handle, start);
    let a = service.clone();
    let b = service.clone();
    let layer = RateLimitLayer::new(limiter.clone());
    let (other_mock, other_handle) = mock::pair::<u32, u32>();
    let (_, _other_answers) = answer_all(other_handle, start);
    let c = layer.layer(other_mock);
    assert_eq!(a.oneshot(1).await.unwrap(), 1);
    assert_eq!(b.oneshot(2).await.unwrap(), 2);
    assert_eq!(c.oneshot(3).await.unwrap(), 3);
    assert_eq!(
        since(start),
        secs(2),
        "one grant per second across all clones"
    );
    assert_eq!(*arrivals.lock().unwrap(), [(1, secs(0)), (2, secs(1))]);
}

#[tokio::test(start_paused = true)]
async fn calls_are_granted_in_the_order_their_futures_first_polled() {
    let limiter = RateLimiter::new(1, secs(1)).unwrap();
    let (mut service, handle) = limited(&limiter);
    let start = Instant::now();
    let (arrivals, _answers) = answer_all(handle, start);
    let mut futures = Vec::new();
    for n in 0..4 {
        service.ready().await.unwrap();
        futures.push(Box::pin(service.call(n)));
    }
    // Polled last to first: that is the queue's order. Then each runs in a
    // task of its own, as a server's calls do.
    for future in futures.iter_mut().rev() {
        let _ = poll!(future.as_mut());
    }
    let tasks: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let order: Vec<u32> = arrivals.lock().unwrap().iter().map(|(n, _)| *n).collect();
    assert_eq!(order, [3, 2, 1, 0]);
    assert_eq!(since(start), secs(3));
}

#[tokio::test(start_paused = true)]
async fn a_cost_function_charges_each_request_what_it_says() {
    let limiter = RateLimiter::builder()
        .quota(Quota::per_minute(10).unwrap())
        .quota(Quota::per_minute(1_000).unwrap().counting(Unit::Tokens))
        .build()
        .unwrap();
    let (mock, handle) = mock::pair::<String, String>();
    let start = Instant::now();
    let (arrivals, _answers) = answer_all(handle, start);
    let service = RateLimitLayer::new(limiter.clone())
        .cost(|prompt: &String| Cost::tokens(prompt.len() as u64))
        .layer(mock);
    service.clone().oneshot("x".repeat(600)).await.unwrap();
    let stats = limiter.stats();
    assert_eq!(
        (stats.quotas[0].in_window, stats.quotas[1].in_window),
        (1, 600)
    );
    // 400 tokens left this minute: the next 600 wait for the first to leave.
    service.clone().oneshot("y".repeat(600)).await.unwrap();
    assert_eq!(since(start), secs(60));
    assert_eq!(arrivals.lock().unwrap()[1].1, secs(60));
}

#[tokio::test(start_paused = true)]
async fn a_refusal_from_the_limiter_is_typed_and_the_inner_service_is_not_called() {
    let limiter = RateLimiter::new(5, secs(1)).unwrap();
    let (mock, mut handle) = mock::pair::<u32, u32>();
    handle.allow(10);
    let service = RateLimitLayer::new(limiter.clone())
        .cost(|n: &u32| Cost::requests(u64::from(*n)))
        .layer(mock);
    let too_big = service.clone().oneshot(6).await.unwrap_err();
    assert!(matches!(
        too_big,
        RateLimitError::Limited(AcquireError::CostExceedsQuota {
            cost: 6,
            max: 5,
            ..
        })
    ));
    limiter.close();
    let closed = service.oneshot(1).await.unwrap_err();
    assert!(matches!(
        closed,
        RateLimitError::Limited(AcquireError::Closed)
    ));
    assert!(closed.is_limited());
    assert!(
        matches!(handle.poll_request(), Poll::Ready(None)),
        "no request reached the inner service"
    );
}

#[tokio::test(start_paused = true)]
async fn an_error_of_the_inner_service_stays_apart_from_the_limiters() {
    let limiter = RateLimiter::new(5, secs(1)).unwrap();
    let (service, mut handle) = limited(&limiter);
    handle.allow(1);
    let call = tokio::spawn(service.oneshot(1));
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_error("the upstream failed");
    let err = call.await.unwrap().unwrap_err();
    assert!(!err.is_limited());
    assert_eq!(err.to_string(), "the upstream failed");
    assert_eq!(
        err.into_inner().map(|e| e.to_string()),
        Some("the upstream failed".to_owned())
    );
    assert_eq!(limiter.stats().granted, 1, "the grant went with the call");
}

#[tokio::test(start_paused = true)]
async fn max_wait_zero_refuses_at_once_with_the_retry_instant() {
    let limiter = RateLimiter::new(1, secs(30)).unwrap();
    let (mock, handle) = mock::pair::<u32, u32>();
    let start = Instant::now();
    let (arrivals, _answers) = answer_all(handle, start);
    let service = RateLimitLayer::new(limiter.clone())
        .max_wait(Duration::ZERO)
        .layer(mock);
    assert_eq!(service.clone().oneshot(1).await.unwrap(), 1);
    tokio::time::sleep(secs(10)).await;
    let refused = service.clone().oneshot(2).await.unwrap_err();
    assert_eq!(since(start), secs(10), "refused without waiting");
    assert_eq!(refused.retry_after(), Some(secs(20)));
    assert!(matches!(
        refused,
        RateLimitError::Limited(AcquireError::DeadlineExceeded { earliest: Some(at) }) if at - start == secs(30)
    ));
    assert_eq!(arrivals.lock().unwrap().len(), 1);
    assert_eq!(limiter.stats().queued, 0);
}

#[tokio::test(start_paused = true)]
async fn max_wait_grants_within_the_bound_and_refuses_beyond_it() {
    let limiter = RateLimiter::new(1, secs(1)).unwrap();
    let (service, handle) = limited(&limiter);
    let start = Instant::now();
    let (_arrivals, _answers) = answer_all(handle, start);
    let service = RateLimitLayer::new(limiter.clone())
        .max_wait(ms(999))
        .layer(service.into_inner());
    service.clone().oneshot(1).await.unwrap();
    let refused = service.clone().oneshot(2).await.unwrap_err();
    assert_eq!(refused.retry_after(), Some(secs(1)));
    assert_eq!(since(start), secs(0));
    let patient = RateLimitLayer::new(limiter.clone())
        .max_wait(secs(1))
        .layer(service.into_inner());
    patient.oneshot(3).await.unwrap();
    assert_eq!(since(start), secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_response_future_leaks_nothing() {
    let limiter = RateLimiter::new(1, secs(1)).unwrap();
    let (service, handle) = limited(&limiter);
    let start = Instant::now();
    let (arrivals, _answers) = answer_all(handle, start);
    service.clone().oneshot(1).await.unwrap();
    // Waiting for the next grant, then given up on.
    let timed_out = tokio::time::timeout(ms(500), service.clone().oneshot(2)).await;
    assert!(timed_out.is_err());
    let stats = limiter.stats();
    assert_eq!((stats.queued, stats.granted), (0, 1));
    // The next call takes the grant the dropped one would have had.
    service.clone().oneshot(3).await.unwrap();
    assert_eq!(since(start), secs(1));
    assert_eq!(*arrivals.lock().unwrap(), [(1, secs(0)), (3, secs(1))]);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_head_lets_the_next_call_through_at_once() {
    let limiter = RateLimiter::new(2, secs(1)).unwrap();
    let (service, handle) = limited(&limiter);
    let start = Instant::now();
    let (arrivals, _answers) = answer_all(handle, start);
    service.clone().oneshot(0).await.unwrap();
    let big = RateLimitLayer::new(limiter.clone())
        .cost(|_: &u32| Cost::requests(2))
        .layer(service.clone().into_inner());
    let mut head = Box::pin(big.oneshot(1));
    assert!(poll!(head.as_mut()).is_pending());
    let next = spawn_queued(service.clone().oneshot(2)).await;
    assert_eq!(limiter.stats().queued, 2);
    drop(head);
    assert_eq!(next.await.unwrap().unwrap(), 2);
    assert_eq!(*arrivals.lock().unwrap(), [(0, secs(0)), (2, secs(0))]);
}

/// A limiter that counts how the layer calls it, around a real one.
#[derive(Debug, Clone)]
struct Counting {
    inner: RateLimiter,
    waits: Arc<AtomicUsize>,
    tries: Arc<AtomicUsize>,
}

impl Limiter for Counting {
    fn acquire_cost(&self, cost: Cost) -> impl Future<Output = Result<Grant, AcquireError>> + Send {
        self.waits.fetch_add(1, Ordering::Relaxed);
        self.inner.acquire_cost(cost)
    }

    fn acquire_cost_before(
        &self,
        cost: Cost,
        deadline: Instant,
    ) -> impl Future<Output = Result<Grant, AcquireError>> + Send {
        self.waits.fetch_add(1, Ordering::Relaxed);
        self.inner.acquire_cost_before(cost, deadline)
    }

    fn try_acquire_cost(
        &self,
        cost: Cost,
    ) -> impl Future<Output = Result<Grant, TryAcquireError>> + Send {
        self.tries.fetch_add(1, Ordering::Relaxed);
        std::future::ready(self.inner.try_acquire_cost(cost))
    }

    fn pause_for(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        self.inner.pause_for(duration);
        std::future::ready(())
    }

    fn snapshot(&self) -> Stats {
        self.inner.stats()
    }
}

#[tokio::test(start_paused = true)]
async fn the_layer_works_with_any_limiter() {
    let counting = Counting {
        inner: RateLimiter::new(10, secs(1)).unwrap(),
        waits: Arc::default(),
        tries: Arc::default(),
    };
    let (mock, handle) = mock::pair::<u32, u32>();
    let (_arrivals, _answers) = answer_all(handle, Instant::now());
    let waiting = RateLimitLayer::new(counting.clone()).layer(mock.clone());
    let trying = RateLimitLayer::new(counting.clone())
        .max_wait(Duration::ZERO)
        .layer(mock);
    waiting.oneshot(1).await.unwrap();
    trying.oneshot(2).await.unwrap();
    assert_eq!(counting.waits.load(Ordering::Relaxed), 1);
    assert_eq!(counting.tries.load(Ordering::Relaxed), 1);
    assert_eq!(counting.snapshot().granted, 2);
}

#[cfg(feature = "redis")]
#[test]
fn the_layer_takes_the_redis_limiter() {
    fn assert_service<S: Service<u32, Error = RateLimitError<paceline::tower::BoxError>>>() {}
    assert_service::<RateLimit<Mock<u32, u32>, paceline::redis::RedisRateLimiter>>();
}

type Call = (String, u32);
type KeyedMock = KeyedRateLimit<Mock<Call, Call>, String, fn(&Call) -> String>;

fn user(call: &Call) -> String {
    call.0.clone()
}

fn keyed_service(
    limiter: &KeyedRateLimiter<String>,
    start: Instant,
) -> (KeyedMock, Arrivals<Call>) {
    let (mock, handle) = mock::pair::<Call, Call>();
    let (arrivals, _answers) = answer_all(handle, start);
    let layer = KeyedRateLimitLayer::new(limiter.clone(), user as fn(&Call) -> String);
    (layer.layer(mock), arrivals)
}

#[tokio::test(start_paused = true)]
async fn the_keyed_layer_limits_each_key_on_its_own() {
    let limiter = KeyedRateLimiter::<String>::new(1, secs(1)).unwrap();
    let start = Instant::now();
    let (service, arrivals) = keyed_service(&limiter, start);
    let calls: Vec<_> = [
        ("alice", 1),
        ("alice", 2),
        ("bob", 3),
        ("alice", 4),
        ("bob", 5),
    ]
    .into_iter()
    .map(|(key, n)| tokio::spawn(service.clone().oneshot((key.to_owned(), n))))
    .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let mut seen: Vec<(u32, Duration)> = arrivals
        .lock()
        .unwrap()
        .iter()
        .map(|((_, n), at)| (*n, *at))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            (1, secs(0)),
            (2, secs(1)),
            (3, secs(0)),
            (4, secs(2)),
            (5, secs(1))
        ]
    );
    assert_eq!(limiter.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_keyed_layer_surfaces_a_full_map_as_a_typed_error() {
    let limiter = KeyedRateLimiter::<String>::builder()
        .quota(Quota::per_minute(10).unwrap())
        .max_keys(1)
        .build()
        .unwrap();
    let (service, arrivals) = keyed_service(&limiter, Instant::now());
    service.clone().oneshot(("alice".into(), 1)).await.unwrap();
    let refused = service
        .clone()
        .oneshot(("bob".into(), 2))
        .await
        .unwrap_err();
    assert!(matches!(
        refused,
        RateLimitError::Limited(KeyedError::TooManyKeys { max_keys: 1 })
    ));
    assert_eq!(refused.retry_after(), None);
    assert_eq!(arrivals.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_keyed_layer_charges_a_cost_and_refuses_at_once_when_asked() {
    let limiter = KeyedRateLimiter::<String>::new(10, secs(10)).unwrap();
    let (mock, handle) = mock::pair::<(String, u32), (String, u32)>();
    let start = Instant::now();
    let (arrivals, _answers) = answer_all(handle, start);
    let service = KeyedRateLimitLayer::new(limiter.clone(), |(key, _): &(String, u32)| key.clone())
        .cost(|(_, n): &(String, u32)| Cost::requests(u64::from(*n)))
        .max_wait(Duration::ZERO)
        .layer(mock);
    service.clone().oneshot(("alice".into(), 7)).await.unwrap();
    tokio::time::sleep(secs(4)).await;
    let refused = service
        .clone()
        .oneshot(("alice".into(), 4))
        .await
        .unwrap_err();
    assert_eq!(refused.retry_after(), Some(secs(6)));
    service.clone().oneshot(("alice".into(), 3)).await.unwrap();
    service.oneshot(("bob".into(), 10)).await.unwrap();
    assert_eq!(limiter.key_stats("alice").unwrap().in_window, 10);
    assert_eq!(arrivals.lock().unwrap().len(), 3);
    assert_eq!(since(start), secs(4));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_keyed_response_future_leaves_its_key_idle() {
    let limiter = KeyedRateLimiter::<String>::new(1, secs(1)).unwrap();
    let (service, _arrivals) = keyed_service(&limiter, Instant::now());
    service.clone().oneshot(("alice".into(), 1)).await.unwrap();
    let timed_out =
        tokio::time::timeout(ms(100), service.clone().oneshot(("alice".into(), 2))).await;
    assert!(timed_out.is_err());
    assert_eq!(limiter.key_stats("alice").unwrap().queued, 0);
    tokio::time::sleep(ms(900)).await;
    assert_eq!(limiter.evict_idle(), 1);
}
