//! What the executor reports: every item's outcome, per job.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::AcquireError;

/// A job's number, unique within one executor, in submission order.
///
/// # Examples
///
/// ```
/// # use paceline::JobId;
/// assert_eq!(JobId(7).to_string(), "job-7");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job-{}", self.0)
    }
}

/// Why an item failed for good.
///
/// # Examples
///
/// ```
/// # use paceline::ItemError;
/// let err: ItemError<String> = ItemError::JobTimedOut;
/// assert_eq!(err.to_string(), "the job timed out before the item finished");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum ItemError<E> {
    /// The workload's error: fatal, or the last of the attempts.
    #[error("{0}")]
    Failed(E),
    /// The server asked to wait longer than the job may still run.
    #[error("the server asked to retry in {retry_after:?}, after the job's deadline: {error}")]
    RetryAfterDeadline {
        /// The last error.
        error: E,
        /// The server's retry delay.
        #[cfg_attr(
            feature = "serde",
            serde(serialize_with = "crate::serialize::duration_ms")
        )]
        retry_after: Duration,
    },
    /// The server answered "rate limited" more times than the policy allows.
    #[error("rate limited {times} times: {error}")]
    RateLimited {
        /// The last error.
        error: E,
        /// How many rate-limited answers in all.
        times: u32,
    },
    /// The last attempt ran past the item timeout.
    #[error("the item's attempt timed out after {0:?}")]
    AttemptTimedOut(
        #[cfg_attr(
            feature = "serde",
            serde(serialize_with = "crate::serialize::duration_ms")
        )]
        Duration,
    ),
    /// The job's timeout struck first: the item was stopped or never started.
    #[error("the job timed out before the item finished")]
    JobTimedOut,
    /// The executor shut down before the item finished.
    #[error("the executor shut down before the item finished")]
    Cancelled,
    /// Processing the item panicked; the executor carried on.
    #[error("processing the item panicked: {0}")]
    Panicked(String),
    /// The limiter refused (it was closed, or the grant could not come before
    /// the job's deadline).
    #[error("the rate limiter refused: {0}")]
    Limiter(AcquireError),
}

/// The outcome of one item.
///
/// # Examples
///
/// ```
/// # use paceline::{ItemError, ItemOutcome};
/// # fn show(outcome: &ItemOutcome<usize, String>) {
/// match &outcome.result {
///     Ok(len) => println!("item {}: {len} bytes after {} attempts", outcome.index, outcome.attempts),
///     Err(ItemError::Failed(e)) => println!("item {} failed: {e}", outcome.index),
///     Err(other) => println!("item {}: {other}", outcome.index),
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ItemOutcome<O, E> {
    /// The item's position in its job.
    pub index: usize,
    /// What it gave.
    pub result: Result<O, ItemError<E>>,
    /// Attempts made (rate-limited answers not counted).
    pub attempts: u32,
    /// Rate-limited answers received.
    pub rate_limited: u32,
    /// Time spent waiting for the limiter, over all attempts.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::serialize::duration_ms")
    )]
    pub limiter_wait: Duration,
    /// When it started (`None`: it never did).
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::serialize::option_instant_ms")
    )]
    pub started_at: Option<Instant>,
    /// When it ended.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::serialize::instant_ms")
    )]
    pub finished_at: Instant,
}

/// How a job ended.
///
/// # Examples
///
/// ```
/// # use paceline::JobStatus;
/// assert!(JobStatus::Completed.is_success());
/// assert!(!JobStatus::TimedOut.is_success());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
pub enum JobStatus {
    /// Every item succeeded.
    Completed,
    /// Every item ended, some with an error.
    Failed,
    /// The job's timeout struck.
    TimedOut,
    /// The executor shut down first.
    Cancelled,
}

impl JobStatus {
    /// Whether every item succeeded.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::JobStatus;
    /// assert!(!JobStatus::Failed.is_success());
    /// ```
    pub fn is_success(&self) -> bool {
        matches!(self, JobStatus::Completed)
    }
}

/// Every item's outcome of one job, in input order.
///
/// # Examples
///
/// ```
/// # use paceline::{JobReport, JobStatus};
/// # fn show(report: &JobReport<usize, String>) {
/// println!("{}: {:?}, {} ok of {}", report.id, report.status, report.succeeded(), report.items.len());
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct JobReport<O, E> {
    /// The job.
    pub id: JobId,
    /// How it ended.
    pub status: JobStatus,
    /// Every item's outcome, in input order.
    pub items: Vec<ItemOutcome<O, E>>,
    /// When it was submitted.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::serialize::instant_ms")
    )]
    pub submitted_at: Instant,
    /// When it was admitted (`None`: never).
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::serialize::option_instant_ms")
    )]
    pub started_at: Option<Instant>,
    /// When its last item ended.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::serialize::instant_ms")
    )]
    pub finished_at: Instant,
}

impl<O, E> JobReport<O, E> {
    /// Items that succeeded.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::JobReport;
    /// # fn f(r: &JobReport<(), String>) -> bool {
    /// r.succeeded() + r.failed() == r.items.len()
    /// # }
    /// ```
    pub fn succeeded(&self) -> usize {
        self.items.iter().filter(|i| i.result.is_ok()).count()
    }

    /// Items that failed.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::JobReport;
    /// # fn f(r: &JobReport<(), String>) -> usize {
    /// r.failed()
    /// # }
    /// ```
    pub fn failed(&self) -> usize {
        self.items.len() - self.succeeded()
    }

    /// The report without the outputs, as the executor retains it.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::JobReport;
    /// # fn f(r: &JobReport<(), String>) {
    /// let summary = r.summary();
    /// assert_eq!(summary.items, r.items.len());
    /// # }
    /// ```
    pub fn summary(&self) -> JobSummary {
        JobSummary {
            id: self.id,
            status: self.status,
            items: self.items.len(),
            succeeded: self.succeeded(),
            attempts: self.items.iter().map(|i| u64::from(i.attempts)).sum(),
            rate_limited: self.items.iter().map(|i| u64::from(i.rate_limited)).sum(),
            submitted_at: self.submitted_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
        }
    }
}

/// A finished job, without its outputs: what the executor keeps of the last
/// completed and failed jobs.
///
/// # Examples
///
/// ```
/// # use paceline::{JobStatus, JobSummary};
/// # fn f(s: &JobSummary) {
/// if s.status != JobStatus::Completed {
///     println!("{}: {} of {} items failed", s.id, s.items - s.succeeded, s.items);
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct JobSummary {
    /// The job.
    pub id: JobId,
    /// How it ended.
    pub status: JobStatus,
    /// Its number of items.
    pub items: usize,
    /// Items that succeeded.
    pub succeeded: usize,
    /// Attempts over all items.
    pub attempts: u64,
    /// Rate-limited answers over all items.
    pub rate_limited: u64,
    /// When it was submitted.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::serialize::instant_ms")
    )]
    pub submitted_at: Instant,
    /// When it was admitted.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::serialize::option_instant_ms")
    )]
    pub started_at: Option<Instant>,
    /// When it ended.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::serialize::instant_ms")
    )]
    pub finished_at: Instant,
}
