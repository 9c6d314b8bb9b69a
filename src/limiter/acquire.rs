//! The [`Acquire`] future.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use pin_project::{pin_project, pinned_drop};
use tokio::time::{Instant, Sleep};

use super::Shared;
use super::fine_timer;
use super::queue::WaiterKey;
use super::state::{Admission, WaiterPoll, WakeList};
use crate::error::AcquireError;
use crate::quota::Cost;

/// A grant: the proof that a cost was admitted by every quota.
///
/// A sliding-window grant is never given back: it counts against the window
/// until it leaves it, whatever the caller does next.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use paceline::{Cost, RateLimiter};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), paceline::ConfigError> {
/// let limiter = RateLimiter::new(1, Duration::from_secs(1))?;
/// limiter.acquire().await.unwrap();
/// let grant = limiter.acquire().await.unwrap();
/// assert_eq!(grant.waited(), Duration::from_secs(1));
/// assert_eq!(grant.cost(), Cost::requests(1));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    cost: Cost,
    granted_at: Instant,
    waited: Duration,
    recorded_at: Option<SystemTime>,
}

impl Grant {
    /// The cost granted.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::{Cost, RateLimiter};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), paceline::ConfigError> {
    /// let limiter = RateLimiter::new(10, std::time::Duration::from_secs(1))?;
    /// assert_eq!(limiter.acquire_many(3).await.unwrap().cost(), Cost::requests(3));
    /// # Ok(()) }
    /// ```
    pub fn cost(&self) -> Cost {
        self.cost
    }

    /// The instant of the grant: the one every quota counts it at.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::RateLimiter;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), paceline::ConfigError> {
    /// let limiter = RateLimiter::new(10, std::time::Duration::from_secs(1))?;
    /// let before = tokio::time::Instant::now();
    /// assert_eq!(limiter.acquire().await.unwrap().granted_at(), before);
    /// # Ok(()) }
    /// ```
    pub fn granted_at(&self) -> Instant {
        self.granted_at
    }

    /// How long the acquire waited in the queue (zero when granted at once).
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::RateLimiter;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), paceline::ConfigError> {
    /// let limiter = RateLimiter::new(10, std::time::Duration::from_secs(1))?;
    /// assert!(limiter.acquire().await.unwrap().waited().is_zero());
    /// # Ok(()) }
    /// ```
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// For a grant of a limiter whose log lives in a shared store (the Redis
    /// limiter), the instant the store recorded for it, on the store's own
    /// clock; `None` for the in-process [`RateLimiter`](crate::RateLimiter),
    /// whose [`granted_at`](Grant::granted_at) is exact.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::RateLimiter;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), paceline::ConfigError> {
    /// let limiter = RateLimiter::new(10, std::time::Duration::from_secs(1))?;
    /// assert_eq!(limiter.acquire().await.unwrap().recorded_at(), None);
    /// # Ok(()) }
    /// ```
    pub fn recorded_at(&self) -> Option<SystemTime> {
        self.recorded_at
    }

    pub(crate) fn new(cost: Cost, granted_at: Instant, waited: Duration) -> Self {
        Grant {
            cost,
            granted_at,
            waited,
            recorded_at: None,
        }
    }

    #[cfg(feature = "redis")]
    pub(crate) fn recorded(mut self, at: SystemTime) -> Self {
        self.recorded_at = Some(at);
        self
    }
}

/// How far ahead a timer is armed at most.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 86_400);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    New,
    Queued(WaiterKey),
    Done,
}

enum Step {
    Done(Result<Grant, AcquireError>),
    /// Wait for a wake, or until the first instant (limiter time), the second
    /// being the limiter's time now.
    Wait(Option<(Instant, Instant)>),
}

/// The future returned by [`RateLimiter::acquire`](crate::RateLimiter::acquire)
/// and its variants; it resolves to a [`Grant`] or an [`AcquireError`].
///
/// The acquire takes its place in the queue when first polled; that place
/// fixes its turn.
///
/// # Cancel safety
///
/// Dropping the future at any point leaks nothing. Not yet granted, it leaves
/// the queue (losing its place), and if that lets the next waiter through,
/// that waiter is granted at once. Granted but not yet polled to completion,
/// its grant is taken back and offered to the queue. Once it has returned its
/// [`Grant`], the grant counts against the window.
///
/// # Panics
///
/// Polling it again after it has completed panics. Waiting needs a Tokio
/// runtime with the time driver enabled (as `tokio::time::sleep` does).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use paceline::RateLimiter;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), paceline::ConfigError> {
/// let limiter = RateLimiter::new(1, Duration::from_secs(1))?;
/// limiter.acquire().await.unwrap();
/// // Give up on the second grant after 100 ms: nothing is left behind.
/// let waited = tokio::time::timeout(Duration::from_millis(100), limiter.acquire()).await;
/// assert!(waited.is_err());
/// assert_eq!(limiter.stats().queued, 0);
/// # Ok(()) }
/// ```
#[pin_project(PinnedDrop)]
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Acquire<'a> {
    shared: &'a Shared,
    cost: Cost,
    deadline: Option<Instant>,
    progress: Progress,
    #[pin]
    timer: Option<Sleep>,
    /// The instant handed to the fine timer last, and the waker it will
    /// wake, so that each is handed once.
    fine: Option<(Instant, Waker)>,
}

impl std::fmt::Debug for Acquire<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acquire")
            .field("cost", &self.cost)
            .field("deadline", &self.deadline)
            .field("progress", &self.progress)
            .finish_non_exhaustive()
    }
}

impl<'a> Acquire<'a> {
    pub(crate) fn new(shared: &'a Shared, cost: Cost, deadline: Option<Instant>) -> Self {
        Acquire {
            shared,
            cost,
            deadline,
            progress: Progress::New,
            timer: None,
            fine: None,
        }
    }
}

impl Future for Acquire<'_> {
    type Output = Result<Grant, AcquireError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let step = match *this.progress {
                Progress::New => {
                    if let Some(at) = this.shared.try_lane(*this.cost, *this.deadline) {
                        *this.progress = Progress::Done;
                        return Poll::Ready(Ok(Grant::new(*this.cost, at, Duration::ZERO)));
                    }
                    let mut state = this.shared.lock();
                    let now = state.now;
                    match state.admit(*this.cost, *this.deadline, now, cx.waker()) {
                        Ok(Admission::Granted(at)) => {
                            Step::Done(Ok(Grant::new(*this.cost, at, Duration::ZERO)))
                        }
                        Ok(Admission::Queued { key, wake_at }) => {
                            *this.progress = Progress::Queued(key);
                            Step::Wait(wake_at.map(|at| (at, now)))
                        }
                        Err(err) => Step::Done(Err(err)),
                    }
                }
                Progress::Queued(key) => {
                    let mut wake = WakeList::default();
                    let step = {
                        let mut state = this.shared.lock();
                        let now = state.now;
                        match state.poll_waiter(key, *this.deadline, now, cx.waker(), &mut wake) {
                            WaiterPoll::Granted { at, queued_at } => Step::Done(Ok(Grant::new(
                                *this.cost,
                                at,
                                at.saturating_duration_since(queued_at),
                            ))),
                            WaiterPoll::Failed(err) => Step::Done(Err(err)),
                            WaiterPoll::Waiting { wake_at } => {
                                Step::Wait(wake_at.map(|at| (at, now)))
                            }
                        }
                    };
                    wake.wake_all();
                    step
                }
                Progress::Done => panic!("`Acquire` polled after completion"),
            };
            match step {
                Step::Done(result) => {
                    *this.progress = Progress::Done;
                    return Poll::Ready(result);
                }
                Step::Wait(None) => return Poll::Pending,
                Step::Wait(Some((wake_at, now))) => {
                    // About to sleep: a good moment to notice that tokio's
                    // clock was paused after the limiter was built.
                    this.shared.notice_pause();
                    // A deadline or a pause ending in centuries needs no exact
                    // timer (and tokio's would overflow); waking then is
                    // enough to look again.
                    let mut at = wake_at.min(now.checked_add(FAR_FUTURE).unwrap_or(now));
                    // On a running clock, tokio's timer takes the wait to
                    // within `LEAD` of its instant and the fine timer the rest.
                    let left = at.saturating_duration_since(now);
                    if !this.shared.clock_is_paused() && !left.is_zero() {
                        if left <= fine_timer::LEAD {
                            let handed = this.fine.as_ref().is_some_and(|(fine_at, waker)| {
                                *fine_at == at && waker.will_wake(cx.waker())
                            });
                            // The fine timer runs on the system's clock: it is
                            // given the time left, not tokio's instant (which
                            // can run ahead of it after a paused stretch).
                            if handed
                                || fine_timer::wake_at(std::time::Instant::now() + left, cx.waker())
                            {
                                if !handed {
                                    *this.fine = Some((at, cx.waker().clone()));
                                }
                                return Poll::Pending;
                            }
                        } else {
                            at -= fine_timer::LEAD;
                        }
                    }
                    match this.timer.as_mut().as_pin_mut() {
                        Some(timer) if timer.deadline() == at => {}
                        Some(timer) => timer.reset(at),
                        None => this.timer.set(Some(tokio::time::sleep_until(at))),
                    }
                    let fired = this
                        .timer
                        .as_mut()
                        .as_pin_mut()
                        .is_some_and(|timer| timer.poll(cx).is_ready());
                    if !fired {
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

#[pinned_drop]
impl PinnedDrop for Acquire<'_> {
    fn drop(self: Pin<&mut Self>) {
        if let Progress::Queued(key) = self.progress {
            let mut wake = WakeList::default();
            {
                let mut state = self.shared.lock();
                let now = state.now;
                state.cancel(key, now, &mut wake);
            }
            wake.wake_all();
        }
    }
}
