//! [`Stats`]: a consistent snapshot of a limiter.

use std::time::Duration;

use tokio::time::Instant;

use crate::quota::Quota;

/// A snapshot of one quota of a limiter.
///
/// # Examples
///
/// ```
/// use paceline::{Quota, RateLimiter};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), paceline::ConfigError> {
/// let limiter = RateLimiter::builder()
///     .quota(Quota::per_minute(15)?)
///     .quota(Quota::per_day(1_500)?)
///     .build()?;
/// limiter.acquire_many(3).await.unwrap();
/// let daily = &limiter.stats().quotas[1];
/// assert_eq!((daily.in_window, daily.available), (3, 1_497));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct QuotaStats {
    /// The quota.
    pub quota: Quota,
    /// Units granted in the current window.
    pub in_window: u64,
    /// Units that could be granted now: `max - in_window`.
    pub available: u64,
    /// `in_window` as a percentage of `max`.
    pub utilization_percent: f64,
}

/// A consistent snapshot of a limiter, taken at one instant under its lock.
///
/// The first five figures are the reference system's (`getStats()`), for the
/// limiter's first quota; `quotas` has them for every quota.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use paceline::RateLimiter;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), paceline::ConfigError> {
/// let limiter = RateLimiter::new(15, Duration::from_secs(60))?;
/// for _ in 0..12 {
///     limiter.acquire().await.unwrap();
/// }
/// let stats = limiter.stats();
/// assert_eq!(stats.in_window, 12);
/// assert_eq!(stats.max, 15);
/// assert_eq!(stats.queued, 0);
/// assert_eq!(stats.available, 3);
/// assert_eq!(stats.utilization_percent, 80.0);
/// assert_eq!(stats.granted, 12);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Stats {
    /// Units granted in the current window of the first quota.
    pub in_window: u64,
    /// The first quota's `max`.
    pub max: u64,
    /// Acquires waiting in the queue.
    pub queued: usize,
    /// Units of the first quota that could be granted now.
    pub available: u64,
    /// `in_window` as a percentage of `max`, for the first quota.
    pub utilization_percent: f64,
    /// Grants made since the limiter was built.
    pub granted: u64,
    /// Grants that had to wait in the queue first.
    pub waited: u64,
    /// The total time those grants waited.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::serialize::duration_ms")
    )]
    pub wait_time: Duration,
    /// No grant comes before this instant (a pause after a 429), if in force.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::serialize::option_instant_ms")
    )]
    pub paused_until: Option<Instant>,
    /// Whether the limiter is closed.
    pub closed: bool,
    /// Every quota, in the order they were given.
    pub quotas: Vec<QuotaStats>,
}
