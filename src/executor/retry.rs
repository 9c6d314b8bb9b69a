//! [`RetryPolicy`]: attempts and exponential backoff with jitter.

use std::time::Duration;

/// How the delay before a retry is randomised.
///
/// # Examples
///
/// ```
/// use paceline::{Jitter, RetryPolicy};
///
/// let exact = RetryPolicy::default().jitter(Jitter::None);
/// assert_eq!(exact.backoff(1), std::time::Duration::from_secs(2));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// The delay as computed: deterministic.
    None,
    /// A uniformly random delay between half the computed delay and all of it
    /// (the default): retries of many items spread out, none too early.
    #[default]
    Equal,
    /// A uniformly random delay between zero and the computed delay.
    Full,
}

/// Retries of one item: how many attempts, and the exponential backoff
/// between them.
///
/// The default is the reference system's: 3 attempts, the first retry after
/// 2 s, doubling, at most 60 s, with [`Jitter::Equal`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use paceline::{Jitter, RetryPolicy};
///
/// let policy = RetryPolicy::default().jitter(Jitter::None);
/// assert_eq!(policy.max_attempts(), 3);
/// assert_eq!(policy.backoff(1), Duration::from_secs(2));
/// assert_eq!(policy.backoff(2), Duration::from_secs(4));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial: Duration,
    multiplier: f64,
    max_backoff: Duration,
    jitter: Jitter,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial: Duration::from_secs(2),
            multiplier: 2.0,
            max_backoff: Duration::from_secs(60),
            jitter: Jitter::Equal,
        }
    }
}

impl RetryPolicy {
    /// No retries: one attempt.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::RetryPolicy;
    /// assert_eq!(RetryPolicy::none().max_attempts(), 1);
    /// ```
    pub fn none() -> Self {
        RetryPolicy::default().attempts(1)
    }

    /// Attempts per item, the first included (at least 1; 0 is taken as 1).
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::RetryPolicy;
    /// assert_eq!(RetryPolicy::default().attempts(5).max_attempts(), 5);
    /// ```
    #[must_use]
    pub fn attempts(self, attempts: u32) -> Self {
        RetryPolicy {
            max_attempts: attempts.max(1),
            ..self
        }
    }

    /// The delay before the first retry; each later one is `multiplier` times
    /// the one before, up to `max`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use paceline::{Jitter, RetryPolicy};
    /// let p = RetryPolicy::default()
    ///     .backoff_schedule(Duration::from_millis(100), 3.0, Duration::from_secs(1))
    ///     .jitter(Jitter::None);
    /// assert_eq!(p.backoff(3), Duration::from_millis(900));
    /// assert_eq!(p.backoff(4), Duration::from_secs(1));
    /// ```
    #[must_use]
    pub fn backoff_schedule(self, initial: Duration, multiplier: f64, max: Duration) -> Self {
        let multiplier = if multiplier.is_finite() && multiplier >= 1.0 {
            multiplier
        } else {
            1.0
        };
        RetryPolicy {
            initial,
            multiplier,
            max_backoff: max,
            ..self
        }
    }

    /// How the delay is randomised.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::{Jitter, RetryPolicy};
    /// let p = RetryPolicy::default().jitter(Jitter::Full);
    /// assert!(p.backoff(1) <= std::time::Duration::from_secs(2));
    /// ```
    #[must_use]
    pub fn jitter(self, jitter: Jitter) -> Self {
        RetryPolicy { jitter, ..self }
    }

    /// The attempts per item.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::RetryPolicy;
    /// assert_eq!(RetryPolicy::default().max_attempts(), 3);
    /// ```
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The delay after the `failed`-th failed attempt (1 for the first).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use paceline::{Jitter, RetryPolicy};
    /// let p = RetryPolicy::default().jitter(Jitter::Equal);
    /// let d = p.backoff(2);
    /// assert!(d >= Duration::from_secs(2) && d <= Duration::from_secs(4));
    /// ```
    pub fn backoff(&self, failed: u32) -> Duration {
        let exponent = i32::try_from(failed.saturating_sub(1)).unwrap_or(i32::MAX);
        let scaled = self.initial.as_secs_f64() * self.multiplier.powi(exponent);
        let delay = if scaled.is_finite() && scaled < self.max_backoff.as_secs_f64() {
            Duration::from_secs_f64(scaled)
        } else {
            self.max_backoff
        };
        match self.jitter {
            Jitter::None => delay,
            Jitter::Equal => delay / 2 + delay.mul_f64(fastrand::f64() / 2.0),
            Jitter::Full => delay.mul_f64(fastrand::f64()),
        }
    }
}
