//! One item, start to end: the limiter, the call, the retries.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, warn};

use super::report::ItemError;
use super::retry::RetryPolicy;
use super::workload::{Failure, Workload};
use crate::limiter::RateLimiter;

/// What the executor hands each item's run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ItemRules {
    pub(crate) retry: RetryPolicy,
    pub(crate) max_rate_limited: u32,
    pub(crate) item_timeout: Option<Duration>,
    pub(crate) job_deadline: Option<Instant>,
}

/// How an item's run ended.
#[derive(Debug)]
pub(crate) struct Tally<O, E> {
    pub(crate) result: Result<O, ItemError<E>>,
    pub(crate) attempts: u32,
    pub(crate) rate_limited: u32,
    pub(crate) limiter_wait: Duration,
}

/// Runs one item: acquire its class's limiter right before each call, then
/// call, then retry as the workload classifies the error.
pub(crate) async fn run_item<W: Workload>(
    workload: &W,
    job: &W::Job,
    item: &W::Item,
    limiter: &RateLimiter,
    rules: ItemRules,
) -> Tally<W::Output, W::Error> {
    let cost = workload.cost(job, item);
    let mut tally = Tally {
        result: Err(ItemError::Cancelled),
        attempts: 0,
        rate_limited: 0,
        limiter_wait: Duration::ZERO,
    };
    loop {
        let grant = match rules.job_deadline {
            Some(deadline) => limiter.acquire_cost_before(cost, deadline).await,
            None => limiter.acquire_cost(cost).await,
        };
        match grant {
            Ok(grant) => {
                tally.limiter_wait += grant.waited();
                debug!(attempt = tally.attempts + 1, waited = ?grant.waited(), "granted");
            }
            Err(err) => {
                tally.result = Err(ItemError::Limiter(err));
                return tally;
            }
        }
        tally.attempts += 1;
        let call = workload.process(job, item, tally.attempts);
        let error = match rules.item_timeout {
            Some(limit) => match tokio::time::timeout(limit, call).await {
                Ok(Ok(output)) => {
                    tally.result = Ok(output);
                    return tally;
                }
                Ok(Err(error)) => Some(error),
                Err(_) => None,
            },
            None => match call.await {
                Ok(output) => {
                    tally.result = Ok(output);
                    return tally;
                }
                Err(error) => Some(error),
            },
        };
        let failure = match &error {
            Some(error) => workload.classify(error),
            None => Failure::Retry,
        };
        match (failure, error) {
            (Failure::Fatal, error) => {
                tally.result = Err(error.map_or(
                    ItemError::AttemptTimedOut(rules.item_timeout.unwrap_or_default()),
                    ItemError::Failed,
                ));
                return tally;
            }
            (Failure::RateLimited { retry_after }, Some(error)) => {
                // The server's verdict is about the class, not this item: it
                // does not spend an attempt, and everyone in the class waits.
                tally.attempts -= 1;
                tally.rate_limited += 1;
                let delay = retry_after.unwrap_or_else(|| rules.retry.backoff(tally.rate_limited));
                warn!(retry_after = ?delay, times = tally.rate_limited, "rate limited");
                if rules
                    .job_deadline
                    .is_some_and(|deadline| Instant::now() + delay > deadline)
                {
                    tally.result = Err(ItemError::RetryAfterDeadline {
                        error,
                        retry_after: delay,
                    });
                    return tally;
                }
                if tally.rate_limited > rules.max_rate_limited {
                    tally.result = Err(ItemError::RateLimited {
                        error,
                        times: tally.rate_limited,
                    });
                    return tally;
                }
                limiter.pause_for(delay);
            }
            (_, error) => {
                if tally.attempts >= rules.retry.max_attempts() {
                    tally.result = Err(error.map_or(
                        ItemError::AttemptTimedOut(rules.item_timeout.unwrap_or_default()),
                        ItemError::Failed,
                    ));
                    return tally;
                }
                let delay = rules.retry.backoff(tally.attempts);
                debug!(attempt = tally.attempts, backoff = ?delay, "retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}
