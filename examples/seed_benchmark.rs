//! The reference system's benchmark, reproduced in virtual time, next to the
//! best any schedule can do.
//!
//! Run with `cargo run --example seed_benchmark`. Every call goes to the mock
//! Gemini server of `examples/common`, with the benchmark's fixed latency per
//! prompt and a server quota equal to the client's limiter, under tokio's
//! paused clock: hours of calls take well under a second, and every instant
//! is exact.
//!
//! Three designs run each scenario:
//!
//! - **sequential**: one execution at a time, one prompt at a time (the
//!   reference's v1);
//! - **reference**: the reference's two-level design, rebuilt as it is: a
//!   pool of worker tasks pulling executions from a queue, each running its
//!   prompts through a fixed number of slots (`p-limit`, here
//!   [`paceline::bounded_map`]), every call behind one shared limiter and no
//!   bound over all executions;
//! - **paceline**: the [`paceline::Executor`], whose global bound per class
//!   lets any admitted execution's prompts fill a free slot.
//!
//! Each row shows its makespan next to its lower bound: the larger of the
//! concurrency bound, `ceil(prompts / slots) × latency` (no schedule with that
//! many calls in flight can do better), and the rate bound, the earliest
//! possible instant of the last grant plus one latency: grants at `quota` per
//! `window` put the last one `ceil(prompts / quota) - 1` windows after the
//! first. The example exits non-zero unless every paceline row meets its
//! bound exactly.
//!
//! The reference's own table says about 560 s for 100 prompts on 15 slots:
//! that is `100 / 15 × 84 s`, a fractional number of rounds no schedule can
//! achieve. Its design takes 672 s, because the last execution runs alone on
//! 5 of the 15 slots; 588 s is the best 15 slots of 84 s allow.

#[path = "common/mod.rs"]
mod common;

use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use common::{Execution, MockConfig, MockGemini, Model, ModelProfile, NanoBanana};
use futures::future::join_all;
use paceline::{ClassConfig, Executor, RateLimiter, RetryPolicy, bounded_map};
use tokio::time::Instant;

/// One workload at one quota.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    title: &'static str,
    executions: usize,
    prompts: usize,
    latency: Duration,
    model: Model,
    quota: u64,
    window: Duration,
    /// The reference's workers and slots per execution.
    reference: (usize, usize),
    /// paceline's executions at once, prompts per execution, and prompts in
    /// flight over all executions.
    paceline: (usize, usize, usize),
}

impl Scenario {
    fn items(&self) -> usize {
        self.executions * self.prompts
    }

    fn jobs(&self) -> Vec<Execution> {
        (0..self.executions)
            .map(|number| Execution {
                number,
                model: self.model,
                prompts: (0..self.prompts)
                    .map(|i| format!("execution {number}, scene {i}: a modern living room"))
                    .collect(),
            })
            .collect()
    }

    fn client(&self) -> MockGemini {
        let profile = ModelProfile {
            quota: self.quota,
            window: self.window,
            latency: self.latency,
        };
        // No 500s: makespans are compared with their bounds to the
        // millisecond, and a retry would add a call.
        MockGemini::new(MockConfig {
            flash: profile,
            pro: profile,
            error_rate: 0.0,
            latency_jitter: 0.0,
            seed: 1,
        })
    }

    fn limiter(&self) -> RateLimiter {
        RateLimiter::new(self.quota, self.window).expect("a valid quota")
    }

    /// The lower bound for `slots` calls in flight: (the bound, the
    /// concurrency bound, the rate bound).
    fn lower_bound(&self, slots: usize) -> (Duration, Duration, Duration) {
        let items = self.items();
        let rounds = u32::try_from(items.div_ceil(slots)).expect("a small count");
        let concurrency = self.latency * rounds;
        let quota = usize::try_from(self.quota).expect("a small quota");
        let windows = u32::try_from(items.div_ceil(quota) - 1).expect("a small count");
        let rate = self.window * windows + self.latency;
        (concurrency.max(rate), concurrency, rate)
    }
}

/// One design's run of a scenario.
#[derive(Debug)]
struct Row {
    design: String,
    slots: usize,
    makespan: Duration,
    ok: usize,
    must_meet_bound: bool,
}

/// One execution at a time, one prompt at a time.
async fn sequential(scenario: &Scenario) -> Row {
    let client = scenario.client();
    let limiter = scenario.limiter();
    let start = Instant::now();
    let mut ok = 0;
    for job in scenario.jobs() {
        for prompt in &job.prompts {
            limiter.acquire().await.expect("the limiter stays open");
            ok += usize::from(client.generate(job.model, prompt).await.is_ok());
        }
    }
    check_no_429(&client, scenario.model);
    Row {
        design: "sequential (1 execution × 1 prompt)".to_owned(),
        slots: 1,
        makespan: start.elapsed(),
        ok,
        must_meet_bound: false,
    }
}

/// The reference's design: `workers` tasks each take the next execution from
/// the queue and run its prompts `per_job` at a time.
async fn reference(scenario: &Scenario) -> Row {
    let (workers, per_job) = scenario.reference;
    let client = scenario.client();
    let limiter = scenario.limiter();
    let queue = Mutex::new(scenario.jobs().into_iter().collect::<VecDeque<_>>());
    let next_job = || queue.lock().expect("no panic while locked").pop_front();
    let start = Instant::now();
    let (client, limiter) = (&client, &limiter);
    let worker = || async {
        let mut ok = 0;
        while let Some(job) = next_job() {
            let model = job.model;
            let results = bounded_map(&job.prompts, per_job, |prompt| async move {
                limiter.acquire().await.expect("the limiter stays open");
                client.generate(model, prompt).await
            })
            .await;
            ok += results.iter().filter(|r| r.is_ok()).count();
        }
        ok
    };
    let ok = join_all((0..workers).map(|_| worker()))
        .await
        .into_iter()
        .sum();
    check_no_429(client, scenario.model);
    Row {
        design: format!("reference ({workers} workers × {per_job} slots)"),
        slots: workers * per_job,
        makespan: start.elapsed(),
        ok,
        must_meet_bound: false,
    }
}

/// paceline's executor, with a global bound on the model's calls in flight.
async fn paceline(scenario: &Scenario) -> Row {
    let (jobs, per_job, in_flight) = scenario.paceline;
    let client = scenario.client();
    let executor = Executor::builder(NanoBanana::new(client.clone()))
        .job_concurrency(jobs)
        .class(
            scenario.model,
            ClassConfig::new(scenario.limiter())
                .item_concurrency(per_job)
                .max_in_flight(in_flight),
        )
        .retry(RetryPolicy::none())
        // Executions of a rate-bound batch spend most of their time waiting
        // for the limiter; a timeout would only measure that.
        .job_timeout(None)
        .build()
        .expect("a valid configuration");
    let start = Instant::now();
    let handles: Vec<_> = scenario
        .jobs()
        .into_iter()
        .map(|job| executor.submit(job).expect("the executor is running"))
        .collect();
    let reports = join_all(handles).await;
    let makespan = start.elapsed();
    check_no_429(&client, scenario.model);
    Row {
        design: format!("paceline ({jobs} executions, {in_flight} in flight)"),
        slots: in_flight,
        makespan,
        ok: reports.iter().map(|r| r.succeeded()).sum(),
        must_meet_bound: true,
    }
}

fn check_no_429(client: &MockGemini, model: Model) {
    let counts = client.counts(model);
    assert_eq!(
        counts.rate_limited, 0,
        "the server's quota equals the limiter's, so it never refuses a call"
    );
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", thousands(d.as_secs()))
    } else {
        format!("{:.3} s", d.as_secs_f64())
    }
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> ExitCode {
    let minute = Duration::from_secs(60);
    let scenarios = [
        Scenario {
            title: "Free tier, flash at 15 RPM: 10 executions × 10 prompts, 84 s each",
            executions: 10,
            prompts: 10,
            latency: Duration::from_secs(84),
            model: Model::Flash,
            quota: 15,
            window: minute,
            reference: (3, 5),
            paceline: (3, 15, 15),
        },
        Scenario {
            title: "Paid tier 1, flash at 500 RPM: 20 executions × 10 prompts, 12 s each",
            executions: 20,
            prompts: 10,
            latency: Duration::from_secs(12),
            model: Model::Flash,
            quota: 500,
            window: minute,
            // The reference's recommendation for Tier 1 flash.
            reference: (3, 15),
            // Enough executions admitted that their prompts can fill all 45
            // slots: an admitted execution costs nothing while it waits.
            paceline: (6, 15, 45),
        },
        Scenario {
            title: "Free tier, pro at 5 RPM (the rate binds): 10 executions × 10 prompts, 84 s each",
            executions: 10,
            prompts: 10,
            latency: Duration::from_secs(84),
            model: Model::Pro,
            quota: 5,
            window: minute,
            // The same 15 slots as paceline's, so that only the schedule
            // differs.
            reference: (3, 5),
            paceline: (3, 15, 15),
        },
    ];

    let real_start = std::time::Instant::now();
    let mut missed = Vec::new();
    for scenario in &scenarios {
        println!("{}", scenario.title);
        println!(
            "  {:<40} {:>5} {:>10} {:>11}   {:>10}  {:>21}",
            "design", "slots", "makespan", "prompts/min", "bound", "(concurrency / rate)"
        );
        let rows = [
            sequential(scenario).await,
            reference(scenario).await,
            paceline(scenario).await,
        ];
        for row in rows {
            let (bound, concurrency, rate) = scenario.lower_bound(row.slots);
            let per_minute = scenario.items() as f64 / row.makespan.as_secs_f64() * 60.0;
            let verdict = if row.makespan == bound {
                "= bound".to_owned()
            } else if row.makespan > bound {
                format!("+{}", seconds(row.makespan - bound))
            } else {
                "below the bound?".to_owned()
            };
            println!(
                "  {:<40} {:>5} {:>10} {:>11.2}   {:>10}  {:>21}  {verdict}",
                row.design,
                row.slots,
                seconds(row.makespan),
                per_minute,
                seconds(bound),
                format!("({} / {})", seconds(concurrency), seconds(rate)),
            );
            if row.ok != scenario.items() {
                missed.push(format!(
                    "{}: {}: {} of {} prompts succeeded",
                    scenario.title,
                    row.design,
                    row.ok,
                    scenario.items()
                ));
            }
            if row.must_meet_bound && row.makespan != bound {
                missed.push(format!(
                    "{}: {}: {} instead of the bound {}",
                    scenario.title,
                    row.design,
                    seconds(row.makespan),
                    seconds(bound)
                ));
            }
        }
        println!();
    }
    println!(
        "(virtual time; {:.0} ms of real time)",
        real_start.elapsed().as_secs_f64() * 1e3
    );
    if missed.is_empty() {
        ExitCode::SUCCESS
    } else {
        for line in missed {
            eprintln!("error: {line}");
        }
        ExitCode::FAILURE
    }
}
