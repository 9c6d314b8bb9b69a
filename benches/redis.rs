//! The Redis-backed limiter's throughput against the floor set by Redis
//! itself, on one local `redis-server` started for the run.
//!
//! - `paceline_acquire`: 64 tasks on one process acquire from one
//!   `RedisRateLimiter` whose quota never binds; one element is one grant.
//! - `evalsha_return_1`: the same 64 tasks run a trivial script (`return 1`)
//!   by EVALSHA through the same kind of connection (redis-rs's
//!   `ConnectionManager`): what any one-round-trip script costs here.
//! - `redis_benchmark_evalsha`: Redis's own `redis-benchmark` running that
//!   trivial EVALSHA from 64 clients, each request waiting for its answer;
//!   one element is one request, timed by `redis-benchmark` itself.
//!
//! After the group, the run counts the commands an uncontended acquire costs
//! from `INFO commandstats`: round trips (EVALSHA calls from the client) and
//! the commands the script runs inside Redis.
//!
//! Needs `redis-server` and `redis-benchmark` (Debian: `apt-get install
//! redis-server redis-tools`). Run with `cargo bench --bench redis --features redis`.

#[path = "../tests/redis_server/mod.rs"]
mod redis_server;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use paceline::Quota;
use paceline::redis::RedisRateLimiter;
use redis::aio::ConnectionManager;
use redis_server::RedisServer;
use tokio::runtime::Runtime;

const TASKS: u64 = 64;
/// Operations per measured iteration, spread over the tasks.
const BATCH: u64 = 1_024;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Runs `op` `iters × BATCH` times over `TASKS` tasks; the time it took.
async fn spread<F, Fut>(iters: u64, op: F) -> Duration
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let per_task = iters * BATCH / TASKS;
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let op = op.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    op().await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a bench task");
    }
    started.elapsed()
}

/// `redis-benchmark`'s own figure for `iters × BATCH` EVALSHA requests of
/// the trivial script from 64 clients, as the time they took.
fn redis_benchmark(port: u16, sha: &str, iters: u64) -> Duration {
    let requests = (iters * BATCH).max(10_000);
    let output = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "-c",
            &TASKS.to_string(),
            "-n",
            &requests.to_string(),
            "--csv",
        ])
        .args(["EVALSHA", sha, "0"])
        .output()
        .expect("redis-benchmark runs (Debian: apt-get install redis-tools)");
    let text = String::from_utf8_lossy(&output.stdout);
    // The CSV's second line: "EVALSHA ...","<requests per second>",...
    let per_second: f64 = text
        .lines()
        .nth(1)
        .and_then(|line| line.split(',').nth(1))
        .and_then(|field| field.trim_matches('"').parse().ok())
        .unwrap_or_else(|| panic!("unexpected redis-benchmark output: {text}"));
    Duration::from_secs_f64(iters as f64 * BATCH as f64 / per_second)
}

async fn connect(server: &RedisServer) -> ConnectionManager {
    let client = redis::Client::open(server.url()).expect("a valid URL");
    ConnectionManager::new(client).await.expect("connects")
}

/// What `INFO commandstats` says of one command.
#[derive(Debug)]
struct CommandStat {
    name: String,
    calls: u64,
    /// Microseconds of Redis's time per call.
    per_call: f64,
}

/// Every command `INFO commandstats` counts.
async fn command_stats(conn: &mut ConnectionManager) -> Vec<CommandStat> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO");
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |key: &str| rest.split(',').find_map(|f| f.strip_prefix(key));
            Some(CommandStat {
                name: name.to_owned(),
                calls: field("calls=")?.parse().ok()?,
                per_call: field("usec_per_call=")?.parse().ok()?,
            })
        })
        .collect()
}

async fn reset_stats(conn: &mut ConnectionManager) {
    let (): () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(conn)
        .await
        .expect("RESETSTAT");
}

/// Counts what `acquires` uncontended acquires, one after the other, cost in
/// Redis commands; then how much of Redis's time a script call takes while
/// 64 tasks acquire at once.
async fn commands_per_acquire(server: &RedisServer, limiter: &RedisRateLimiter, acquires: u64) {
    let mut conn = connect(server).await;
    reset_stats(&mut conn).await;
    for _ in 0..acquires {
        limiter.acquire().await.expect("a grant");
    }
    let stats = command_stats(&mut conn).await;
    let find = |name: &str| stats.iter().find(|s| s.name == name);
    let round_trips: u64 = ["evalsha", "eval", "script|load"]
        .iter()
        .filter_map(|name| find(name))
        .map(|s| s.calls)
        .sum();
    let inside: u64 = stats
        .iter()
        .filter(|s| !["evalsha", "eval", "info", "config|resetstat"].contains(&s.name.as_str()))
        .map(|s| s.calls)
        .sum();
    println!(
        "per uncontended acquire, over {acquires}: {:.3} round trips (EVALSHA), \
         {:.2} commands run inside the script",
        round_trips as f64 / acquires as f64,
        inside as f64 / acquires as f64
    );
    for s in &stats {
        println!("  {}: {} calls", s.name, s.calls);
    }
    reset_stats(&mut conn).await;
    let limiter = limiter.clone();
    spread(20, move || {
        let limiter = limiter.clone();
        async move {
            limiter.acquire().await.expect("a grant");
        }
    })
    .await;
    let stats = command_stats(&mut conn).await;
    let script = stats
        .iter()
        .find(|s| s.name == "evalsha")
        .expect("EVALSHA calls");
    println!(
        "with {TASKS} tasks acquiring, {} calls: {:.2} µs per script call inside Redis \
         (wall time: on a busy machine it includes the time Redis waits for a core)",
        script.calls, script.per_call
    );
}

fn main() {
    let server = RedisServer::start();
    let rt = runtime();
    let limiter = rt.block_on(async {
        RedisRateLimiter::builder(server.url(), "bench")
            .quota(Quota::new(1 << 50, Duration::from_secs(1)).expect("a quota"))
            .connect()
            .await
            .expect("connects")
    });
    let (conn, sha) = rt.block_on(async {
        let mut conn = connect(&server).await;
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg("return 1")
            .query_async(&mut conn)
            .await
            .expect("LOAD");
        (conn, sha)
    });
    let sha = Arc::new(sha);

    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group("redis");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(20);
    group.bench_function("paceline_acquire", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let limiter = limiter.clone();
            async move {
                spread(iters, move || {
                    let limiter = limiter.clone();
                    async move {
                        limiter.acquire().await.expect("a grant");
                    }
                })
                .await
            }
        });
    });
    group.bench_function("evalsha_return_1", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (conn, sha) = (conn.clone(), Arc::clone(&sha));
            async move {
                spread(iters, move || {
                    let (mut conn, sha) = (conn.clone(), Arc::clone(&sha));
                    async move {
                        let one: i64 = redis::cmd("EVALSHA")
                            .arg(sha.as_str())
                            .arg(0)
                            .query_async(&mut conn)
                            .await
                            .expect("EVALSHA");
                        assert_eq!(one, 1);
                    }
                })
                .await
            }
        });
    });
    group.bench_function("redis_benchmark_evalsha", |b| {
        b.iter_custom(|iters| redis_benchmark(server.port(), &sha, iters));
    });
    group.finish();
    criterion.final_summary();

    rt.block_on(commands_per_acquire(&server, &limiter, 1_000));
}
