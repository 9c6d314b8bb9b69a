//! The two-level [`Executor`]: jobs × items, every call through its class's
//! limiter.
//!
//! # Implementation details
//!
//! All scheduling state sits under one lock; there is no scheduler task.
//! Whoever changes the state (a submit, an item ending, a job timing out)
//! calls `dispatch`, which admits waiting jobs while job slots are free, then
//! starts items, oldest admitted job first, while the job's own bound and its
//! class's global bound allow. Items therefore fill every free slot of their
//! class whatever job they belong to: the tail of one job does not leave
//! slots idle while another admitted job has items left. An item backing off
//! before a retry gives its slot back and queues again, due at the end of its
//! backoff. Each item runs in its own task, so that a job's timeout (or a
//! shutdown) can abort it, and a panic in it stays in it.

mod feed;
mod report;
mod retry;
mod run;
mod workload;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt;
use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::{Notify, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span};

pub use self::feed::JobStream;
pub use self::report::{ItemError, ItemOutcome, JobId, JobReport, JobStatus, JobSummary};
pub use self::retry::{Jitter, RetryPolicy};
use self::run::{ItemRules, Progress, RunEnd, run_item};
pub use self::workload::{Failure, Workload};
use crate::limit::{DynLimiter, Limiter};
use crate::stats::Stats;

/// The settings of one class (a model, an endpoint): its limiter and its
/// concurrency bounds.
///
/// # Examples
///
/// ```
/// use paceline::{ClassConfig, RateLimiter};
///
/// let flash = ClassConfig::new(RateLimiter::new(15, std::time::Duration::from_secs(60))?)
///     .item_concurrency(5)
///     .max_in_flight(15);
/// # Ok::<(), paceline::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ClassConfig {
    limiter: Arc<dyn DynLimiter>,
    item_concurrency: usize,
    max_in_flight: Option<usize>,
}

impl ClassConfig {
    /// A class limited by `limiter` (any [`Limiter`]: the in-process
    /// [`RateLimiter`](crate::RateLimiter), or a limiter shared through
    /// Redis), 5 items in flight per job, no global bound on items in flight.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::{ClassConfig, RateLimiter};
    /// let pro = ClassConfig::new(RateLimiter::new(5, std::time::Duration::from_secs(60))?);
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    pub fn new(limiter: impl Limiter) -> Self {
        ClassConfig {
            limiter: Arc::new(limiter),
            item_concurrency: 5,
            max_in_flight: None,
        }
    }

    /// Items of one job in flight at once, unless the workload says otherwise
    /// for a job (`PROMPT_CONCURRENCY_FLASH/PRO`).
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::{ClassConfig, RateLimiter};
    /// let c = ClassConfig::new(RateLimiter::new(5, std::time::Duration::from_secs(60))?).item_concurrency(3);
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    #[must_use]
    pub fn item_concurrency(self, items: usize) -> Self {
        ClassConfig {
            item_concurrency: items,
            ..self
        }
    }

    /// Items of this class in flight at once, over all jobs.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::{ClassConfig, RateLimiter};
    /// let c = ClassConfig::new(RateLimiter::new(5, std::time::Duration::from_secs(60))?).max_in_flight(15);
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    #[must_use]
    pub fn max_in_flight(self, items: usize) -> Self {
        ClassConfig {
            max_in_flight: Some(items),
            ..self
        }
    }

    /// The class's limiter's figures, as [`Limiter::snapshot`] gives them.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::{ClassConfig, RateLimiter};
    /// let c = ClassConfig::new(RateLimiter::new(5, std::time::Duration::from_secs(60))?);
    /// assert_eq!(c.limiter_stats().max, 5);
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    pub fn limiter_stats(&self) -> Stats {
        self.limiter.stats_now()
    }
}

/// A configuration the executor cannot run with.
///
/// # Examples
///
/// ```
/// # use paceline::BuildError;
/// assert!(BuildError::ZeroJobConcurrency.to_string().contains("at least 1"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Job concurrency 0: no job would ever run.
    #[error("job concurrency must be at least 1")]
    ZeroJobConcurrency,
    /// A class's item concurrency was 0.
    #[error("item concurrency of class {class} must be at least 1")]
    ZeroItemConcurrency {
        /// The class, as `Debug` shows it.
        class: String,
    },
    /// A class's global bound was 0.
    #[error("max in flight of class {class} must be at least 1")]
    ZeroMaxInFlight {
        /// The class, as `Debug` shows it.
        class: String,
    },
    /// The executor was built outside a Tokio runtime.
    #[error("an executor must be built inside a Tokio runtime")]
    NoRuntime,
}

/// Why a job was not accepted.
///
/// # Examples
///
/// ```
/// # use paceline::SubmitError;
/// assert_eq!(SubmitError::ShuttingDown.to_string(), "the executor is shutting down");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// [`Executor::shutdown`] was called.
    #[error("the executor is shutting down")]
    ShuttingDown,
    /// The job's class has no [`ClassConfig`].
    #[error("no class is configured as {class}")]
    UnknownClass {
        /// The class, as `Debug` shows it.
        class: String,
    },
}

/// Builds an [`Executor`].
///
/// Defaults are the reference system's: 3 jobs at once, 3 attempts per item
/// with backoff from 2 s, a 30-minute job timeout, the last 100 completed and
/// 500 failed jobs kept.
///
/// # Examples
///
/// ```
/// # use std::time::Duration;
/// # use paceline::{ClassConfig, Executor, RateLimiter, RetryPolicy};
/// # struct W;
/// # impl paceline::Workload for W {
/// #     type Job = (); type Item = (); type Output = (); type Error = String; type Class = ();
/// #     fn items(&self, _: &()) -> Vec<()> { vec![] }
/// #     fn class(&self, _: &()) {}
/// #     fn process(&self, _: &(), _: &(), _: u32) -> impl std::future::Future<Output = Result<(), String>> + Send { async { Ok(()) } }
/// # }
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let executor = Executor::builder(W)
///     .job_concurrency(3)
///     .class((), ClassConfig::new(RateLimiter::new(15, Duration::from_secs(60))?).max_in_flight(15))
///     .retry(RetryPolicy::default())
///     .job_timeout(Some(Duration::from_secs(30 * 60)))
///     .build()?;
/// # let _ = executor;
/// # Ok(()) }
/// ```
pub struct ExecutorBuilder<W: Workload> {
    workload: W,
    classes: HashMap<W::Class, ClassConfig>,
    settings: Settings,
}

impl<W: Workload> fmt::Debug for ExecutorBuilder<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecutorBuilder")
            .field("classes", &self.classes)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    job_concurrency: usize,
    retry: RetryPolicy,
    max_rate_limited: u32,
    job_timeout: Option<Duration>,
    item_timeout: Option<Duration>,
    keep_completed: usize,
    keep_failed: usize,
}

impl<W: Workload> ExecutorBuilder<W> {
    /// Jobs running at once (`WORKER_CONCURRENCY`; 3 by default).
    ///
    /// # Examples
    ///
    /// See [`ExecutorBuilder`].
    #[must_use]
    pub fn job_concurrency(mut self, jobs: usize) -> Self {
        self.settings.job_concurrency = jobs;
        self
    }

    /// Configures a class. Every class a job may name needs one.
    ///
    /// # Examples
    ///
    /// See [`ExecutorBuilder`].
    #[must_use]
    pub fn class(mut self, class: W::Class, config: ClassConfig) -> Self {
        self.classes.insert(class, config);
        self
    }

    /// The retry policy of every item.
    ///
    /// # Examples
    ///
    /// See [`ExecutorBuilder`].
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.settings.retry = policy;
        self
    }

    /// How many rate-limited answers an item takes in all before it fails
    /// (10 by default). They do not spend attempts.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::{Executor, Workload};
    /// # fn f<W: Workload>(b: paceline::ExecutorBuilder<W>) -> paceline::ExecutorBuilder<W> {
    /// b.max_rate_limited(3)
    /// # }
    /// ```
    #[must_use]
    pub fn max_rate_limited(mut self, times: u32) -> Self {
        self.settings.max_rate_limited = times;
        self
    }

    /// The job timeout (30 minutes by default; `None`: none). When it strikes,
    /// the job's items in flight are stopped and every item left ends with
    /// [`ItemError::JobTimedOut`].
    ///
    /// # Examples
    ///
    /// See [`ExecutorBuilder`].
    #[must_use]
    pub fn job_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.settings.job_timeout = timeout;
        self
    }

    /// A timeout for each attempt of an item (none by default); an attempt
    /// that runs over it counts as a failed, retryable attempt.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # fn f<W: paceline::Workload>(b: paceline::ExecutorBuilder<W>) -> paceline::ExecutorBuilder<W> {
    /// b.item_timeout(Some(Duration::from_secs(120)))
    /// # }
    /// ```
    #[must_use]
    pub fn item_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.settings.item_timeout = timeout;
        self
    }

    /// How many summaries of finished jobs to keep: completed ones and failed
    /// ones (100 and 500 by default).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f<W: paceline::Workload>(b: paceline::ExecutorBuilder<W>) -> paceline::ExecutorBuilder<W> {
    /// b.retention(10, 50)
    /// # }
    /// ```
    #[must_use]
    pub fn retention(mut self, completed: usize, failed: usize) -> Self {
        self.settings.keep_completed = completed;
        self.settings.keep_failed = failed;
        self
    }

    /// Builds the executor. Call it inside a Tokio runtime: items run as
    /// tasks on it.
    ///
    /// # Errors
    ///
    /// [`BuildError`] for a zero bound, or outside a runtime.
    ///
    /// # Examples
    ///
    /// See [`ExecutorBuilder`].
    pub fn build(self) -> Result<Executor<W>, BuildError> {
        if self.settings.job_concurrency == 0 {
            return Err(BuildError::ZeroJobConcurrency);
        }
        for (class, config) in &self.classes {
            if config.item_concurrency == 0 {
                return Err(BuildError::ZeroItemConcurrency {
                    class: format!("{class:?}"),
                });
            }
            if config.max_in_flight == Some(0) {
                return Err(BuildError::ZeroMaxInFlight {
                    class: format!("{class:?}"),
                });
            }
        }
        let runtime = Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        Ok(Executor {
            inner: Arc::new(Inner {
                workload: Arc::new(self.workload),
                classes: self.classes,
                settings: self.settings,
                runtime,
                state: Mutex::new(State::default()),
                changed: Arc::new(Notify::new()),
            }),
        })
    }
}

/// Runs a [`Workload`]: jobs × items, with a job-level bound, a per-job item
/// bound, a global item bound per class, every item through its class's
/// limiter, retries with backoff and jitter, job and item timeouts, bounded
/// retention of finished jobs, stats and graceful shutdown.
///
/// Every submitted item ends with an outcome in its job's [`JobReport`]: a
/// success, its error, a timeout, a cancellation or a panic; none is lost. A
/// clone is a handle to the same executor.
///
/// # Examples
///
/// ```
/// use std::future::Future;
/// use std::time::Duration;
/// use paceline::{ClassConfig, Executor, JobStatus, RateLimiter, Workload};
/// use tokio::time::Instant;
///
/// /// Each job is a list of prompts; each takes 84 s to process.
/// struct Prompts;
///
/// impl Workload for Prompts {
///     type Job = Vec<&'static str>;
///     type Item = &'static str;
///     type Output = usize;
///     type Error = String;
///     type Class = ();
///
///     fn items(&self, job: &Self::Job) -> Vec<&'static str> { job.clone() }
///     fn class(&self, _job: &Self::Job) {}
///     fn process(&self, _job: &Self::Job, prompt: &&'static str, _attempt: u32)
///         -> impl Future<Output = Result<usize, String>> + Send
///     {
///         let len = prompt.len();
///         async move {
///             tokio::time::sleep(Duration::from_secs(84)).await;
///             Ok(len)
///         }
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = RateLimiter::new(15, Duration::from_secs(60))?;
/// let executor = Executor::builder(Prompts)
///     .class((), ClassConfig::new(limiter).item_concurrency(5))
///     .build()?;
/// let start = Instant::now();
/// let report = executor.submit(vec!["a cat", "a dog", "a bird"])?.await;
/// assert_eq!(report.status, JobStatus::Completed);
/// assert_eq!(report.items[1].result, Ok(5));
/// assert_eq!(start.elapsed(), Duration::from_secs(84));
/// # Ok(()) }
/// ```
pub struct Executor<W: Workload> {
    inner: Arc<Inner<W>>,
}

impl<W: Workload> Clone for Executor<W> {
    fn clone(&self) -> Self {
        Executor {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<W: Workload> fmt::Debug for Executor<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

struct Inner<W: Workload> {
    workload: Arc<W>,
    classes: HashMap<W::Class, ClassConfig>,
    settings: Settings,
    runtime: Handle,
    state: Mutex<State<W>>,
    /// Signalled whenever a job ends (and so a job slot frees).
    changed: Arc<Notify>,
}

type Report<W> = JobReport<<W as Workload>::Output, <W as Workload>::Error>;
type Outcome<W> = ItemOutcome<<W as Workload>::Output, <W as Workload>::Error>;

struct State<W: Workload> {
    next_id: u64,
    waiting: VecDeque<JobId>,
    active: Vec<JobId>,
    jobs: HashMap<JobId, JobRun<W>>,
    in_flight: HashMap<W::Class, usize>,
    completed: VecDeque<JobSummary>,
    failed: VecDeque<JobSummary>,
    completed_total: u64,
    failed_total: u64,
    shutting_down: bool,
}

impl<W: Workload> Default for State<W> {
    fn default() -> Self {
        State {
            next_id: 0,
            waiting: VecDeque::new(),
            active: Vec::new(),
            jobs: HashMap::new(),
            in_flight: HashMap::new(),
            completed: VecDeque::new(),
            failed: VecDeque::new(),
            completed_total: 0,
            failed_total: 0,
            shutting_down: false,
        }
    }
}

/// A job from submission to its report.
struct JobRun<W: Workload> {
    job: Arc<W::Job>,
    class: W::Class,
    item_limit: usize,
    /// Items not running: not started yet, in order, or backing off before a
    /// retry (at the front, `due` set).
    items: VecDeque<Queued<W::Item>>,
    /// Items in flight.
    running: HashMap<usize, Running>,
    outcomes: Vec<Option<Outcome<W>>>,
    remaining: usize,
    reply: Option<oneshot::Sender<Report<W>>>,
    submitted_at: Instant,
    started_at: Option<Instant>,
    deadline: Option<Instant>,
    timeout: Option<AbortHandle>,
}

/// An item waiting for a slot.
struct Queued<I> {
    index: usize,
    item: I,
    progress: Arc<Progress>,
    /// When a retry may start (`None`: now).
    due: Option<Instant>,
    first_started: Option<Instant>,
}

/// An item in flight.
struct Running {
    task: AbortHandle,
    first_started: Instant,
    progress: Arc<Progress>,
}

impl<W: Workload> Executor<W> {
    /// A builder for an executor running `workload`.
    ///
    /// # Examples
    ///
    /// See [`ExecutorBuilder`].
    pub fn builder(workload: W) -> ExecutorBuilder<W> {
        ExecutorBuilder {
            workload,
            classes: HashMap::new(),
            settings: Settings {
                job_concurrency: 3,
                retry: RetryPolicy::default(),
                max_rate_limited: 10,
                job_timeout: Some(Duration::from_secs(30 * 60)),
                item_timeout: None,
                keep_completed: 100,
                keep_failed: 500,
            },
        }
    }

    /// Submits a job. It waits for a job slot, runs, and its handle resolves
    /// to its report.
    ///
    /// # Errors
    ///
    /// [`SubmitError::ShuttingDown`] after [`shutdown`](Self::shutdown),
    /// [`SubmitError::UnknownClass`] for a class without a [`ClassConfig`].
    ///
    /// # Examples
    ///
    /// See [`Executor`].
    pub fn submit(&self, job: W::Job) -> Result<JobHandle<W::Output, W::Error>, SubmitError> {
        self.inner.submit(job)
    }

    /// Runs the jobs of a stream, pulling the next one only when a job slot
    /// is free: a durable queue (a Redis list, BullMQ, apalis) behind the
    /// stream is read no faster than jobs can run, and a job not yet pulled
    /// stays in it. Yields each job's report as it finishes (or why a job was
    /// refused: a class without configuration).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::future::Future;
    /// # use paceline::{ClassConfig, Executor, RateLimiter, Workload};
    /// # struct W;
    /// # impl Workload for W {
    /// #     type Job = u32; type Item = u32; type Output = u32; type Error = String; type Class = ();
    /// #     fn items(&self, job: &u32) -> Vec<u32> { vec![*job] }
    /// #     fn class(&self, _: &u32) {}
    /// #     fn process(&self, _: &u32, item: &u32, _: u32) -> impl Future<Output = Result<u32, String>> + Send { let i = *item; async move { Ok(i * 2) } }
    /// # }
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let executor = Executor::builder(W)
    /// #     .class((), ClassConfig::new(RateLimiter::new(100, std::time::Duration::from_secs(1))?))
    /// #     .build()?;
    /// let jobs = futures::stream::iter(1..=5);
    /// let reports: Vec<_> = executor.run_stream(jobs).collect().await;
    /// assert_eq!(reports.len(), 5);
    /// assert!(reports.iter().all(|r| r.as_ref().is_ok_and(|r| r.status.is_success())));
    /// # Ok(()) }
    /// ```
    pub fn run_stream<S>(&self, jobs: S) -> JobStream<W, S>
    where
        S: futures::Stream<Item = W::Job>,
    {
        JobStream::new(self.clone(), jobs)
    }

    /// A snapshot: jobs waiting, active, completed and failed, items in
    /// flight, and each class's limiter.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::{Executor, Workload};
    /// # fn f<W: Workload>(executor: &Executor<W>) {
    /// let stats = executor.stats();
    /// println!("{} waiting, {} active, {} items in flight", stats.jobs_waiting, stats.jobs_active, stats.items_in_flight);
    /// # }
    /// ```
    pub fn stats(&self) -> ExecutorStats {
        let state = self.inner.state.lock();
        let mut classes: Vec<ClassStats> = self
            .inner
            .classes
            .iter()
            .map(|(class, config)| ClassStats {
                class: format!("{class:?}"),
                items_in_flight: state.in_flight.get(class).copied().unwrap_or(0),
                max_in_flight: config.max_in_flight,
                limiter: config.limiter.stats_now(),
            })
            .collect();
        classes.sort_by(|a, b| a.class.cmp(&b.class));
        ExecutorStats {
            jobs_waiting: state.waiting.len(),
            jobs_active: state.active.len(),
            jobs_completed: state.completed_total,
            jobs_failed: state.failed_total,
            items_in_flight: state.in_flight.values().sum(),
            classes,
        }
    }

    /// The summaries of the last completed jobs kept, oldest first.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f<W: paceline::Workload>(executor: &paceline::Executor<W>) {
    /// for job in executor.completed_jobs() {
    ///     println!("{} done in {:?}", job.id, job.finished_at - job.submitted_at);
    /// }
    /// # }
    /// ```
    pub fn completed_jobs(&self) -> Vec<JobSummary> {
        self.inner.state.lock().completed.iter().cloned().collect()
    }

    /// The summaries of the last failed (or timed-out, or cancelled) jobs
    /// kept, oldest first.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f<W: paceline::Workload>(executor: &paceline::Executor<W>) {
    /// println!("{} failed jobs kept", executor.failed_jobs().len());
    /// # }
    /// ```
    pub fn failed_jobs(&self) -> Vec<JobSummary> {
        self.inner.state.lock().failed.iter().cloned().collect()
    }

    /// Shuts down gracefully: takes no more jobs, lets the submitted ones run
    /// for up to `grace`, then stops what is left (its items end with
    /// [`ItemError::Cancelled`]). Resolves when every job has its report.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future leaves the executor refusing new jobs, with the
    /// submitted ones running on.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f<W: paceline::Workload>(executor: paceline::Executor<W>) {
    /// let report = executor.shutdown(std::time::Duration::from_secs(30)).await;
    /// println!("{} jobs cancelled", report.cancelled_jobs);
    /// # }
    /// ```
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let deadline = Instant::now().checked_add(grace);
        self.inner.state.lock().shutting_down = true;
        loop {
            let notified = self.inner.changed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.inner.state.lock().jobs.is_empty() {
                return ShutdownReport { cancelled_jobs: 0 };
            }
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        let cancelled_jobs = self.inner.cancel_all();
                        return ShutdownReport { cancelled_jobs };
                    }
                }
                None => notified.await,
            }
        }
    }
}

/// What [`Executor::shutdown`] did.
///
/// # Examples
///
/// ```
/// # use paceline::ShutdownReport;
/// let report = ShutdownReport { cancelled_jobs: 0 };
/// assert_eq!(report.cancelled_jobs, 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ShutdownReport {
    /// Jobs still unfinished when the grace period ended, now cancelled.
    pub cancelled_jobs: usize,
}

/// A snapshot of an [`Executor`].
///
/// # Examples
///
/// See [`Executor::stats`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ExecutorStats {
    /// Jobs submitted and not admitted yet.
    pub jobs_waiting: usize,
    /// Jobs running.
    pub jobs_active: usize,
    /// Jobs that ended with every item successful, since the start.
    pub jobs_completed: u64,
    /// Jobs that ended otherwise, since the start.
    pub jobs_failed: u64,
    /// Items in flight, all classes.
    pub items_in_flight: usize,
    /// Each class, sorted by name.
    pub classes: Vec<ClassStats>,
}

/// A snapshot of one class of an [`Executor`].
///
/// # Examples
///
/// See [`Executor::stats`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ClassStats {
    /// The class, as `Debug` shows it.
    pub class: String,
    /// Its items in flight.
    pub items_in_flight: usize,
    /// Its global bound.
    pub max_in_flight: Option<usize>,
    /// Its limiter.
    pub limiter: Stats,
}

/// Resolves to a job's [`JobReport`].
///
/// # Cancel safety
///
/// Dropping the handle does not stop the job; only its report is lost (its
/// summary is still kept by the executor).
///
/// # Examples
///
/// See [`Executor`].
#[must_use = "a job handle resolves to the job's report"]
pub struct JobHandle<O, E> {
    id: JobId,
    items: usize,
    submitted_at: Instant,
    reply: oneshot::Receiver<JobReport<O, E>>,
}

impl<O, E> fmt::Debug for JobHandle<O, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobHandle")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<O, E> JobHandle<O, E> {
    /// The job's id.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(h: &paceline::JobHandle<(), String>) -> paceline::JobId {
    /// h.id()
    /// # }
    /// ```
    pub fn id(&self) -> JobId {
        self.id
    }
}

impl<O, E> Future for JobHandle<O, E> {
    type Output = JobReport<O, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.reply).poll(cx) {
            Poll::Ready(Ok(report)) => Poll::Ready(report),
            // The runtime went away with the job unfinished: every item was
            // cancelled with it.
            Poll::Ready(Err(_)) => {
                let now = Instant::now();
                Poll::Ready(JobReport {
                    id: self.id,
                    status: JobStatus::Cancelled,
                    items: (0..self.items)
                        .map(|index| ItemOutcome {
                            index,
                            result: Err(ItemError::Cancelled),
                            attempts: 0,
                            rate_limited: 0,
                            limiter_wait: Duration::ZERO,
                            started_at: None,
                            finished_at: now,
                        })
                        .collect(),
                    submitted_at: self.submitted_at,
                    started_at: None,
                    finished_at: now,
                })
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<W: Workload> Inner<W> {
    fn submit(
        self: &Arc<Self>,
        job: W::Job,
    ) -> Result<JobHandle<W::Output, W::Error>, SubmitError> {
        let class = self.workload.class(&job);
        let Some(config) = self.classes.get(&class) else {
            return Err(SubmitError::UnknownClass {
                class: format!("{class:?}"),
            });
        };
        let item_limit = self
            .workload
            .item_concurrency(&job)
            .unwrap_or(config.item_concurrency)
            .max(1);
        let items: VecDeque<Queued<W::Item>> = self
            .workload
            .items(&job)
            .into_iter()
            .enumerate()
            .map(|(index, item)| Queued {
                index,
                item,
                progress: Arc::default(),
                due: None,
                first_started: None,
            })
            .collect();
        let count = items.len();
        let (reply, receiver) = oneshot::channel();
        let submitted_at = Instant::now();
        let mut state = self.state.lock();
        if state.shutting_down {
            return Err(SubmitError::ShuttingDown);
        }
        let id = JobId(state.next_id);
        state.next_id += 1;
        state.jobs.insert(
            id,
            JobRun {
                job: Arc::new(job),
                class,
                item_limit,
                items,
                running: HashMap::new(),
                outcomes: (0..count).map(|_| None).collect(),
                remaining: count,
                reply: Some(reply),
                submitted_at,
                started_at: None,
                deadline: None,
                timeout: None,
            },
        );
        state.waiting.push_back(id);
        self.dispatch(&mut state);
        Ok(JobHandle {
            id,
            items: count,
            submitted_at,
            reply: receiver,
        })
    }

    /// Admits jobs while job slots are free, then starts items while their
    /// bounds allow, oldest admitted job first.
    fn dispatch(self: &Arc<Self>, state: &mut State<W>) {
        let mut ended = Vec::new();
        while state.active.len() < self.settings.job_concurrency {
            let Some(id) = state.waiting.pop_front() else {
                break;
            };
            state.active.push(id);
            let now = Instant::now();
            let Some(run) = state.jobs.get_mut(&id) else {
                continue;
            };
            run.started_at = Some(now);
            debug!(job = id.0, items = run.outcomes.len(), waited = ?now - run.submitted_at, "job started");
            if let Some(deadline) = self.settings.job_timeout.and_then(|t| now.checked_add(t)) {
                run.deadline = Some(deadline);
                let inner = Arc::clone(self);
                let task = self.runtime.spawn(async move {
                    tokio::time::sleep_until(deadline).await;
                    inner.end_job(id, || ItemError::JobTimedOut, JobStatus::TimedOut);
                });
                run.timeout = Some(task.abort_handle());
            }
            if run.remaining == 0 {
                ended.push(id);
            }
        }
        for id in ended {
            self.finish(state, id, None);
        }
        let now = Instant::now();
        for position in 0..state.active.len() {
            let id = state.active[position];
            while let Some(run) = state.jobs.get(&id) {
                let class_load = state.in_flight.get(&run.class).copied().unwrap_or(0);
                let class_bound = self.classes.get(&run.class).and_then(|c| c.max_in_flight);
                if run.running.len() >= run.item_limit
                    || class_bound.is_some_and(|bound| class_load >= bound)
                {
                    break;
                }
                let Some(next) = run
                    .items
                    .iter()
                    .position(|q| q.due.is_none_or(|d| d <= now))
                else {
                    break;
                };
                if !self.start_item(state, id, next) {
                    break;
                }
            }
        }
    }

    /// Starts the job's item queued at `position`; returns whether it did.
    fn start_item(self: &Arc<Self>, state: &mut State<W>, id: JobId, position: usize) -> bool {
        let Some(run) = state.jobs.get_mut(&id) else {
            return false;
        };
        // Submit only accepts jobs of a configured class.
        let Some(class) = self.classes.get(&run.class) else {
            return false;
        };
        let Some(queued) = run.items.remove(position) else {
            return false;
        };
        let Queued {
            index,
            item,
            progress,
            first_started,
            ..
        } = queued;
        let job = Arc::clone(&run.job);
        let limiter = Arc::clone(&class.limiter);
        let rules = ItemRules {
            retry: self.settings.retry,
            max_rate_limited: self.settings.max_rate_limited,
            item_timeout: self.settings.item_timeout,
            job_deadline: run.deadline,
        };
        let workload = Arc::clone(&self.workload);
        let inner = Arc::clone(self);
        let first_started = first_started.unwrap_or_else(Instant::now);
        let shared_progress = Arc::clone(&progress);
        // A root span: items started from another item's completion are not
        // that item's children.
        let span = info_span!(parent: None, "item", job = id.0, index);
        let task = self.runtime.spawn(
            async move {
                let run = run_item(&*workload, &job, &item, &*limiter, rules, &shared_progress);
                match AssertUnwindSafe(run).catch_unwind().await {
                    Ok(RunEnd::Done(result)) => inner.item_finished(id, index, result),
                    Ok(RunEnd::RetryAfter(backoff)) => inner.item_backoff(id, index, item, backoff),
                    Err(panic) => {
                        let message = panic_message(&*panic);
                        inner.item_finished(id, index, Err(ItemError::Panicked(message)));
                    }
                }
            }
            .instrument(span),
        );
        run.running.insert(
            index,
            Running {
                task: task.abort_handle(),
                first_started,
                progress,
            },
        );
        *state.in_flight.entry(run.class.clone()).or_insert(0) += 1;
        true
    }

    fn item_finished(
        self: &Arc<Self>,
        id: JobId,
        index: usize,
        result: Result<W::Output, ItemError<W::Error>>,
    ) {
        let mut state = self.state.lock();
        let Some(run) = state.jobs.get_mut(&id) else {
            return;
        };
        let Some(running) = run.running.remove(&index) else {
            return;
        };
        let class = run.class.clone();
        run.outcomes[index] = Some(outcome(
            index,
            result,
            &running.progress,
            Some(running.first_started),
            Instant::now(),
        ));
        run.remaining -= 1;
        let done = run.remaining == 0;
        release(&mut state, &class, 1);
        if done {
            self.finish(&mut state, id, None);
        }
        self.dispatch(&mut state);
    }

    /// An item backs off before a retry: it gives its slot back and queues
    /// again, due after `backoff`.
    fn item_backoff(self: &Arc<Self>, id: JobId, index: usize, item: W::Item, backoff: Duration) {
        let mut state = self.state.lock();
        let Some(run) = state.jobs.get_mut(&id) else {
            return;
        };
        let Some(running) = run.running.remove(&index) else {
            return;
        };
        let now = Instant::now();
        let due = now.checked_add(backoff).unwrap_or(now);
        run.items.push_front(Queued {
            index,
            item,
            progress: running.progress,
            due: Some(due),
            first_started: Some(running.first_started),
        });
        let class = run.class.clone();
        release(&mut state, &class, 1);
        let inner = Arc::clone(self);
        self.runtime.spawn(async move {
            tokio::time::sleep_until(due).await;
            let mut state = inner.state.lock();
            inner.dispatch(&mut state);
        });
        self.dispatch(&mut state);
    }

    /// Ends a job early: its running items are stopped and every item left
    /// ends with `error`.
    fn end_job(self: &Arc<Self>, id: JobId, error: fn() -> ItemError<W::Error>, status: JobStatus) {
        let mut state = self.state.lock();
        if self.end_job_locked(&mut state, id, error, status) {
            self.dispatch(&mut state);
        }
    }

    fn end_job_locked(
        self: &Arc<Self>,
        state: &mut State<W>,
        id: JobId,
        error: fn() -> ItemError<W::Error>,
        status: JobStatus,
    ) -> bool {
        let Some(run) = state.jobs.get_mut(&id) else {
            return false;
        };
        let now = Instant::now();
        let class = run.class.clone();
        let stopped = run.running.len();
        for (index, running) in run.running.drain() {
            running.task.abort();
            let started = Some(running.first_started);
            run.outcomes[index] = Some(outcome(
                index,
                Err(error()),
                &running.progress,
                started,
                now,
            ));
        }
        for queued in run.items.drain(..) {
            let (index, started) = (queued.index, queued.first_started);
            run.outcomes[index] =
                Some(outcome(index, Err(error()), &queued.progress, started, now));
        }
        run.remaining = 0;
        release(state, &class, stopped);
        self.finish(state, id, Some(status));
        true
    }

    /// Stops every unfinished job; returns how many.
    fn cancel_all(self: &Arc<Self>) -> usize {
        let mut state = self.state.lock();
        let ids: Vec<JobId> = state.active.iter().chain(&state.waiting).copied().collect();
        for &id in &ids {
            self.end_job_locked(
                &mut state,
                id,
                || ItemError::Cancelled,
                JobStatus::Cancelled,
            );
        }
        ids.len()
    }

    /// Whether a job submitted now would be admitted at once, and whether the
    /// executor still takes jobs.
    fn has_free_job_slot(&self) -> (bool, bool) {
        let state = self.state.lock();
        let free = state.active.len() + state.waiting.len() < self.settings.job_concurrency;
        (free, !state.shutting_down)
    }

    /// Sends a finished job's report and keeps its summary.
    fn finish(&self, state: &mut State<W>, id: JobId, status: Option<JobStatus>) {
        let Some(mut run) = state.jobs.remove(&id) else {
            return;
        };
        state.active.retain(|&active| active != id);
        state.waiting.retain(|&waiting| waiting != id);
        if let Some(timeout) = run.timeout.take() {
            timeout.abort();
        }
        let items: Vec<Outcome<W>> = run.outcomes.into_iter().flatten().collect();
        let status = status.unwrap_or(if items.iter().all(|i| i.result.is_ok()) {
            JobStatus::Completed
        } else {
            JobStatus::Failed
        });
        let report = JobReport {
            id,
            status,
            items,
            submitted_at: run.submitted_at,
            started_at: run.started_at,
            finished_at: Instant::now(),
        };
        let summary = report.summary();
        info!(
            job = id.0,
            status = ?status,
            items = summary.items,
            succeeded = summary.succeeded,
            attempts = summary.attempts,
            rate_limited = summary.rate_limited,
            "job finished"
        );
        let (kept, keep) = if status.is_success() {
            state.completed_total += 1;
            (&mut state.completed, self.settings.keep_completed)
        } else {
            state.failed_total += 1;
            (&mut state.failed, self.settings.keep_failed)
        };
        kept.push_back(summary);
        while kept.len() > keep {
            kept.pop_front();
        }
        if let Some(reply) = run.reply.take() {
            // A dropped handle only means nobody wants the outputs.
            let _ = reply.send(report);
        }
        self.changed.notify_waiters();
    }
}

fn release<W: Workload>(state: &mut State<W>, class: &W::Class, items: usize) {
    if let Some(load) = state.in_flight.get_mut(class) {
        *load -= items.min(*load);
    }
}

fn outcome<O, E>(
    index: usize,
    result: Result<O, ItemError<E>>,
    progress: &Progress,
    started_at: Option<Instant>,
    now: Instant,
) -> ItemOutcome<O, E> {
    ItemOutcome {
        index,
        result,
        attempts: progress.attempts(),
        rate_limited: progress.rate_limited(),
        limiter_wait: progress.limiter_wait(),
        started_at,
        finished_at: now,
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
