//! The reference system's "Nano Banana" workflow on paceline's executor,
//! against a mock Gemini server: executions of prompts on the flash and pro
//! models, each model at its own quota, with live progress and a summary.
//!
//! Run with `cargo run --example gemini_batch`. It runs in real time; the
//! defaults take about 16 s.
//!
//! It reads the reference's environment variables, with the reference's
//! concurrency defaults, and a 5 s window with small quotas so that the
//! batch spans several windows in seconds rather than minutes:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `WORKER_CONCURRENCY` | 3 | executions running at once |
//! | `PROMPT_CONCURRENCY_FLASH` | 15 | prompts of one flash execution in flight at once |
//! | `PROMPT_CONCURRENCY_PRO` | 10 | prompts of one pro execution in flight at once |
//! | `GEMINI_RATE_LIMIT_FLASH` | 25 | flash requests per window (the client's limiter) |
//! | `GEMINI_RATE_LIMIT_PRO` | 15 | pro requests per window (the client's limiter) |
//! | `GEMINI_RATE_WINDOW` | 5000 | the window, in milliseconds |
//!
//! The limiter's window is 1% longer than the server's (see `with_margin`).
//! Each model's calls in flight over all executions are bounded by
//! `WORKER_CONCURRENCY × PROMPT_CONCURRENCY_<MODEL>`, the reference's own
//! "effective concurrency".
//!
//! The mock server and the batch have variables of their own:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `MOCK_GEMINI_QUOTA_FLASH` | `GEMINI_RATE_LIMIT_FLASH` | the server's flash quota per window |
//! | `MOCK_GEMINI_QUOTA_PRO` | `GEMINI_RATE_LIMIT_PRO` | the server's pro quota per window |
//! | `MOCK_GEMINI_LATENCY_FLASH_MS` | 1000 | a flash call's latency (±10%) |
//! | `MOCK_GEMINI_LATENCY_PRO_MS` | 2500 | a pro call's latency (±10%) |
//! | `MOCK_GEMINI_ERROR_RATE` | 0.02 | the share of calls failing with a transient 500 |
//! | `MOCK_GEMINI_SEED` | 42 | seeds the 500s and the latencies |
//! | `BATCH_EXECUTIONS` | 12 | executions; every third one uses pro, the others flash |
//! | `BATCH_PROMPTS` | 10 | prompts per execution |
//!
//! By default the batch is 80 flash and 40 pro prompts, so each model's
//! quota binds for several windows, and the server's quotas equal the
//! limiter's: the server never answers 429, because the limiter keeps every
//! window at the quota, never over it. The third execution's last prompt is
//! blank, which the server refuses with a 400: that prompt fails at once,
//! without retries, and the summary says so. About 2% of calls fail with a
//! 500 and are retried with backoff.
//!
//! Executions of both models share the `WORKER_CONCURRENCY` slots, so flash
//! executions waiting for their quota hold slots that a pro execution could
//! use: the pro row's "rate used" shows what that costs. A larger
//! `WORKER_CONCURRENCY` closes most of the gap, and the bound per model on
//! calls in flight keeps the load the same.
//!
//! Set a server quota below the limiter's to see the 429 path, for example
//! `MOCK_GEMINI_QUOTA_FLASH=15`: the server refuses what goes over its window
//! with a retry delay, the model's limiter pauses for that long, and the
//! refused prompts retry without spending an attempt.
//!
//! A value that is not a positive whole number (or, for the error rate, a
//! fraction below 1) stops the example before it starts, with a message that
//! names the variable.

#[path = "common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::fmt;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{
    Execution, GeminiError, MockConfig, MockGemini, Model, ModelProfile, NanoBanana, peak_in_window,
};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use paceline::{ClassConfig, ConfigError, Executor, ItemError, JobReport, Quota, RateLimiter};
use tokio::time::Instant;

/// Everything the environment configures.
#[derive(Debug, Clone)]
struct Settings {
    workers: usize,
    prompt_concurrency: [usize; 2],
    rate_limit: [u64; 2],
    window: Duration,
    server_quota: [u64; 2],
    latency: [Duration; 2],
    error_rate: f64,
    seed: u64,
    executions: usize,
    prompts: usize,
}

/// A variable the example cannot run with.
#[derive(Debug)]
struct BadVariable {
    name: &'static str,
    value: String,
    problem: String,
}

impl BadVariable {
    fn expected(name: &'static str, value: String, expected: &str) -> BadVariable {
        BadVariable {
            name,
            value,
            problem: format!("expected {expected}"),
        }
    }
}

impl fmt::Display for BadVariable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={:?} is not valid: {}",
            self.name, self.value, self.problem
        )
    }
}

/// A variable's value, `None` when it is unset or empty (as the reference's
/// `process.env.X || default` treats it).
fn var(name: &'static str) -> Result<Option<String>, BadVariable> {
    match std::env::var(name) {
        Ok(value) if value.trim().is_empty() => Ok(None),
        Ok(value) => Ok(Some(value.trim().to_owned())),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(value)) => Err(BadVariable::expected(
            name,
            value.to_string_lossy().into_owned(),
            "text",
        )),
    }
}

fn positive(name: &'static str, default: u64) -> Result<u64, BadVariable> {
    let Some(value) = var(name)? else {
        return Ok(default);
    };
    match value.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(BadVariable::expected(
            name,
            value,
            "a whole number of at least 1",
        )),
    }
}

fn positive_usize(name: &'static str, default: usize) -> Result<usize, BadVariable> {
    let n = positive(name, default as u64)?;
    usize::try_from(n).map_err(|_| BadVariable::expected(name, n.to_string(), "a smaller number"))
}

fn millis(name: &'static str, default: u64) -> Result<Duration, BadVariable> {
    positive(name, default)
        .map(Duration::from_millis)
        .map_err(|err| {
            BadVariable::expected(
                err.name,
                err.value,
                "a whole number of milliseconds, at least 1",
            )
        })
}

fn fraction(name: &'static str, default: f64) -> Result<f64, BadVariable> {
    let Some(value) = var(name)? else {
        return Ok(default);
    };
    match value.parse::<f64>() {
        Ok(x) if (0.0..1.0).contains(&x) => Ok(x),
        _ => Err(BadVariable::expected(
            name,
            value,
            "a fraction from 0 up to (not including) 1, such as 0.02",
        )),
    }
}

fn seed(name: &'static str, default: u64) -> Result<u64, BadVariable> {
    let Some(value) = var(name)? else {
        return Ok(default);
    };
    value
        .parse::<u64>()
        .map_err(|_| BadVariable::expected(name, value, "a whole number"))
}

/// The limiter's window for a server's `window`: 1% longer. A call reaches
/// the server a little after its grant, and not always by the same amount
/// (tasks granted together run one after another; a real network adds its
/// own jitter): if one window's first call arrived late and the next window's
/// came early, the server would count both in one window and answer 429. The
/// margin absorbs that, for 1% of the rate.
fn with_margin(window: Duration) -> Duration {
    window.saturating_add(window / 100)
}

impl Settings {
    fn from_env() -> Result<Settings, BadVariable> {
        let rate_limit = [
            positive("GEMINI_RATE_LIMIT_FLASH", 25)?,
            positive("GEMINI_RATE_LIMIT_PRO", 15)?,
        ];
        let window = millis("GEMINI_RATE_WINDOW", 5_000)?;
        // Refuse here, naming the variable, what the limiter would refuse.
        for (name, max) in [
            ("GEMINI_RATE_LIMIT_FLASH", rate_limit[0]),
            ("GEMINI_RATE_LIMIT_PRO", rate_limit[1]),
        ] {
            match Quota::new(max, with_margin(window)) {
                Err(err @ ConfigError::WindowTooLarge { .. }) => {
                    return Err(BadVariable {
                        name: "GEMINI_RATE_WINDOW",
                        value: window.as_millis().to_string(),
                        problem: err.to_string(),
                    });
                }
                Err(err) => {
                    return Err(BadVariable {
                        name,
                        value: max.to_string(),
                        problem: err.to_string(),
                    });
                }
                Ok(_) => {}
            }
        }
        Ok(Settings {
            workers: positive_usize("WORKER_CONCURRENCY", 3)?,
            prompt_concurrency: [
                positive_usize("PROMPT_CONCURRENCY_FLASH", 15)?,
                positive_usize("PROMPT_CONCURRENCY_PRO", 10)?,
            ],
            rate_limit,
            window,
            server_quota: [
                positive("MOCK_GEMINI_QUOTA_FLASH", rate_limit[0])?,
                positive("MOCK_GEMINI_QUOTA_PRO", rate_limit[1])?,
            ],
            latency: [
                millis("MOCK_GEMINI_LATENCY_FLASH_MS", 1_000)?,
                millis("MOCK_GEMINI_LATENCY_PRO_MS", 2_500)?,
            ],
            error_rate: fraction("MOCK_GEMINI_ERROR_RATE", 0.02)?,
            seed: seed("MOCK_GEMINI_SEED", 42)?,
            executions: positive_usize("BATCH_EXECUTIONS", 12)?,
            prompts: positive_usize("BATCH_PROMPTS", 10)?,
        })
    }

    fn mock(&self) -> MockConfig {
        let profile = |model: Model| ModelProfile {
            quota: self.server_quota[model.index()],
            window: self.window,
            latency: self.latency[model.index()],
        };
        MockConfig {
            flash: profile(Model::Flash),
            pro: profile(Model::Pro),
            error_rate: self.error_rate,
            latency_jitter: 0.1,
            seed: self.seed,
        }
    }

    /// The batch: executions numbered from 1, every third one on pro.
    fn executions(&self) -> Vec<Execution> {
        const SCENES: [&str; 5] = [
            "a modern living room with a green velvet sofa",
            "a Scandinavian kitchen at golden hour",
            "a home office with floor-to-ceiling bookshelves",
            "a minimalist bedroom with linen bedding",
            "a sunlit bathroom with terrazzo tiles",
        ];
        (1..=self.executions)
            .map(|number| Execution {
                number,
                model: if number % 3 == 0 {
                    Model::Pro
                } else {
                    Model::Flash
                },
                prompts: (0..self.prompts)
                    .map(|i| {
                        // A blank line in the user's list of prompts.
                        if number == 3 && i + 1 == self.prompts {
                            String::new()
                        } else {
                            format!("{}, variant {}", SCENES[i % SCENES.len()], i + 1)
                        }
                    })
                    .collect(),
            })
            .collect()
    }
}

fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("gemini_batch: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("gemini_batch: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("gemini_batch: {err}");
            ExitCode::FAILURE
        }
    }
}

/// An execution's report, with what the report does not say about it.
struct Finished {
    number: usize,
    model: Model,
    report: JobReport<common::Image, GeminiError>,
}

async fn run(settings: &Settings) -> Result<(), Box<dyn std::error::Error>> {
    let client = MockGemini::new(settings.mock());
    let mut limiters = Vec::new();
    let mut builder =
        Executor::builder(NanoBanana::new(client.clone())).job_concurrency(settings.workers);
    for model in Model::ALL {
        let i = model.index();
        let limiter = RateLimiter::new(settings.rate_limit[i], with_margin(settings.window))?;
        limiters.push(limiter.clone());
        builder = builder.class(
            model,
            ClassConfig::new(limiter)
                .item_concurrency(settings.prompt_concurrency[i])
                .max_in_flight(
                    settings
                        .workers
                        .saturating_mul(settings.prompt_concurrency[i]),
                ),
        );
    }
    let executor = builder.build()?;
    let executions = settings.executions();
    let mut items = [0u64; 2];
    for execution in &executions {
        items[execution.model.index()] += execution.prompts.len() as u64;
    }

    print_header(settings, &executions);

    let progress = Progress::new(&items);
    let failed: Arc<[AtomicU64; 2]> = Arc::default();
    let ticker = {
        let (progress, executor, client, limiters, failed) = (
            progress.clone(),
            executor.clone(),
            client.clone(),
            limiters.clone(),
            Arc::clone(&failed),
        );
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(100));
            loop {
                every.tick().await;
                progress.update(&executor, &client, &limiters, &failed);
            }
        })
    };

    let start = Instant::now();
    // A report names its job by id only: remember what each id was.
    let mut submitted = HashMap::new();
    let mut running = FuturesUnordered::new();
    for execution in executions {
        let about = (execution.number, execution.model);
        let handle = executor.submit(execution)?;
        submitted.insert(handle.id(), about);
        running.push(handle);
    }
    let mut reports: Vec<Finished> = Vec::new();
    while let Some(report) = running.next().await {
        let (number, model) = submitted[&report.id];
        failed[model.index()].fetch_add(report.failed() as u64, Ordering::Relaxed);
        reports.push(Finished {
            number,
            model,
            report,
        });
    }
    let makespan = start.elapsed();
    ticker.abort();
    progress.update(&executor, &client, &limiters, &failed);
    progress.finish();

    reports.sort_by_key(|finished| finished.number);
    print_summary(settings, &client, &limiters, &reports, makespan);
    Ok(())
}

fn print_header(settings: &Settings, executions: &[Execution]) {
    let [flash, pro] = Model::ALL.map(|model| {
        executions
            .iter()
            .filter(|execution| execution.model == model)
            .count()
    });
    println!(
        "Nano Banana batch: {} executions × {} prompts ({flash} on {}, {pro} on {}), mock server",
        settings.executions,
        settings.prompts,
        Model::Flash.api_name(),
        Model::Pro.api_name(),
    );
    println!(
        "  WORKER_CONCURRENCY={}  PROMPT_CONCURRENCY_FLASH={}  PROMPT_CONCURRENCY_PRO={}",
        settings.workers, settings.prompt_concurrency[0], settings.prompt_concurrency[1]
    );
    println!(
        "  GEMINI_RATE_LIMIT_FLASH={}  GEMINI_RATE_LIMIT_PRO={}  GEMINI_RATE_WINDOW={}",
        settings.rate_limit[0],
        settings.rate_limit[1],
        settings.window.as_millis()
    );
    println!(
        "  server: quota flash {} / pro {} per window, latency {:?} / {:?} (±10%), {}% transient 500s",
        settings.server_quota[0],
        settings.server_quota[1],
        settings.latency[0],
        settings.latency[1],
        settings.error_rate * 100.0
    );
    println!();
}

/// One bar per model, and a line for the executions.
#[derive(Clone)]
struct Progress {
    _multi: MultiProgress,
    jobs: ProgressBar,
    bars: [ProgressBar; 2],
}

impl Progress {
    fn new(items: &[u64; 2]) -> Progress {
        let multi = MultiProgress::new();
        let style = ProgressStyle::with_template(
            "{prefix:>6} [{bar:24.cyan/blue}] {pos:>4}/{len:<4} {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> ");
        let jobs = multi.add(ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg}").expect("a valid template"),
        ));
        let bars = Model::ALL.map(|model| {
            multi.add(
                ProgressBar::new(items[model.index()])
                    .with_style(style.clone())
                    .with_prefix(model.to_string()),
            )
        });
        Progress {
            _multi: multi,
            jobs,
            bars,
        }
    }

    fn update(
        &self,
        executor: &Executor<NanoBanana>,
        client: &MockGemini,
        limiters: &[RateLimiter],
        failed: &[AtomicU64; 2],
    ) {
        let stats = executor.stats();
        self.jobs.set_message(format!(
            "executions: {} waiting, {} running, {} done ({} with failures)",
            stats.jobs_waiting,
            stats.jobs_active,
            stats.jobs_completed + stats.jobs_failed,
            stats.jobs_failed
        ));
        self.jobs.tick();
        for model in Model::ALL {
            let i = model.index();
            let counts = client.counts(model);
            let in_flight = stats
                .classes
                .iter()
                .find(|class| class.class == format!("{model:?}"))
                .map_or(0, |class| class.items_in_flight);
            let limiter = limiters[i].stats();
            let paused = match limiter.paused_until {
                Some(until) if until > Instant::now() => {
                    format!(", paused {:.1} s", (until - Instant::now()).as_secs_f64())
                }
                _ => String::new(),
            };
            self.bars[i].set_position(counts.ok + failed[i].load(Ordering::Relaxed));
            self.bars[i].set_message(format!(
                "{in_flight:>2} in flight, window {}/{}, {} queued{paused}, 429s {}, 500s {}",
                limiter.in_window,
                limiter.max,
                limiter.queued,
                counts.rate_limited,
                counts.internal
            ));
        }
    }

    fn finish(&self) {
        self.jobs.finish();
        for bar in &self.bars {
            bar.finish();
        }
    }
}

fn print_summary(
    settings: &Settings,
    client: &MockGemini,
    limiters: &[RateLimiter],
    reports: &[Finished],
    makespan: Duration,
) {
    let completed = reports
        .iter()
        .filter(|f| f.report.status.is_success())
        .count();
    println!();
    println!(
        "Done in {:.1} s: {} executions, {completed} completed, {} with failed prompts",
        makespan.as_secs_f64(),
        reports.len(),
        reports.len() - completed
    );

    println!();
    println!(
        "{:<7} {:>6} {:>6} {:>7} {:>14} {:>14}",
        "items", "total", "ok", "failed", "retries (500)", "retries (429)"
    );
    let mut notes = Vec::new();
    for model in Model::ALL {
        let outcomes = || {
            reports
                .iter()
                .filter(move |f| f.model == model)
                .flat_map(|f| f.report.items.iter())
        };
        let total = outcomes().count();
        let ok = outcomes().filter(|o| o.result.is_ok()).count();
        let retries: u64 = outcomes()
            .map(|o| u64::from(o.attempts.saturating_sub(1)))
            .sum();
        let after_429: u64 = outcomes().map(|o| u64::from(o.rate_limited)).sum();
        println!(
            "{:<7} {total:>6} {ok:>6} {:>7} {retries:>14} {after_429:>14}",
            model.to_string(),
            total - ok,
        );
        let sent = client.counts(model).rate_limited;
        if sent != after_429 {
            notes.push(format!(
                "{model}: the server sent {sent} 429s but the reports count {after_429}"
            ));
        }
    }

    // A strict window of `quota` lets the n-th call go no earlier than
    // `ceil(n / quota) - 1` windows after the first: the closer the last
    // call came to that instant, the more of the quota the batch used.
    println!();
    println!(
        "{:<7} {:>6} {:>5} {:>5} {:>5} {:>12} {:>16} {:>16} {:>10}",
        "server",
        "calls",
        "429s",
        "500s",
        "400s",
        "peak window",
        "last call after",
        "quota allows at",
        "rate used"
    );
    let mut total_429 = 0;
    for model in Model::ALL {
        let i = model.index();
        let counts = client.counts(model);
        total_429 += counts.rate_limited;
        let log = client.accepted_log(model);
        let quota = settings.server_quota[i];
        let span = match (log.first(), log.last()) {
            (Some(&first), Some(&last)) => last - first,
            _ => Duration::ZERO,
        };
        let windows = (log.len() as u64).div_ceil(quota).saturating_sub(1);
        let earliest = settings
            .window
            .saturating_mul(u32::try_from(windows).unwrap_or(u32::MAX));
        let used = if earliest.is_zero() {
            "(≤ 1 window)".to_owned()
        } else {
            format!(
                "{:.0}%",
                100.0 * earliest.as_secs_f64() / span.as_secs_f64().max(f64::EPSILON)
            )
        };
        println!(
            "{:<7} {:>6} {:>5} {:>5} {:>5} {:>12} {:>14.1} s {:>14.1} s {used:>10}",
            model.to_string(),
            log.len(),
            counts.rate_limited,
            counts.internal,
            counts.bad_requests,
            format!("{}/{quota}", peak_in_window(&log, settings.window)),
            span.as_secs_f64(),
            earliest.as_secs_f64(),
        );
        if counts.rate_limited > 0 && settings.rate_limit[i] <= quota {
            notes.push(format!(
                "{model}: 429s although the limiter ({}) is within the server's quota ({quota})",
                settings.rate_limit[i]
            ));
        }
    }

    println!();
    println!(
        "{:<7} {:>10} {:>8} {:>7} {:>10} {:>7} {:>10}",
        "limiter", "quota", "granted", "waited", "mean wait", "queued", "in window"
    );
    for model in Model::ALL {
        let limiter = &limiters[model.index()];
        let stats = limiter.stats();
        let window = limiter
            .quotas()
            .first()
            .map_or(Duration::ZERO, Quota::window);
        let mean_wait = if stats.waited == 0 {
            Duration::ZERO
        } else {
            stats.wait_time / u32::try_from(stats.waited).unwrap_or(u32::MAX)
        };
        println!(
            "{:<7} {:>10} {:>8} {:>7} {:>8.2} s {:>7} {:>10}",
            model.to_string(),
            format!("{}/{:.2}s", stats.max, window.as_secs_f64()),
            stats.granted,
            stats.waited,
            mean_wait.as_secs_f64(),
            stats.queued,
            format!("{}/{}", stats.in_window, stats.max)
        );
    }

    let failures: Vec<String> = reports
        .iter()
        .flat_map(|finished| {
            let Finished {
                number,
                model,
                report,
            } = finished;
            report.items.iter().filter_map(move |outcome| {
                let error = outcome.result.as_ref().err()?;
                let how = match error {
                    ItemError::Failed(GeminiError::BadRequest(_)) => ", not retried",
                    ItemError::Failed(_) => ", the last attempt",
                    _ => "",
                };
                let plural = if outcome.attempts == 1 { "" } else { "s" };
                Some(format!(
                    "  execution {number} ({model}), prompt {}: {error} ({} attempt{plural}{how})",
                    outcome.index + 1,
                    outcome.attempts,
                ))
            })
        })
        .collect();
    if !failures.is_empty() {
        println!();
        println!("Failed prompts:");
        for line in failures.iter().take(5) {
            println!("{line}");
        }
        if failures.len() > 5 {
            println!("  ... and {} more", failures.len() - 5);
        }
    }
    println!();
    println!(
        "429s received from the server: {total_429}{}",
        if total_429 == 0 {
            " (the limiter never let a call over the server's quota)"
        } else {
            " (each paused its model's limiter for the server's retry delay; the prompts retried)"
        }
    );
    for note in notes {
        println!("note: {note}");
    }
}
