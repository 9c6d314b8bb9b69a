//! Executor edge cases: streams and shutdown, huge durations, 429s that end
//! an item, attempts kept when an item is cut short, backoff without a slot,
//! and tracing spans.
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use paceline::{
    ClassConfig, Executor, Failure, ItemError, Jitter, JobStatus, RateLimiter, RetryPolicy,
    Workload,
};

#[derive(Debug, Clone)]
enum Act {
    Ok(Duration),
    Retry(Duration),
    RateLimited(Duration),
    Panic,
}

struct Item {
    acts: Vec<Act>,
    calls: AtomicUsize,
}

struct W;

impl Workload for W {
    type Job = Vec<Vec<Act>>;
    type Item = Item;
    type Output = u32;
    type Error = String;
    type Class = ();

    fn items(&self, job: &Self::Job) -> Vec<Item> {
        job.iter()
            .map(|acts| Item {
                acts: acts.clone(),
                calls: AtomicUsize::new(0),
            })
            .collect()
    }
    fn class(&self, _: &Self::Job) {}
    fn process(
        &self,
        _: &Self::Job,
        item: &Item,
        attempt: u32,
    ) -> impl Future<Output = Result<u32, String>> + Send {
        let n = item.calls.fetch_add(1, Ordering::SeqCst);
        let act = item.acts[n.min(item.acts.len() - 1)].clone();
        async move {
            match act {
                Act::Ok(d) => {
                    tokio::time::sleep(d).await;
                    Ok(attempt)
                }
                Act::Retry(d) => {
                    tokio::time::sleep(d).await;
                    Err("500".into())
                }
                Act::RateLimited(d) => Err(format!("429 {}", d.as_secs())),
                Act::Panic => panic!("boom"),
            }
        }
    }
    fn classify(&self, e: &String) -> Failure {
        match e.strip_prefix("429 ") {
            Some(s) => Failure::RateLimited {
                retry_after: Some(Duration::from_secs(s.parse().unwrap())),
            },
            None => Failure::Retry,
        }
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn build(
    limiter: RateLimiter,
    jobs: usize,
    items: usize,
    timeout: Option<Duration>,
) -> Executor<W> {
    Executor::builder(W)
        .job_concurrency(jobs)
        .class((), ClassConfig::new(limiter).item_concurrency(items))
        .retry(RetryPolicy::default().jitter(Jitter::None))
        .job_timeout(timeout)
        .build()
        .unwrap()
}

fn lim() -> RateLimiter {
    RateLimiter::new(100, secs(1)).unwrap()
}

/// After shutdown a job stream pulls no more jobs: they stay in the source.
#[tokio::test(start_paused = true)]
async fn stream_does_not_drain_its_source_after_shutdown() {
    let executor = build(lim(), 3, 5, None);
    executor.shutdown(Duration::ZERO).await;
    let pulled = Arc::new(AtomicUsize::new(0));
    let p = pulled.clone();
    let source = futures::stream::iter(0..100).map(move |_| {
        p.fetch_add(1, Ordering::SeqCst);
        vec![vec![Act::Ok(secs(1))]]
    });
    let out: Vec<_> = executor.run_stream(source).collect().await;
    assert!(out.iter().all(|r| r.is_err()));
    assert!(
        pulled.load(Ordering::SeqCst) <= 1,
        "{} jobs pulled from the source and dropped",
        pulled.load(Ordering::SeqCst)
    );
}

/// With the only job slot taken by another submitter, the stream waits.
#[tokio::test(start_paused = true)]
async fn stream_pulls_only_when_a_job_slot_is_free() {
    let executor = build(lim(), 1, 5, None);
    let busy = executor.submit(vec![vec![Act::Ok(secs(100))]]).unwrap();
    let pulled = Arc::new(AtomicUsize::new(0));
    let p = pulled.clone();
    let source = futures::stream::iter(0..10).map(move |_| {
        p.fetch_add(1, Ordering::SeqCst);
        vec![vec![Act::Ok(secs(1))]]
    });
    let mut stream = Box::pin(executor.run_stream(source));
    let _ = tokio::time::timeout(secs(10), stream.next()).await;
    assert_eq!(executor.stats().jobs_active, 1);
    assert_eq!(
        pulled.load(Ordering::SeqCst),
        0,
        "pulled a job while no slot was free"
    );
    drop(busy);
}

/// A 429 whose delay is past the job's deadline fails the item and still
/// pauses the class: the other jobs must not keep hitting the server.
#[tokio::test(start_paused = true)]
async fn a_429_past_the_deadline_still_pauses_the_class() {
    let limiter = lim();
    let executor = build(limiter.clone(), 3, 5, Some(secs(600)));
    let report = executor
        .submit(vec![vec![Act::RateLimited(secs(3600))]])
        .unwrap()
        .await;
    assert!(matches!(
        report.items[0].result,
        Err(ItemError::RetryAfterDeadline { .. })
    ));
    assert!(
        limiter.stats().paused_until.is_some(),
        "the server's 429 was ignored for the class"
    );
}

/// `job_timeout(Some(Duration::MAX))` means no deadline, not an overflow.
#[tokio::test(start_paused = true)]
async fn a_huge_job_timeout_does_not_panic() {
    let executor = build(lim(), 3, 5, Some(Duration::MAX));
    let submitted = std::panic::AssertUnwindSafe(async {
        executor.submit(vec![vec![Act::Ok(secs(1))]]).unwrap().await
    })
    .catch_unwind()
    .await;
    assert!(submitted.is_ok(), "submit panicked");
}

/// A huge server delay with a job deadline is past the deadline, not an
/// overflow.
#[tokio::test(start_paused = true)]
async fn a_huge_retry_after_is_retry_after_deadline_not_a_panic() {
    let executor = build(lim(), 3, 5, Some(secs(600)));
    let report = executor
        .submit(vec![vec![Act::RateLimited(Duration::from_secs(u64::MAX))]])
        .unwrap()
        .await;
    assert!(
        matches!(
            report.items[0].result,
            Err(ItemError::RetryAfterDeadline { .. })
        ),
        "{:?}",
        report.items[0].result
    );
}

/// An item cut short by the job timeout keeps the attempts it made.
#[tokio::test(start_paused = true)]
async fn a_timed_out_item_keeps_its_attempts() {
    let executor = build(lim(), 1, 1, Some(secs(50)));
    let report = executor
        .submit(vec![vec![Act::Retry(secs(1)), Act::Ok(secs(100))]])
        .unwrap()
        .await;
    assert_eq!(report.status, JobStatus::TimedOut);
    assert_eq!(
        report.items[0].attempts, 2,
        "attempts made before the timeout were dropped"
    );
}

/// An item that panics on its third attempt reports three attempts.
#[tokio::test(start_paused = true)]
async fn a_panicking_item_keeps_its_attempts() {
    let executor = build(lim(), 1, 1, None);
    let report = executor
        .submit(vec![vec![
            Act::Retry(secs(0)),
            Act::Retry(secs(0)),
            Act::Panic,
        ]])
        .unwrap()
        .await;
    assert!(matches!(
        report.items[0].result,
        Err(ItemError::Panicked(_))
    ));
    assert_eq!(report.items[0].attempts, 3);
}

// ---- tracing: which span is the parent of an item span ----

mod spans {
    use super::*;
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    thread_local! { static STACK: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) }; }

    #[derive(Default)]
    pub(super) struct Rec {
        next: AtomicU64,
        pub(super) spans: Mutex<Vec<(u64, &'static str, Option<u64>)>>,
    }

    pub(super) struct Sub(pub(super) Arc<Rec>);

    impl Subscriber for Sub {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, attrs: &Attributes<'_>) -> Id {
            let id = self.0.next.fetch_add(1, Ordering::SeqCst) + 1;
            let parent = if let Some(p) = attrs.parent() {
                Some(p.into_u64())
            } else if attrs.is_contextual() {
                STACK.with(|s| s.borrow().last().copied())
            } else {
                None
            };
            self.0
                .spans
                .lock()
                .unwrap()
                .push((id, attrs.metadata().name(), parent));
            Id::from_u64(id)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, _: &Event<'_>) {}
        fn enter(&self, id: &Id) {
            STACK.with(|s| s.borrow_mut().push(id.into_u64()));
        }
        fn exit(&self, _: &Id) {
            STACK.with(|s| s.borrow_mut().pop());
        }
    }
}

/// An item started from another item's completion is not that item's child:
/// spans would chain without end (each keeps its parent alive in a registry)
/// and logs would show unrelated items as context.
#[tokio::test(start_paused = true)]
async fn item_spans_are_not_children_of_other_items() {
    let rec = Arc::new(spans::Rec::default());
    let _guard = tracing::subscriber::set_default(spans::Sub(rec.clone()));
    let executor = build(lim(), 1, 1, None);
    executor
        .submit(vec![vec![Act::Ok(secs(1))]; 3])
        .unwrap()
        .await;
    let spans = rec.spans.lock().unwrap().clone();
    let items: Vec<_> = spans.iter().filter(|s| s.1 == "item").collect();
    assert_eq!(items.len(), 3);
    for (id, _, parent) in &items {
        let parent_name = parent
            .and_then(|p| spans.iter().find(|s| s.0 == p))
            .map(|s| s.1);
        assert_ne!(
            parent_name,
            Some("item"),
            "item span {id} has an item span as parent: {spans:?}"
        );
    }
}

/// An item in retry backoff gives its global slot back: another admitted
/// job's ready item runs at once instead of waiting out the backoff.
#[tokio::test(start_paused = true)]
async fn an_item_in_backoff_does_not_hold_a_global_slot() {
    let executor = Executor::builder(W)
        .job_concurrency(2)
        .class((), ClassConfig::new(lim()).max_in_flight(1))
        .retry(RetryPolicy::default().jitter(Jitter::None))
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let a = executor
        .submit(vec![vec![
            Act::Retry(secs(0)),
            Act::Retry(secs(0)),
            Act::Ok(secs(0)),
        ]])
        .unwrap();
    let b = executor.submit(vec![vec![Act::Ok(secs(0))]]).unwrap();
    let (_, b) = futures::join!(a, b);
    assert_eq!(
        b.items[0].finished_at - start,
        Duration::ZERO,
        "the global slot sat idle during backoff"
    );
}

/// `shutdown(Duration::MAX)` waits as long as it takes, without overflow.
#[tokio::test(start_paused = true)]
async fn shutdown_with_an_unbounded_grace_does_not_panic() {
    let executor = build(lim(), 1, 1, None);
    let r = std::panic::AssertUnwindSafe(executor.shutdown(Duration::MAX))
        .catch_unwind()
        .await;
    assert!(r.is_ok());
}
