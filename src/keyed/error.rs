//! [`KeyedError`]: why a keyed acquire failed.

use std::time::Duration;

use crate::error::TryAcquireError;

/// Why an acquire from a [`KeyedRateLimiter`](crate::KeyedRateLimiter)
/// failed: the key's limiter refused (`E` is [`AcquireError`] for waiting
/// acquires, [`TryAcquireError`] for `try_acquire`), or the key is new and
/// the keyed limiter holds its cap of live keys, none of them idle.
///
/// [`AcquireError`]: crate::AcquireError
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use paceline::{KeyedError, KeyedRateLimiter, TryAcquireError};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), paceline::ConfigError> {
/// let limiter = KeyedRateLimiter::<String>::builder()
///     .quota(paceline::Quota::per_minute(1)?)
///     .max_keys(1)
///     .build()?;
/// limiter.try_acquire("alice").unwrap();
/// assert!(matches!(
///     limiter.try_acquire("alice"),
///     Err(KeyedError::Limiter(TryAcquireError::RateLimited { .. }))
/// ));
/// // Alice's grant counts for a minute: no room for a second key until then.
/// assert_eq!(limiter.try_acquire("bob").unwrap_err(), KeyedError::TooManyKeys { max_keys: 1 });
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum KeyedError<E> {
    /// The key's limiter refused.
    #[error(transparent)]
    Limiter(E),
    /// The key has no limiter yet, the keyed limiter holds `max_keys` live
    /// keys, and none of them is idle: the key is refused rather than the
    /// map grown.
    #[error("the keyed rate limiter holds its maximum of {max_keys} live keys")]
    TooManyKeys {
        /// The cap on live keys.
        max_keys: usize,
    },
}

impl KeyedError<TryAcquireError> {
    /// How long to wait before the key's limiter has capacity, for a
    /// [`TryAcquireError::RateLimited`]; `None` otherwise (a full map of
    /// keys gives no such promise).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use paceline::KeyedRateLimiter;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), paceline::ConfigError> {
    /// let limiter = KeyedRateLimiter::<String>::new(1, Duration::from_secs(10))?;
    /// limiter.try_acquire("alice").unwrap();
    /// let err = limiter.try_acquire("alice").unwrap_err();
    /// assert_eq!(err.retry_after(), Some(Duration::from_secs(10)));
    /// # Ok(()) }
    /// ```
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            KeyedError::Limiter(err) => err.retry_after(),
            KeyedError::TooManyKeys { .. } => None,
        }
    }
}
