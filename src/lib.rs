//! paceline: call rate-limited services from async code.
#![forbid(unsafe_code)]

mod error;
mod limiter;
mod quota;
mod stats;

pub use error::{AcquireError, ConfigError, TryAcquireError};
pub use limiter::{Acquire, Grant, RateLimiter, RateLimiterBuilder};
pub use quota::{Cost, Quota, Unit};
pub use stats::{QuotaStats, Stats};
