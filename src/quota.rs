//! [`Quota`]: how much may be granted per window, and [`Cost`]: how much one grant spends.

use std::fmt;
use std::time::Duration;

use crate::error::ConfigError;

/// What a quota counts.
///
/// Most APIs count requests; some also count a second unit, such as Gemini's
/// tokens per minute. A limiter can hold quotas of both units at once and
/// enforces all of them in one atomic acquire.
///
/// # Examples
///
/// ```
/// use paceline::{Quota, Unit};
///
/// let rpm = Quota::per_minute(15)?;
/// assert_eq!(rpm.unit(), Unit::Requests);
/// let tpm = Quota::per_minute(1_000_000)?.counting(Unit::Tokens);
/// assert_eq!(tpm.unit(), Unit::Tokens);
/// # Ok::<(), paceline::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
pub enum Unit {
    /// Each grant counts its number of requests (the default).
    #[default]
    Requests,
    /// Each grant counts its number of tokens.
    Tokens,
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unit::Requests => "requests",
            Unit::Tokens => "tokens",
        })
    }
}

/// A limit of `max` units in any sliding window of length `window`.
///
/// A quota is a plain value: build it once, hand it to
/// [`RateLimiter::builder`](crate::RateLimiter::builder), or use it to
/// reconfigure a running limiter. Invalid values are rejected when the quota
/// is made, so a limiter can never be built from one.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use paceline::{ConfigError, Quota};
///
/// let q = Quota::new(15, Duration::from_secs(60))?;
/// assert_eq!(q, Quota::per_minute(15)?);
/// assert_eq!(q.max(), 15);
/// assert_eq!(q.window(), Duration::from_secs(60));
///
/// assert_eq!(Quota::per_second(0), Err(ConfigError::ZeroMax));
/// assert_eq!(Quota::new(1, Duration::ZERO), Err(ConfigError::ZeroWindow));
/// # Ok::<(), ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Quota {
    max: u64,
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::serialize::duration_ms")
    )]
    window: Duration,
    unit: Unit,
}

impl Quota {
    /// The largest `max` a quota accepts: 2^62. Larger values are rejected so
    /// that sums of costs can never overflow.
    pub const MAX_MAX: u64 = 1 << 62;

    /// The longest window a quota accepts: 3,650 days (about ten years).
    pub const MAX_WINDOW: Duration = Duration::from_secs(3_650 * 86_400);

    /// A quota of `max` requests per `window`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroMax`] if `max` is 0, [`ConfigError::ZeroWindow`] if
    /// `window` is zero, [`ConfigError::MaxTooLarge`] above [`Quota::MAX_MAX`]
    /// and [`ConfigError::WindowTooLarge`] above [`Quota::MAX_WINDOW`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use paceline::Quota;
    ///
    /// let q = Quota::new(1_000, Duration::from_millis(100))?;
    /// assert_eq!(q.max(), 1_000);
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    pub fn new(max: u64, window: Duration) -> Result<Quota, ConfigError> {
        if max == 0 {
            return Err(ConfigError::ZeroMax);
        }
        if max > Self::MAX_MAX {
            return Err(ConfigError::MaxTooLarge {
                max,
                limit: Self::MAX_MAX,
            });
        }
        if window.is_zero() {
            return Err(ConfigError::ZeroWindow);
        }
        if window > Self::MAX_WINDOW {
            return Err(ConfigError::WindowTooLarge {
                window,
                limit: Self::MAX_WINDOW,
            });
        }
        Ok(Quota {
            max,
            window,
            unit: Unit::Requests,
        })
    }

    /// `max` requests per second.
    ///
    /// # Errors
    ///
    /// As [`Quota::new`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::Quota;
    /// assert_eq!(Quota::per_second(10)?.window(), std::time::Duration::from_secs(1));
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    pub fn per_second(max: u64) -> Result<Quota, ConfigError> {
        Self::new(max, Duration::from_secs(1))
    }

    /// `max` requests per minute.
    ///
    /// # Errors
    ///
    /// As [`Quota::new`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::Quota;
    /// assert_eq!(Quota::per_minute(15)?.window(), std::time::Duration::from_secs(60));
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    pub fn per_minute(max: u64) -> Result<Quota, ConfigError> {
        Self::new(max, Duration::from_secs(60))
    }

    /// `max` requests per hour.
    ///
    /// # Errors
    ///
    /// As [`Quota::new`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::Quota;
    /// assert_eq!(Quota::per_hour(1_000)?.window(), std::time::Duration::from_secs(3_600));
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    pub fn per_hour(max: u64) -> Result<Quota, ConfigError> {
        Self::new(max, Duration::from_secs(3_600))
    }

    /// `max` requests per day (24 hours, sliding).
    ///
    /// # Errors
    ///
    /// As [`Quota::new`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::Quota;
    /// assert_eq!(Quota::per_day(1_500)?.window(), std::time::Duration::from_secs(86_400));
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    pub fn per_day(max: u64) -> Result<Quota, ConfigError> {
        Self::new(max, Duration::from_secs(86_400))
    }

    /// The same limit, counting `unit` instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use paceline::{Quota, Unit};
    ///
    /// let tpm = Quota::per_minute(250_000)?.counting(Unit::Tokens);
    /// assert_eq!((tpm.max(), tpm.unit()), (250_000, Unit::Tokens));
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    #[must_use]
    pub fn counting(self, unit: Unit) -> Quota {
        Quota { unit, ..self }
    }

    /// The most units granted in any window.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::Quota;
    /// assert_eq!(Quota::per_minute(15)?.max(), 15);
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The length of the sliding window.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::Quota;
    /// assert_eq!(Quota::per_hour(5)?.window().as_secs(), 3_600);
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    pub fn window(&self) -> Duration {
        self.window
    }

    /// What the quota counts.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::{Quota, Unit};
    /// assert_eq!(Quota::per_day(1_500)?.unit(), Unit::Requests);
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    pub fn unit(&self) -> Unit {
        self.unit
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} per {:?}", self.max, self.unit, self.window)
    }
}

/// What one grant spends: a number of requests and a number of tokens.
///
/// Each quota of the limiter is charged the amount of its own [`Unit`]; a unit
/// that no quota counts is free.
///
/// # Examples
///
/// ```
/// use paceline::{Cost, Unit};
///
/// // One Gemini call with an 812-token prompt: one request and 812 tokens.
/// let call = Cost::tokens(812);
/// assert_eq!(call.amount(Unit::Requests), 1);
/// assert_eq!(call.amount(Unit::Tokens), 812);
///
/// assert_eq!(Cost::requests(3), Cost::new(3, 0));
/// assert_eq!(Cost::default(), Cost::requests(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Cost {
    /// Requests spent.
    pub requests: u64,
    /// Tokens spent.
    pub tokens: u64,
}

impl Cost {
    /// A cost of `requests` requests and `tokens` tokens.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::Cost;
    /// let c = Cost::new(2, 1_000);
    /// assert_eq!((c.requests, c.tokens), (2, 1_000));
    /// ```
    pub const fn new(requests: u64, tokens: u64) -> Cost {
        Cost { requests, tokens }
    }

    /// `n` requests, no tokens.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::Cost;
    /// assert_eq!(Cost::requests(5).tokens, 0);
    /// ```
    pub const fn requests(n: u64) -> Cost {
        Cost::new(n, 0)
    }

    /// One request that spends `n` tokens: the usual cost of one call to a
    /// token-metered API.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::Cost;
    /// assert_eq!(Cost::tokens(812), Cost::new(1, 812));
    /// ```
    pub const fn tokens(n: u64) -> Cost {
        Cost::new(1, n)
    }

    /// The amount this cost charges a quota counting `unit`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::{Cost, Unit};
    /// assert_eq!(Cost::new(1, 40).amount(Unit::Tokens), 40);
    /// ```
    pub const fn amount(&self, unit: Unit) -> u64 {
        match unit {
            Unit::Requests => self.requests,
            Unit::Tokens => self.tokens,
        }
    }
}

impl Default for Cost {
    /// One request.
    fn default() -> Cost {
        Cost::requests(1)
    }
}

impl fmt::Display for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} requests, {} tokens", self.requests, self.tokens)
    }
}
