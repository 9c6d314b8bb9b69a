//! paceline against governor and leaky-bucket, in one run, side by side.
//!
//! - `hot_path`: the cost of one uncontended, never-binding `try_acquire`.
//! - `async_acquire`: throughput of 1,000 tasks x 1,000 awaited acquires on a
//!   two-worker runtime, never binding.
//! - `binding`: not a timing but a quality check, run once per limiter in
//!   real time: 500 tasks contend for 1,000 grants per 100 ms for 2 s, and
//!   every grant is checked against the strict sliding window and FIFO order.
//!   It runs under `cargo bench` only (not in `--test` mode), and only when no
//!   filter is given or the filter matches `binding`.

use std::future::Future;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use governor::DefaultDirectRateLimiter;

/// A rate no benchmark here can reach: the limit must never bind.
const UNBOUND_PER_SECOND: u32 = 1_000_000_000;

const ASYNC_TASKS: u64 = 1_000;
const ASYNC_ACQUIRES_PER_TASK: u64 = 1_000;

const BINDING_MAX: usize = 1_000;
const BINDING_WINDOW: Duration = Duration::from_millis(100);
const BINDING_TASKS: usize = 500;
const BINDING_RUN: Duration = Duration::from_secs(2);
/// An ask this much later than another may be served before it without
/// counting as a FIFO violation: closer asks race to the lock.
const FIFO_SLACK: Duration = Duration::from_millis(1);

/// One awaited acquire of a single permit, the same shape for every limiter,
/// so that the drivers below are written once.
trait Peer: Send + Sync + 'static {
    /// Resolves once granted, with the limiter's own grant instant where it
    /// reports one.
    fn acquire_one(&self) -> impl Future<Output = Option<Instant>> + Send + '_;
}

impl Peer for paceline::RateLimiter {
    async fn acquire_one(&self) -> Option<Instant> {
        let grant = self.acquire().await.expect("paceline refused a grant");
        Some(grant.granted_at().into_std())
    }
}

impl Peer for DefaultDirectRateLimiter {
    async fn acquire_one(&self) -> Option<Instant> {
        self.until_ready().await;
        None
    }
}

impl Peer for leaky_bucket::RateLimiter {
    async fn acquire_one(&self) -> Option<Instant> {
        self.acquire_one().await;
        None
    }
}

fn unbound_paceline() -> paceline::RateLimiter {
    paceline::RateLimiter::new(u64::from(UNBOUND_PER_SECOND), Duration::from_secs(1))
        .expect("valid quota")
}

fn unbound_governor() -> DefaultDirectRateLimiter {
    let rate = NonZeroU32::new(UNBOUND_PER_SECOND).expect("non-zero");
    governor::RateLimiter::direct(governor::Quota::per_second(rate))
}

fn unbound_leaky_bucket() -> leaky_bucket::RateLimiter {
    // A full bucket of a second's quota, refilled every second: the same
    // allowance as the others. Even at a few ns per acquire it never empties
    // faster than it refills.
    let per_second = UNBOUND_PER_SECOND as usize;
    leaky_bucket::RateLimiter::builder()
        .max(per_second)
        .initial(per_second)
        .refill(per_second)
        .interval(Duration::from_secs(1))
        .build()
}

fn hot_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("hot_path");
    // Every peer counts its refusals the same way, so the count costs each the
    // same and proves afterwards that the limit never bound.
    let mut refused = [("paceline", 0u64), ("governor", 0), ("leaky-bucket", 0)];

    let limiter = unbound_paceline();
    let count = &mut refused[0].1;
    group.bench_function(BenchmarkId::new("try_acquire", "paceline"), |b| {
        b.iter(|| *count += u64::from(limiter.try_acquire().is_err()));
    });

    let limiter = unbound_governor();
    let count = &mut refused[1].1;
    group.bench_function(BenchmarkId::new("try_acquire", "governor"), |b| {
        b.iter(|| *count += u64::from(limiter.check().is_err()));
    });

    let limiter = unbound_leaky_bucket();
    let count = &mut refused[2].1;
    group.bench_function(BenchmarkId::new("try_acquire", "leaky-bucket"), |b| {
        b.iter(|| *count += u64::from(!limiter.try_acquire(1)));
    });

    group.finish();
    for (peer, count) in refused {
        assert_eq!(
            count, 0,
            "{peer} refused {count} hot-path acquires: the limit bound"
        );
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// `tasks` tasks, each awaiting `per_task` acquires in a row.
async fn contend<L: Peer>(limiter: &Arc<L>, tasks: u64, per_task: u64) {
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let limiter = Arc::clone(limiter);
            tokio::spawn(async move {
                for _ in 0..per_task {
                    black_box(limiter.acquire_one().await);
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.expect("acquiring task panicked");
    }
}

fn async_acquire(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("async_acquire");
    // One iteration is a million acquires (tens to hundreds of ms): few, flat
    // samples keep the group short.
    group
        .throughput(Throughput::Elements(ASYNC_TASKS * ASYNC_ACQUIRES_PER_TASK))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    fn bench<L: Peer>(
        group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        rt: &tokio::runtime::Runtime,
        name: &str,
        limiter: L,
    ) {
        let limiter = Arc::new(limiter);
        group.bench_function(name, |b| {
            b.to_async(rt)
                .iter(|| contend(&limiter, ASYNC_TASKS, ASYNC_ACQUIRES_PER_TASK));
        });
    }
    bench(&mut group, &rt, "paceline", unbound_paceline());
    bench(&mut group, &rt, "governor", unbound_governor());
    bench(&mut group, &rt, "leaky-bucket", unbound_leaky_bucket());
    group.finish();
}

/// One request of the binding run.
#[derive(Clone, Copy)]
struct Request {
    asked: Instant,
    /// When the caller got control back: what it can act on.
    seen: Instant,
    /// The limiter's own grant instant, if it reports one.
    granted: Option<Instant>,
}

/// Drives `limiter` with [`BINDING_TASKS`] tasks, each acquiring in a loop
/// until [`BINDING_RUN`] has passed, and returns the start and every request.
fn record_binding<L: Peer>(limiter: L) -> (Instant, Vec<Request>) {
    let rt = runtime();
    let limiter = Arc::new(limiter);
    rt.block_on(async {
        let start = Instant::now();
        let stop = start + BINDING_RUN;
        let handles: Vec<_> = (0..BINDING_TASKS)
            .map(|_| {
                let limiter = Arc::clone(&limiter);
                tokio::spawn(async move {
                    let mut requests = Vec::new();
                    while Instant::now() < stop {
                        let asked = Instant::now();
                        let granted = limiter.acquire_one().await;
                        let seen = Instant::now();
                        requests.push(Request {
                            asked,
                            seen,
                            granted,
                        });
                    }
                    requests
                })
            })
            .collect();
        let mut all = Vec::new();
        for handle in handles {
            all.extend(handle.await.expect("acquiring task panicked"));
        }
        (start, all)
    })
}

/// The binding run's verdict on one set of grant instants.
struct Quality {
    grants: usize,
    windows_over: usize,
    max_window: usize,
    rate_percent: f64,
    cycle: Option<Duration>,
    fifo_violations: usize,
    worst_overtake: Duration,
}

/// `grants[i]` is when request `i` (asked at `asked[i]`) was granted.
fn assess(start: Instant, asked: &[Instant], grants: &[Instant]) -> Quality {
    let mut sorted = grants.to_vec();
    sorted.sort_unstable();

    // A window's count only grows as its end moves up to the next grant, so
    // the grant instants are the only window ends worth checking.
    let up_to = |t: Instant| sorted.partition_point(|&g| g <= t);
    let mut windows_over = 0;
    let mut max_window = 0;
    let mut previous = None;
    for &end in &sorted {
        if previous == Some(end) {
            continue;
        }
        previous = Some(end);
        let in_window = up_to(end) - end.checked_sub(BINDING_WINDOW).map_or(0, up_to);
        max_window = max_window.max(in_window);
        if in_window > BINDING_MAX {
            windows_over += 1;
        }
    }

    // The first window's burst is free for every peer; the steady rate is
    // what follows it, up to the moment the tasks stop asking.
    let steady_from = start + BINDING_WINDOW;
    let steady_to = start + BINDING_RUN;
    let steady = sorted
        .iter()
        .filter(|&&g| g >= steady_from && g < steady_to)
        .count();
    let quota_per_second = BINDING_MAX as f64 / BINDING_WINDOW.as_secs_f64();
    let rate_percent =
        steady as f64 / (steady_to - steady_from).as_secs_f64() / quota_per_second * 100.0;

    // The count above moves in whole batches for a limiter that grants in
    // batches; the mean time to grant one more quota's worth (each grant to
    // the one `BINDING_MAX` later, both in the steady span) shows any lag
    // that accumulates between batches. A strict sliding window cannot go
    // below one window.
    let cycles: Vec<Duration> = sorted
        .iter()
        .zip(&sorted[BINDING_MAX.min(sorted.len())..])
        .filter(|&(&from, &to)| from >= steady_from && to < steady_to)
        .map(|(&from, &to)| to - from)
        .collect();
    let cycle = (!cycles.is_empty()).then(|| cycles.iter().sum::<Duration>() / cycles.len() as u32);

    // In ask order, a request is overtaken if anyone who asked more than
    // FIFO_SLACK after it was granted before it; equivalently, a request
    // overtook someone if the latest grant among those who asked more than
    // FIFO_SLACK before it is later than its own.
    let mut by_ask: Vec<(Instant, Instant)> =
        asked.iter().copied().zip(grants.iter().copied()).collect();
    by_ask.sort_unstable();
    let mut fifo_violations = 0;
    let mut worst_overtake = Duration::ZERO;
    let mut earlier = 0;
    let mut latest_earlier_grant: Option<Instant> = None;
    for &(ask, grant) in &by_ask {
        while earlier < by_ask.len() && by_ask[earlier].0 + FIFO_SLACK < ask {
            let g = by_ask[earlier].1;
            latest_earlier_grant = Some(latest_earlier_grant.map_or(g, |l| l.max(g)));
            earlier += 1;
        }
        if let Some(latest) = latest_earlier_grant.filter(|&l| l > grant) {
            fifo_violations += 1;
            worst_overtake = worst_overtake.max(latest - grant);
        }
    }

    Quality {
        grants: grants.len(),
        windows_over,
        max_window,
        rate_percent,
        cycle,
        fifo_violations,
        worst_overtake,
    }
}

fn binding() {
    let period = BINDING_WINDOW / BINDING_MAX as u32;
    let burst = NonZeroU32::new(BINDING_MAX as u32).expect("non-zero");

    let mut rows: Vec<(String, Quality)> = Vec::new();
    let mut add = |name: &str, (start, requests): (Instant, Vec<Request>)| {
        let asked: Vec<Instant> = requests.iter().map(|r| r.asked).collect();
        let seen: Vec<Instant> = requests.iter().map(|r| r.seen).collect();
        rows.push((name.to_owned(), assess(start, &asked, &seen)));
        // A limiter that grants a waiter before waking it is judged on its
        // own instants too: the caller's wake-up lag is the scheduler's.
        let own: Option<Vec<Instant>> = requests.iter().map(|r| r.granted).collect();
        if let Some(own) = own {
            rows.push((
                format!("{name} (own grant instants)"),
                assess(start, &asked, &own),
            ));
        }
    };

    add(
        "paceline",
        record_binding(
            paceline::RateLimiter::new(BINDING_MAX as u64, BINDING_WINDOW).expect("valid quota"),
        ),
    );
    add(
        "governor (1 per 100 µs, burst 1,000)",
        record_binding(governor::RateLimiter::direct(
            governor::Quota::with_period(period)
                .expect("non-zero period")
                .allow_burst(burst),
        )),
    );
    // leaky-bucket refills in whole milliseconds at the least, so the smooth
    // equivalent is 10 per ms; the stepped one refills the whole quota at once.
    add(
        "leaky-bucket (10 per 1 ms, max 1,000)",
        record_binding(
            leaky_bucket::RateLimiter::builder()
                .max(BINDING_MAX)
                .initial(BINDING_MAX)
                .refill(BINDING_MAX / 100)
                .interval(Duration::from_millis(1))
                .build(),
        ),
    );
    add(
        "leaky-bucket (1,000 per 100 ms, max 1,000)",
        record_binding(
            leaky_bucket::RateLimiter::builder()
                .max(BINDING_MAX)
                .initial(BINDING_MAX)
                .refill(BINDING_MAX)
                .interval(BINDING_WINDOW)
                .build(),
        ),
    );

    println!();
    println!(
        "binding: {BINDING_MAX} per {BINDING_WINDOW:?} sliding window, {BINDING_TASKS} tasks, \
         {BINDING_RUN:?} of real time"
    );
    println!(
        "  windows: every grant instant as the end of a {BINDING_WINDOW:?} window; \
         rate: grants in [{BINDING_WINDOW:?}, {BINDING_RUN:?}) vs the quota; \
         per {BINDING_MAX}: mean time from a steady grant to the {BINDING_MAX}th after it; \
         FIFO: requests granted before one that asked over {FIFO_SLACK:?} earlier"
    );
    let name_width = rows
        .iter()
        .map(|(name, _)| name.chars().count())
        .max()
        .unwrap_or(0);
    println!(
        "  {:<name_width$} | {:>7} | {:>13} | {:>10} | {:>7} | {:>10} | {:>15} | {:>14}",
        "limiter",
        "grants",
        "windows > max",
        "max window",
        "rate %",
        format!("per {BINDING_MAX}"),
        "FIFO violations",
        "worst overtake"
    );
    for (name, q) in &rows {
        let cycle = q
            .cycle
            .map_or_else(|| "-".to_owned(), |c| format!("{c:.3?}"));
        println!(
            "  {:<name_width$} | {:>7} | {:>13} | {:>10} | {:>7.2} | {:>10} | {:>15} | {:>14.3?}",
            name,
            q.grants,
            q.windows_over,
            q.max_window,
            q.rate_percent,
            cycle,
            q.fifo_violations,
            q.worst_overtake
        );
    }
    println!();
}

/// Whether this invocation should run the binding check: a real bench run
/// (`cargo bench` passes `--bench`), unfiltered or filtered to it.
fn binding_selected() -> bool {
    // Criterion options that take a value; that value is not a filter.
    const WITH_VALUE: &[&str] = &[
        "-b",
        "-c",
        "-s",
        "--baseline",
        "--baseline-lenient",
        "--color",
        "--confidence-level",
        "--load-baseline",
        "--measurement-time",
        "--noise-threshold",
        "--nresamples",
        "--output-format",
        "--plotting-backend",
        "--profile-time",
        "--sample-size",
        "--save-baseline",
        "--significance-level",
        "--warm-up-time",
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--list") {
        return false;
    }
    let mut filter = None;
    let mut skip_value = false;
    for arg in &args {
        if skip_value {
            skip_value = false;
        } else if arg.starts_with('-') {
            skip_value = WITH_VALUE.contains(&arg.as_str());
        } else {
            filter = Some(arg.as_str());
            break;
        }
    }
    filter.is_none_or(|f| "binding".contains(f) || f.contains("binding"))
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    hot_path(&mut criterion);
    async_acquire(&mut criterion);
    criterion.final_summary();
    if binding_selected() {
        binding();
    }
}
