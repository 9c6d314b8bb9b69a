//! Call rate-limited services from async code: exactly at their quota, never
//! over it.
//!
//! When an upstream API says "15 requests per minute, 1,500 per day", it
//! counts over a sliding window and answers 429 the moment you go over.
//! paceline's [`RateLimiter`] enforces the same rule on your side:
//!
//! - **Strict sliding window.** For every quota `(max, window)` and every
//!   instant `t`, the cost granted in `(t - window, t]` is at most `max`. No
//!   burst above `max`, ever (token buckets and GCRA allow one; fixed windows
//!   allow twice `max` across a boundary).
//! - **FIFO and work-conserving.** Waiters are served in the order they came,
//!   each at the earliest instant its grant is feasible, so the quota is used
//!   to the full.
//! - **Several quotas, two units.** Requests per minute, requests per day and
//!   tokens per minute, checked and charged in one atomic acquire.
//! - **Cancel-safe, pausable, reconfigurable, closable**, with a
//!   [`stats()`](RateLimiter::stats) snapshot cheap enough for every request.
//! - **Virtual time.** Time is [`tokio::time::Instant`]: under
//!   `tokio::time::pause()` everything runs exactly and instantly, so tests
//!   assert exact instants.
//!
//! # A tour
//!
//! Wait for a grant before each call:
//!
//! ```
//! use std::time::Duration;
//! use paceline::RateLimiter;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let limiter = RateLimiter::new(15, Duration::from_secs(60))?;
//! limiter.acquire().await?;
//! // ... call the API ...
//! # Ok(()) }
//! ```
//!
//! Several quotas, and a cost in tokens, granted atomically:
//!
//! ```
//! use paceline::{Cost, Quota, RateLimiter, Unit};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let limiter = RateLimiter::builder()
//!     .quota(Quota::per_minute(15)?)
//!     .quota(Quota::per_day(1_500)?)
//!     .quota(Quota::per_minute(1_000_000)?.counting(Unit::Tokens))
//!     .build()?;
//! let grant = limiter.acquire_cost(Cost::tokens(812)).await?;
//! assert_eq!(limiter.stats().quotas[2].in_window, 812);
//! # let _ = grant;
//! # Ok(()) }
//! ```
//!
//! Refuse a wait that is too long (a per-day quota can mean hours), or don't
//! wait at all:
//!
//! ```
//! use std::time::Duration;
//! use paceline::{AcquireError, Quota, RateLimiter};
//! use tokio::time::Instant;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let limiter = RateLimiter::builder().quota(Quota::per_day(1)?).build()?;
//! limiter.try_acquire()?;
//! let err = limiter.try_acquire().unwrap_err();
//! assert_eq!(err.retry_after(), Some(Duration::from_secs(86_400)));
//!
//! let in_a_minute = Instant::now() + Duration::from_secs(60);
//! let refused = limiter.acquire_before(in_a_minute).await;
//! assert!(matches!(refused, Err(AcquireError::DeadlineExceeded { .. })));
//! # Ok(()) }
//! ```
//!
//! The server answered 429 and asked for 20 s: nobody is granted before then.
//!
//! ```
//! use std::time::Duration;
//! use paceline::RateLimiter;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let limiter = RateLimiter::new(500, Duration::from_secs(60))?;
//! limiter.pause_for(Duration::from_secs(20));
//! assert_eq!(limiter.acquire().await?.waited(), Duration::from_secs(20));
//! # Ok(()) }
//! ```
//!
//! Many calls with at most `k` in flight, every result kept, in input order
//! ([`bounded_map`]); a queue of jobs, each a batch of items, run with job,
//! item and global bounds, retries and timeouts, every call through its
//! class's limiter ([`Executor`] running your [`Workload`]):
//!
//! ```
//! use paceline::bounded_map;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let lengths = bounded_map(["a", "bb", "ccc"], 2, |s| async move { s.len() }).await;
//! assert_eq!(lengths, [1, 2, 3]);
//! # }
//! ```
//!
//! One limit per key (an API key, a user, an address), each key a strict
//! window of its own, made on first use and evicted once idle, with a cap on
//! live keys ([`KeyedRateLimiter`]):
//!
//! ```
//! use std::time::Duration;
//! use paceline::{KeyedError, KeyedRateLimiter, Quota};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let limiter = KeyedRateLimiter::<String>::builder()
//!     .quota(Quota::per_minute(60)?)
//!     .max_keys(10_000)
//!     .build()?;
//! limiter.acquire("alice").await?;
//! match limiter.try_acquire("bob") {
//!     Ok(_) => {}                                             // call on bob's behalf
//!     Err(KeyedError::Limiter(refused)) => println!("bob: retry in {:?}", refused.retry_after()),
//!     Err(KeyedError::TooManyKeys { .. }) => println!("too many clients at once"),
//!     Err(other) => return Err(other.into()),
//! }
//! assert_eq!(limiter.len(), 2);
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! - `tower`: the `paceline::tower` module, a tower `Layer` and `Service`
//!   that acquire from any [`Limiter`] before each call, and their keyed
//!   variant with a key extractor (for axum, tonic, hyper).
//! - `serde`: `Serialize` for [`Stats`], [`KeyedStats`], the executor's
//!   [`ExecutorStats`] and [`JobReport`]s, and the errors they hold, so that a
//!   health endpoint can return them as JSON. Durations are milliseconds
//!   (floats); instants, which mean nothing outside the process, are the
//!   signed milliseconds from the moment of serialising (a pause ending in
//!   1.5 s is `1500.0`, a job that ended 2 s ago `-2000.0`). Field names are
//!   the Rust ones.
//! - `redis`: `paceline::redis`, a limiter whose quotas live in Redis, shared
//!   by many processes.
//!
//! # Clock and fast lane
//!
//! A limiter's instants are [`tokio::time::Instant`]s: tokio's virtual clock
//! when it is paused, the system's monotonic clock otherwise.
//!
//! On the running clock, while nobody waits, a limiter whose request quotas
//! are all above 1,024 per window (and a second or longer) grants through a
//! lock-free *fast lane*: a budget that fits every quota, taken with one
//! compare-and-swap for up to a millisecond, then recorded as one log entry
//! dated no earlier than any grant in it. Like coalescing, this can only delay
//! when a grant stops counting, never admit more. Within an opening the lane
//! measures time with the processor's time-stamp counter, anchored to tokio's
//! clock when it opened, so the counter's rate error never accumulates; the
//! instants it gives grants are within microseconds of tokio's clock.
//!
//! tokio's timer counts whole milliseconds, and a millisecond lost on every
//! wait is capacity given up (1% of a 100 ms quota). On the running clock a
//! waiter therefore sleeps on tokio's timer until two milliseconds before its
//! instant only, and is woken at the instant by one thread of paceline's
//! (`paceline-timer`, started on first use), which sleeps on a condition
//! variable: grants come within about a tenth of a millisecond of the instant
//! they become feasible, and nothing spins.
#![forbid(unsafe_code)]

mod bounded;
mod error;
mod executor;
mod keyed;
mod limit;
mod limiter;
mod quota;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "serde")]
mod serialize;
mod stats;
#[cfg(feature = "tower")]
pub mod tower;

pub use bounded::{BoundedMap, BoundedMapExt, bounded_map};
pub use error::{AcquireError, ConfigError, TryAcquireError};
pub use executor::{
    BuildError, ClassConfig, ClassStats, Executor, ExecutorBuilder, ExecutorStats, Failure,
    ItemError, ItemOutcome, Jitter, JobHandle, JobId, JobReport, JobStatus, JobStream, JobSummary,
    RetryPolicy, ShutdownReport, SubmitError, Workload,
};
pub use keyed::{KeyedError, KeyedRateLimiter, KeyedRateLimiterBuilder, KeyedStats};
pub use limit::Limiter;
pub use limiter::{Acquire, Grant, RateLimiter, RateLimiterBuilder};
pub use quota::{Cost, Quota, Unit};
pub use stats::{QuotaStats, Stats};
