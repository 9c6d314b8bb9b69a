//! Several processes, each with many tasks, share one quota through Redis:
//! from the grant instants Redis recorded, no window holds more than `max`,
//! and together they use the quota to the full.
#![cfg(feature = "redis")]

mod redis_server;

use std::process::{Command, Stdio};
use std::time::Duration;

use paceline::Quota;
use paceline::redis::RedisRateLimiter;
use redis_server::{RedisServer, micros, most_in_any_window};

const PROCESSES: usize = 4;
const TASKS: usize = 16;
const MAX: u64 = 50;
const WINDOW: Duration = Duration::from_millis(200);
const RUN: Duration = Duration::from_secs(4);
/// Set in the processes this test starts: the Redis URL to share.
const WORKER_ENV: &str = "PACELINE_TEST_REDIS_WORKER";

/// One worker process: `TASKS` tasks acquire in a loop for `RUN`, then print
/// every grant's instant on Redis's clock, one per line.
async fn worker(url: String) {
    let limiter = RedisRateLimiter::builder(url, "processes")
        .quota(Quota::new(MAX, WINDOW).unwrap())
        .connect()
        .await
        .unwrap();
    let until = tokio::time::Instant::now() + RUN;
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let mut grants = Vec::new();
                while tokio::time::Instant::now() < until {
                    let grant = limiter.acquire().await.unwrap();
                    grants.push(micros(grant.recorded_at().unwrap()));
                }
                grants
            })
        })
        .collect();
    let mut out = String::new();
    for task in tasks {
        for grant in task.await.unwrap() {
            out.push_str(&format!("GRANT {grant}\n"));
        }
    }
    print!("{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_sharing_one_quota_never_exceed_it_and_use_it_fully() {
    if let Ok(url) = std::env::var(WORKER_ENV) {
        worker(url).await;
        return;
    }
    let server = RedisServer::start();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "processes_sharing_one_quota_never_exceed_it_and_use_it_fully",
                ])
                .args(["--nocapture", "--test-threads", "1"])
                .env(WORKER_ENV, server.url())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut per_process = Vec::new();
    let mut grants = Vec::new();
    // The stretch in which every process was acquiring: from the last
    // process's first grant to the first process's last.
    let (mut all_from, mut all_until) = (0, u64::MAX);
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "a worker failed: {:?}",
            output.status
        );
        let stdout = String::from_utf8(output.stdout).unwrap();
        let mine: Vec<u64> = stdout
            .lines()
            .filter_map(|line| line.strip_prefix("GRANT "))
            .map(|t| t.parse().unwrap())
            .collect();
        per_process.push(mine.len());
        if let (Some(first), Some(last)) = (mine.iter().min(), mine.iter().max()) {
            all_from = all_from.max(*first);
            all_until = all_until.min(*last);
        }
        grants.extend(mine);
    }
    grants.sort_unstable();
    let window = u64::try_from(WINDOW.as_micros()).unwrap();
    let weighted: Vec<(u64, u64)> = grants.iter().map(|t| (*t, 1)).collect();
    assert_eq!(
        most_in_any_window(&weighted, window),
        MAX,
        "per process: {per_process:?}"
    );
    assert!(
        per_process.iter().all(|n| *n > 0),
        "every process was granted: {per_process:?}"
    );
    // The rate over whole windows while every process was acquiring: the
    // queue never empties then, so every window is full. (Before and after,
    // while the processes start and stop one by one, fewer tasks ask.)
    let windows = all_until.saturating_sub(all_from) / window;
    let inside = grants
        .iter()
        .filter(|t| **t >= all_from && **t < all_from + windows * window)
        .count() as u64;
    let rate = inside as f64 / (windows * MAX) as f64;
    eprintln!(
        "{} grants, {windows} windows of {WINDOW:?} with every process acquiring \
         ({:.2}% of the quota), per process {per_process:?}",
        grants.len(),
        rate * 100.0
    );
    assert!(windows >= 10, "{windows} windows");
    assert!(
        rate >= 0.99,
        "{inside} grants in {windows} windows: {:.2}% of the quota",
        rate * 100.0
    );
}
