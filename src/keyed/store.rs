//! The map from keys to their limiters: lookup, creation under the cap, and
//! sweeps of idle keys.
//!
//! # Implementation details
//!
//! Each key owns a slot in a sharded concurrent map: a light window of its
//! grants, or its full [`RateLimiter`] (see the `slot` module). An existing
//! key costs one hash and one shard read lock, then: for a light key over
//! its limit, a read of the gate in the map's entry and of the clock; for a
//! light key with room, the key's own lock; for a full key, its limiter's
//! `try_acquire` (not the key's lock, once the handle outside it is set).
//! Nothing else is touched, so keys never wait on one another beyond the
//! shard lock.
//!
//! A key is *idle* when dropping its limiter and making a new one later would
//! change nothing: no grant that still counts in any window, no pause, no
//! waiter, and no handle outside the map (a handle could acquire at any
//! moment). The check runs under the shard's write lock, so no new handle
//! can appear meanwhile.
//!
//! Sweeps are amortised over insertions. Inserting a key when the map has
//! grown to `next_sweep_at` keys sweeps first, then sets `next_sweep_at` to
//! twice what survived: a sweep walks `n` keys only after about `n / 2`
//! insertions, and the map holds at most about twice its live keys. The cap
//! is exact: a counter of live keys is reserved before an insertion and
//! released by evictions. At the cap, a new key sweeps once; if nothing was
//! idle, new keys are refused without sweeping until the earliest instant at
//! which a live key can go idle, so that a flood of new keys at the cap costs
//! no walk of the map per key.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::slot::{Cell, Light, Slot, light_quota};
use crate::error::TryAcquireError;
use crate::limiter::Grant;
use crate::limiter::{Idleness, RateLimiter};
use crate::quota::Cost;
use crate::quota::Quota;

/// Below this many keys, inserting never sweeps (except at the cap).
const MIN_SWEEP_AT: usize = 1_024;

/// The key was new and the map is full of live keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

#[derive(Debug)]
struct SweepState {
    /// While the map is full with nothing idle: no sweep for a new key
    /// before this instant.
    full_until: Option<Instant>,
}

pub(crate) struct Store<K> {
    quotas: Vec<Quota>,
    /// A limiter every key's is made like (its clock, detected once).
    template: RateLimiter,
    /// Whether keys start with a light window.
    light: bool,
    /// The shortest window: a key in use now stays live at least this long
    /// once it is granted.
    shortest_window: Duration,
    /// The table's entries are a key, a gate and a pointer: small, so that
    /// more of the table stays in the caches.
    map: DashMap<K, Cell>,
    /// The instant the cells' gates count from.
    origin: Instant,
    max_keys: usize,
    live: AtomicUsize,
    next_sweep_at: AtomicUsize,
    sweep: Mutex<SweepState>,
    evicted: AtomicU64,
    refused: AtomicU64,
}

impl<K: Hash + Eq> Store<K> {
    /// A store whose keys get the quotas of `template`'s kind, `quotas`.
    pub(crate) fn new(template: RateLimiter, quotas: Vec<Quota>, max_keys: usize) -> Self {
        let shortest_window = quotas
            .iter()
            .map(Quota::window)
            .min()
            .unwrap_or(Duration::ZERO);
        Store {
            light: light_quota(&quotas).is_some(),
            origin: Instant::now(),
            quotas,
            template,
            shortest_window,
            map: DashMap::new(),
            max_keys,
            live: AtomicUsize::new(0),
            next_sweep_at: AtomicUsize::new(MIN_SWEEP_AT),
            sweep: Mutex::new(SweepState { full_until: None }),
            evicted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    pub(crate) fn quotas(&self) -> &[Quota] {
        &self.quotas
    }

    pub(crate) fn max_keys(&self) -> usize {
        self.max_keys
    }

    pub(crate) fn len(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    pub(crate) fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    pub(crate) fn template(&self) -> &RateLimiter {
        &self.template
    }

    /// The instant the light windows and the gates count from.
    pub(crate) fn origin(&self) -> Instant {
        self.origin
    }

    /// Runs `f` on the key's slot, made first if the key is new.
    #[inline]
    pub(crate) fn with<Q, R>(&self, key: &Q, f: impl FnOnce(&mut Slot) -> R) -> Result<R, Full>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(cell) = self.map.get(key) {
            return Ok(cell.with(&self.quotas, f));
        }
        self.insert(key.to_owned(), f)
    }

    /// Takes `cost` for the key now, or says why not; a refusal the key's
    /// gate can tell touches nothing else.
    #[inline]
    pub(crate) fn try_acquire<Q>(
        &self,
        key: &Q,
        cost: Cost,
    ) -> Result<Result<Grant, TryAcquireError>, Full>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let quotas = &self.quotas;
        if let Some(cell) = self.map.get(key) {
            // The gate first: it is in the entry, and closed only while the
            // slot is light.
            if let Some(refused) = cell.refuses(self.origin, cost) {
                return Ok(Err(refused));
            }
            if let Some(limiter) = cell.full() {
                return Ok(limiter.try_acquire_cost(cost));
            }
            return Ok(cell.with(quotas, |slot| slot.try_acquire(self.origin, quotas, cost)));
        }
        self.insert(key.to_owned(), |slot| {
            slot.try_acquire(self.origin, quotas, cost)
        })
    }

    /// As [`with`](Self::with), for a key the caller owns already.
    #[inline]
    pub(crate) fn with_owned<R>(&self, key: K, f: impl FnOnce(&mut Slot) -> R) -> Result<R, Full> {
        if let Some(cell) = self.map.get(&key) {
            return Ok(cell.with(&self.quotas, f));
        }
        self.insert(key, f)
    }

    /// Runs `f` on the key's slot if the key is live.
    pub(crate) fn existing<Q, R>(&self, key: &Q, f: impl FnOnce(&mut Slot) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(key).map(|cell| cell.with(&self.quotas, f))
    }

    fn new_slot(&self) -> Slot {
        match self.light {
            true => Slot::Light(Light::new()),
            false => Slot::Full(
                self.template
                    .sibling(&self.quotas)
                    .expect("the builder checked the quotas"),
            ),
        }
    }

    #[cold]
    fn insert<R>(&self, key: K, f: impl FnOnce(&mut Slot) -> R) -> Result<R, Full> {
        self.sweep_if_grown();
        let mut key = key;
        let mut swept = false;
        loop {
            // The entry holds its shard's write lock: it must be gone before
            // a sweep takes every shard's.
            match self.map.entry(key) {
                Entry::Occupied(mut entry) => {
                    return Ok(entry.get_mut().with_mut(&self.quotas, f));
                }
                Entry::Vacant(entry) if self.reserve() => {
                    let mut cell = entry.insert(Cell::new(self.new_slot()));
                    return Ok(cell.value_mut().with_mut(&self.quotas, f));
                }
                Entry::Vacant(entry) => key = entry.into_key(),
            }
            if swept || !self.sweep_when_full() {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return Err(Full);
            }
            swept = true;
        }
    }

    /// Takes a slot under the cap for a new key.
    fn reserve(&self) -> bool {
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |live| {
                (live < self.max_keys).then_some(live + 1)
            })
            .is_ok()
    }

    /// The amortised sweep: when the map has grown enough since the last.
    fn sweep_if_grown(&self) {
        if self.len() < self.next_sweep_at.load(Ordering::Relaxed) {
            return;
        }
        // Another thread sweeping is as good.
        let Some(mut state) = self.sweep.try_lock() else {
            return;
        };
        if self.len() >= self.next_sweep_at.load(Ordering::Relaxed) {
            self.sweep_locked(&mut state, Instant::now());
        }
    }

    /// At the cap: sweeps unless a sweep found nothing idle and no key can
    /// have gone idle since. Returns whether there may be room now.
    fn sweep_when_full(&self) -> bool {
        let now = Instant::now();
        let mut state = self.sweep.lock();
        if self.len() < self.max_keys {
            return true;
        }
        if state.full_until.is_some_and(|until| now < until) {
            return false;
        }
        self.sweep_locked(&mut state, now) > 0
    }

    /// Evicts every idle key now; returns how many.
    pub(crate) fn evict_idle(&self) -> usize {
        let mut state = self.sweep.lock();
        self.sweep_locked(&mut state, Instant::now())
    }

    fn sweep_locked(&self, state: &mut SweepState, now: Instant) -> usize {
        let mut evicted = 0;
        let mut next_idle: Option<Instant> = None;
        let mut busy = false;
        let quotas = &self.quotas;
        let origin = self.origin;
        self.map
            .retain(|_, cell| match cell.idleness(origin, quotas) {
                Idleness::Idle => {
                    evicted += 1;
                    false
                }
                Idleness::From(at) => {
                    next_idle = Some(next_idle.map_or(at, |next| next.min(at)));
                    true
                }
                Idleness::Busy => {
                    busy = true;
                    true
                }
            });
        self.live.fetch_sub(evicted, Ordering::AcqRel);
        self.evicted.fetch_add(evicted as u64, Ordering::Relaxed);
        let survivors = self.len();
        self.next_sweep_at.store(
            survivors.saturating_mul(2).max(MIN_SWEEP_AT),
            Ordering::Relaxed,
        );
        // A key in use now is granted at the earliest now, and its grant
        // counts for a window: no sooner idle than that.
        let busy_until = busy.then(|| now + self.shortest_window);
        state.full_until = match (next_idle, busy_until) {
            _ if evicted > 0 => None,
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        evicted
    }
}
