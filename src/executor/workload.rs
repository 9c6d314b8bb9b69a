//! [`Workload`]: the user's two-level work, jobs made of items.

use std::fmt::{Debug, Display};
use std::future::Future;
use std::hash::Hash;
use std::time::Duration;

use crate::quota::Cost;

/// How a failed attempt should be handled.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use paceline::Failure;
///
/// // A 429 whose RetryInfo said "retry in 20 s".
/// let failure = Failure::RateLimited { retry_after: Some(Duration::from_secs(20)) };
/// assert_ne!(failure, Failure::Retry);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Transient (a 500, a reset connection): retry with backoff, spending an
    /// attempt.
    Retry,
    /// Permanent (a 400, a refused prompt): fail the item now.
    Fatal,
    /// The server said 429. The class's limiter is paused for `retry_after`
    /// (when the server gave one) and the item retries without spending an
    /// attempt.
    RateLimited {
        /// The server's retry delay, if it sent one.
        retry_after: Option<Duration>,
    },
}

/// The user's work, in two levels: a job (one workflow execution) splits into
/// items (its prompts), and each item is one call to a rate-limited service.
///
/// The [`Executor`](crate::Executor) runs jobs with a job-level bound, items
/// with a per-job bound and a global bound per class, passes every item
/// through its class's [`RateLimiter`](crate::RateLimiter) right before its
/// call, and retries by [`classify`](Workload::classify).
///
/// # Examples
///
/// ```
/// use std::future::Future;
/// use paceline::{Failure, Workload};
///
/// /// A job is a batch of prompts for one model.
/// struct Batch { model: &'static str, prompts: Vec<String> }
///
/// struct Generate;
///
/// impl Workload for Generate {
///     type Job = Batch;
///     type Item = String;
///     type Output = usize;
///     type Error = String;
///     type Class = &'static str;
///
///     fn items(&self, job: &Batch) -> Vec<String> {
///         job.prompts.clone()
///     }
///
///     fn class(&self, job: &Batch) -> &'static str {
///         job.model
///     }
///
///     fn process(
///         &self,
///         _job: &Batch,
///         prompt: &String,
///         _attempt: u32,
///     ) -> impl Future<Output = Result<usize, String>> + Send {
///         let len = prompt.len();
///         async move { Ok(len) }
///     }
///
///     fn classify(&self, error: &String) -> Failure {
///         if error.starts_with("429") { Failure::RateLimited { retry_after: None } } else { Failure::Retry }
///     }
/// }
/// ```
pub trait Workload: Send + Sync + 'static {
    /// A job: one unit of submitted work.
    type Job: Send + Sync + 'static;
    /// One item of a job: one call to the service.
    type Item: Send + Sync + 'static;
    /// What processing an item gives.
    type Output: Send + 'static;
    /// What a failed attempt gives.
    type Error: Display + Send + 'static;
    /// The rate-limit class of a job (a model, an endpoint): it picks the
    /// limiter and the concurrency bounds.
    type Class: Clone + Eq + Hash + Debug + Send + Sync + 'static;

    /// Splits a job into its items, in order.
    fn items(&self, job: &Self::Job) -> Vec<Self::Item>;

    /// The class of a job.
    fn class(&self, job: &Self::Job) -> Self::Class;

    /// How many items of this job may be in flight at once; `None` takes the
    /// class's default.
    fn item_concurrency(&self, job: &Self::Job) -> Option<usize> {
        let _ = job;
        None
    }

    /// What one call costs against the class's quotas (one request by
    /// default; say how many tokens a prompt will use for a tokens quota).
    fn cost(&self, job: &Self::Job, item: &Self::Item) -> Cost {
        let _ = (job, item);
        Cost::requests(1)
    }

    /// Processes one item: one call to the service. `attempt` counts from 1.
    fn process(
        &self,
        job: &Self::Job,
        item: &Self::Item,
        attempt: u32,
    ) -> impl Future<Output = Result<Self::Output, Self::Error>> + Send;

    /// How a failed attempt is handled ([`Failure::Retry`] by default).
    fn classify(&self, error: &Self::Error) -> Failure {
        let _ = error;
        Failure::Retry
    }
}
