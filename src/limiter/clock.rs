//! Where the limiter reads the time.

use tokio::time::Instant;

/// The limiter's clock: tokio's, so that a paused test clock is honoured.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Clock;

impl Clock {
    #[inline]
    pub(crate) fn now(&self) -> Instant {
        Instant::now()
    }
}
