//! One item's attempts: the limiter, the call, and what to do after a failure.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{Instrument, debug, debug_span, warn};

use super::report::ItemError;
use super::retry::RetryPolicy;
use super::workload::{Failure, Workload};
use crate::limit::DynLimiter;

/// What the executor hands each item's run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ItemRules {
    pub(crate) retry: RetryPolicy,
    pub(crate) max_rate_limited: u32,
    pub(crate) item_timeout: Option<Duration>,
    pub(crate) job_deadline: Option<Instant>,
}

/// An item's progress over all its runs, readable by the executor at any
/// time (a job timeout stops a run midway, and the report still counts its
/// attempts).
#[derive(Debug, Default)]
pub(crate) struct Progress {
    attempts: AtomicU32,
    rate_limited: AtomicU32,
    limiter_wait_nanos: AtomicU64,
}

impl Progress {
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Relaxed)
    }

    pub(crate) fn rate_limited(&self) -> u32 {
        self.rate_limited.load(Ordering::Relaxed)
    }

    pub(crate) fn limiter_wait(&self) -> Duration {
        Duration::from_nanos(self.limiter_wait_nanos.load(Ordering::Relaxed))
    }

    fn waited(&self, wait: Duration) {
        let nanos = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
        self.limiter_wait_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// How one run of an item ended.
#[derive(Debug)]
pub(crate) enum RunEnd<O, E> {
    /// For good: its output or its error.
    Done(Result<O, ItemError<E>>),
    /// A transient failure: retry after this backoff, without holding a slot
    /// meanwhile.
    RetryAfter(Duration),
}

/// Runs an item until it succeeds, fails for good, or must back off: acquire
/// its class's limiter right before each call, call, and handle the error as
/// the workload classifies it. A 429 pauses the whole class's limiter and
/// retries here, without spending an attempt.
pub(crate) async fn run_item<W: Workload>(
    workload: &W,
    job: &W::Job,
    item: &W::Item,
    limiter: &dyn DynLimiter,
    rules: ItemRules,
    progress: &Progress,
) -> RunEnd<W::Output, W::Error> {
    let cost = workload.cost(job, item);
    loop {
        let grant = limiter.acquire(cost, rules.job_deadline).await;
        let attempt = progress.attempts() + 1;
        match grant {
            Ok(grant) => {
                progress.waited(grant.waited());
                debug!(attempt, waited = ?grant.waited(), "granted");
            }
            Err(err) => return RunEnd::Done(Err(ItemError::Limiter(err))),
        }
        progress.attempts.store(attempt, Ordering::Relaxed);
        let call = workload
            .process(job, item, attempt)
            .instrument(debug_span!("attempt", attempt));
        let error = match rules.item_timeout {
            Some(limit) => match tokio::time::timeout(limit, call).await {
                Ok(Ok(output)) => return RunEnd::Done(Ok(output)),
                Ok(Err(error)) => Some(error),
                Err(_) => None,
            },
            None => match call.await {
                Ok(output) => return RunEnd::Done(Ok(output)),
                Err(error) => Some(error),
            },
        };
        let failure = match &error {
            Some(error) => workload.classify(error),
            None => Failure::Retry,
        };
        let timed_out = || ItemError::AttemptTimedOut(rules.item_timeout.unwrap_or_default());
        match (failure, error) {
            (Failure::Fatal, error) => {
                return RunEnd::Done(Err(error.map_or_else(timed_out, ItemError::Failed)));
            }
            (Failure::RateLimited { retry_after }, Some(error)) => {
                // The server's verdict is about the class, not this item: it
                // does not spend an attempt, and everyone in the class waits.
                progress.attempts.store(attempt - 1, Ordering::Relaxed);
                let times = progress.rate_limited.fetch_add(1, Ordering::Relaxed) + 1;
                let delay = retry_after.unwrap_or_else(|| rules.retry.backoff(times));
                warn!(attempt, retry_after = ?delay, times, "rate limited");
                limiter.pause(delay).await;
                let left = rules
                    .job_deadline
                    .map(|deadline| deadline.saturating_duration_since(Instant::now()));
                if left.is_some_and(|left| delay > left) {
                    return RunEnd::Done(Err(ItemError::RetryAfterDeadline {
                        error,
                        retry_after: delay,
                    }));
                }
                if times > rules.max_rate_limited {
                    return RunEnd::Done(Err(ItemError::RateLimited { error, times }));
                }
            }
            (_, error) => {
                if attempt >= rules.retry.max_attempts() {
                    return RunEnd::Done(Err(error.map_or_else(timed_out, ItemError::Failed)));
                }
                let backoff = rules.retry.backoff(attempt);
                debug!(attempt, ?backoff, "retrying");
                return RunEnd::RetryAfter(backoff);
            }
        }
    }
}
