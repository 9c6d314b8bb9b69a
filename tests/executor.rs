//! The executor under tokio's paused clock, with exact instants.
mod common;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{secs, since};
use futures::StreamExt;
use futures::future::join_all;
use paceline::{
    BuildError, ClassConfig, Executor, Failure, ItemError, Jitter, JobStatus, RateLimiter,
    RetryPolicy, SubmitError, Workload,
};
use tokio::time::Instant;

/// What one attempt of a scripted item does.
#[derive(Debug, Clone)]
enum Act {
    Ok(Duration),
    Retry(Duration),
    Fatal,
    RateLimited(Option<Duration>),
    Panic,
}

/// A job is a list of items; an item is the script of its calls (the last
/// act repeats).
#[derive(Debug, Clone)]
struct Job {
    class: &'static str,
    items: Vec<Vec<Act>>,
}

/// An item's script and how many calls it has had.
#[derive(Debug)]
struct Script {
    acts: Vec<Act>,
    calls: AtomicUsize,
}

struct Scripted {
    calls: Arc<AtomicUsize>,
}

impl Workload for Scripted {
    type Job = Job;
    type Item = Script;
    type Output = u32;
    type Error = String;
    type Class = &'static str;

    fn items(&self, job: &Job) -> Vec<Script> {
        job.items
            .iter()
            .map(|acts| Script {
                acts: acts.clone(),
                calls: AtomicUsize::new(0),
            })
            .collect()
    }

    fn class(&self, job: &Job) -> &'static str {
        job.class
    }

    fn process(
        &self,
        _job: &Job,
        script: &Script,
        attempt: u32,
    ) -> impl Future<Output = Result<u32, String>> + Send {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let call = script.calls.fetch_add(1, Ordering::SeqCst);
        let act = script.acts[call.min(script.acts.len() - 1)].clone();
        async move {
            match act {
                Act::Ok(d) => {
                    tokio::time::sleep(d).await;
                    Ok(attempt)
                }
                Act::Retry(d) => {
                    tokio::time::sleep(d).await;
                    Err("500 internal".to_owned())
                }
                Act::Fatal => Err("400 bad request".to_owned()),
                Act::RateLimited(after) => Err(format!("429 retry in {after:?}")),
                Act::Panic => panic!("the item blew up"),
            }
        }
    }

    fn classify(&self, error: &String) -> Failure {
        if error.starts_with("400") {
            Failure::Fatal
        } else if let Some(rest) = error.strip_prefix("429 retry in ") {
            let retry_after = rest
                .strip_prefix("Some(")
                .and_then(|r| r.strip_suffix("s)"))
                .and_then(|s| s.parse().ok())
                .map(Duration::from_secs);
            Failure::RateLimited { retry_after }
        } else {
            Failure::Retry
        }
    }
}

fn ok(secs_each: u64, n: usize) -> Job {
    Job {
        class: "flash",
        items: vec![vec![Act::Ok(secs(secs_each))]; n],
    }
}

fn executor(
    limiter: RateLimiter,
    jobs: usize,
    items_per_job: usize,
    global: Option<usize>,
) -> Executor<Scripted> {
    let mut class = ClassConfig::new(limiter).item_concurrency(items_per_job);
    if let Some(global) = global {
        class = class.max_in_flight(global);
    }
    Executor::builder(Scripted {
        calls: Arc::new(AtomicUsize::new(0)),
    })
    .job_concurrency(jobs)
    .class("flash", class)
    .retry(RetryPolicy::default().jitter(Jitter::None))
    .build()
    .unwrap()
}

async fn makespan(executor: &Executor<Scripted>, jobs: usize, items: usize) -> Duration {
    let start = Instant::now();
    let handles: Vec<_> = (0..jobs)
        .map(|_| executor.submit(ok(84, items)).unwrap())
        .collect();
    for report in join_all(handles).await {
        assert_eq!(report.status, JobStatus::Completed);
        assert_eq!(report.items.len(), items);
    }
    since(start)
}

#[tokio::test(start_paused = true)]
async fn the_reference_design_leaves_slots_idle_at_each_job_tail() {
    let limiter = RateLimiter::new(15, secs(60)).unwrap();
    let executor = executor(limiter, 3, 5, None);
    assert_eq!(makespan(&executor, 10, 10).await, secs(672));
}

#[tokio::test(start_paused = true)]
async fn free_global_slots_are_filled_by_other_jobs_items() {
    let limiter = RateLimiter::new(15, secs(60)).unwrap();
    let executor = executor(limiter, 3, 15, Some(15));
    // 100 prompts of 84 s on 15 slots: 7 rounds, the lower bound.
    assert_eq!(makespan(&executor, 10, 10).await, secs(588));
}

#[tokio::test(start_paused = true)]
async fn the_rate_binds_when_it_is_the_tighter_bound() {
    let limiter = RateLimiter::new(5, secs(60)).unwrap();
    let executor = executor(limiter, 3, 15, Some(15));
    // 20 prompts at 5 per minute: the last is granted at 180 s.
    assert_eq!(makespan(&executor, 2, 10).await, secs(180 + 84));
}

#[tokio::test(start_paused = true)]
async fn a_failing_item_is_retried_with_exponential_backoff() {
    let executor = executor(RateLimiter::new(100, secs(1)).unwrap(), 1, 5, None);
    let start = Instant::now();
    let job = Job {
        class: "flash",
        items: vec![vec![
            Act::Retry(secs(1)),
            Act::Retry(secs(1)),
            Act::Ok(secs(1)),
        ]],
    };
    let report = executor.submit(job).unwrap().await;
    let item = &report.items[0];
    assert_eq!(item.result, Ok(3));
    assert_eq!(item.attempts, 3);
    // 1 s, backoff 2 s, 1 s, backoff 4 s, 1 s.
    assert_eq!(item.finished_at - start, secs(9));
}

#[tokio::test(start_paused = true)]
async fn retries_run_out_and_fatal_errors_stop_at_once() {
    let executor = executor(RateLimiter::new(100, secs(1)).unwrap(), 1, 5, None);
    let job = Job {
        class: "flash",
        items: vec![
            vec![Act::Retry(Duration::ZERO)],
            vec![Act::Fatal],
            vec![Act::Ok(secs(1))],
        ],
    };
    let report = executor.submit(job).unwrap().await;
    assert_eq!(report.status, JobStatus::Failed);
    assert_eq!(
        report.items[0].result,
        Err(ItemError::Failed("500 internal".to_owned()))
    );
    assert_eq!(report.items[0].attempts, 3);
    assert_eq!(
        report.items[1].result,
        Err(ItemError::Failed("400 bad request".to_owned()))
    );
    assert_eq!(report.items[1].attempts, 1);
    assert_eq!(report.items[2].result, Ok(1));
    assert_eq!((report.succeeded(), report.failed()), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn a_429_pauses_the_class_and_retries_without_spending_an_attempt() {
    let limiter = RateLimiter::new(100, secs(60)).unwrap();
    let executor = executor(limiter.clone(), 1, 5, None);
    let start = Instant::now();
    let job = Job {
        class: "flash",
        items: vec![
            vec![Act::RateLimited(Some(secs(20))), Act::Ok(Duration::ZERO)],
            vec![Act::Ok(secs(5)), Act::Ok(secs(5))],
        ],
    };
    let handle = executor.submit(job).unwrap();
    let report = handle.await;
    let limited = &report.items[0];
    assert_eq!(
        limited.result,
        Ok(1),
        "the 429 did not spend the first attempt"
    );
    assert_eq!((limited.attempts, limited.rate_limited), (1, 1));
    assert_eq!(limited.finished_at - start, secs(20));
    assert_eq!(limited.limiter_wait, secs(20));
    // The other item asked the limiter just after the 429: the pause held it
    // too, until 20 s, then it ran for 5 s.
    assert_eq!(report.items[1].finished_at - start, secs(25));
    assert_eq!(report.items[1].limiter_wait, secs(20));
    assert_eq!(limiter.stats().in_window, 3);
}

#[tokio::test(start_paused = true)]
async fn a_retry_delay_past_the_job_deadline_fails_the_item_at_once() {
    let executor = Executor::builder(Scripted {
        calls: Arc::new(AtomicUsize::new(0)),
    })
    .class(
        "flash",
        ClassConfig::new(RateLimiter::new(100, secs(60)).unwrap()),
    )
    .job_timeout(Some(secs(600)))
    .build()
    .unwrap();
    let start = Instant::now();
    let job = Job {
        class: "flash",
        items: vec![vec![Act::RateLimited(Some(secs(36_000)))]],
    };
    let report = executor.submit(job).unwrap().await;
    assert!(matches!(
        report.items[0].result,
        Err(ItemError::RetryAfterDeadline { retry_after, .. }) if retry_after == secs(36_000)
    ));
    assert_eq!(since(start), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_job_timeout_stops_its_items_and_the_limiter_leaks_nothing() {
    let limiter = RateLimiter::new(100, secs(60)).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let executor = Executor::builder(Scripted {
        calls: calls.clone(),
    })
    .class(
        "flash",
        ClassConfig::new(limiter.clone()).item_concurrency(1),
    )
    .job_timeout(Some(secs(150)))
    .build()
    .unwrap();
    let start = Instant::now();
    let report = executor.submit(ok(100, 3)).unwrap().await;
    assert_eq!(report.status, JobStatus::TimedOut);
    assert_eq!(report.finished_at - start, secs(150));
    assert_eq!(report.items[0].result, Ok(1));
    assert_eq!(report.items[1].result, Err(ItemError::JobTimedOut));
    assert!(
        report.items[1].started_at.is_some(),
        "it was stopped in flight"
    );
    assert_eq!(report.items[2].result, Err(ItemError::JobTimedOut));
    assert_eq!(report.items[2].started_at, None, "it never started");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let stats = executor.stats();
    assert_eq!(
        (stats.items_in_flight, stats.jobs_active, stats.jobs_failed),
        (0, 0, 1)
    );
    assert_eq!(limiter.stats().queued, 0);
}

#[tokio::test(start_paused = true)]
async fn an_attempt_past_the_item_timeout_is_retried_then_reported() {
    let executor = Executor::builder(Scripted {
        calls: Arc::new(AtomicUsize::new(0)),
    })
    .class(
        "flash",
        ClassConfig::new(RateLimiter::new(100, secs(60)).unwrap()),
    )
    .retry(RetryPolicy::default().attempts(2).jitter(Jitter::None))
    .item_timeout(Some(secs(10)))
    .build()
    .unwrap();
    let start = Instant::now();
    let job = Job {
        class: "flash",
        items: vec![
            vec![Act::Ok(secs(60))],
            vec![Act::Ok(secs(60)), Act::Ok(secs(1))],
        ],
    };
    let report = executor.submit(job).unwrap().await;
    assert_eq!(
        report.items[0].result,
        Err(ItemError::AttemptTimedOut(secs(10)))
    );
    assert_eq!(report.items[0].attempts, 2);
    assert_eq!(report.items[1].result, Ok(2));
    // 10 s timeout, 2 s backoff, then 1 s.
    assert_eq!(report.items[1].finished_at - start, secs(13));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_item_fails_alone() {
    let executor = executor(RateLimiter::new(100, secs(1)).unwrap(), 2, 5, None);
    let job = Job {
        class: "flash",
        items: vec![vec![Act::Panic], vec![Act::Ok(secs(1))]],
    };
    let report = executor.submit(job).unwrap().await;
    assert_eq!(
        report.items[0].result,
        Err(ItemError::Panicked("the item blew up".to_owned()))
    );
    assert_eq!(report.items[1].result, Ok(1));
    let next = executor.submit(ok(1, 2)).unwrap().await;
    assert_eq!(next.status, JobStatus::Completed);
}

#[tokio::test(start_paused = true)]
async fn retention_keeps_the_last_summaries_only() {
    let executor = Executor::builder(Scripted {
        calls: Arc::new(AtomicUsize::new(0)),
    })
    .class(
        "flash",
        ClassConfig::new(RateLimiter::new(100, secs(1)).unwrap()),
    )
    .retention(2, 1)
    .build()
    .unwrap();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(executor.submit(ok(1, 1)).unwrap().await.id);
    }
    for _ in 0..3 {
        let fatal = Job {
            class: "flash",
            items: vec![vec![Act::Fatal]],
        };
        ids.push(executor.submit(fatal).unwrap().await.id);
    }
    let completed: Vec<_> = executor.completed_jobs().iter().map(|s| s.id).collect();
    let failed: Vec<_> = executor.failed_jobs().iter().map(|s| s.id).collect();
    assert_eq!(completed, ids[3..5]);
    assert_eq!(failed, ids[7..]);
    let stats = executor.stats();
    assert_eq!((stats.jobs_completed, stats.jobs_failed), (5, 3));
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_jobs_finish_within_the_grace_then_cancels_the_rest() {
    let executor = executor(RateLimiter::new(100, secs(1)).unwrap(), 1, 1, None);
    let start = Instant::now();
    let quick = executor.submit(ok(5, 1)).unwrap();
    let slow = executor.submit(ok(100, 2)).unwrap();
    let report = executor.shutdown(secs(50)).await;
    assert_eq!(report.cancelled_jobs, 1);
    assert_eq!(since(start), secs(50));
    assert_eq!(quick.await.status, JobStatus::Completed);
    let slow = slow.await;
    assert_eq!(slow.status, JobStatus::Cancelled);
    assert_eq!(slow.items[0].result, Err(ItemError::Cancelled));
    assert_eq!(slow.items[1].result, Err(ItemError::Cancelled));
    assert_eq!(
        executor.submit(ok(1, 1)).unwrap_err(),
        SubmitError::ShuttingDown
    );
}

#[tokio::test(start_paused = true)]
async fn every_submitted_item_ends_with_an_outcome() {
    let executor = executor(RateLimiter::new(7, secs(3)).unwrap(), 2, 3, Some(4));
    let acts = [
        Act::Ok(secs(2)),
        Act::Retry(secs(1)),
        Act::Fatal,
        Act::RateLimited(Some(secs(4))),
        Act::Panic,
    ];
    let handles: Vec<_> = (0..12)
        .map(|j| {
            let items = (0..(j % 5)).map(|i| vec![acts[(i + j) % 5].clone(), Act::Ok(secs(1))]);
            executor
                .submit(Job {
                    class: "flash",
                    items: items.collect(),
                })
                .unwrap()
        })
        .collect();
    for (j, report) in join_all(handles).await.into_iter().enumerate() {
        assert_eq!(report.items.len(), j % 5);
        for (i, item) in report.items.iter().enumerate() {
            assert_eq!(item.index, i);
        }
    }
    let stats = executor.stats();
    assert_eq!(stats.jobs_completed + stats.jobs_failed, 12);
    assert_eq!(
        (stats.jobs_active, stats.jobs_waiting, stats.items_in_flight),
        (0, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_of_jobs_is_pulled_only_when_a_job_slot_is_free() {
    let executor = executor(RateLimiter::new(100, secs(1)).unwrap(), 2, 5, None);
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = pulled.clone();
    let jobs = futures::stream::iter(0..6).map(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        ok(10, 1)
    });
    let mut reports = std::pin::pin!(executor.run_stream(jobs));
    tokio::select! {
        _ = reports.next() => panic!("no job ends before 10 s"),
        _ = tokio::time::sleep(secs(5)) => {}
    }
    assert_eq!(
        pulled.load(Ordering::SeqCst),
        2,
        "two slots, two jobs pulled"
    );
    let first = reports.next().await.unwrap().unwrap();
    assert_eq!(first.status, JobStatus::Completed);
    assert_eq!(pulled.load(Ordering::SeqCst), 4, "both slots freed at 10 s");
    let rest: Vec<_> = reports.collect().await;
    assert_eq!(rest.len(), 5);
    assert_eq!(pulled.load(Ordering::SeqCst), 6);
}

#[tokio::test(start_paused = true)]
async fn stats_count_waiting_and_active_jobs_and_items_in_flight() {
    let executor = executor(RateLimiter::new(100, secs(1)).unwrap(), 2, 3, None);
    let handles: Vec<_> = (0..4)
        .map(|_| executor.submit(ok(10, 5)).unwrap())
        .collect();
    tokio::task::yield_now().await;
    let stats = executor.stats();
    assert_eq!(
        (stats.jobs_waiting, stats.jobs_active, stats.items_in_flight),
        (2, 2, 6)
    );
    assert_eq!(stats.classes[0].class, "\"flash\"");
    join_all(handles).await;
    assert_eq!(executor.stats().jobs_completed, 4);
}

#[tokio::test(start_paused = true)]
async fn bad_configuration_and_unknown_classes_are_typed_errors() {
    let limiter = RateLimiter::new(1, secs(1)).unwrap();
    let build = |jobs, items| {
        Executor::builder(Scripted {
            calls: Arc::new(AtomicUsize::new(0)),
        })
        .job_concurrency(jobs)
        .class(
            "flash",
            ClassConfig::new(limiter.clone()).item_concurrency(items),
        )
        .build()
    };
    assert_eq!(build(0, 1).unwrap_err(), BuildError::ZeroJobConcurrency);
    assert!(matches!(
        build(1, 0).unwrap_err(),
        BuildError::ZeroItemConcurrency { .. }
    ));
    let executor = build(1, 1).unwrap();
    let pro = Job {
        class: "pro",
        items: vec![],
    };
    assert!(matches!(
        executor.submit(pro),
        Err(SubmitError::UnknownClass { .. })
    ));
}

#[test]
fn building_outside_a_runtime_is_an_error() {
    let result = Executor::builder(Scripted {
        calls: Arc::new(AtomicUsize::new(0)),
    })
    .build();
    assert_eq!(result.unwrap_err(), BuildError::NoRuntime);
}

/// Counts items in flight, per job and in all, and keeps the highest counts.
#[derive(Default)]
struct Gauges {
    now: Vec<AtomicUsize>,
    most: Vec<AtomicUsize>,
    all_now: AtomicUsize,
    all_most: AtomicUsize,
}

struct Tracked {
    gauges: Arc<Gauges>,
}

impl Workload for Tracked {
    /// A job's number and the seconds each of its items takes.
    type Job = (usize, Vec<u64>);
    type Item = u64;
    type Output = ();
    type Error = String;
    type Class = ();

    fn items(&self, job: &Self::Job) -> Vec<u64> {
        job.1.clone()
    }

    fn class(&self, _job: &Self::Job) {}

    fn item_concurrency(&self, job: &Self::Job) -> Option<usize> {
        // Odd jobs ask for a tighter bound than the class's.
        (job.0 % 2 == 1).then_some(2)
    }

    fn process(
        &self,
        job: &Self::Job,
        seconds: &u64,
        _attempt: u32,
    ) -> impl Future<Output = Result<(), String>> + Send {
        let (gauges, id, seconds) = (self.gauges.clone(), job.0, *seconds);
        async move {
            let mine = gauges.now[id].fetch_add(1, Ordering::SeqCst) + 1;
            gauges.most[id].fetch_max(mine, Ordering::SeqCst);
            let all = gauges.all_now.fetch_add(1, Ordering::SeqCst) + 1;
            gauges.all_most.fetch_max(all, Ordering::SeqCst);
            tokio::time::sleep(secs(seconds)).await;
            gauges.now[id].fetch_sub(1, Ordering::SeqCst);
            gauges.all_now.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    }
}

#[tokio::test(start_paused = true)]
async fn job_item_and_global_bounds_are_never_exceeded_and_always_filled() {
    let jobs = 12;
    let gauges = Arc::new(Gauges {
        now: (0..jobs).map(|_| AtomicUsize::new(0)).collect(),
        most: (0..jobs).map(|_| AtomicUsize::new(0)).collect(),
        ..Gauges::default()
    });
    let executor = Executor::builder(Tracked {
        gauges: gauges.clone(),
    })
    .job_concurrency(3)
    .class(
        (),
        ClassConfig::new(RateLimiter::new(1_000, secs(1)).unwrap())
            .item_concurrency(4)
            .max_in_flight(7),
    )
    .build()
    .unwrap();
    let handles: Vec<_> = (0..jobs)
        .map(|id| {
            let durations = (0..9).map(|i| 1 + ((id * 7 + i * 3) % 5) as u64).collect();
            executor.submit((id, durations)).unwrap()
        })
        .collect();
    for report in join_all(handles).await {
        assert_eq!(report.status, JobStatus::Completed);
    }
    for id in 0..jobs {
        let bound = if id % 2 == 1 { 2 } else { 4 };
        assert_eq!(gauges.most[id].load(Ordering::SeqCst), bound, "job {id}");
    }
    assert_eq!(gauges.all_most.load(Ordering::SeqCst), 7);
}
