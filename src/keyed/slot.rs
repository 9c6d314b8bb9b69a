//! What the map holds for one key: a light record of its grants while that
//! is all it needs, its full limiter once it needs more.
//!
//! # Implementation details
//!
//! Most keys of a keyed limiter are only ever asked for a grant now: a
//! request comes, it fits or it is refused. For keys whose limit is one
//! request quota that remembers every grant exactly (`max` at most 1,024),
//! the map keeps, in place of a [`RateLimiter`], a [`Light`] window: the
//! instants of the grants that still count, oldest first. A grant that fits
//! is one push; a refusal reads the oldest instant that must leave first.
//! That is the same sliding log, with the same answers, at a fraction of the
//! memory and with no pointer to follow to a shared limiter, so an existing
//! key costs about one cache line more than the map's own entry.
//!
//! The first time a key needs more (an acquire that must wait, a handle to
//! its limiter), its light window is *promoted*: a full limiter is made and
//! given the same grants, and the key keeps it until it is evicted. The light
//! window has no queue, no pause and no handles, so nothing it lacks can be
//! lost in the promotion; and while it is light, nobody can wait on the key,
//! so "nobody is queued" holds for every grant it makes.

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use tokio::time::Instant;

use crate::error::{AcquireError, TryAcquireError};
use crate::limiter::{Grant, Idleness, RateLimiter};
use crate::quota::{Cost, Quota, Unit};
use crate::stats::{QuotaStats, Stats};

/// A key's entry in the map: its slot, and a gate in front of it.
///
/// While the slot is light, the gate holds the instant (in nanoseconds from
/// the map's origin) before which no single request can be granted, if the
/// window is full: a refusal then reads the gate and the clock, and nothing
/// else. Only the key's own grants move that instant (a light key has no
/// queue, no pause and no handle that could change its quota), and only
/// later. A full slot's gate is 0 (closed to nobody): its limiter decides.
///
/// Once the slot is full, the cell also keeps a handle to its limiter
/// outside the lock, so that a `try_acquire` goes straight to the limiter
/// (whose fast lane needs no lock) without taking the slot's. The handle is
/// set again by the next call that takes the lock after a sweep took it
/// away (a sweep counts the handles out of the map to tell an idle key).
pub(crate) struct Cell {
    /// In the map's entry itself, so that a refusal reads no other memory.
    gate: AtomicU64,
    held: Box<Held>,
}

/// What a cell holds behind a pointer, to keep the map's entries small.
struct Held {
    full: OnceLock<RateLimiter>,
    slot: Mutex<Slot>,
}

impl Cell {
    pub(crate) fn new(slot: Slot) -> Self {
        Cell {
            gate: AtomicU64::new(0),
            held: Box::new(Held {
                full: OnceLock::new(),
                slot: Mutex::new(slot),
            }),
        }
    }

    /// The key's full limiter, if the slot is full and the handle is set.
    #[inline]
    pub(crate) fn full(&self) -> Option<&RateLimiter> {
        self.held.full.get()
    }

    /// A refusal of `cost` now, if the gate alone tells.
    #[inline]
    pub(crate) fn refuses(&self, origin: Instant, cost: Cost) -> Option<TryAcquireError> {
        let gate = self.gate.load(Ordering::Acquire);
        if gate == 0 || cost.requests != 1 {
            return None;
        }
        let since = Instant::now().saturating_duration_since(origin);
        let until = Duration::from_nanos(gate);
        (since < until).then(|| TryAcquireError::RateLimited {
            retry_after: until - since,
        })
    }

    /// Runs `f` on the slot under its lock, then sets the gate.
    #[inline]
    pub(crate) fn with<R>(&self, quotas: &[Quota], f: impl FnOnce(&mut Slot) -> R) -> R {
        let mut slot = self.held.slot.lock();
        let result = f(&mut slot);
        self.gate.store(slot.gate(quotas), Ordering::Release);
        if let Slot::Full(limiter) = &*slot {
            if self.held.full.get().is_none() {
                // Only under the lock: nobody else sets it meanwhile.
                let _ = self.held.full.set(limiter.clone());
            }
        }
        result
    }

    /// As [`with`](Self::with), with the map's entry held exclusively.
    pub(crate) fn with_mut<R>(&mut self, quotas: &[Quota], f: impl FnOnce(&mut Slot) -> R) -> R {
        let held = &mut *self.held;
        let slot = held.slot.get_mut();
        let result = f(slot);
        *self.gate.get_mut() = slot.gate(quotas);
        if let Slot::Full(limiter) = &*slot {
            held.full.get_or_init(|| limiter.clone());
        }
        result
    }

    /// Whether the key can be evicted now; see [`Slot::idleness`]. The
    /// handle outside the lock is dropped first, so that it does not count
    /// as a holder (the map's entry is held exclusively: nobody uses it).
    pub(crate) fn idleness(&mut self, origin: Instant, quotas: &[Quota]) -> Idleness {
        drop(self.held.full.take());
        self.held.slot.get_mut().idleness(origin, quotas)
    }
}

/// How an acquire on a key begins.
pub(crate) enum Begun {
    /// Decided at once.
    Done(Result<Grant, AcquireError>),
    /// It waits on the key's full limiter.
    Wait(RateLimiter),
}

/// A key's record in the map.
pub(crate) enum Slot {
    Light(Light),
    Full(RateLimiter),
}

/// The grants of one exact request quota, without a queue.
///
/// Instants are kept as nanoseconds from the map's origin (half the memory
/// of an `Instant`), and the instant the oldest leaves the window is kept
/// apart, so that a grant that expires nothing touches only the newest end.
pub(crate) struct Light {
    /// Grant instants that still count, oldest first: one per request.
    grants: VecDeque<u64>,
    /// When the oldest grant leaves the window (`u64::MAX`: none held).
    oldest_leaves: u64,
    /// The newest grant made (0 before the first): kept apart so that the
    /// clock check reads no grant.
    newest: u64,
    /// Grants made since the key was made.
    granted: u64,
}

/// Whether a key's limit can be kept light.
pub(crate) fn light_quota(quotas: &[Quota]) -> Option<Quota> {
    match quotas {
        [quota] if quota.unit() == Unit::Requests && quota.max() <= Light::MAX => Some(*quota),
        _ => None,
    }
}

/// `instant` as nanoseconds from `origin` (both on tokio's clock).
fn nanos_since(origin: Instant, instant: Instant) -> u64 {
    u64::try_from(instant.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
}

fn window_nanos(quota: &Quota) -> u64 {
    // A window is at most ten years: it fits.
    u64::try_from(quota.window().as_nanos()).unwrap_or(u64::MAX)
}

impl Light {
    /// The largest `max` kept light: the limiter's exact logs go this far.
    const MAX: u64 = 1_024;

    pub(crate) fn new() -> Self {
        Light {
            grants: VecDeque::new(),
            oldest_leaves: u64::MAX,
            newest: 0,
            granted: 0,
        }
    }

    /// The time now, in nanoseconds from `origin`, never before a grant made.
    fn now(&self, origin: Instant) -> u64 {
        nanos_since(origin, Instant::now()).max(self.newest)
    }

    fn expire(&mut self, quota: &Quota, now: u64) {
        if self.oldest_leaves > now {
            return;
        }
        let window = window_nanos(quota);
        while self
            .grants
            .front()
            .is_some_and(|&at| at.saturating_add(window) <= now)
        {
            self.grants.pop_front();
        }
        self.oldest_leaves = self
            .grants
            .front()
            .map_or(u64::MAX, |&at| at.saturating_add(window));
    }

    /// Grants `cost` now if it fits; otherwise says how long until it would
    /// (or that it never can, as a full limiter says).
    #[inline]
    pub(crate) fn try_acquire(
        &mut self,
        origin: Instant,
        quota: &Quota,
        cost: Cost,
    ) -> Result<Grant, TryAcquireError> {
        if cost.requests > quota.max() {
            return Err(TryAcquireError::CostExceedsQuota {
                unit: Unit::Requests,
                cost: cost.requests,
                max: quota.max(),
                window: quota.window(),
            });
        }
        let now = self.now(origin);
        // Grants that left the window are forgotten when their room is
        // needed: to admit this one, or before the log would grow. Until
        // then they only make the count look fuller, never emptier, and the
        // log stays within twice what it ever held at once.
        let wanted = self.grants.len() as u64 + cost.requests;
        if wanted > quota.max() || wanted > self.grants.capacity() as u64 {
            self.expire(quota, now);
        }
        // Both at most `Light::MAX`: no overflow.
        let held = self.grants.len() as u64;
        if held + cost.requests <= quota.max() {
            if self.grants.is_empty() && cost.requests > 0 {
                self.oldest_leaves = now.saturating_add(window_nanos(quota));
            }
            self.grants
                .extend(std::iter::repeat_n(now, cost.requests as usize));
            self.newest = now;
            self.granted += 1;
            let at = origin + Duration::from_nanos(now);
            return Ok(Grant::new(cost, at, Duration::ZERO));
        }
        // The grant fits once enough of the oldest have left the window.
        let must_leave = (held + cost.requests - quota.max()) as usize;
        let leaves_at = self.grants[must_leave - 1].saturating_add(window_nanos(quota));
        Err(TryAcquireError::RateLimited {
            retry_after: Duration::from_nanos(leaves_at.saturating_sub(now)),
        })
    }

    /// Until when (nanoseconds from the origin) no single request fits, if
    /// the window is full now. A log holding grants that have left reports
    /// an instant already past (its oldest has left): the gate then lets
    /// the next call through to count again.
    fn blocked_until(&self, quota: &Quota) -> Option<u64> {
        ((self.grants.len() as u64) >= quota.max()).then_some(self.oldest_leaves)
    }

    /// Whether the window is empty (nothing else could keep the key).
    pub(crate) fn idleness(&mut self, origin: Instant, quota: &Quota) -> Idleness {
        let now = self.now(origin);
        self.expire(quota, now);
        match self.grants.back() {
            None => Idleness::Idle,
            Some(&newest) => Idleness::From(
                origin + Duration::from_nanos(newest.saturating_add(window_nanos(quota))),
            ),
        }
    }

    pub(crate) fn stats(&mut self, origin: Instant, quota: &Quota) -> Stats {
        let now = self.now(origin);
        self.expire(quota, now);
        let max = quota.max();
        let in_window = self.grants.len() as u64;
        let available = max - in_window;
        let utilization_percent = in_window as f64 * 100.0 / max as f64;
        Stats {
            in_window,
            max,
            queued: 0,
            available,
            utilization_percent,
            granted: self.granted,
            waited: 0,
            wait_time: Duration::ZERO,
            paused_until: None,
            closed: false,
            quotas: vec![QuotaStats {
                quota: *quota,
                in_window,
                available,
                utilization_percent,
            }],
        }
    }
}

impl Slot {
    /// The key's full limiter, made from the light window if need be.
    pub(crate) fn full(
        &mut self,
        origin: Instant,
        template: &RateLimiter,
        quotas: &[Quota],
    ) -> &RateLimiter {
        if let Slot::Light(light) = self {
            let limiter = template
                .sibling(quotas)
                .expect("the builder checked the quotas");
            let grants = light.grants.iter();
            limiter.seed(
                grants.map(|&at| origin + Duration::from_nanos(at)),
                light.granted,
            );
            *self = Slot::Full(limiter);
        }
        match self {
            Slot::Full(limiter) => limiter,
            Slot::Light(_) => unreachable!("promoted above"),
        }
    }

    /// An acquire of `cost` by `deadline`, as it first polls: granted at
    /// once from a light window that has room, or else made to wait on the
    /// full limiter (which decides everything else, as for any limiter).
    pub(crate) fn begin(
        &mut self,
        origin: Instant,
        cost: Cost,
        deadline: Option<Instant>,
        template: &RateLimiter,
        quotas: &[Quota],
    ) -> Begun {
        if let Slot::Light(light) = self {
            if deadline.is_none_or(|deadline| deadline >= Instant::now()) {
                match light.try_acquire(origin, &quotas[0], cost) {
                    Ok(grant) => return Begun::Done(Ok(grant)),
                    Err(TryAcquireError::CostExceedsQuota {
                        unit,
                        cost,
                        max,
                        window,
                    }) => {
                        return Begun::Done(Err(AcquireError::CostExceedsQuota {
                            unit,
                            cost,
                            max,
                            window,
                        }));
                    }
                    Err(_) => {}
                }
            }
        }
        Begun::Wait(self.full(origin, template, quotas).clone())
    }

    /// `quotas` are the key's: one, for a light slot.
    pub(crate) fn try_acquire(
        &mut self,
        origin: Instant,
        quotas: &[Quota],
        cost: Cost,
    ) -> Result<Grant, TryAcquireError> {
        match self {
            Slot::Light(light) => light.try_acquire(origin, &quotas[0], cost),
            Slot::Full(limiter) => limiter.try_acquire_cost(cost),
        }
    }

    /// What the cell's gate should hold now; see [`Cell`].
    fn gate(&self, quotas: &[Quota]) -> u64 {
        match self {
            Slot::Light(light) => light
                .blocked_until(&quotas[0])
                .map_or(0, |until| until.max(1)),
            Slot::Full(_) => 0,
        }
    }

    pub(crate) fn idleness(&mut self, origin: Instant, quotas: &[Quota]) -> Idleness {
        match self {
            Slot::Light(light) => light.idleness(origin, &quotas[0]),
            Slot::Full(limiter) => limiter.idleness(),
        }
    }

    pub(crate) fn stats(&mut self, origin: Instant, quotas: &[Quota]) -> Stats {
        match self {
            Slot::Light(light) => light.stats(origin, &quotas[0]),
            Slot::Full(limiter) => limiter.stats(),
        }
    }
}
