//! [`RateLimitError`]: the limiter refused, or the inner service failed.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::{AcquireError, TryAcquireError};
use crate::keyed::KeyedError;

/// A boxed error, as tower's middleware returns: `Box<dyn Error + Send + Sync>`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The error of a rate-limited service: the limiter refused the request (the
/// inner service was not called), or the inner service failed.
///
/// `R` is the limiter's error: [`AcquireError`] for
/// [`RateLimit`](super::RateLimit), [`KeyedError<AcquireError>`] for
/// [`KeyedRateLimit`](super::KeyedRateLimit). Match on it, or turn it into
/// tower's boxed error with [`into_box_error`](Self::into_box_error), where
/// the limiter's error is then found by downcasting.
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
/// use paceline::AcquireError;
/// use paceline::tower::RateLimitError;
///
/// fn status(err: &RateLimitError<Infallible>) -> u16 {
///     match err {
///         RateLimitError::Limited(AcquireError::DeadlineExceeded { .. }) => 429,
///         RateLimitError::Limited(_) => 503,
///         RateLimitError::Inner(never) => match *never {},
///     }
/// }
/// assert_eq!(status(&RateLimitError::Limited(AcquireError::Closed)), 503);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateLimitError<E, R = AcquireError> {
    /// The limiter refused: the request was not passed on.
    #[error("rate limited: {0}")]
    Limited(#[source] R),
    /// The inner service failed.
    #[error(transparent)]
    Inner(E),
}

impl<E, R> RateLimitError<E, R> {
    /// Whether the limiter refused (rather than the inner service failing).
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::AcquireError;
    /// # use paceline::tower::RateLimitError;
    /// assert!(RateLimitError::<String>::Limited(AcquireError::Closed).is_limited());
    /// assert!(!RateLimitError::<String>::Inner("boom".into()).is_limited());
    /// ```
    pub fn is_limited(&self) -> bool {
        matches!(self, RateLimitError::Limited(_))
    }

    /// The inner service's error, if that is what this is.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::tower::RateLimitError;
    /// let err: RateLimitError<&str> = RateLimitError::Inner("boom");
    /// assert_eq!(err.into_inner(), Some("boom"));
    /// ```
    pub fn into_inner(self) -> Option<E> {
        match self {
            RateLimitError::Inner(err) => Some(err),
            RateLimitError::Limited(_) => None,
        }
    }

    /// tower's boxed error: the inner error as it boxes itself, or the
    /// limiter's error boxed (downcast it to `R`).
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::AcquireError;
    /// # use paceline::tower::{BoxError, RateLimitError};
    /// let err: RateLimitError<BoxError> = RateLimitError::Limited(AcquireError::Closed);
    /// let boxed = err.into_box_error();
    /// assert_eq!(boxed.downcast_ref::<AcquireError>(), Some(&AcquireError::Closed));
    /// ```
    pub fn into_box_error(self) -> BoxError
    where
        E: Into<BoxError>,
        R: std::error::Error + Send + Sync + 'static,
    {
        match self {
            RateLimitError::Limited(err) => Box::new(err),
            RateLimitError::Inner(err) => err.into(),
        }
    }
}

impl<E> RateLimitError<E, AcquireError> {
    /// For a request refused because it could not be granted in time (the
    /// layer's `max_wait`), how long until it could have been: an HTTP
    /// `Retry-After`. `None` for the other errors.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use paceline::AcquireError;
    /// # use paceline::tower::RateLimitError;
    /// # use tokio::time::Instant;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let earliest = Some(Instant::now() + Duration::from_secs(3));
    /// let err: RateLimitError<()> = RateLimitError::Limited(AcquireError::DeadlineExceeded { earliest });
    /// assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
    /// # }
    /// ```
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RateLimitError::Limited(err) => retry_after(err),
            RateLimitError::Inner(_) => None,
        }
    }
}

impl<E> RateLimitError<E, KeyedError<AcquireError>> {
    /// As [`RateLimitError::retry_after`], for a keyed limiter: `None` also
    /// when the key was refused for want of room.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::{AcquireError, KeyedError};
    /// # use paceline::tower::RateLimitError;
    /// let err: RateLimitError<(), KeyedError<AcquireError>> =
    ///     RateLimitError::Limited(KeyedError::TooManyKeys { max_keys: 10 });
    /// assert_eq!(err.retry_after(), None);
    /// ```
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            RateLimitError::Limited(KeyedError::Limiter(err)) => retry_after(err),
            _ => None,
        }
    }
}

fn retry_after(err: &AcquireError) -> Option<Duration> {
    match err {
        AcquireError::DeadlineExceeded {
            earliest: Some(earliest),
        } => Some(earliest.saturating_duration_since(Instant::now())),
        _ => None,
    }
}

/// A refused `try_acquire` said as a refused acquire with a deadline of now:
/// the earliest grant is `retry_after` from now.
pub(crate) fn refused_now(err: TryAcquireError) -> AcquireError {
    match err {
        TryAcquireError::RateLimited { retry_after } => AcquireError::DeadlineExceeded {
            earliest: Instant::now().checked_add(retry_after),
        },
        TryAcquireError::Closed => AcquireError::Closed,
        TryAcquireError::CostExceedsQuota {
            unit,
            cost,
            max,
            window,
        } => AcquireError::CostExceedsQuota {
            unit,
            cost,
            max,
            window,
        },
        TryAcquireError::Unavailable(reason) => AcquireError::Unavailable(reason),
    }
}
