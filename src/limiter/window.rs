//! The sliding-window log of one quota: pure and synchronous, every method
//! takes `now` as an argument.
//!
//! # Implementation details
//!
//! The log is a queue of entries `(at, amount)`, oldest first, and the sum of
//! their amounts. A grant at instant `g` counts against every window
//! `(t - window, t]` with `g` in it, so an entry leaves the log at
//! `at + window`.
//!
//! Memory: grants at the same instant always share one entry (that is exact).
//! For a quota whose `max` is at most [`EXACT_MAX`], that is all: the log
//! holds at most `max` entries and every grant keeps its own instant. A larger
//! quota also coalesces grants that come within `window / 1000` of the first
//! grant of the newest entry: the entry takes the sum of their amounts and the
//! instant of the latest. Every grant is then remembered as happening a little
//! *later* than it did, never earlier, so it leaves the window a little later:
//! coalescing can only refuse, never admit more, and it delays each grant's
//! expiry by less than `window / 1000`, which costs at most 0.1% of the quota's
//! capacity. The log then holds at most about 1,001 entries whatever the rate.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::quota::Quota;

/// The largest `max` for which grants are never coalesced across instants.
pub(crate) const EXACT_MAX: u64 = 1_024;

/// How many coalescing steps one window holds for a large quota.
const STEPS_PER_WINDOW: u32 = 1_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The instant of its first grant.
    opened_at: Instant,
    /// The instant of its latest grant: the one it counts at.
    at: Instant,
    amount: u64,
}

/// The grants of one quota that still count.
#[derive(Debug, Clone)]
pub(crate) struct SlidingWindow {
    quota: Quota,
    /// Grants within this span of the newest entry's first grant share it.
    resolution: Duration,
    log: VecDeque<Entry>,
    in_window: u64,
    /// Until when grants join the newest entry (its first grant plus the
    /// resolution); kept so that the hot path only compares instants.
    newest_closes_at: Option<Instant>,
    /// When the oldest entry leaves the window, for the same reason.
    oldest_expires_at: Option<Instant>,
}

fn resolution_for(quota: &Quota) -> Duration {
    if quota.max() <= EXACT_MAX {
        Duration::ZERO
    } else {
        quota.window() / STEPS_PER_WINDOW
    }
}

impl SlidingWindow {
    pub(crate) fn new(quota: Quota) -> Self {
        SlidingWindow {
            quota,
            resolution: resolution_for(&quota),
            log: VecDeque::new(),
            in_window: 0,
            newest_closes_at: None,
            oldest_expires_at: None,
        }
    }

    fn refresh_cached_instants(&mut self) {
        self.oldest_expires_at = self.log.front().map(|e| e.at + self.quota.window());
        self.newest_closes_at = match self.log.back() {
            Some(newest) if !self.resolution.is_zero() => Some(newest.opened_at + self.resolution),
            _ => None,
        };
    }

    pub(crate) fn quota(&self) -> &Quota {
        &self.quota
    }

    /// Replaces the quota, keeping the grants remembered so far.
    pub(crate) fn set_quota(&mut self, quota: Quota) {
        self.quota = quota;
        self.resolution = resolution_for(&quota);
        self.refresh_cached_instants();
    }

    /// Grants within this span share a log entry (zero: only grants at the
    /// same instant do).
    pub(crate) fn resolution(&self) -> Duration {
        self.resolution
    }

    /// Until when a grant joins the newest entry, if it can.
    pub(crate) fn newest_closes_at(&self) -> Option<Instant> {
        self.newest_closes_at
    }

    /// The amount granted within the window ending at the last `expire` call.
    pub(crate) fn in_window(&self) -> u64 {
        self.in_window
    }

    /// How many entries the log holds (its memory, in entries).
    #[cfg(test)]
    pub(crate) fn entries(&self) -> usize {
        self.log.len()
    }

    /// The remembered grants, oldest first.
    pub(crate) fn log_iter(&self) -> impl Iterator<Item = (Instant, u64)> + '_ {
        self.log.iter().map(|e| (e.at, e.amount))
    }

    /// When the last grant remembered stops counting: `None` if nothing
    /// counts any more (as of the last `expire`).
    pub(crate) fn drained_at(&self) -> Option<Instant> {
        if self.in_window == 0 {
            return None;
        }
        self.log
            .back()
            .map(|newest| newest.at + self.quota.window())
    }

    /// Forgets the grants that no longer count at `now`.
    #[inline]
    pub(crate) fn expire(&mut self, now: Instant) {
        if self.oldest_expires_at.is_some_and(|at| at <= now) {
            self.expire_slow(now);
        }
    }

    fn expire_slow(&mut self, now: Instant) {
        let window = self.quota.window();
        while let Some(front) = self.log.front() {
            if front.at + window > now {
                break;
            }
            self.in_window -= front.amount;
            self.log.pop_front();
        }
        self.oldest_expires_at = self.log.front().map(|e| e.at + window);
    }

    /// Whether `amount` more fits now. Call [`SlidingWindow::expire`] first.
    pub(crate) fn fits(&self, amount: u64) -> bool {
        self.in_window + amount <= self.quota.max()
    }

    /// The earliest instant at or after `now` at which `amount` more fits,
    /// given the grants remembered. Call [`SlidingWindow::expire`] first.
    /// `amount` must not exceed the quota's `max`.
    pub(crate) fn earliest_fit(&self, amount: u64, now: Instant) -> Instant {
        let max = self.quota.max();
        if self.in_window + amount <= max {
            return now;
        }
        let mut must_free = self.in_window + amount - max;
        for entry in &self.log {
            if entry.amount >= must_free {
                return (entry.at + self.quota.window()).max(now);
            }
            must_free -= entry.amount;
        }
        // Unreachable while `amount <= max`: freeing every entry frees enough.
        now
    }

    /// Records a grant of `amount` at `now`.
    pub(crate) fn record(&mut self, amount: u64, now: Instant) {
        if amount == 0 {
            return;
        }
        self.in_window += amount;
        if let Some(newest) = self.log.back_mut() {
            if newest.at == now || self.newest_closes_at.is_some_and(|closes| now < closes) {
                newest.amount += amount;
                newest.at = now;
                return;
            }
        }
        self.log.push_back(Entry {
            opened_at: now,
            at: now,
            amount,
        });
        if !self.resolution.is_zero() {
            self.newest_closes_at = Some(now + self.resolution);
        }
        if self.log.len() == 1 {
            self.oldest_expires_at = Some(now + self.quota.window());
        }
    }

    /// Takes back a grant of `amount` made at `granted_at` that was never
    /// used, if it still counts at `now`.
    pub(crate) fn refund(&mut self, amount: u64, granted_at: Instant, now: Instant) {
        if amount == 0 || granted_at + self.quota.window() <= now {
            return;
        }
        // The grant went into the first entry not older than it (entries are
        // ordered, and coalescing only moves an entry's instant later), unless
        // that entry has left the log already: then the first one left is
        // someone else's.
        let index = self.log.partition_point(|e| e.at < granted_at);
        if let Some(entry) = self
            .log
            .get_mut(index)
            .filter(|e| e.opened_at <= granted_at)
        {
            let taken = amount.min(entry.amount);
            entry.amount -= taken;
            self.in_window -= taken;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn a_grant_counts_until_exactly_one_window_later() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(Quota::new(2, Duration::from_secs(1)).unwrap());
        w.record(2, t0);
        w.expire(at(t0, 999));
        assert!(!w.fits(1));
        assert_eq!(w.earliest_fit(1, at(t0, 999)), at(t0, 1_000));
        w.expire(at(t0, 1_000));
        assert!(w.fits(2));
        assert_eq!(w.in_window(), 0);
    }

    #[test]
    fn earliest_fit_frees_only_what_is_needed() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(Quota::new(10, Duration::from_secs(10)).unwrap());
        w.record(3, t0);
        w.record(3, at(t0, 1_000));
        w.record(4, at(t0, 2_000));
        w.expire(at(t0, 5_000));
        assert_eq!(w.earliest_fit(0, at(t0, 5_000)), at(t0, 5_000));
        assert_eq!(w.earliest_fit(3, at(t0, 5_000)), at(t0, 10_000));
        assert_eq!(w.earliest_fit(4, at(t0, 5_000)), at(t0, 11_000));
        assert_eq!(w.earliest_fit(10, at(t0, 5_000)), at(t0, 12_000));
    }

    #[test]
    fn small_quotas_never_coalesce_distinct_instants() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(Quota::new(EXACT_MAX, Duration::from_secs(1)).unwrap());
        for i in 0..100 {
            w.record(1, t0 + Duration::from_nanos(i));
            w.record(1, t0 + Duration::from_nanos(i));
        }
        assert_eq!(w.entries(), 100);
        assert_eq!(w.in_window(), 200);
    }

    #[test]
    fn large_quotas_coalesce_to_a_bounded_log_and_stay_strict() {
        let t0 = Instant::now();
        let quota = Quota::per_second(1_000_000_000).unwrap();
        let mut w = SlidingWindow::new(quota);
        // One grant every microsecond for three seconds.
        let mut latest_in_entry = t0;
        for us in 0..3_000_000u64 {
            let now = t0 + Duration::from_micros(us);
            w.expire(now);
            w.record(1, now);
            latest_in_entry = now;
            assert!(w.entries() <= 1_001, "{} entries", w.entries());
        }
        // Everything granted in the last second is still counted.
        assert!(w.in_window() >= 1_000_000);
        // And at most one resolution step more than that.
        assert!(w.in_window() <= 1_001_000);
        let _ = latest_in_entry;
    }

    #[test]
    fn refund_takes_back_a_recent_grant_only() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(Quota::new(5, Duration::from_secs(1)).unwrap());
        w.record(2, t0);
        w.record(3, at(t0, 10));
        w.refund(3, at(t0, 10), at(t0, 20));
        assert_eq!(w.in_window(), 2);
        w.refund(2, t0, at(t0, 1_000));
        assert_eq!(w.in_window(), 2, "an expired grant is not refunded");
    }

    #[test]
    fn a_smaller_window_after_reconfigure_forgets_sooner() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(Quota::new(5, Duration::from_secs(10)).unwrap());
        w.record(5, t0);
        w.set_quota(Quota::new(5, Duration::from_secs(1)).unwrap());
        w.expire(at(t0, 1_000));
        assert_eq!(w.in_window(), 0);
    }
}
