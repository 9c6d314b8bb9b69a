//! The local [`RateLimiter`]: a strict sliding window with FIFO waiters.

mod acquire;
mod clock;
mod fine_timer;
mod lane;
mod queue;
mod state;
mod window;

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

pub use self::acquire::{Acquire, Grant};
use self::clock::Clock;
use self::lane::Lane;
use self::state::{LimiterState, WakeList};
use crate::error::{ConfigError, TryAcquireError};
use crate::quota::{Cost, Quota, Unit};
use crate::stats::Stats;

/// The longest a fast-lane opening lasts.
const MAX_OPENING: Duration = Duration::from_millis(1);

/// The lane reopens only when the lock was taken twice within this span.
const HOT_SPAN: Duration = Duration::from_millis(2);

/// What every handle of one limiter shares.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<LimiterState>,
    clock: Clock,
    lane: Lane,
    /// The instant the lane's anchors count their nanoseconds from.
    origin: Instant,
    /// Whether any quota counts tokens: then a cost with tokens cannot take
    /// the lane, whose budget is in requests.
    counts_tokens: bool,
}

/// The state under the lock, with the limiter's time at locking. When it is
/// dropped, the fast lane reopens if it may.
pub(crate) struct Locked<'a> {
    state: MutexGuard<'a, LimiterState>,
    shared: &'a Shared,
    pub(crate) now: Instant,
    /// Whether the limiter is in use often enough for the lane to pay.
    hot: bool,
}

impl Deref for Locked<'_> {
    type Target = LimiterState;

    fn deref(&self) -> &LimiterState {
        &self.state
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut LimiterState {
        &mut self.state
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if !self.hot {
            return;
        }
        let Some(counter) = self.shared.clock.counter() else {
            return;
        };
        if !self.state.lane_may_open() {
            return;
        }
        // The lane opens now, not when the lock was taken: the time is read
        // again, before the counter (the opening's instant) and after it (so
        // that the opening ends no later than one step after both).
        let now = self.state.observe(self.shared.clock.now());
        let raw = counter.raw();
        let after = self.shared.clock.now();
        let Some((budget, deadline)) = self.state.open_lane(now, lane::MAX_BUDGET) else {
            return;
        };
        // An opening lasts a millisecond at most and ends a tenth early: the
        // counter's rate error and its skew between cores (microseconds on
        // virtual machines) stay well inside the step the entry is dated by.
        let lasts = deadline
            .saturating_duration_since(after)
            .min(MAX_OPENING)
            .mul_f64(0.9);
        let since_origin = now.saturating_duration_since(self.shared.origin);
        self.shared.lane.open(
            budget,
            lane::Anchor {
                counter: raw,
                nanos: u64::try_from(since_origin.as_nanos()).unwrap_or(u64::MAX),
                lasts: u64::try_from(lasts.as_nanos()).unwrap_or(u64::MAX),
            },
        );
    }
}

impl Shared {
    /// Grants `cost` through the fast lane, without the lock, if it is open
    /// and has room (and no deadline is set); returns the instant of the
    /// grant.
    #[inline]
    pub(crate) fn try_lane(&self, cost: Cost, deadline: Option<Instant>) -> Option<Instant> {
        if cost.tokens > 0 && self.counts_tokens {
            return None;
        }
        // A grant past a deadline could not be given back: the lane checks
        // the grant's instant against it before taking.
        let not_after = match deadline {
            None => u64::MAX,
            Some(deadline) => {
                let since = deadline.checked_duration_since(self.origin)?;
                u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
            }
        };
        let counter = self.clock.counter()?;
        let taken = self.lane.try_take(
            cost.requests,
            not_after,
            || counter.raw(),
            |from, to| counter.delta_as_nanos(from, to),
        )?;
        let nanos = taken.anchor.nanos.saturating_add(taken.elapsed);
        Some(self.origin + Duration::from_nanos(nanos))
    }

    /// Takes the lock, seals the fast lane, and reads the limiter's time
    /// (never earlier than any time it has seen). The clock is read before
    /// locking, to keep the lock short, and again after a seal, so that what
    /// the lane granted is dated no earlier than any of its grants.
    #[inline]
    pub(crate) fn lock(&self) -> Locked<'_> {
        let read = self.clock.now();
        let mut state = self.state.lock();
        let mut now = state.observe(read);
        if state.lane_is_open() {
            let sealed = self.lane.seal();
            now = state.observe(self.clock.now());
            state.close_lane(sealed.grants, sealed.remaining, now);
        }
        let hot = state.touch(now, HOT_SPAN);
        Locked {
            state,
            shared: self,
            now,
            hot,
        }
    }

    /// On a slow path: turns the fast lane off if tokio's clock was paused
    /// after the limiter was built.
    pub(crate) fn notice_pause(&self) {
        self.clock.notice_pause();
    }

    /// Whether tokio's clock has been seen paused (then waits keep to
    /// tokio's timer, which follows the virtual time exactly).
    pub(crate) fn clock_is_paused(&self) -> bool {
        self.clock.is_paused()
    }
}

/// Whether a limiter could be dropped and made anew without any difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idleness {
    /// Now.
    Idle,
    /// From this instant on, unless it is used meanwhile.
    From(Instant),
    /// Another handle exists or someone waits: nobody can tell.
    Busy,
}

/// A strict sliding-window rate limiter with FIFO waiters.
///
/// For every quota `(max, window)` it holds, and for every instant `t`, the
/// cost granted in `(t - window, t]` is at most `max`: no burst above `max` in
/// any window, ever. Waiters are granted in the order they first polled, each
/// at the earliest instant its grant is feasible. A clone is a handle to the
/// same limiter: clones share one state, one queue and one window.
///
/// The contract in full:
///
/// - **Several quotas** (say 15 per minute and 1,500 per day, or requests and
///   tokens per minute) are checked and charged together: a grant fits all of
///   them at the same instant, and a waiter never holds a grant in one quota
///   while it waits on another.
/// - **FIFO, no barging.** A later small acquire never overtakes an earlier
///   large one, and `try_acquire` fails while anyone is queued. The price: a
///   large acquire at the head holds back the small ones behind it.
/// - **Work-conserving.** Each waiter is granted at the earliest instant that
///   its grant is feasible given the grants made and the waiters ahead. Under
///   tokio's paused clock this is exact; in real time a waiter wakes within
///   about a tenth of a millisecond of its instant (tokio's timer takes it to
///   two milliseconds before, a thread of paceline's the rest of the way).
/// - **Cancel-safe.** See [`Acquire`].
/// - **A cost above a quota's `max`** fails at once; it never waits forever.
/// - **Pause** ([`pause_for`](Self::pause_for)): after a 429, nobody is
///   granted before the server's retry instant; the queue keeps its order.
/// - **Reconfigure** ([`set_quota`](Self::set_quota)): a new quota applies to
///   the queued waiters at once.
/// - **Close** ([`close`](Self::close)): queued and later acquires fail.
///
/// Time is [`tokio::time::Instant`], so a limiter runs in virtual time under
/// `tokio::time::pause()` (or `#[tokio::test(start_paused = true)]`).
///
/// # Memory
///
/// A quota whose `max` is at most 1,024 remembers each grant instant exactly.
/// A larger quota coalesces grants that come within `window / 1000` of each
/// other into one entry dated at the latest of them, so its memory stays
/// below about 1,001 entries whatever the rate. This is strict (a coalesced
/// grant counts for slightly longer, never shorter) and costs at most 0.1% of
/// the quota's capacity.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use paceline::RateLimiter;
/// use tokio::time::Instant;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), paceline::ConfigError> {
/// let limiter = RateLimiter::new(15, Duration::from_secs(60))?;
/// let start = Instant::now();
/// for _ in 0..15 {
///     limiter.acquire().await.unwrap(); // the first 15 at once
/// }
/// let grant = limiter.acquire().await.unwrap(); // the 16th a window later
/// assert_eq!(grant.granted_at() - start, Duration::from_secs(60));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RateLimiter {
    shared: Arc<Shared>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("quotas", &self.quotas())
            .finish_non_exhaustive()
    }
}

/// Builds a [`RateLimiter`] with one or more quotas.
///
/// # Examples
///
/// ```
/// use paceline::{Quota, RateLimiter, Unit};
///
/// // Gemini's free tier for one model: requests per minute and per day, and
/// // tokens per minute, enforced together.
/// let limiter = RateLimiter::builder()
///     .quota(Quota::per_minute(15)?)
///     .quota(Quota::per_day(1_500)?)
///     .quota(Quota::per_minute(1_000_000)?.counting(Unit::Tokens))
///     .build()?;
/// assert_eq!(limiter.quotas().len(), 3);
/// # Ok::<(), paceline::ConfigError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct RateLimiterBuilder {
    quotas: Vec<Quota>,
}

impl RateLimiterBuilder {
    /// Adds a quota. Call it once per quota.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::{Quota, RateLimiter};
    /// let limiter = RateLimiter::builder().quota(Quota::per_second(5)?).build()?;
    /// assert_eq!(limiter.quotas(), vec![Quota::per_second(5)?]);
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    #[must_use]
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quotas.push(quota);
        self
    }

    /// Builds the limiter.
    ///
    /// # Errors
    ///
    /// [`ConfigError::NoQuota`] if no quota was added.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::{ConfigError, RateLimiter};
    /// assert_eq!(RateLimiter::builder().build().unwrap_err(), ConfigError::NoQuota);
    /// ```
    pub fn build(self) -> Result<RateLimiter, ConfigError> {
        RateLimiter::with_quotas(&self.quotas)
    }
}

impl RateLimiter {
    /// A limiter of these quotas (at least one).
    pub(crate) fn with_quotas(quotas: &[Quota]) -> Result<RateLimiter, ConfigError> {
        Self::with_quotas_and_clock(quotas, Clock::detect(), lane::shards_for_this_machine())
    }

    /// A limiter of `quotas` (at least one) with a clock like this one's:
    /// cheaper than detecting the clock again, for a holder of many limiters.
    /// Its fast lane has one word: one key of many is seldom granted by
    /// several threads at once, and shards would cost memory per key.
    pub(crate) fn sibling(&self, quotas: &[Quota]) -> Result<RateLimiter, ConfigError> {
        Self::with_quotas_and_clock(quotas, self.shared.clock.fork(), 1)
    }

    /// `shards`: how many words the fast lane splits its budget between, if
    /// the quotas let it open at all (one otherwise, which it never uses).
    fn with_quotas_and_clock(
        quotas: &[Quota],
        clock: Clock,
        shards: usize,
    ) -> Result<RateLimiter, ConfigError> {
        let state = LimiterState::new(quotas)?;
        let counts_tokens = quotas.iter().any(|q| q.unit() == Unit::Tokens);
        let shards = if state.lane_capable() { shards } else { 1 };
        Ok(RateLimiter {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                origin: clock.now(),
                clock,
                lane: Lane::new(shards),
                counts_tokens,
            }),
        })
    }
}

impl RateLimiter {
    /// A limiter of `max` requests per sliding `window`.
    ///
    /// # Errors
    ///
    /// As [`Quota::new`]: zero `max`, zero `window`, or values too large.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::RateLimiter;
    /// let limiter = RateLimiter::new(15, std::time::Duration::from_secs(60))?;
    /// assert_eq!(limiter.stats().max, 15);
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    pub fn new(max: u64, window: Duration) -> Result<RateLimiter, ConfigError> {
        Self::builder().quota(Quota::new(max, window)?).build()
    }

    /// A builder, for several quotas.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::{Quota, RateLimiter};
    /// let limiter = RateLimiter::builder()
    ///     .quota(Quota::per_minute(15)?)
    ///     .quota(Quota::per_day(1_500)?)
    ///     .build()?;
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    pub fn builder() -> RateLimiterBuilder {
        RateLimiterBuilder::default()
    }

    /// Waits for a grant of one request.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future loses its place in the queue and
    /// nothing else (see [`Acquire`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::RateLimiter;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), paceline::ConfigError> {
    /// let limiter = RateLimiter::new(2, std::time::Duration::from_secs(1))?;
    /// limiter.acquire().await.unwrap();
    /// assert_eq!(limiter.stats().in_window, 1);
    /// # Ok(()) }
    /// ```
    pub fn acquire(&self) -> Acquire<'_> {
        self.acquire_cost(Cost::requests(1))
    }

    /// Waits for a grant of `n` requests at once.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe, as [`acquire`](Self::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::RateLimiter;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), paceline::ConfigError> {
    /// let limiter = RateLimiter::new(10, std::time::Duration::from_secs(1))?;
    /// limiter.acquire_many(7).await.unwrap();
    /// assert_eq!(limiter.stats().available, 3);
    /// # Ok(()) }
    /// ```
    pub fn acquire_many(&self, n: u64) -> Acquire<'_> {
        self.acquire_cost(Cost::requests(n))
    }

    /// Waits for a grant of `cost`: requests and tokens, each charged to the
    /// quotas of its unit, all in one atomic grant.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe, as [`acquire`](Self::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use paceline::{Cost, Quota, RateLimiter, Unit};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), paceline::ConfigError> {
    /// let limiter = RateLimiter::builder()
    ///     .quota(Quota::per_minute(15)?)
    ///     .quota(Quota::per_minute(1_000)?.counting(Unit::Tokens))
    ///     .build()?;
    /// limiter.acquire_cost(Cost::tokens(812)).await.unwrap();
    /// // 188 tokens left this minute: the next 812-token call waits a minute.
    /// let grant = limiter.acquire_cost(Cost::tokens(812)).await.unwrap();
    /// assert_eq!(grant.waited(), Duration::from_secs(60));
    /// # Ok(()) }
    /// ```
    pub fn acquire_cost(&self, cost: Cost) -> Acquire<'_> {
        Acquire::new(&self.shared, cost, None)
    }

    /// Waits for a grant of one request that comes no later than `deadline`.
    ///
    /// If the grant cannot come by then (given the grants made, the pause and
    /// the waiters ahead), it fails at once with
    /// [`AcquireError::DeadlineExceeded`](crate::AcquireError::DeadlineExceeded),
    /// saying when it could come; if the deadline passes while it waits (after a
    /// pause, say), it fails then.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe, as [`acquire`](Self::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use paceline::{AcquireError, Quota, RateLimiter};
    /// use tokio::time::Instant;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), paceline::ConfigError> {
    /// let limiter = RateLimiter::builder().quota(Quota::per_day(1)?).build()?;
    /// limiter.acquire().await.unwrap();
    /// // The next grant is a day away: refuse it now rather than wait.
    /// let deadline = Instant::now() + Duration::from_secs(60);
    /// match limiter.acquire_before(deadline).await {
    ///     Err(AcquireError::DeadlineExceeded { earliest: Some(at) }) => {
    ///         assert_eq!(at - Instant::now(), Duration::from_secs(86_400));
    ///     }
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn acquire_before(&self, deadline: Instant) -> Acquire<'_> {
        self.acquire_cost_before(Cost::requests(1), deadline)
    }

    /// Waits for a grant of `cost` that comes no later than `deadline`; see
    /// [`acquire_before`](Self::acquire_before).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe, as [`acquire`](Self::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use paceline::{Cost, RateLimiter};
    /// use tokio::time::Instant;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), paceline::ConfigError> {
    /// let limiter = RateLimiter::new(10, Duration::from_secs(1))?;
    /// limiter.acquire_many(10).await.unwrap();
    /// let deadline = Instant::now() + Duration::from_secs(1);
    /// let grant = limiter.acquire_cost_before(Cost::requests(5), deadline).await.unwrap();
    /// assert_eq!(grant.granted_at(), deadline);
    /// # Ok(()) }
    /// ```
    pub fn acquire_cost_before(&self, cost: Cost, deadline: Instant) -> Acquire<'_> {
        Acquire::new(&self.shared, cost, Some(deadline))
    }

    /// Takes one request now if it fits and nobody is queued.
    ///
    /// # Errors
    ///
    /// [`TryAcquireError::RateLimited`] with the wait after which it would fit
    /// (behind the queued waiters), [`TryAcquireError::Closed`], or
    /// [`TryAcquireError::CostExceedsQuota`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use paceline::RateLimiter;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), paceline::ConfigError> {
    /// let limiter = RateLimiter::new(1, Duration::from_secs(10))?;
    /// assert!(limiter.try_acquire().is_ok());
    /// assert_eq!(limiter.try_acquire().unwrap_err().retry_after(), Some(Duration::from_secs(10)));
    /// # Ok(()) }
    /// ```
    pub fn try_acquire(&self) -> Result<Grant, TryAcquireError> {
        self.try_acquire_cost(Cost::requests(1))
    }

    /// Takes `n` requests now if they fit and nobody is queued.
    ///
    /// # Errors
    ///
    /// As [`try_acquire`](Self::try_acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use paceline::{RateLimiter, TryAcquireError};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), paceline::ConfigError> {
    /// let limiter = RateLimiter::new(5, Duration::from_secs(1))?;
    /// assert!(limiter.try_acquire_many(5).is_ok());
    /// assert!(matches!(limiter.try_acquire_many(6), Err(TryAcquireError::CostExceedsQuota { .. })));
    /// # Ok(()) }
    /// ```
    pub fn try_acquire_many(&self, n: u64) -> Result<Grant, TryAcquireError> {
        self.try_acquire_cost(Cost::requests(n))
    }

    /// Takes `cost` now if it fits every quota and nobody is queued.
    ///
    /// # Errors
    ///
    /// As [`try_acquire`](Self::try_acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use paceline::{Cost, Quota, RateLimiter, Unit};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), paceline::ConfigError> {
    /// let limiter = RateLimiter::builder()
    ///     .quota(Quota::per_minute(100)?.counting(Unit::Tokens))
    ///     .build()?;
    /// assert!(limiter.try_acquire_cost(Cost::tokens(60)).is_ok());
    /// assert!(limiter.try_acquire_cost(Cost::tokens(60)).is_err());
    /// # Ok(()) }
    /// ```
    pub fn try_acquire_cost(&self, cost: Cost) -> Result<Grant, TryAcquireError> {
        if let Some(at) = self.shared.try_lane(cost, None) {
            return Ok(Grant::new(cost, at, Duration::ZERO));
        }
        let mut state = self.shared.lock();
        let now = state.now;
        // Only a limiter that could open the lane needs to know whether
        // tokio's clock was paused since.
        let lane_capable = state.lane_capable();
        let at = state.try_acquire(cost, now).inspect_err(|err| {
            if lane_capable && matches!(err, TryAcquireError::RateLimited { .. }) {
                self.shared.notice_pause();
            }
        })?;
        Ok(Grant::new(cost, at, Duration::ZERO))
    }

    /// A consistent snapshot of the limiter.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use paceline::RateLimiter;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), paceline::ConfigError> {
    /// let limiter = RateLimiter::new(4, Duration::from_secs(1))?;
    /// limiter.acquire_many(3).await.unwrap();
    /// let stats = limiter.stats();
    /// assert_eq!((stats.in_window, stats.available, stats.utilization_percent), (3, 1, 75.0));
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> Stats {
        let mut state = self.shared.lock();
        let now = state.now;
        state.stats(now)
    }

    /// The quotas, in the order they were given.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::{Quota, RateLimiter};
    /// let limiter = RateLimiter::new(15, std::time::Duration::from_secs(60))?;
    /// assert_eq!(limiter.quotas(), vec![Quota::per_minute(15)?]);
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    pub fn quotas(&self) -> Vec<Quota> {
        self.shared.state.lock().quotas().copied().collect()
    }

    /// Grants nothing for `duration` from now: the server said 429 and asked
    /// for this delay. The queue keeps its order; a later pause extends an
    /// earlier one, a shorter one does not cut it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use paceline::RateLimiter;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), paceline::ConfigError> {
    /// let limiter = RateLimiter::new(100, Duration::from_secs(60))?;
    /// limiter.pause_for(Duration::from_secs(7));
    /// let grant = limiter.acquire().await.unwrap();
    /// assert_eq!(grant.waited(), Duration::from_secs(7));
    /// # Ok(()) }
    /// ```
    pub fn pause_for(&self, duration: Duration) {
        self.update(|state, now, wake| {
            let until = now.checked_add(duration).unwrap_or(now + Quota::MAX_WINDOW);
            state.pause_until(until, now, wake);
        });
    }

    /// Grants nothing before `until`; see [`pause_for`](Self::pause_for).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use paceline::RateLimiter;
    /// use tokio::time::Instant;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), paceline::ConfigError> {
    /// let limiter = RateLimiter::new(100, Duration::from_secs(60))?;
    /// let until = Instant::now() + Duration::from_secs(2);
    /// limiter.pause_until(until);
    /// assert_eq!(limiter.stats().paused_until, Some(until));
    /// assert!(limiter.try_acquire().is_err());
    /// assert_eq!(limiter.acquire().await.unwrap().granted_at(), until);
    /// # Ok(()) }
    /// ```
    pub fn pause_until(&self, until: Instant) {
        self.update(|state, now, wake| state.pause_until(until, now, wake));
    }

    /// Ends a pause now.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use paceline::RateLimiter;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), paceline::ConfigError> {
    /// let limiter = RateLimiter::new(100, Duration::from_secs(60))?;
    /// limiter.pause_for(Duration::from_secs(30));
    /// limiter.resume();
    /// assert!(limiter.try_acquire().is_ok());
    /// # Ok(()) }
    /// ```
    pub fn resume(&self) {
        self.update(|state, now, wake| state.resume(now, wake));
    }

    /// Replaces the quota at `index` (in the order given to the builder) while
    /// the limiter runs: a tier upgrade or downgrade.
    ///
    /// The grants the limiter remembers keep counting, now against the new
    /// quota, and queued waiters are served under it at once: an upgrade grants
    /// them now, a downgrade holds them until the window has room under the new
    /// `max`. A queued waiter whose cost exceeds the new `max` fails with
    /// [`AcquireError::CostExceedsQuota`](crate::AcquireError::CostExceedsQuota).
    /// When a window grows, grants older than the old window were already
    /// forgotten, so the new window counts from there.
    ///
    /// # Errors
    ///
    /// [`ConfigError::NoSuchQuota`] for a bad index,
    /// [`ConfigError::UnitChanged`] if the new quota counts another unit.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use paceline::{Quota, RateLimiter};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), paceline::ConfigError> {
    /// let limiter = RateLimiter::new(15, Duration::from_secs(60))?;
    /// limiter.acquire_many(15).await.unwrap();
    /// limiter.set_quota(0, Quota::per_minute(500)?)?; // the paid tier
    /// assert!(limiter.acquire().await.unwrap().waited().is_zero());
    /// assert_eq!(limiter.stats().in_window, 16);
    /// # Ok(()) }
    /// ```
    pub fn set_quota(&self, index: usize, quota: Quota) -> Result<(), ConfigError> {
        self.update(|state, now, wake| state.set_quota(index, quota, now, wake))
    }

    /// Replaces every quota at once (the same number, each counting the same
    /// unit); see [`set_quota`](Self::set_quota).
    ///
    /// # Errors
    ///
    /// [`ConfigError::QuotaCount`] for a different number of quotas,
    /// [`ConfigError::UnitChanged`] if a quota would count another unit.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::{Quota, RateLimiter};
    /// let limiter = RateLimiter::builder()
    ///     .quota(Quota::per_minute(15)?)
    ///     .quota(Quota::per_day(1_500)?)
    ///     .build()?;
    /// limiter.set_quotas([Quota::per_minute(500)?, Quota::per_day(10_000)?])?;
    /// assert_eq!(limiter.stats().max, 500);
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    pub fn set_quotas(&self, quotas: impl IntoIterator<Item = Quota>) -> Result<(), ConfigError> {
        let quotas: Vec<Quota> = quotas.into_iter().collect();
        self.update(|state, now, wake| state.set_quotas(&quotas, now, wake))
    }

    /// Closes the limiter: queued acquires and every later one fail with
    /// [`AcquireError::Closed`](crate::AcquireError::Closed). Grants already
    /// made stand.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use paceline::{AcquireError, RateLimiter};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), paceline::ConfigError> {
    /// let limiter = RateLimiter::new(1, Duration::from_secs(1))?;
    /// limiter.close();
    /// assert_eq!(limiter.acquire().await.unwrap_err(), AcquireError::Closed);
    /// assert!(limiter.is_closed());
    /// # Ok(()) }
    /// ```
    pub fn close(&self) {
        self.update(|state, _, wake| state.close(wake));
    }

    /// Whether [`close`](Self::close) was called.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::RateLimiter;
    /// let limiter = RateLimiter::new(1, std::time::Duration::from_secs(1))?;
    /// assert!(!limiter.is_closed());
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        self.shared.state.lock().is_closed()
    }

    /// Counts these grants (oldest first) as made by this limiter, and
    /// `granted` as its number of grants so far. For a limiter made to take
    /// over from a lighter record of the same quotas.
    pub(crate) fn seed(&self, grants: impl IntoIterator<Item = Instant>, granted: u64) {
        let mut state = self.shared.lock();
        state.seed(grants, granted);
    }

    /// For a holder of many limiters (the keyed limiter): whether the
    /// limiter holds nothing that a new one would not (no grant that still
    /// counts, no pause, no waiter) and this handle is the only one, so that
    /// dropping it loses nothing; if not, from when it could be so.
    pub(crate) fn idleness(&self) -> Idleness {
        if Arc::strong_count(&self.shared) > 1 {
            return Idleness::Busy;
        }
        let mut state = self.shared.lock();
        let now = state.now;
        match state.idle_at(now) {
            None => Idleness::Busy,
            Some(at) if at <= now => Idleness::Idle,
            Some(at) => Idleness::From(at),
        }
    }

    fn update<T>(&self, f: impl FnOnce(&mut LimiterState, Instant, &mut WakeList) -> T) -> T {
        let mut wake = WakeList::default();
        let result = {
            let mut state = self.shared.lock();
            let now = state.now;
            f(&mut state, now, &mut wake)
        };
        wake.wake_all();
        result
    }
}

#[cfg(test)]
mod model_tests;

#[cfg(test)]
mod lane_tests;
