//! Property tests of the pure limiter state against a brute-force model.
//!
//! The harness drives [`LimiterState`] the way the `Acquire` futures do under
//! a paused clock: a queued waiter is polled when its timer (the `wake_at` it
//! was last given) fires or when its waker is woken, and time only moves
//! forward through those instants. Wakers record who was woken instead of
//! doing nothing, so a lost wake-up shows as a waiter that is never served
//! rather than being papered over by an extra poll.
//!
//! The model knows nothing of logs, timers or projections: it keeps every
//! grant ever made and, at each instant the clock stops at, grants the head
//! of its queue while the head's cost fits every quota by brute-force sums.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Wake, Waker};
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::queue::WaiterKey;
use super::state::{Admission, LimiterState, WaiterPoll, WakeList};
use crate::error::{AcquireError, TryAcquireError};
use crate::quota::{Cost, Quota, Unit};
use crate::stats::{QuotaStats, Stats};

/// More polls than this at one instant means a future would spin.
const SPIN_LIMIT: usize = 10_000;

// ---------------------------------------------------------------------------
// Wakers

#[derive(Debug, Default)]
struct WakeLog(Mutex<Vec<usize>>);

impl WakeLog {
    fn take(&self) -> Vec<usize> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn waker(self: &Arc<Self>, id: usize) -> Waker {
        Waker::from(Arc::new(WakeTarget {
            id,
            log: Arc::clone(self),
        }))
    }
}

struct WakeTarget {
    id: usize,
    log: Arc<WakeLog>,
}

impl Wake for WakeTarget {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.log
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(self.id);
    }
}

/// What the harness keeps of one queued acquire future.
struct Held {
    id: usize,
    key: WaiterKey,
    waker: Waker,
    cost: Cost,
    timer: Option<Instant>,
    woken: bool,
}

// ---------------------------------------------------------------------------
// The model

#[derive(Debug, Clone)]
struct ModelGrant {
    at: Instant,
    cost: Cost,
    seq: u64,
    queued_at: Option<Instant>,
    refunded_seq: Option<u64>,
    /// Per quota: whether the grant has left that quota's window at some
    /// instant already. A window that grows later does not bring it back
    /// (as `RateLimiter::set_quota` documents); this matches the limiter only
    /// because the harness reads the stats, which expire the logs, at every
    /// instant it stops at (see `growing_a_window_does_not_depend_on_an_earlier_look`).
    forgotten: Vec<bool>,
    quotas: Vec<Quota>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Fate {
    Waiting,
    Granted(usize),
    Failed(AcquireError),
    Gone,
}

#[derive(Debug, Clone)]
struct ModelWaiter {
    cost: Cost,
    queued_at: Instant,
    fate: Fate,
}

#[derive(Debug, PartialEq, Eq)]
enum ModelAdmission {
    Granted(Instant),
    Queued(usize),
}

#[derive(Debug, PartialEq, Eq)]
enum ModelPoll {
    Waiting(Option<Instant>),
    Granted { at: Instant, queued_at: Instant },
    Failed(AcquireError),
}

#[derive(Debug, Clone)]
struct Model {
    quotas: Vec<Quota>,
    /// Every reconfiguration: its sequence number, instant and the quotas after it.
    history: Vec<(u64, Instant, Vec<Quota>)>,
    grants: Vec<ModelGrant>,
    waiters: Vec<ModelWaiter>,
    queue: VecDeque<usize>,
    paused_until: Option<Instant>,
    closed: bool,
    seq: u64,
}

impl Model {
    fn new(quotas: &[Quota], now: Instant) -> Self {
        Model {
            quotas: quotas.to_vec(),
            history: vec![(0, now, quotas.to_vec())],
            grants: Vec::new(),
            waiters: Vec::new(),
            queue: VecDeque::new(),
            paused_until: None,
            closed: false,
            seq: 0,
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// The clock has reached `now`: whatever left a window is gone for good.
    fn observe(&mut self, now: Instant) {
        for grant in &mut self.grants {
            for (q, quota) in self.quotas.iter().enumerate() {
                if grant.at + quota.window() <= now {
                    grant.forgotten[q] = true;
                }
            }
        }
        if self.paused_until.is_some_and(|until| until <= now) {
            self.paused_until = None;
        }
    }

    fn live(&self) -> impl Iterator<Item = &ModelGrant> {
        self.grants.iter().filter(|g| g.refunded_seq.is_none())
    }

    fn in_window(&self, q: usize, now: Instant) -> u64 {
        let quota = self.quotas[q];
        self.live()
            .filter(|g| !g.forgotten[q] && g.at <= now && g.at + quota.window() > now)
            .map(|g| g.cost.amount(quota.unit()))
            .sum()
    }

    fn fits(&self, cost: Cost, now: Instant) -> bool {
        self.paused_until.is_none_or(|until| until <= now)
            && self
                .quotas
                .iter()
                .enumerate()
                .all(|(q, quota)| self.in_window(q, now) + cost.amount(quota.unit()) <= quota.max())
    }

    fn check_cost(&self, cost: Cost) -> Result<(), AcquireError> {
        for quota in &self.quotas {
            let amount = cost.amount(quota.unit());
            if amount > quota.max() {
                return Err(AcquireError::CostExceedsQuota {
                    unit: quota.unit(),
                    cost: amount,
                    max: quota.max(),
                    window: quota.window(),
                });
            }
        }
        Ok(())
    }

    fn grant(&mut self, cost: Cost, now: Instant, waiter: Option<usize>) -> usize {
        let seq = self.next_seq();
        let queued_at = waiter.map(|id| self.waiters[id].queued_at);
        self.grants.push(ModelGrant {
            at: now,
            cost,
            seq,
            queued_at,
            refunded_seq: None,
            forgotten: vec![false; self.quotas.len()],
            quotas: self.quotas.clone(),
        });
        for (q, quota) in self.quotas.iter().enumerate() {
            assert!(
                self.in_window(q, now) <= quota.max(),
                "the model itself overfilled quota {q}"
            );
        }
        self.grants.len() - 1
    }

    /// Grants from the head for as long as the head fits at `now`.
    fn settle(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        while let Some(&id) = self.queue.front() {
            let cost = self.waiters[id].cost;
            if !self.fits(cost, now) {
                break;
            }
            self.queue.pop_front();
            let grant = self.grant(cost, now, Some(id));
            self.waiters[id].fate = Fate::Granted(grant);
        }
    }

    /// The next instant after `now` at which a grant leaves a window or a
    /// pause ends: the only instants at which the head can start to fit.
    fn next_event(&self, now: Instant) -> Option<Instant> {
        let expiries = self.live().flat_map(|g| {
            self.quotas
                .iter()
                .enumerate()
                .filter(|(q, _)| !g.forgotten[*q])
                .map(|(_, quota)| g.at + quota.window())
        });
        expiries.chain(self.paused_until).filter(|&t| t > now).min()
    }

    fn admit(&mut self, cost: Cost, now: Instant) -> Result<ModelAdmission, AcquireError> {
        if self.closed {
            return Err(AcquireError::Closed);
        }
        self.check_cost(cost)?;
        if self.queue.is_empty() && self.fits(cost, now) {
            self.grant(cost, now, None);
            return Ok(ModelAdmission::Granted(now));
        }
        let id = self.waiters.len();
        self.waiters.push(ModelWaiter {
            cost,
            queued_at: now,
            fate: Fate::Waiting,
        });
        self.queue.push_back(id);
        Ok(ModelAdmission::Queued(id))
    }

    /// When `cost` would be granted if it queued now and nothing else happened.
    fn project(&self, cost: Cost, now: Instant) -> Instant {
        let mut sim = self.clone();
        let ModelAdmission::Queued(id) = sim.admit(cost, now).expect("checked by the caller")
        else {
            return now;
        };
        let mut t = now;
        loop {
            sim.settle(t);
            if let Fate::Granted(grant) = sim.waiters[id].fate {
                return sim.grants[grant].at;
            }
            t = sim
                .next_event(t)
                .expect("a queued cost within every quota is granted eventually");
            sim.observe(t);
        }
    }

    /// When the head should next be polled: the first instant it fits.
    fn head_fits_at(&self, id: usize, now: Instant) -> Option<Instant> {
        if self.queue.front() != Some(&id) {
            return None;
        }
        let cost = self.waiters[id].cost;
        let mut sim = self.clone();
        let mut t = now;
        loop {
            if sim.fits(cost, t) {
                return Some(t);
            }
            t = sim.next_event(t).expect("the head fits eventually");
            sim.observe(t);
        }
    }

    fn try_acquire(&mut self, cost: Cost, now: Instant) -> Result<Instant, TryAcquireError> {
        if self.closed {
            return Err(TryAcquireError::Closed);
        }
        self.check_cost(cost).map_err(|err| match err {
            AcquireError::CostExceedsQuota {
                unit,
                cost,
                max,
                window,
            } => TryAcquireError::CostExceedsQuota {
                unit,
                cost,
                max,
                window,
            },
            other => unreachable!("{other:?}"),
        })?;
        if self.queue.is_empty() && self.fits(cost, now) {
            self.grant(cost, now, None);
            return Ok(now);
        }
        Err(TryAcquireError::RateLimited {
            retry_after: self.project(cost, now).saturating_duration_since(now),
        })
    }

    fn poll(&mut self, id: usize, now: Instant) -> ModelPoll {
        let waiter = &mut self.waiters[id];
        match std::mem::replace(&mut waiter.fate, Fate::Gone) {
            Fate::Waiting => {
                waiter.fate = Fate::Waiting;
                ModelPoll::Waiting(self.head_fits_at(id, now))
            }
            Fate::Granted(grant) => ModelPoll::Granted {
                at: self.grants[grant].at,
                queued_at: waiter.queued_at,
            },
            Fate::Failed(err) => ModelPoll::Failed(err),
            Fate::Gone => panic!("waiter {id} polled after it completed"),
        }
    }

    fn cancel(&mut self, id: usize, now: Instant) {
        match std::mem::replace(&mut self.waiters[id].fate, Fate::Gone) {
            Fate::Waiting => {
                self.queue.retain(|&w| w != id);
                self.settle(now);
            }
            Fate::Granted(grant) => {
                let seq = self.next_seq();
                self.grants[grant].refunded_seq = Some(seq);
                self.settle(now);
            }
            Fate::Failed(_) => {}
            Fate::Gone => panic!("waiter {id} cancelled after it completed"),
        }
    }

    fn pause_until(&mut self, until: Instant, now: Instant) {
        if until > now && self.paused_until.is_none_or(|current| current < until) {
            self.paused_until = Some(until);
        }
    }

    fn resume(&mut self, now: Instant) {
        self.paused_until = None;
        self.settle(now);
    }

    fn set_quota(&mut self, index: usize, quota: Quota, now: Instant) {
        self.quotas[index] = quota;
        let seq = self.next_seq();
        self.history.push((seq, now, self.quotas.clone()));
        for id in self.queue.clone() {
            if let Err(err) = self.check_cost(self.waiters[id].cost) {
                self.waiters[id].fate = Fate::Failed(err);
            }
        }
        let waiters = &self.waiters;
        self.queue.retain(|&id| waiters[id].fate == Fate::Waiting);
        self.settle(now);
    }

    fn close(&mut self) {
        self.closed = true;
        for id in std::mem::take(&mut self.queue) {
            self.waiters[id].fate = Fate::Failed(AcquireError::Closed);
        }
    }

    fn stats(&self, now: Instant) -> Stats {
        let quotas: Vec<QuotaStats> = self
            .quotas
            .iter()
            .enumerate()
            .map(|(q, &quota)| {
                let in_window = self.in_window(q, now);
                QuotaStats {
                    quota,
                    in_window,
                    available: quota.max().saturating_sub(in_window),
                    utilization_percent: in_window as f64 * 100.0 / quota.max() as f64,
                }
            })
            .collect();
        let queued: Vec<&ModelGrant> = self.live().filter(|g| g.queued_at.is_some()).collect();
        let first = &quotas[0];
        Stats {
            in_window: first.in_window,
            max: first.quota.max(),
            queued: self.queue.len(),
            available: first.available,
            utilization_percent: first.utilization_percent,
            granted: self.live().count() as u64,
            waited: queued.len() as u64,
            wait_time: queued
                .iter()
                .map(|g| g.at.saturating_duration_since(g.queued_at.unwrap_or(g.at)))
                .sum(),
            paused_until: self.paused_until.filter(|&until| until > now),
            closed: self.closed,
            quotas,
        }
    }

    /// Whether grant `h` still counts against quota `q` when grant `g` is
    /// made: it must not have left the window in force at any instant in
    /// between (a window that grows later does not bring it back).
    fn counts_at(&self, h: &ModelGrant, q: usize, g: &ModelGrant) -> bool {
        let mut window = h.quotas[q].window();
        for (seq, at, quotas) in &self.history {
            if *seq > h.seq && *seq < g.seq {
                if h.at + window <= *at {
                    return false;
                }
                window = quotas[q].window();
            }
        }
        h.at + window > g.at
    }

    /// The window invariant, by brute force over every grant ever made.
    fn check_window_invariant(&self) {
        for g in &self.grants {
            for (q, quota) in g.quotas.iter().enumerate() {
                let total: u64 = self
                    .grants
                    .iter()
                    .filter(|h| h.seq <= g.seq && h.refunded_seq.is_none_or(|r| r > g.seq))
                    .filter(|h| self.counts_at(h, q, g))
                    .map(|h| h.cost.amount(quota.unit()))
                    .sum();
                assert!(
                    total <= quota.max(),
                    "{total} in the window of quota {q} ({quota}) at grant #{}",
                    g.seq
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The harness

#[derive(Debug, Clone, Copy)]
enum Pick {
    Head,
    Middle,
    Tail,
}

#[derive(Debug, Clone)]
enum Op {
    Acquire(Cost),
    TryAcquire(Cost),
    CancelWaiting(Pick),
    CancelGranted(usize),
    CancelAny(usize),
    Take(usize),
    Poll(usize),
    Advance(Duration),
    Pause(Duration),
    Resume,
    SetQuota {
        index: usize,
        max: u64,
        window: Duration,
    },
    Close,
}

struct Harness {
    start: Instant,
    now: Instant,
    sut: LimiterState,
    model: Model,
    held: Vec<Held>,
    wakes: Arc<WakeLog>,
    /// Grant instants the limiter reported for queued waiters, by waiter.
    seen: Vec<(usize, Instant)>,
}

impl Harness {
    fn new(quotas: &[Quota]) -> Self {
        let now = Instant::now();
        let mut harness = Harness {
            start: now,
            now,
            sut: LimiterState::new(quotas).expect("valid quotas"),
            model: Model::new(quotas, now),
            held: Vec::new(),
            wakes: Arc::default(),
            seen: Vec::new(),
        };
        harness.check_stats();
        harness
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn with_wake<T>(&mut self, f: impl FnOnce(&mut LimiterState, &mut WakeList) -> T) -> T {
        let mut wake = WakeList::default();
        let result = f(&mut self.sut, &mut wake);
        wake.wake_all();
        result
    }

    fn held_ids(&self, pred: impl Fn(&Fate) -> bool) -> Vec<usize> {
        self.held
            .iter()
            .filter(|h| pred(&self.model.waiters[h.id].fate))
            .map(|h| h.id)
            .collect()
    }

    fn apply(&mut self, op: &Op) {
        let now = self.now;
        match *op {
            Op::Acquire(cost) => self.acquire(cost),
            Op::TryAcquire(cost) => {
                let want = self.model.try_acquire(cost, now);
                let got = self.sut.try_acquire(cost, now);
                assert_eq!(got, want, "try_acquire({cost:?}) at {:?}", self.elapsed());
            }
            Op::CancelWaiting(pick) => {
                let queue = &self.model.queue;
                let id = match pick {
                    Pick::Head => queue.front(),
                    Pick::Middle => queue.get(queue.len() / 2),
                    Pick::Tail => queue.back(),
                };
                if let Some(&id) = id {
                    self.cancel(id);
                }
            }
            Op::CancelGranted(n) => {
                let ids = self.held_ids(|fate| matches!(fate, Fate::Granted(_)));
                if !ids.is_empty() {
                    self.cancel(ids[n % ids.len()]);
                }
            }
            Op::CancelAny(n) => {
                let ids = self.held_ids(|_| true);
                if !ids.is_empty() {
                    self.cancel(ids[n % ids.len()]);
                }
            }
            Op::Take(n) => {
                let ids = self.held_ids(|fate| *fate != Fate::Waiting);
                if !ids.is_empty() {
                    self.poll(ids[n % ids.len()]);
                }
            }
            Op::Poll(n) => {
                let ids = self.held_ids(|_| true);
                if !ids.is_empty() {
                    self.poll(ids[n % ids.len()]);
                }
            }
            Op::Advance(by) => self.advance_to(now + by),
            Op::Pause(by) => {
                self.with_wake(|sut, wake| sut.pause_until(now + by, now, wake));
                self.model.pause_until(now + by, now);
            }
            Op::Resume => {
                self.with_wake(|sut, wake| sut.resume(now, wake));
                self.model.resume(now);
            }
            Op::SetQuota { index, max, window } => {
                let index = index % self.model.quotas.len();
                let unit = self.model.quotas[index].unit();
                let quota = Quota::new(max, window).expect("valid quota").counting(unit);
                self.with_wake(|sut, wake| sut.set_quota(index, quota, now, wake))
                    .expect("same unit, valid index");
                self.model.set_quota(index, quota, now);
            }
            Op::Close => {
                self.with_wake(|sut, wake| sut.close(wake));
                self.model.close();
            }
        }
        self.drain();
        self.check_stats();
    }

    fn acquire(&mut self, cost: Cost) {
        let now = self.now;
        let id = self.model.waiters.len();
        let waker = self.wakes.waker(id);
        let want = self.model.admit(cost, now);
        let got = self.sut.admit(cost, None, now, &waker);
        match (got, want) {
            (Ok(Admission::Granted(at)), Ok(ModelAdmission::Granted(want))) => {
                assert_eq!(at, want, "immediate grant of {cost:?}");
            }
            (Ok(Admission::Queued { key, wake_at }), Ok(ModelAdmission::Queued(want_id))) => {
                assert_eq!(id, want_id);
                assert_eq!(
                    wake_at,
                    self.model.head_fits_at(id, now),
                    "timer of a new waiter for {cost:?} at {:?}",
                    self.elapsed()
                );
                self.held.push(Held {
                    id,
                    key,
                    waker,
                    cost,
                    timer: wake_at,
                    woken: false,
                });
            }
            (Err(err), Err(want)) => assert_eq!(err, want),
            (got, want) => panic!(
                "admit({cost:?}) at {:?}: limiter {got:?}, model {want:?}",
                self.elapsed()
            ),
        }
    }

    fn index_of(&self, id: usize) -> usize {
        self.held
            .iter()
            .position(|h| h.id == id)
            .expect("a held waiter")
    }

    fn cancel(&mut self, id: usize) {
        let now = self.now;
        let held = self.held.remove(self.index_of(id));
        self.with_wake(|sut, wake| sut.cancel(held.key, now, wake));
        self.model.cancel(id, now);
    }

    /// The waiter's future is polled: when its timer fires, when it is
    /// woken, or when its task gets round to it.
    fn poll(&mut self, id: usize) {
        let now = self.now;
        let elapsed = self.elapsed();
        let i = self.index_of(id);
        let want = self.model.poll(id, now);
        let held = &mut self.held[i];
        held.woken = false;
        let mut wake = WakeList::default();
        let got = self
            .sut
            .poll_waiter(held.key, None, now, &held.waker, &mut wake);
        wake.wake_all();
        match (got, want) {
            (WaiterPoll::Waiting { wake_at }, ModelPoll::Waiting(want)) => {
                assert_eq!(wake_at, want, "timer of waiter {id} at {elapsed:?}");
                held.timer = wake_at;
            }
            (
                WaiterPoll::Granted { at, queued_at },
                ModelPoll::Granted {
                    at: want_at,
                    queued_at: want_queued_at,
                },
            ) => {
                assert_eq!(
                    (at, queued_at),
                    (want_at, want_queued_at),
                    "grant of waiter {id} ({:?})",
                    held.cost
                );
                self.seen.push((id, at));
                self.held.remove(i);
            }
            (WaiterPoll::Failed(err), ModelPoll::Failed(want)) => {
                assert_eq!(err, want, "failure of waiter {id} at {elapsed:?}");
                self.held.remove(i);
            }
            (got, want) => {
                panic!("poll of waiter {id} at {elapsed:?}: limiter {got:?}, model {want:?}")
            }
        }
    }

    /// Whether the runtime would poll this future now: a waiting one when
    /// its timer fires or it is woken; a granted one only when its own timer
    /// poll is what granted it (otherwise its task takes it in its own time).
    fn is_due(&self, held: &Held) -> bool {
        let timer_due = held.timer.is_some_and(|t| t <= self.now);
        match self.model.waiters[held.id].fate {
            Fate::Waiting => held.woken || timer_due,
            Fate::Granted(grant) => timer_due && self.model.grants[grant].at == self.now,
            _ => false,
        }
    }

    fn drain(&mut self) {
        for _ in 0..SPIN_LIMIT {
            for id in self.wakes.take() {
                if let Some(held) = self.held.iter_mut().find(|h| h.id == id) {
                    held.woken = true;
                }
            }
            match self.held.iter().find(|h| self.is_due(h)).map(|h| h.id) {
                Some(id) => self.poll(id),
                None => return,
            }
        }
        panic!("waiters polled {SPIN_LIMIT} times at {:?}", self.elapsed());
    }

    fn next_instant(&self) -> Option<Instant> {
        let timers = self
            .held
            .iter()
            .filter(|h| self.model.waiters[h.id].fate == Fate::Waiting)
            .filter_map(|h| h.timer);
        timers
            .chain(self.model.next_event(self.now))
            .filter(|&t| t > self.now)
            .min()
    }

    fn visit(&mut self, t: Instant) {
        self.now = t;
        self.model.observe(t);
        self.model.settle(t);
        self.drain();
        self.check_stats();
    }

    /// Moves the clock to `target`, stopping at every timer and at every
    /// instant a grant leaves a window or a pause ends.
    fn advance_to(&mut self, target: Instant) {
        while let Some(t) = self.next_instant().filter(|&t| t <= target) {
            self.visit(t);
        }
        if target > self.now {
            self.visit(target);
        }
    }

    fn check_stats(&mut self) {
        // `stats` expires the limiter's logs at `now`: the model sees the
        // same instant go by.
        self.model.observe(self.now);
        let got = self.sut.stats(self.now);
        let want = self.model.stats(self.now);
        assert_eq!(got, want, "stats at {:?}", self.elapsed());
    }

    /// Lets every queued waiter be served, takes every outcome, and checks
    /// the whole history.
    fn finish(mut self) {
        while !self.model.queue.is_empty() {
            let t = self
                .next_instant()
                .expect("a waiter is queued but nothing is due to happen");
            self.visit(t);
        }
        while let Some(held) = self.held.first() {
            let id = held.id;
            self.poll(id);
            assert!(
                self.held.first().is_none_or(|h| h.id != id),
                "waiter {id} still waits after the queue emptied"
            );
        }
        self.check_stats();
        self.model.check_window_invariant();
        self.seen.sort_unstable();
        for pair in self.seen.windows(2) {
            assert!(
                pair[0].1 <= pair[1].1,
                "waiter {} was granted after waiter {}, which queued later",
                pair[0].0,
                pair[1].0
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Strategies

/// A longer soak can still be asked for in the usual way.
fn cases_or(default: u32) -> u32 {
    if std::env::var_os("PROPTEST_CASES").is_some() {
        ProptestConfig::default().cases
    } else {
        default
    }
}

fn unit() -> impl Strategy<Value = Unit> {
    prop_oneof![Just(Unit::Requests), Just(Unit::Tokens)]
}

fn quotas() -> impl Strategy<Value = Vec<Quota>> {
    prop::collection::vec((unit(), 1..=12u64, 1..=30u64), 1..=3).prop_map(|specs| {
        specs
            .into_iter()
            .map(|(unit, max, ms)| {
                Quota::new(max, Duration::from_millis(ms))
                    .expect("valid quota")
                    .counting(unit)
            })
            .collect()
    })
}

fn cost() -> impl Strategy<Value = Cost> {
    let requests = prop_oneof![3 => Just(1u64), 1 => 0..=4u64];
    let tokens = prop_oneof![4 => 0..=4u64, 1 => 0..=14u64];
    (requests, tokens).prop_map(|(requests, tokens)| Cost::new(requests, tokens))
}

fn op() -> impl Strategy<Value = Op> {
    // Closing ends most of the interest of a run, so it is rare.
    prop_oneof![
        36 => cost().prop_map(Op::Acquire),
        9 => cost().prop_map(Op::TryAcquire),
        6 => prop_oneof![Just(Pick::Head), Just(Pick::Middle), Just(Pick::Tail)]
            .prop_map(Op::CancelWaiting),
        6 => any::<usize>().prop_map(Op::CancelGranted),
        2 => any::<usize>().prop_map(Op::CancelAny),
        15 => any::<usize>().prop_map(Op::Take),
        3 => any::<usize>().prop_map(Op::Poll),
        18 => (0..=25u64).prop_map(|ms| Op::Advance(Duration::from_millis(ms))),
        9 => (0..=3u64).prop_map(|ms| Op::Advance(Duration::from_millis(ms))),
        3 => (1..=999u64).prop_map(|us| Op::Advance(Duration::from_micros(us))),
        4 => (0..=30u64).prop_map(|ms| Op::Pause(Duration::from_millis(ms))),
        3 => Just(Op::Resume),
        6 => (any::<usize>(), 1..=12u64, 1..=30u64).prop_map(|(index, max, ms)| {
            Op::SetQuota {
                index,
                max,
                window: Duration::from_millis(ms),
            }
        }),
        1 => Just(Op::Close),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases_or(512),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_state_machine_matches_a_brute_force_model(
        quotas in quotas(),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let mut harness = Harness::new(&quotas);
        for op in &ops {
            harness.apply(op);
        }
        harness.finish();
    }
}

// ---------------------------------------------------------------------------
// Large quotas: coalesced logs

/// How many acquires are kept queued, so that the limiter, not the demand,
/// sets the pace.
const DEPTH: usize = 64;

struct Saturation {
    quota: Quota,
    resolution: Duration,
    sut: LimiterState,
    now: Instant,
    wakes: Arc<WakeLog>,
    queue: VecDeque<Held>,
    next_id: usize,
    /// The true grant instants, in order, and the running sum of their amounts.
    grants: Vec<Instant>,
    prefix: Vec<u64>,
}

impl Saturation {
    fn new(quota: Quota) -> Self {
        Saturation {
            quota,
            resolution: quota.window() / 1_000,
            sut: LimiterState::new(&[quota]).expect("valid quota"),
            now: Instant::now(),
            wakes: Arc::default(),
            queue: VecDeque::new(),
            next_id: 0,
            grants: Vec::new(),
            prefix: vec![0],
        }
    }

    fn amount(&self, cost: Cost) -> u64 {
        cost.amount(self.quota.unit())
    }

    /// The amount truly granted at instants in `(from, to]`, as the grants
    /// whose instant plus `span` is past `to`.
    fn granted_within(&self, span: Duration, to: Instant) -> u64 {
        let lo = self.grants.partition_point(|&g| g + span <= to);
        let hi = self.grants.partition_point(|&g| g <= to);
        self.prefix[hi] - self.prefix[lo.min(hi)]
    }

    fn record(&mut self, at: Instant, amount: u64) {
        assert!(self.grants.last().is_none_or(|&last| last <= at));
        self.grants.push(at);
        self.prefix
            .push(self.prefix.last().copied().unwrap_or(0) + amount);
        let in_window = self.granted_within(self.quota.window(), at);
        assert!(
            in_window <= self.quota.max(),
            "{in_window} truly granted in the window ending at a grant, max {}",
            self.quota.max()
        );
    }

    /// The head waits at `t`: that must be because the window, stretched by
    /// the coalescing step, has no room for it.
    fn check_refusal(&self, t: Instant) {
        let Some(head) = self.queue.front() else {
            return;
        };
        let span = self.quota.window() + self.resolution;
        let granted = self.granted_within(span, t);
        assert!(
            granted + self.amount(head.cost) > self.quota.max(),
            "the head ({} units) waits although only {granted} of {} were granted in the stretched window",
            self.amount(head.cost),
            self.quota.max()
        );
    }

    fn admit(&mut self, cost: Cost) {
        let id = self.next_id;
        self.next_id += 1;
        let waker = self.wakes.waker(id);
        match self.sut.admit(cost, None, self.now, &waker) {
            Ok(Admission::Granted(at)) => self.record(at, self.amount(cost)),
            Ok(Admission::Queued { key, wake_at }) => self.queue.push_back(Held {
                id,
                key,
                waker,
                cost,
                timer: wake_at,
                woken: false,
            }),
            Err(err) => panic!("admit({cost:?}): {err:?}"),
        }
    }

    /// Polls every woken future, and the head when its timer fires, at once.
    fn drain(&mut self) {
        for _ in 0..SPIN_LIMIT {
            let mut due = self.wakes.take();
            if let Some(head) = self.queue.front() {
                if head.timer.is_some_and(|t| t <= self.now) {
                    due.push(head.id);
                }
            }
            if due.is_empty() {
                return;
            }
            due.sort_unstable();
            due.dedup();
            for id in due {
                let Some(i) = self.queue.iter().position(|h| h.id == id) else {
                    continue;
                };
                let amount = self.amount(self.queue[i].cost);
                let held = &mut self.queue[i];
                let mut wake = WakeList::default();
                let poll = self
                    .sut
                    .poll_waiter(held.key, None, self.now, &held.waker, &mut wake);
                wake.wake_all();
                match poll {
                    WaiterPoll::Waiting { wake_at } => held.timer = wake_at,
                    WaiterPoll::Granted { at, .. } => {
                        self.queue.remove(i);
                        self.record(at, amount);
                    }
                    WaiterPoll::Failed(err) => panic!("waiter {id} failed: {err:?}"),
                }
            }
        }
        panic!("waiters polled {SPIN_LIMIT} times at one instant");
    }

    /// Keeps `DEPTH` acquires queued for `windows` windows, arrivals spaced
    /// by `gaps` (ns). Returns the amount granted per window after the first.
    fn run(mut self, amounts: &[u64], gaps: &[u64], windows: u32) -> u64 {
        let window = self.quota.window();
        let start = self.now;
        let end = start + window * windows;
        let mut i = 0;
        while self.now < end {
            let timer = self.queue.front().and_then(|h| h.timer);
            let arrival = self.now + Duration::from_nanos(gaps[i % gaps.len()]);
            if self.queue.len() < DEPTH && timer.is_none_or(|t| arrival < t) {
                self.now = arrival;
                let amount = amounts[i % amounts.len()];
                let cost = match self.quota.unit() {
                    Unit::Requests => Cost::requests(amount),
                    Unit::Tokens => Cost::tokens(amount),
                };
                self.admit(cost);
                i += 1;
            } else {
                let t = timer.expect("a full queue whose head has no timer is never served");
                self.check_refusal(t - Duration::from_nanos(1));
                self.now = t;
            }
            self.drain();
            self.check_refusal(self.now);
            assert!(
                self.sut.log_entries() <= 1_001,
                "{} log entries",
                self.sut.log_entries()
            );
        }
        let from = self.grants.partition_point(|&g| g < start + window);
        let to = self.grants.partition_point(|&g| g < end);
        (self.prefix[to] - self.prefix[from]) / u64::from(windows - 1)
    }
}

fn large_quota() -> impl Strategy<Value = Quota> {
    let window = prop_oneof![
        Just(Duration::from_millis(100)),
        Just(Duration::from_secs(1)),
        Just(Duration::from_secs(60)),
    ];
    (2_000..=2_000_000u64, window, unit()).prop_map(|(max, window, unit)| {
        Quota::new(max, window).expect("valid quota").counting(unit)
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases_or(16),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn large_quotas_stay_strict_bounded_and_busy(
        quota in large_quota(),
        fractions in prop::collection::vec(1..=1_000u64, 1..64),
        gaps in prop::collection::vec(prop_oneof![1..=100u64, 100..=5_000u64], 1..64),
    ) {
        // Costs up to max / 2000, so that one cost is a small part of the
        // window and the throughput figure measures the limiter, not rounding.
        let largest = (quota.max() / 2_000).max(1);
        let amounts: Vec<u64> = fractions.iter().map(|f| (largest * f / 1_000).max(1)).collect();
        let per_window = Saturation::new(quota).run(&amounts, &gaps, 4);
        let floor = quota.max() - quota.max() / 1_000 - largest;
        prop_assert!(
            per_window >= floor,
            "{per_window} per window of {}; floor {floor}",
            quota.max()
        );
    }
}

// ---------------------------------------------------------------------------
// Known bugs, reduced to minimal cases

fn ms(t0: Instant, n: u64) -> Instant {
    t0 + Duration::from_millis(n)
}

fn two_per(window_ms: u64) -> Quota {
    Quota::new(2, Duration::from_millis(window_ms)).expect("valid quota")
}

/// A granted waiter whose future is dropped before it takes its grant gives
/// the grant back. If that grant already left the window and the window then
/// grew, there is nothing left to give back: the refund must not take the
/// amount from the next, newer entry, another caller's grant.
#[test]
fn a_refund_after_a_window_grows_takes_back_another_grant() {
    let t0 = Instant::now();
    let waker = Waker::noop();
    let mut wake = WakeList::default();
    let mut state = LimiterState::new(&[two_per(10)]).expect("valid quota");
    assert_eq!(
        state.admit(Cost::requests(2), None, t0, waker),
        Ok(Admission::Granted(t0))
    );
    let Ok(Admission::Queued { key: b, .. }) = state.admit(Cost::requests(1), None, t0, waker)
    else {
        panic!("b queues")
    };
    let Ok(Admission::Queued { key: c, .. }) = state.admit(Cost::requests(1), None, t0, waker)
    else {
        panic!("c queues")
    };
    // B's timer fires at 10 ms: B and C are granted, C's future has not run yet.
    assert!(matches!(
        state.poll_waiter(b, None, ms(t0, 10), waker, &mut wake),
        WaiterPoll::Granted { .. }
    ));
    // At 20 ms the grants of 10 ms have left the window: D takes both units.
    assert_eq!(
        state.admit(Cost::requests(2), None, ms(t0, 20), waker),
        Ok(Admission::Granted(ms(t0, 20)))
    );
    state
        .set_quota(0, two_per(30), ms(t0, 20), &mut wake)
        .expect("same unit");
    // C's future is dropped: its grant is "refunded" out of D's.
    state.cancel(c, ms(t0, 20), &mut wake);
    assert_eq!(state.stats(ms(t0, 20)).in_window, 2);
    assert!(
        state.try_acquire(Cost::requests(1), ms(t0, 20)).is_err(),
        "a third unit granted at 20 ms in a window of 2"
    );
}

/// When a window grows, a grant older than the old window is forgotten
/// whether or not anything (a `stats()` call, an acquire) expired the log
/// before the change: the outcome does not depend on an unrelated read.
#[test]
fn growing_a_window_does_not_depend_on_an_earlier_look() {
    fn granted_at_20_ms(look_at_15_ms: bool) -> bool {
        let t0 = Instant::now();
        let mut wake = WakeList::default();
        let mut state = LimiterState::new(&[two_per(10)]).expect("valid quota");
        state
            .try_acquire(Cost::requests(2), t0)
            .expect("room at first");
        if look_at_15_ms {
            state.stats(ms(t0, 15));
        }
        state
            .set_quota(0, two_per(30), ms(t0, 20), &mut wake)
            .expect("same unit");
        state.try_acquire(Cost::requests(1), ms(t0, 20)).is_ok()
    }
    assert_eq!(granted_at_20_ms(false), granted_at_20_ms(true));
}
