//! The executor with a class limited through Redis: two executors (two
//! workers, as two processes would be) share one quota, and a 429 heard by
//! one of them pauses both.
#![cfg(feature = "redis")]

mod redis_server;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use paceline::redis::RedisRateLimiter;
use paceline::{ClassConfig, Executor, Failure, Quota, RetryPolicy, Workload};
use parking_lot::Mutex;
use redis_server::{RedisServer, micros, most_in_any_window};

const WINDOW: Duration = Duration::from_secs(1);
const MAX: u64 = 5;

/// Each item is one call; the calls' instants (µs of the system clock, which
/// is Redis's clock here) are logged. The first call of the item named
/// "429" is refused with a retry delay.
struct Calls {
    log: Arc<Mutex<Vec<u64>>>,
    refused: Arc<AtomicBool>,
}

impl Workload for Calls {
    type Job = Vec<&'static str>;
    type Item = &'static str;
    type Output = ();
    type Error = String;
    type Class = ();

    fn items(&self, job: &Vec<&'static str>) -> Vec<&'static str> {
        job.clone()
    }

    fn class(&self, _job: &Vec<&'static str>) {}

    fn process(
        &self,
        _job: &Vec<&'static str>,
        item: &&'static str,
        _attempt: u32,
    ) -> impl Future<Output = Result<(), String>> + Send {
        let refuse = *item == "429" && !self.refused.swap(true, Ordering::SeqCst);
        if !refuse {
            self.log.lock().push(micros(SystemTime::now()));
        }
        async move {
            if refuse {
                Err("429".to_owned())
            } else {
                Ok(())
            }
        }
    }

    fn classify(&self, error: &String) -> Failure {
        if error == "429" {
            Failure::RateLimited {
                retry_after: Some(Duration::from_millis(500)),
            }
        } else {
            Failure::Fatal
        }
    }
}

async fn worker(server: &RedisServer, log: &Arc<Mutex<Vec<u64>>>) -> Executor<Calls> {
    let limiter = RedisRateLimiter::builder(server.url(), "executor")
        .quota(Quota::new(MAX, WINDOW).unwrap())
        .connect()
        .await
        .unwrap();
    let workload = Calls {
        log: Arc::clone(log),
        refused: Arc::new(AtomicBool::new(false)),
    };
    Executor::builder(workload)
        .class(
            (),
            ClassConfig::new(limiter)
                .item_concurrency(8)
                .max_in_flight(8),
        )
        .retry(RetryPolicy::none())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_executors_share_one_quota_through_redis() {
    let server = RedisServer::start();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (a, b) = (worker(&server, &log).await, worker(&server, &log).await);
    let started = micros(SystemTime::now());
    let job: Vec<&'static str> = vec!["call"; 10];
    let (ra, rb) = (a.submit(job.clone()).unwrap(), b.submit(job).unwrap());
    let (ra, rb) = (ra.await, rb.await);
    assert_eq!(
        ra.succeeded() + rb.succeeded(),
        20,
        "{:?} {:?}",
        ra.status,
        rb.status
    );
    let calls: Vec<(u64, u64)> = log.lock().iter().map(|t| (*t, 1)).collect();
    assert_eq!(calls.len(), 20);
    // Twenty calls at five per second: four windows, whoever made them. The
    // calls are logged when each item ran, a little after its grant, so the
    // busiest window is counted over 900 ms, allowing 100 ms of that lag.
    let last = calls.iter().map(|c| c.0).max().unwrap();
    assert!(
        last - started >= 3 * 1_000_000,
        "done after {} µs",
        last - started
    );
    assert!(most_in_any_window(&calls, 900_000) <= MAX);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_heard_by_one_executor_pauses_the_other() {
    let server = RedisServer::start();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (a, b) = (worker(&server, &log).await, worker(&server, &log).await);
    let refused_at = micros(SystemTime::now());
    let report = a.submit(vec!["429"]).unwrap().await;
    assert_eq!(report.succeeded(), 1);
    assert_eq!(report.items[0].rate_limited, 1);
    // a paused the shared limiter for 500 ms: b's call waits for it too.
    let report = b.submit(vec!["call"]).unwrap().await;
    assert_eq!(report.succeeded(), 1);
    let calls = log.lock().clone();
    assert_eq!(calls.len(), 2);
    assert!(
        calls.iter().all(|t| *t >= refused_at + 500_000),
        "{calls:?} from {refused_at}"
    );
}
