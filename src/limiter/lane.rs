//! The fast lane: grants without the lock while the limiter is far from its
//! quota.
//!
//! # Implementation details
//!
//! Under the lock, when nobody waits and nothing is paused, the limiter may
//! *open* the lane: it sets aside a budget of requests that fits every quota
//! at the instant `opened_at`, valid until `deadline = opened_at + step`
//! (`step` being the smallest coalescing step of the quotas). A caller then
//! takes from the budget with one compare-and-swap, provided the time-stamp
//! counter says that less than `step` has passed since the opening (measured
//! against a counter reading taken at the opening, with a 1% margin for the
//! counter's rate error). The next time anyone takes the lock, the lane is
//! *sealed* (swapped to zero) and what it granted is recorded as one log
//! entry dated `min(now, deadline)`.
//!
//! Why this is strict: every grant through the lane read the clock before its
//! swap, its swap came before the seal, and the seal before the reading that
//! dates the entry, while its reading was before the deadline: so the entry is
//! dated no earlier than any of its grants, which is exactly the coalescing
//! rule of the window (an entry counts at its latest grant or later). And the
//! budget fitted every window ending at or after `opened_at`, since windows
//! ending later hold fewer of the older grants. The price is the same as
//! coalescing's: a grant may count up to one step longer than it should.
//!
//! One word holds whether the lane is open (the top bit), the number of
//! grants taken (the next 23 bits) and the budget left (the low 40 bits), so
//! that taking is a single atomic operation.

use std::sync::atomic::{AtomicU64, Ordering};

const REMAINING_BITS: u32 = 40;
const REMAINING_MASK: u64 = (1 << REMAINING_BITS) - 1;
const OPEN: u64 = 1 << 63;
const MAX_GRANTS: u64 = (1 << (63 - REMAINING_BITS)) - 1;

/// The largest budget one opening of the lane holds.
pub(crate) const MAX_BUDGET: u64 = REMAINING_MASK;

/// What the lane granted between an opening and a seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sealed {
    pub(crate) grants: u64,
    pub(crate) remaining: u64,
}

/// Where an opening of the lane starts: a counter reading and the limiter's
/// time then (in nanoseconds since the limiter's origin), and how long it
/// lasts, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Anchor {
    pub(crate) counter: u64,
    pub(crate) nanos: u64,
    pub(crate) lasts: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Lane {
    word: AtomicU64,
    anchor_counter: AtomicU64,
    anchor_nanos: AtomicU64,
    lasts: AtomicU64,
}

impl Lane {
    /// Where the current (or last) opening starts.
    #[inline]
    pub(crate) fn anchor(&self) -> Anchor {
        Anchor {
            counter: self.anchor_counter.load(Ordering::Acquire),
            nanos: self.anchor_nanos.load(Ordering::Acquire),
            lasts: self.lasts.load(Ordering::Acquire),
        }
    }

    /// Takes `amount` from the budget for a caller that measured `elapsed`
    /// nanoseconds since the anchor it read.
    #[inline]
    pub(crate) fn try_take(&self, amount: u64, elapsed: u64, anchor: &Anchor) -> bool {
        if elapsed >= anchor.lasts {
            return false;
        }
        let mut current = self.word.load(Ordering::Relaxed);
        loop {
            let remaining = current & REMAINING_MASK;
            let grants = (current & !OPEN) >> REMAINING_BITS;
            if current & OPEN == 0 || remaining < amount || grants == MAX_GRANTS {
                return false;
            }
            let next = OPEN | ((grants + 1) << REMAINING_BITS) | (remaining - amount);
            match self.word.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// Closes the lane; returns what it granted since it opened.
    pub(crate) fn seal(&self) -> Sealed {
        let word = self.word.swap(0, Ordering::AcqRel);
        Sealed {
            grants: (word & !OPEN) >> REMAINING_BITS,
            remaining: word & REMAINING_MASK,
        }
    }

    /// Opens the lane with `budget` (at most [`MAX_BUDGET`]) from `anchor`.
    pub(crate) fn open(&self, budget: u64, anchor: Anchor) {
        self.anchor_counter.store(anchor.counter, Ordering::Release);
        self.anchor_nanos.store(anchor.nanos, Ordering::Release);
        self.lasts.store(anchor.lasts, Ordering::Release);
        self.word
            .store(OPEN | budget.min(MAX_BUDGET), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANCHOR: Anchor = Anchor {
        counter: 7,
        nanos: 0,
        lasts: 100,
    };

    #[test]
    fn takes_until_the_budget_or_the_opening_runs_out() {
        let lane = Lane::default();
        assert!(!lane.try_take(1, 0, &lane.anchor()), "closed at first");
        lane.open(5, ANCHOR);
        assert_eq!(lane.anchor(), ANCHOR);
        assert!(lane.try_take(3, 10, &ANCHOR));
        assert!(lane.try_take(2, 99, &ANCHOR));
        assert!(!lane.try_take(1, 99, &ANCHOR), "budget spent");
        assert_eq!(
            lane.seal(),
            Sealed {
                grants: 2,
                remaining: 0
            }
        );
        lane.open(5, ANCHOR);
        assert!(!lane.try_take(1, 100, &ANCHOR), "opening over");
        assert!(
            lane.try_take(0, 50, &ANCHOR),
            "a zero cost still counts as a grant"
        );
        assert_eq!(
            lane.seal(),
            Sealed {
                grants: 1,
                remaining: 5
            }
        );
        assert!(!lane.try_take(0, 50, &ANCHOR), "sealed");
    }

    #[test]
    fn threads_never_take_more_than_the_budget() {
        let lane = std::sync::Arc::new(Lane::default());
        let anchor = Anchor {
            lasts: u64::MAX,
            ..ANCHOR
        };
        lane.open(100_000, anchor);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let lane = lane.clone();
                std::thread::spawn(move || {
                    (0..50_000).filter(|_| lane.try_take(1, 0, &anchor)).count()
                })
            })
            .collect();
        let taken: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(taken, 100_000);
        assert_eq!(
            lane.seal(),
            Sealed {
                grants: 100_000,
                remaining: 0
            }
        );
    }
}
