//! The executor's own cost per item, against the least a hand-written
//! equivalent does, in one run.
//!
//! Items take no time and the limiter never binds, so everything measured is
//! scheduling: the executor (its bounds, its per-item task, its reports)
//! against one `tokio::spawn` per item behind a `tokio::sync::Semaphore` with
//! the same total concurrency, which also awaits the same never-binding
//! limiter per item, so both pay for the limiter alike.
//!
//! - `jobs_100x100`: 100 jobs of 100 items, 4 jobs at once, 64 items per job,
//!   256 items in flight at most: 256 at once for both.
//! - `job_1x10000`: one job of 10,000 items: 64 at once for both.
//!
//! Every scenario runs as one task on a two-worker runtime, so that neither
//! side gets the benchmark's own thread as a third worker.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use paceline::{ClassConfig, Executor, RateLimiter, Workload};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;

/// A rate no benchmark here can reach: the limit must never bind.
const UNBOUND_PER_SECOND: u64 = 1_000_000_000;

const JOB_CONCURRENCY: usize = 4;
const ITEM_CONCURRENCY: usize = 64;
const MAX_IN_FLIGHT: usize = 256;

/// A scenario: `jobs` jobs of `items` items each.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    name: &'static str,
    jobs: u64,
    items: u64,
}

impl Scenario {
    fn total_items(self) -> u64 {
        self.jobs * self.items
    }

    /// Items the executor can have in flight at once here, which the
    /// baseline's semaphore must match for the comparison to be fair.
    fn concurrency(self) -> usize {
        let jobs_at_once = usize::try_from(self.jobs).expect("job count fits usize");
        (JOB_CONCURRENCY.min(jobs_at_once) * ITEM_CONCURRENCY).min(MAX_IN_FLIGHT)
    }

    /// The sum of every item's output, for checking that all of them ran.
    fn expected_sum(self) -> u64 {
        self.jobs * (self.items * (self.items - 1) / 2)
    }
}

const SCENARIOS: [Scenario; 2] = [
    Scenario {
        name: "jobs_100x100",
        jobs: 100,
        items: 100,
    },
    Scenario {
        name: "job_1x10000",
        jobs: 1,
        items: 10_000,
    },
];

/// A job is its item count; item `i` gives back `i` at once.
struct Immediate;

impl Workload for Immediate {
    type Job = u64;
    type Item = u64;
    type Output = u64;
    type Error = Infallible;
    type Class = ();

    fn items(&self, job: &u64) -> Vec<u64> {
        (0..*job).collect()
    }

    fn class(&self, _job: &u64) {}

    fn process(
        &self,
        _job: &u64,
        item: &u64,
        _attempt: u32,
    ) -> impl Future<Output = Result<u64, Infallible>> + Send {
        let item = *item;
        async move { Ok(item) }
    }
}

fn unbound_limiter() -> RateLimiter {
    RateLimiter::new(UNBOUND_PER_SECOND, Duration::from_secs(1)).expect("valid quota")
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Submits every job at once, then awaits every report.
async fn run_executor(executor: Executor<Immediate>, scenario: Scenario) -> u64 {
    let handles: Vec<_> = (0..scenario.jobs)
        .map(|_| executor.submit(scenario.items).expect("job accepted"))
        .collect();
    let mut sum = 0;
    for handle in handles {
        let report = handle.await;
        assert!(report.status.is_success(), "a job failed");
        for item in report.items {
            sum += item.result.expect("an item failed");
        }
    }
    sum
}

/// What one would write by hand: every item of every job spawned as its own
/// task once a permit is free, the limiter awaited inside.
async fn run_baseline(limiter: RateLimiter, scenario: Scenario) -> u64 {
    let permits = Arc::new(Semaphore::new(scenario.concurrency()));
    let workload = Arc::new(Immediate);
    let mut handles = Vec::with_capacity(usize::try_from(scenario.total_items()).unwrap_or(0));
    for _ in 0..scenario.jobs {
        let job = Arc::new(scenario.items);
        for item in workload.items(&job) {
            let permit = Arc::clone(&permits)
                .acquire_owned()
                .await
                .expect("semaphore open");
            let limiter = limiter.clone();
            let workload = Arc::clone(&workload);
            let job = Arc::clone(&job);
            handles.push(tokio::spawn(async move {
                limiter.acquire().await.expect("limiter granted");
                let output = workload.process(&job, &item, 1).await;
                drop(permit);
                output
            }));
        }
    }
    let mut sum = 0;
    for handle in handles {
        match handle.await.expect("item task panicked") {
            Ok(output) => sum += output,
            Err(never) => match never {},
        }
    }
    sum
}

fn overhead(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("executor_overhead");
    // An iteration is 10,000 items (milliseconds): a few flat samples are
    // steady enough and keep the whole run short.
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    for scenario in SCENARIOS {
        group.throughput(Throughput::Elements(scenario.total_items()));

        let limiter = unbound_limiter();
        // Built once, as a service would: its set-up is not per-item cost.
        let executor = {
            let _runtime = rt.enter();
            Executor::builder(Immediate)
                .job_concurrency(JOB_CONCURRENCY)
                .class(
                    (),
                    ClassConfig::new(limiter.clone())
                        .item_concurrency(ITEM_CONCURRENCY)
                        .max_in_flight(MAX_IN_FLIGHT),
                )
                .build()
                .expect("valid executor")
        };
        group.bench_function(BenchmarkId::new("executor", scenario.name), |b| {
            b.to_async(&rt).iter(|| async {
                let run = tokio::spawn(run_executor(executor.clone(), scenario));
                let sum = run.await.expect("executor run panicked");
                assert_eq!(sum, scenario.expected_sum(), "an item went missing");
                black_box(sum)
            });
        });

        group.bench_function(BenchmarkId::new("baseline", scenario.name), |b| {
            b.to_async(&rt).iter(|| async {
                let run = tokio::spawn(run_baseline(limiter.clone(), scenario));
                let sum = run.await.expect("baseline run panicked");
                assert_eq!(sum, scenario.expected_sum(), "an item went missing");
                black_box(sum)
            });
        });
    }
    group.finish();
}

criterion::criterion_group!(benches, overhead);
criterion::criterion_main!(benches);
