//! Several worker processes calling one API with one quota: first each with
//! its own in-process limiter (every process allows the whole quota, so
//! together they go N times over it), then sharing one limiter through Redis
//! (together they make exactly the quota).
//!
//! Run with `cargo run --example distributed --features redis`. It needs a
//! `redis-server` on 127.0.0.1:6379 (Debian: `apt-get install redis-server`),
//! or another one named by `REDIS_URL`; it says so and stops if none answers.
//! The example re-executes itself once per worker process.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `REDIS_URL` | `redis://127.0.0.1:6379/` | the Redis the workers share |
//! | `WORKERS` | 4 | worker processes |
//! | `TASKS` | 8 | tasks calling the API in each process |
//! | `QUOTA` | 40 | the API's requests per window |
//! | `WINDOW_MS` | 1000 | the API's window, in milliseconds |
//! | `RUN_MS` | 3000 | how long each phase runs |
//! | `LATENCY_MS` | 100 | one call's latency |
//!
//! Every call's instant is logged, and the parent plays the API server's
//! part afterwards: it counts the calls that a server enforcing the quota
//! over a sliding window would have refused with a 429. As in the
//! `gemini_batch` example, the limiter's window is 1% longer than the
//! server's: a call leaves a little after its grant, and not every call is
//! equally late.

use std::fmt;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, SystemTime};

use paceline::redis::RedisRateLimiter;
use paceline::{Limiter, Quota, RateLimiter};

/// Set in the worker processes: `<phase>:<index>:<limiter name>`.
const WORKER_ENV: &str = "PACELINE_DISTRIBUTED_WORKER";

#[derive(Debug, Clone)]
struct Settings {
    redis_url: String,
    workers: usize,
    tasks: usize,
    quota: u64,
    window: Duration,
    run: Duration,
    latency: Duration,
}

/// A variable that is set but is not a positive whole number.
#[derive(Debug)]
struct BadVariable {
    name: &'static str,
    value: String,
}

impl fmt::Display for BadVariable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={:?} is not a positive whole number",
            self.name, self.value
        )
    }
}

fn positive(name: &'static str, default: u64) -> Result<u64, BadVariable> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(value) => match value.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(BadVariable { name, value }),
        },
    }
}

impl Settings {
    fn from_env() -> Result<Settings, BadVariable> {
        Ok(Settings {
            redis_url: std::env::var("REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned()),
            workers: positive("WORKERS", 4)? as usize,
            tasks: positive("TASKS", 8)? as usize,
            quota: positive("QUOTA", 40)?,
            window: Duration::from_millis(positive("WINDOW_MS", 1_000)?),
            run: Duration::from_millis(positive("RUN_MS", 3_000)?),
            latency: Duration::from_millis(positive("LATENCY_MS", 100)?),
        })
    }

    /// The limiter's quota: the server's, over a window 1% longer.
    fn limiter_quota(&self) -> Quota {
        Quota::new(self.quota, self.window + self.window / 100).expect("a positive quota")
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Each process with its own in-process limiter: the reference design.
    Local,
    /// One limiter shared through Redis.
    Shared,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Local => "local",
            Phase::Shared => "shared",
        }
    }

    fn parse(text: &str) -> Option<Phase> {
        [Phase::Local, Phase::Shared]
            .into_iter()
            .find(|p| p.name() == text)
    }
}

fn micros(at: SystemTime) -> u64 {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
}

/// One worker: `tasks` tasks call the "API" through the limiter until the
/// phase's time is up, and print each call's instant.
async fn worker<L: Limiter>(limiter: L, settings: &Settings) {
    let until = tokio::time::Instant::now() + settings.run;
    let tasks: Vec<_> = (0..settings.tasks)
        .map(|_| {
            let (limiter, latency) = (limiter.clone(), settings.latency);
            tokio::spawn(async move {
                let mut calls = Vec::new();
                while tokio::time::Instant::now() < until {
                    if limiter
                        .acquire_cost_before(paceline::Cost::requests(1), until)
                        .await
                        .is_err()
                    {
                        break;
                    }
                    calls.push(micros(SystemTime::now()));
                    tokio::time::sleep(latency).await;
                }
                calls
            })
        })
        .collect();
    let mut out = String::new();
    for task in tasks {
        for call in task.await.expect("a worker task") {
            out.push_str(&format!("CALL {call}\n"));
        }
    }
    print!("{out}");
}

async fn run_worker(spec: &str, settings: &Settings) -> Result<(), String> {
    let mut parts = spec.splitn(3, ':');
    let phase = parts
        .next()
        .and_then(Phase::parse)
        .ok_or("bad worker phase")?;
    let _index = parts.next().ok_or("no worker index")?;
    let name = parts.next().ok_or("no limiter name")?;
    match phase {
        Phase::Local => {
            let limiter = RateLimiter::builder()
                .quota(settings.limiter_quota())
                .build()
                .map_err(|e| e.to_string())?;
            worker(limiter, settings).await;
        }
        Phase::Shared => {
            let limiter = RedisRateLimiter::builder(settings.redis_url.as_str(), name)
                .quota(settings.limiter_quota())
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            worker(limiter, settings).await;
        }
    }
    Ok(())
}

/// What the API server would have made of every call: the calls it refuses
/// are those that would put more than `quota` in its window.
fn refused_by_server(calls: &[u64], quota: u64, window: Duration) -> usize {
    let window = u64::try_from(window.as_micros()).unwrap_or(u64::MAX);
    let mut accepted: std::collections::VecDeque<u64> = std::collections::VecDeque::new();
    let mut refused = 0;
    for &call in calls {
        while accepted.front().is_some_and(|first| first + window <= call) {
            accepted.pop_front();
        }
        if accepted.len() as u64 >= quota {
            refused += 1;
        } else {
            accepted.push_back(call);
        }
    }
    refused
}

/// The most calls in any window `(t - window, t]`.
fn peak(calls: &[u64], window: Duration) -> usize {
    let window = u64::try_from(window.as_micros()).unwrap_or(u64::MAX);
    let mut start = 0;
    let mut most = 0;
    for end in 0..calls.len() {
        while calls[start] + window <= calls[end] {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

fn run_phase(phase: Phase, name: &str, settings: &Settings) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let children = (0..settings.workers)
        .map(|index| {
            Command::new(&exe)
                .env(WORKER_ENV, format!("{}:{index}:{name}", phase.name()))
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot start a worker: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut all = Vec::new();
    let seconds = settings.run.as_secs_f64();
    println!(
        "\n{} limiter{}, {} workers x {} tasks, {:.0} s:",
        phase.name(),
        if phase == Phase::Local {
            "s (one per process, the reference design)"
        } else {
            " (one, in Redis)"
        },
        settings.workers,
        settings.tasks,
        seconds
    );
    for (index, child) in children.into_iter().enumerate() {
        let output = child.wait_with_output().map_err(|e| e.to_string())?;
        if !output.status.success() {
            return Err(format!("worker {index} failed ({})", output.status));
        }
        let calls: Vec<u64> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.strip_prefix("CALL ")?.parse().ok())
            .collect();
        println!(
            "  worker {index}: {:>5} calls, {:>7.1} per second",
            calls.len(),
            calls.len() as f64 / seconds
        );
        all.extend(calls);
    }
    all.sort_unstable();
    let per_second = settings.quota as f64 / settings.window.as_secs_f64();
    let refused = refused_by_server(&all, settings.quota, settings.window);
    println!(
        "  total:    {:>5} calls, {:>7.1} per second against a quota of {per_second:.1} ({:.0}%)",
        all.len(),
        all.len() as f64 / seconds,
        all.len() as f64 / seconds / per_second * 100.0
    );
    println!(
        "  most calls in any {:?} window: {} (quota {}); the server would have refused {refused} with a 429",
        settings.window,
        peak(&all, settings.window),
        settings.quota
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("distributed: {err}");
            return ExitCode::from(2);
        }
    };
    if let Ok(spec) = std::env::var(WORKER_ENV) {
        return match run_worker(&spec, &settings).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("distributed worker: {err}");
                ExitCode::FAILURE
            }
        };
    }
    // Check that Redis answers before starting anyone, with a name of this
    // run's own so that an earlier run's grants do not count.
    let name = format!("distributed-example-{}", std::process::id());
    let probe = RedisRateLimiter::builder(settings.redis_url.as_str(), name.as_str())
        .quota(settings.limiter_quota())
        .timeout(Duration::from_secs(2))
        .connect()
        .await;
    if let Err(err) = probe {
        eprintln!(
            "distributed: no Redis answers at {} ({err}).\n\
             This example needs a redis-server: install one (Debian: apt-get install redis-server)\n\
             and start it (redis-server --port 6379 --save ''), or set REDIS_URL to one that runs.",
            settings.redis_url
        );
        return ExitCode::from(2);
    }
    println!(
        "{} worker processes call an API allowing {} requests per {:?} ({} tasks each, {:?} per call)",
        settings.workers, settings.quota, settings.window, settings.tasks, settings.latency
    );
    for phase in [Phase::Local, Phase::Shared] {
        if let Err(err) = run_phase(phase, &name, &settings) {
            eprintln!("distributed: {err}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
