//! The limiter's state machine: its quotas' windows, the FIFO queue, the pause
//! and the closed flag. Pure and synchronous: every method takes `now`, so
//! tests and property tests drive it with explicit instants.
//!
//! # Implementation details
//!
//! The queue is served strictly in order. Whenever anything changes (a grant,
//! a refund, a waiter leaving, a pause ending, a quota growing), `grant_ready`
//! grants waiters from the head for as long as the head fits every quota at
//! `now`, then wakes the new head so that it arms a timer for its own earliest
//! feasible instant. Only the head ever needs a timer: everyone behind it is
//! woken by a grant.

use std::task::Waker;
use std::time::Duration;

use tokio::time::Instant;

use super::queue::{WaiterKey, WaiterQueue, WaiterStatus};
use super::window::SlidingWindow;
use crate::error::{AcquireError, ConfigError, TryAcquireError};
use crate::quota::{Cost, Quota, Unit};
use crate::stats::{QuotaStats, Stats};

/// How many wakers a [`WakeList`] holds before it wakes them in place.
const WAKE_BATCH: usize = 16;

/// Wakers to wake once the lock is released, held inline so that waking
/// allocates nothing. Past [`WAKE_BATCH`] wakers, the batch is woken at once.
#[derive(Debug, Default)]
pub(crate) struct WakeList {
    wakers: [Option<Waker>; WAKE_BATCH],
    len: usize,
}

impl WakeList {
    pub(crate) fn push(&mut self, waker: Option<Waker>) {
        if let Some(waker) = waker {
            if self.len == WAKE_BATCH {
                self.wake_all();
            }
            self.wakers[self.len] = Some(waker);
            self.len += 1;
        }
    }

    pub(crate) fn wake_all(&mut self) {
        for slot in &mut self.wakers[..self.len] {
            if let Some(waker) = slot.take() {
                waker.wake();
            }
        }
        self.len = 0;
    }
}

impl Drop for WakeList {
    fn drop(&mut self) {
        self.wake_all();
    }
}

/// The shortest coalescing step the fast lane runs with.
const MIN_LANE_STEP: Duration = Duration::from_millis(1);

/// The outcome of a new acquire.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Granted at once, at this instant.
    Granted(Instant),
    /// Queued; the future should be woken no later than `wake_at`.
    Queued {
        key: WaiterKey,
        wake_at: Option<Instant>,
    },
}

/// Where a queued acquire stands when its future polls.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WaiterPoll {
    /// Granted at `at` after queueing at `queued_at`; the slot is freed.
    Granted { at: Instant, queued_at: Instant },
    /// Failed; the slot is freed.
    Failed(AcquireError),
    /// Still waiting; wake no later than `wake_at`.
    Waiting { wake_at: Option<Instant> },
}

/// The windows of a limiter's quotas. The first is held in place, so that
/// a limiter of one quota (a keyed limiter's usual key) reaches its window
/// without following another pointer.
#[derive(Debug)]
enum Windows {
    One(SlidingWindow),
    Many(Vec<SlidingWindow>),
}

impl Windows {
    fn new(quotas: &[Quota]) -> Self {
        match quotas {
            [quota] => Windows::One(SlidingWindow::new(*quota)),
            _ => Windows::Many(quotas.iter().copied().map(SlidingWindow::new).collect()),
        }
    }
}

impl std::ops::Deref for Windows {
    type Target = [SlidingWindow];

    #[inline]
    fn deref(&self) -> &[SlidingWindow] {
        match self {
            Windows::One(window) => std::slice::from_ref(window),
            Windows::Many(windows) => windows,
        }
    }
}

impl std::ops::DerefMut for Windows {
    #[inline]
    fn deref_mut(&mut self) -> &mut [SlidingWindow] {
        match self {
            Windows::One(window) => std::slice::from_mut(window),
            Windows::Many(windows) => windows,
        }
    }
}

impl<'a> IntoIterator for &'a Windows {
    type Item = &'a SlidingWindow;
    type IntoIter = std::slice::Iter<'a, SlidingWindow>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a> IntoIterator for &'a mut Windows {
    type Item = &'a mut SlidingWindow;
    type IntoIter = std::slice::IterMut<'a, SlidingWindow>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter_mut()
    }
}

/// The state of one limiter.
#[derive(Debug)]
pub(crate) struct LimiterState {
    windows: Windows,
    queue: WaiterQueue,
    paused_until: Option<Instant>,
    closed: bool,
    latest: Option<Instant>,
    granted: u64,
    waited: u64,
    wait_time: Duration,
    /// Reused buffers for projections, one per quota.
    scratch: Vec<Vec<(Instant, u64)>>,
    /// Whether the quotas let the fast lane open at all (every request quota
    /// coalesces by at least [`MIN_LANE_STEP`]): when they do not, nothing
    /// reads the clock again to try.
    lane_capable: bool,
    /// When the lock was last taken: the lane reopens only for a limiter in
    /// use often enough to take from it.
    last_locked: Option<Instant>,
    /// The budget handed to the fast lane when it last opened.
    lane_issued: u64,
    /// While the lane is open: until when it grants.
    lane_deadline: Option<Instant>,
}

impl LimiterState {
    pub(crate) fn new(quotas: &[Quota]) -> Result<Self, ConfigError> {
        if quotas.is_empty() {
            return Err(ConfigError::NoQuota);
        }
        Ok(LimiterState {
            lane_capable: lane_capable(quotas.iter()),
            windows: Windows::new(quotas),
            queue: WaiterQueue::default(),
            paused_until: None,
            closed: false,
            latest: None,
            granted: 0,
            waited: 0,
            wait_time: Duration::ZERO,
            scratch: vec![Vec::new(); quotas.len()],
            last_locked: None,
            lane_issued: 0,
            lane_deadline: None,
        })
    }

    /// Clamps a clock reading so that time never runs backwards here.
    pub(crate) fn observe(&mut self, now: Instant) -> Instant {
        let now = match self.latest {
            Some(latest) if latest > now => latest,
            _ => now,
        };
        self.latest = Some(now);
        now
    }

    /// Whether the fast lane is open (and must be sealed before anything
    /// else reads or changes the state).
    #[inline]
    pub(crate) fn lane_is_open(&self) -> bool {
        self.lane_deadline.is_some()
    }

    /// Takes over grants made elsewhere (the keyed limiter's light window),
    /// oldest first, and the number of grants they stand for.
    pub(crate) fn seed(&mut self, grants: impl IntoIterator<Item = Instant>, granted: u64) {
        // Oldest first, and none later than the time already observed: the
        // log stays in order without clamping them to now.
        for at in grants {
            for window in &mut self.windows {
                window.record(Cost::requests(1).amount(window.quota().unit()), at);
            }
        }
        self.granted = granted;
    }

    /// Notes a locking at `now`; returns whether the one before came within
    /// `span`: a limiter locked less often than that would not use an
    /// opening of the lane before it ran out, and is not worth the clock
    /// readings an opening costs.
    pub(crate) fn touch(&mut self, now: Instant, span: Duration) -> bool {
        let hot = self
            .last_locked
            .is_some_and(|last| now.saturating_duration_since(last) < span);
        self.last_locked = Some(now);
        hot
    }

    /// Whether the quotas let the lane open at all.
    pub(crate) fn lane_capable(&self) -> bool {
        self.lane_capable
    }

    /// Whether the lane could open at all (cheap: no clock needed).
    pub(crate) fn lane_may_open(&self) -> bool {
        self.lane_capable && !self.closed && self.queue.is_empty() && !self.lane_is_open()
    }

    /// From when this limiter holds nothing that a new one would not: no
    /// waiter, no grant that still counts, no pause. `now` when that is so
    /// already; `None` while anyone waits.
    pub(crate) fn idle_at(&mut self, now: Instant) -> Option<Instant> {
        if !self.queue.is_empty() || self.queue.has_outcomes() {
            return None;
        }
        self.expire(now);
        let drained = self
            .windows
            .iter()
            .filter_map(SlidingWindow::drained_at)
            .chain(self.paused_until)
            .max();
        Some(drained.map_or(now, |at| at.max(now)))
    }

    /// Records what the fast lane granted since it opened, as one grant
    /// instant per quota dated `min(now, deadline)`: no earlier than any
    /// clock reading that passed the lane. `remaining` is the budget left.
    pub(crate) fn close_lane(&mut self, grants: u64, remaining: u64, now: Instant) {
        let Some(deadline) = self.lane_deadline.take() else {
            return;
        };
        let used = self.lane_issued.saturating_sub(remaining);
        self.lane_issued = 0;
        if grants == 0 {
            return;
        }
        let at = now.min(deadline);
        for window in &mut self.windows {
            if window.quota().unit() == Unit::Requests {
                window.record(used, at);
            }
        }
        self.granted += grants;
    }

    /// Opens the fast lane if it may open now: nobody waits, nothing is
    /// paused or closed, and every request quota coalesces. Returns the
    /// budget (requests that fit every request quota now) and the deadline
    /// (one coalescing step from now).
    pub(crate) fn open_lane(&mut self, now: Instant, max_budget: u64) -> Option<(u64, Instant)> {
        if !self.lane_may_open() {
            return None;
        }
        self.expire(now);
        if self.paused_until.is_some() {
            return None;
        }
        // A quota cut below what its window holds refuses everything, even a
        // cost it does not count; the lane would not.
        if self.windows.iter().any(|w| w.in_window() > w.quota().max()) {
            return None;
        }
        let mut step: Option<Duration> = None;
        let mut budget = max_budget;
        for window in &self.windows {
            let quota = window.quota();
            if quota.unit() != Unit::Requests {
                continue;
            }
            if window.resolution().is_zero() {
                return None;
            }
            step = Some(step.map_or(window.resolution(), |s| s.min(window.resolution())));
            budget = budget.min(quota.max().saturating_sub(window.in_window()));
        }
        // Below a millisecond a step would leave too little room for the
        // counter's skew between cores.
        let step = step.filter(|step| *step >= MIN_LANE_STEP)?;
        let deadline = now + step;
        if budget == 0 {
            return None;
        }
        self.lane_issued = budget;
        self.lane_deadline = Some(deadline);
        Some((budget, deadline))
    }

    pub(crate) fn quotas(&self) -> impl Iterator<Item = &Quota> {
        self.windows.iter().map(SlidingWindow::quota)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Memory held by the windows, in log entries.
    #[cfg(test)]
    #[allow(dead_code)]
    pub(crate) fn log_entries(&self) -> usize {
        self.windows.iter().map(SlidingWindow::entries).sum()
    }

    /// The first quota whose `max` is below its share of `cost`, if any.
    fn refusing_quota(&self, cost: Cost) -> Option<Quota> {
        self.quotas()
            .find(|quota| cost.amount(quota.unit()) > quota.max())
            .copied()
    }

    fn check_cost(&self, cost: Cost) -> Result<(), AcquireError> {
        match self.refusing_quota(cost) {
            Some(quota) => Err(AcquireError::cost_exceeds(cost, &quota)),
            None => Ok(()),
        }
    }

    fn expire(&mut self, now: Instant) {
        for window in &mut self.windows {
            window.expire(now);
        }
        if self.paused_until.is_some_and(|until| until <= now) {
            self.paused_until = None;
        }
    }

    fn fits_now(&self, cost: Cost) -> bool {
        self.paused_until.is_none()
            && self
                .windows
                .iter()
                .all(|w| w.fits(cost.amount(w.quota().unit())))
    }

    fn record(&mut self, cost: Cost, now: Instant) {
        for window in &mut self.windows {
            window.record(cost.amount(window.quota().unit()), now);
        }
        self.granted += 1;
    }

    /// The earliest instant at which `cost` fits every quota and the pause,
    /// ignoring the queue. Call after `expire(now)`.
    fn earliest_fit(&self, cost: Cost, now: Instant) -> Instant {
        let start = self.paused_until.map_or(now, |until| until.max(now));
        self.windows.iter().fold(start, |t, w| {
            t.max(w.earliest_fit(cost.amount(w.quota().unit()), start))
        })
    }

    /// The instant at which `cost` would be granted if it queued now and
    /// nothing else changed: every waiter ahead is served first, in order.
    fn project(&mut self, cost: Cost, now: Instant) -> Instant {
        if self.queue.is_empty() {
            return self.earliest_fit(cost, now);
        }
        let mut sims: Vec<SimWindow<'_>> = self
            .scratch
            .iter_mut()
            .zip(&self.windows)
            .map(|(buffer, window)| SimWindow::new(buffer, window))
            .collect();
        let mut t = self.paused_until.map_or(now, |until| until.max(now));
        let ahead = self.queue.iter().map(|key| self.queue.waiter(key).cost);
        for next in ahead.chain(std::iter::once(cost)) {
            t = sims
                .iter_mut()
                .fold(t, |t, sim| t.max(sim.earliest_fit(next, t)));
            for sim in &mut sims {
                sim.record(next, t);
            }
        }
        t
    }

    /// Grants `cost` now if it fits and nobody waits.
    pub(crate) fn try_acquire(
        &mut self,
        cost: Cost,
        now: Instant,
    ) -> Result<Instant, TryAcquireError> {
        if self.closed {
            return Err(TryAcquireError::Closed);
        }
        if let Some(quota) = self.refusing_quota(cost) {
            return Err(TryAcquireError::CostExceedsQuota {
                unit: quota.unit(),
                cost: cost.amount(quota.unit()),
                max: quota.max(),
                window: quota.window(),
            });
        }
        self.expire(now);
        if self.queue.is_empty() && self.fits_now(cost) {
            self.record(cost, now);
            return Ok(now);
        }
        let at = self.project(cost, now);
        Err(TryAcquireError::RateLimited {
            retry_after: at.saturating_duration_since(now),
        })
    }

    /// A new acquire: granted at once, refused, or queued at the tail.
    pub(crate) fn admit(
        &mut self,
        cost: Cost,
        deadline: Option<Instant>,
        now: Instant,
        waker: &Waker,
    ) -> Result<Admission, AcquireError> {
        if self.closed {
            return Err(AcquireError::Closed);
        }
        self.check_cost(cost)?;
        self.expire(now);
        if self.queue.is_empty() && self.fits_now(cost) {
            if deadline.is_some_and(|d| d < now) {
                return Err(AcquireError::DeadlineExceeded {
                    earliest: Some(now),
                });
            }
            self.record(cost, now);
            return Ok(Admission::Granted(now));
        }
        if let Some(deadline) = deadline {
            let earliest = self.project(cost, now);
            if earliest > deadline {
                return Err(AcquireError::DeadlineExceeded {
                    earliest: Some(earliest),
                });
            }
        }
        let key = self.queue.push_back(cost, now, waker.clone());
        let wake_at = self.wake_at(key, deadline, now);
        Ok(Admission::Queued { key, wake_at })
    }

    /// When a waiting waiter must next be woken: its own deadline, and, for
    /// the head, its earliest feasible instant.
    fn wake_at(&self, key: WaiterKey, deadline: Option<Instant>, now: Instant) -> Option<Instant> {
        let feasible_at = (self.queue.head() == Some(key))
            .then(|| self.earliest_fit(self.queue.waiter(key).cost, now));
        match (feasible_at, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A queued acquire's future polls: serve the queue, then report.
    pub(crate) fn poll_waiter(
        &mut self,
        key: WaiterKey,
        deadline: Option<Instant>,
        now: Instant,
        waker: &Waker,
        wake: &mut WakeList,
    ) -> WaiterPoll {
        self.grant_ready(now, wake);
        match self.queue.waiter(key).status {
            WaiterStatus::Granted(at) => {
                let waiter = self.queue.remove(key);
                WaiterPoll::Granted {
                    at,
                    queued_at: waiter.queued_at,
                }
            }
            WaiterStatus::Closed => {
                self.queue.remove(key);
                WaiterPoll::Failed(AcquireError::Closed)
            }
            WaiterStatus::Refused(quota) => {
                let waiter = self.queue.remove(key);
                WaiterPoll::Failed(AcquireError::cost_exceeds(waiter.cost, &quota))
            }
            WaiterStatus::Waiting if deadline.is_some_and(|d| d <= now) => {
                self.cancel(key, now, wake);
                WaiterPoll::Failed(AcquireError::DeadlineExceeded { earliest: None })
            }
            WaiterStatus::Waiting => {
                let slot = &mut self.queue.waiter_mut(key).waker;
                match slot {
                    Some(old) if old.will_wake(waker) => {}
                    _ => *slot = Some(waker.clone()),
                }
                WaiterPoll::Waiting {
                    wake_at: self.wake_at(key, deadline, now),
                }
            }
        }
    }

    /// A queued acquire's future was dropped: it leaves the queue, or gives
    /// back a grant it never saw, and the queue is served again.
    pub(crate) fn cancel(&mut self, key: WaiterKey, now: Instant, wake: &mut WakeList) {
        let was_head = self.queue.head() == Some(key);
        let waiter = self.queue.remove(key);
        match waiter.status {
            WaiterStatus::Granted(at) => {
                for window in &mut self.windows {
                    window.refund(waiter.cost.amount(window.quota().unit()), at, now);
                }
                self.granted -= 1;
                self.waited -= 1;
                self.wait_time = self
                    .wait_time
                    .saturating_sub(at.saturating_duration_since(waiter.queued_at));
                self.serve(now, wake);
            }
            WaiterStatus::Waiting if was_head => self.serve(now, wake),
            _ => {}
        }
    }

    /// Grants what fits now and wakes the head so it re-arms its timer.
    fn serve(&mut self, now: Instant, wake: &mut WakeList) {
        let granted_any = self.grant_ready(now, wake);
        if !granted_any {
            self.wake_head(wake);
        }
    }

    fn wake_head(&mut self, wake: &mut WakeList) {
        if let Some(head) = self.queue.head() {
            let waker = self.queue.waiter(head).waker.clone();
            wake.push(waker);
        }
    }

    /// Grants waiters from the head while the head fits at `now`, wakes them,
    /// and wakes the new head if any was granted. Returns whether any was.
    pub(crate) fn grant_ready(&mut self, now: Instant, wake: &mut WakeList) -> bool {
        if self.closed {
            return false;
        }
        self.expire(now);
        let mut granted_any = false;
        while let Some(head) = self.queue.head() {
            let waiter = self.queue.waiter(head);
            let (cost, queued_at) = (waiter.cost, waiter.queued_at);
            if !self.fits_now(cost) {
                break;
            }
            self.record(cost, now);
            self.waited += 1;
            self.wait_time += now.saturating_duration_since(queued_at);
            wake.push(self.queue.unlink(head, WaiterStatus::Granted(now)));
            granted_any = true;
        }
        if granted_any {
            self.wake_head(wake);
        }
        granted_any
    }

    /// No grant before `until` (later pauses extend, earlier ones are kept).
    pub(crate) fn pause_until(&mut self, until: Instant, now: Instant, wake: &mut WakeList) {
        if until > now && self.paused_until.is_none_or(|current| current < until) {
            self.paused_until = Some(until);
            self.wake_head(wake);
        }
    }

    /// Ends a pause at once.
    pub(crate) fn resume(&mut self, now: Instant, wake: &mut WakeList) {
        if self.paused_until.take().is_some() {
            self.serve(now, wake);
        }
    }

    /// Replaces the quota at `index`, keeping its remembered grants.
    pub(crate) fn set_quota(
        &mut self,
        index: usize,
        quota: Quota,
        now: Instant,
        wake: &mut WakeList,
    ) -> Result<(), ConfigError> {
        self.check_replacement(index, &quota)?;
        // What the old quota has forgotten by now stays forgotten, whether or
        // not anything looked in between.
        self.expire(now);
        self.windows[index].set_quota(quota);
        self.lane_capable = lane_capable(self.quotas());
        self.after_reconfigure(now, wake);
        Ok(())
    }

    /// Replaces every quota at once, keeping their remembered grants.
    pub(crate) fn set_quotas(
        &mut self,
        quotas: &[Quota],
        now: Instant,
        wake: &mut WakeList,
    ) -> Result<(), ConfigError> {
        if quotas.len() != self.windows.len() {
            return Err(ConfigError::QuotaCount {
                expected: self.windows.len(),
                given: quotas.len(),
            });
        }
        for (index, quota) in quotas.iter().enumerate() {
            self.check_replacement(index, quota)?;
        }
        self.expire(now);
        for (window, quota) in self.windows.iter_mut().zip(quotas) {
            window.set_quota(*quota);
        }
        self.lane_capable = lane_capable(self.quotas());
        self.after_reconfigure(now, wake);
        Ok(())
    }

    fn check_replacement(&self, index: usize, quota: &Quota) -> Result<(), ConfigError> {
        let current = self.windows.get(index).ok_or(ConfigError::NoSuchQuota {
            index,
            count: self.windows.len(),
        })?;
        if current.quota().unit() != quota.unit() {
            return Err(ConfigError::UnitChanged {
                index,
                from: current.quota().unit(),
                to: quota.unit(),
            });
        }
        Ok(())
    }

    /// Waiters that no longer fit a quota at all fail; the rest are served
    /// under the new quotas at once.
    fn after_reconfigure(&mut self, now: Instant, wake: &mut WakeList) {
        let mut next = self.queue.head();
        while let Some(key) = next {
            next = self.queue.next(key);
            if let Some(quota) = self.refusing_quota(self.queue.waiter(key).cost) {
                wake.push(self.queue.unlink(key, WaiterStatus::Refused(quota)));
            }
        }
        self.serve(now, wake);
    }

    /// Fails every queued acquire and every later one.
    pub(crate) fn close(&mut self, wake: &mut WakeList) {
        self.closed = true;
        while let Some(head) = self.queue.head() {
            wake.push(self.queue.unlink(head, WaiterStatus::Closed));
        }
    }

    pub(crate) fn stats(&mut self, now: Instant) -> Stats {
        self.expire(now);
        let quotas: Vec<QuotaStats> = self
            .windows
            .iter()
            .map(|w| {
                let quota = *w.quota();
                let in_window = w.in_window();
                QuotaStats {
                    quota,
                    in_window,
                    available: quota.max().saturating_sub(in_window),
                    utilization_percent: in_window as f64 * 100.0 / quota.max() as f64,
                }
            })
            .collect();
        let first = &quotas[0];
        Stats {
            in_window: first.in_window,
            max: first.quota.max(),
            queued: self.queue.len(),
            available: first.available,
            utilization_percent: first.utilization_percent,
            granted: self.granted,
            waited: self.waited,
            wait_time: self.wait_time,
            paused_until: self.paused_until,
            closed: self.closed,
            quotas,
        }
    }
}

/// Whether quotas like these can ever open the fast lane: there is a request
/// quota, and every request quota coalesces by at least [`MIN_LANE_STEP`].
fn lane_capable<'a>(quotas: impl Iterator<Item = &'a Quota>) -> bool {
    let mut any = false;
    for quota in quotas.filter(|q| q.unit() == Unit::Requests) {
        let probe = SlidingWindow::new(*quota);
        if probe.resolution() < MIN_LANE_STEP {
            return false;
        }
        any = true;
    }
    any
}

/// One quota's log, copied into a reusable buffer, for projecting the queue
/// forward without touching the real log.
struct SimWindow<'a> {
    quota: Quota,
    log: &'a mut Vec<(Instant, u64)>,
    start: usize,
    in_window: u64,
    /// Coalescing as the real window does it, so the projection is exact.
    resolution: Duration,
    newest_closes_at: Option<Instant>,
}

impl<'a> SimWindow<'a> {
    fn new(log: &'a mut Vec<(Instant, u64)>, window: &SlidingWindow) -> Self {
        log.clear();
        log.extend(window.log_iter());
        SimWindow {
            quota: *window.quota(),
            log,
            start: 0,
            in_window: window.in_window(),
            resolution: window.resolution(),
            newest_closes_at: window.newest_closes_at(),
        }
    }

    fn earliest_fit(&mut self, cost: Cost, t: Instant) -> Instant {
        let window = self.quota.window();
        while let Some(&(at, amount)) = self.log.get(self.start) {
            if at + window > t {
                break;
            }
            self.in_window -= amount;
            self.start += 1;
        }
        let amount = cost.amount(self.quota.unit());
        if self.in_window + amount <= self.quota.max() {
            return t;
        }
        let mut must_free = self.in_window + amount - self.quota.max();
        for &(at, freed) in &self.log[self.start..] {
            if freed >= must_free {
                return (at + window).max(t);
            }
            must_free -= freed;
        }
        t
    }

    fn record(&mut self, cost: Cost, t: Instant) {
        let amount = cost.amount(self.quota.unit());
        if amount == 0 {
            return;
        }
        self.in_window += amount;
        let start = self.start;
        if let Some(newest) = self.log.get_mut(start..).and_then(|live| live.last_mut()) {
            if newest.0 == t || self.newest_closes_at.is_some_and(|closes| t < closes) {
                newest.0 = t;
                newest.1 += amount;
                return;
            }
        }
        self.log.push((t, amount));
        self.newest_closes_at = (!self.resolution.is_zero()).then(|| t + self.resolution);
    }
}
