//! Errors: bad configuration, failed acquires and failed `try_acquire`s.

use std::time::Duration;

use tokio::time::Instant;

use crate::quota::{Cost, Quota, Unit};

/// A quota or limiter configuration that cannot work.
///
/// # Examples
///
/// ```
/// use paceline::{ConfigError, RateLimiter};
/// use std::time::Duration;
///
/// assert_eq!(RateLimiter::new(0, Duration::from_secs(1)).unwrap_err(), ConfigError::ZeroMax);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A quota's `max` was 0: nothing could ever be granted.
    #[error("a quota's max must be at least 1")]
    ZeroMax,
    /// A quota's window was zero.
    #[error("a quota's window must be longer than zero")]
    ZeroWindow,
    /// A quota's `max` was above [`Quota::MAX_MAX`](crate::Quota::MAX_MAX).
    #[error("a quota's max of {max} is above the limit of {limit}")]
    MaxTooLarge {
        /// The value given.
        max: u64,
        /// The largest value accepted.
        limit: u64,
    },
    /// A quota's window was above [`Quota::MAX_WINDOW`](crate::Quota::MAX_WINDOW).
    #[error("a quota's window of {window:?} is above the limit of {limit:?}")]
    WindowTooLarge {
        /// The value given.
        window: Duration,
        /// The longest window accepted.
        limit: Duration,
    },
    /// A limiter was built without any quota.
    #[error("a rate limiter needs at least one quota")]
    NoQuota,
    /// A keyed limiter was given a cap of zero live keys: no key could ever
    /// be served.
    #[error("a keyed limiter's max_keys must be at least 1")]
    ZeroMaxKeys,
    /// A reconfiguration gave a different number of quotas than the limiter has.
    #[error("the limiter has {expected} quotas but {given} were given")]
    QuotaCount {
        /// The number of quotas the limiter has.
        expected: usize,
        /// The number given.
        given: usize,
    },
    /// A reconfiguration named a quota that does not exist.
    #[error("the limiter has no quota at index {index} (it has {count})")]
    NoSuchQuota {
        /// The index given.
        index: usize,
        /// The number of quotas the limiter has.
        count: usize,
    },
    /// A reconfiguration changed the unit a quota counts, which would make the
    /// grants it remembers meaningless.
    #[error("quota {index} counts {from}; it cannot be changed to count {to}")]
    UnitChanged {
        /// The index of the quota.
        index: usize,
        /// The unit it counts.
        from: Unit,
        /// The unit asked for.
        to: Unit,
    },
}

/// Why an `acquire` failed.
///
/// # Examples
///
/// ```
/// use paceline::{AcquireError, RateLimiter};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), paceline::ConfigError> {
/// let limiter = RateLimiter::new(10, Duration::from_secs(1))?;
/// let err = limiter.acquire_many(11).await.unwrap_err();
/// assert!(matches!(err, AcquireError::CostExceedsQuota { cost: 11, max: 10, .. }));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum AcquireError {
    /// The limiter was closed before the grant.
    #[error("the rate limiter is closed")]
    Closed,
    /// The cost is larger than a quota's `max`, so it could never be granted.
    #[error("a cost of {cost} {unit} exceeds the quota of {max} {unit} per {window:?}")]
    CostExceedsQuota {
        /// The unit of the quota.
        unit: Unit,
        /// The amount asked for.
        cost: u64,
        /// The quota's `max`.
        max: u64,
        /// The quota's window.
        #[cfg_attr(
            feature = "serde",
            serde(serialize_with = "crate::serialize::duration_ms")
        )]
        window: Duration,
    },
    /// The grant could not come by the deadline.
    ///
    /// `earliest` is the instant the grant could have come, as projected when
    /// the acquire was refused at once; it is `None` when the deadline passed
    /// while the acquire was queued.
    #[error("no grant by the deadline{}", match .earliest { Some(_) => " (the earliest grant would come later)", None => "" })]
    DeadlineExceeded {
        /// The earliest feasible grant, when known.
        #[cfg_attr(
            feature = "serde",
            serde(serialize_with = "crate::serialize::option_instant_ms")
        )]
        earliest: Option<Instant>,
    },
    /// The store that holds a shared limiter's log (Redis) did not answer in
    /// time or answered with an error, and the limiter is set to fail closed:
    /// nothing was granted.
    #[error("the shared limiter is unavailable: {0}")]
    Unavailable(String),
}

/// Why a `try_acquire` failed.
///
/// # Examples
///
/// ```
/// use paceline::{RateLimiter, TryAcquireError};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), paceline::ConfigError> {
/// let limiter = RateLimiter::new(1, Duration::from_secs(60))?;
/// limiter.try_acquire().unwrap();
/// let err = limiter.try_acquire().unwrap_err();
/// assert_eq!(err.retry_after(), Some(Duration::from_secs(60)));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum TryAcquireError {
    /// No capacity now (or others are queued first); capacity for this cost
    /// comes after `retry_after`, if nothing else changes.
    #[error("rate limited: retry after {retry_after:?}")]
    RateLimited {
        /// How long until the cost could be granted.
        #[cfg_attr(
            feature = "serde",
            serde(serialize_with = "crate::serialize::duration_ms")
        )]
        retry_after: Duration,
    },
    /// The limiter is closed.
    #[error("the rate limiter is closed")]
    Closed,
    /// The cost is larger than a quota's `max`, so it could never be granted.
    #[error("a cost of {cost} {unit} exceeds the quota of {max} {unit} per {window:?}")]
    CostExceedsQuota {
        /// The unit of the quota.
        unit: Unit,
        /// The amount asked for.
        cost: u64,
        /// The quota's `max`.
        max: u64,
        /// The quota's window.
        #[cfg_attr(
            feature = "serde",
            serde(serialize_with = "crate::serialize::duration_ms")
        )]
        window: Duration,
    },
    /// The store that holds a shared limiter's log (Redis) did not answer in
    /// time or answered with an error, and the limiter is set to fail closed:
    /// nothing was granted.
    #[error("the shared limiter is unavailable: {0}")]
    Unavailable(String),
}

impl AcquireError {
    /// `cost` does not fit `quota` even when its window is empty.
    pub(crate) fn cost_exceeds(cost: Cost, quota: &Quota) -> AcquireError {
        AcquireError::CostExceedsQuota {
            unit: quota.unit(),
            cost: cost.amount(quota.unit()),
            max: quota.max(),
            window: quota.window(),
        }
    }
}

impl TryAcquireError {
    /// How long to wait before capacity is there, for
    /// [`TryAcquireError::RateLimited`]; `None` for the other errors, which a
    /// wait does not mend.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::TryAcquireError;
    /// assert_eq!(TryAcquireError::Closed.retry_after(), None);
    /// ```
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            TryAcquireError::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}
