//! [`Limiter`]: what the executor and the tower layer need of a rate limiter,
//! implemented by the in-process [`RateLimiter`] and, with the `redis` feature,
//! by the shared [`RedisRateLimiter`](crate::redis::RedisRateLimiter).

use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{AcquireError, TryAcquireError};
use crate::limiter::{Grant, RateLimiter};
use crate::quota::Cost;
use crate::stats::Stats;

/// A rate limiter as its users drive it: acquire a cost (waiting, or by a
/// deadline, or not at all), pause after the server's 429, and look at its
/// figures. The [`Executor`](crate::Executor) takes any `Limiter`, so one
/// class of work can be limited in-process and another through Redis.
///
/// Clones of a `Limiter` are the same limiter.
///
/// # Cancel safety
///
/// Every future of this trait is cancel safe as the implementation's own
/// methods are: dropping an acquire leaks nothing (its place in the queue or
/// its reservation is given back).
///
/// # Examples
///
/// ```
/// use paceline::{Cost, Limiter, RateLimiter};
/// use std::time::Duration;
///
/// async fn call_api<L: Limiter>(limiter: &L, tokens: u64) -> Result<(), paceline::AcquireError> {
///     limiter.acquire_cost(Cost::tokens(tokens)).await?;
///     // ... the call ...
///     Ok(())
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = RateLimiter::new(2, Duration::from_secs(60))?;
/// call_api(&limiter, 100).await?;
/// assert_eq!(Limiter::snapshot(&limiter).in_window, 1);
/// # Ok(()) }
/// ```
pub trait Limiter: Clone + Send + Sync + fmt::Debug + 'static {
    /// Waits for `cost` and takes it, in turn with the other waiters.
    fn acquire_cost(&self, cost: Cost) -> impl Future<Output = Result<Grant, AcquireError>> + Send;

    /// As [`acquire_cost`](Limiter::acquire_cost), but fails with
    /// [`AcquireError::DeadlineExceeded`] (at once when it can tell) if the
    /// grant cannot come by `deadline`.
    fn acquire_cost_before(
        &self,
        cost: Cost,
        deadline: Instant,
    ) -> impl Future<Output = Result<Grant, AcquireError>> + Send;

    /// Takes `cost` now, or fails saying when to retry. Never waits for
    /// capacity (a shared limiter still makes one round trip to its store).
    fn try_acquire_cost(
        &self,
        cost: Cost,
    ) -> impl Future<Output = Result<Grant, TryAcquireError>> + Send;

    /// Grants nothing for `duration` from now (the server said 429); a longer
    /// pause already set stands.
    fn pause_for(&self, duration: Duration) -> impl Future<Output = ()> + Send;

    /// The limiter's figures as this process knows them without waiting: for
    /// the in-process limiter, exact; for a shared one, as of its last answer
    /// from the store.
    fn snapshot(&self) -> Stats;
}

impl Limiter for RateLimiter {
    fn acquire_cost(&self, cost: Cost) -> impl Future<Output = Result<Grant, AcquireError>> + Send {
        RateLimiter::acquire_cost(self, cost)
    }

    fn acquire_cost_before(
        &self,
        cost: Cost,
        deadline: Instant,
    ) -> impl Future<Output = Result<Grant, AcquireError>> + Send {
        RateLimiter::acquire_cost_before(self, cost, deadline)
    }

    fn try_acquire_cost(
        &self,
        cost: Cost,
    ) -> impl Future<Output = Result<Grant, TryAcquireError>> + Send {
        std::future::ready(RateLimiter::try_acquire_cost(self, cost))
    }

    fn pause_for(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        RateLimiter::pause_for(self, duration);
        std::future::ready(())
    }

    fn snapshot(&self) -> Stats {
        self.stats()
    }
}

/// A [`Limiter`] behind a pointer, for holders of limiters of several types
/// (the executor's classes). Each acquire boxes its future.
pub(crate) trait DynLimiter: Send + Sync + fmt::Debug {
    fn acquire(
        &self,
        cost: Cost,
        deadline: Option<Instant>,
    ) -> futures::future::BoxFuture<'_, Result<Grant, AcquireError>>;

    fn pause(&self, duration: Duration) -> futures::future::BoxFuture<'_, ()>;

    fn stats_now(&self) -> Stats;
}

impl<L: Limiter> DynLimiter for L {
    fn acquire(
        &self,
        cost: Cost,
        deadline: Option<Instant>,
    ) -> futures::future::BoxFuture<'_, Result<Grant, AcquireError>> {
        match deadline {
            Some(deadline) => Box::pin(Limiter::acquire_cost_before(self, cost, deadline)),
            None => Box::pin(Limiter::acquire_cost(self, cost)),
        }
    }

    fn pause(&self, duration: Duration) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(Limiter::pause_for(self, duration))
    }

    fn stats_now(&self) -> Stats {
        self.snapshot()
    }
}
