//! The fast lane: grants without the lock while the limiter is far from its
//! quota.
//!
//! # Implementation details
//!
//! Under the lock, when nobody waits and nothing is paused, the limiter may
//! *open* the lane: it sets aside a budget of requests that fits every quota
//! at the instant `opened_at`; its entry will be dated no later than
//! `deadline = opened_at + step` (`step` being the smallest coalescing step
//! of the quotas, at least a millisecond). A caller then takes from the budget
//! with one compare-and-swap, provided the time-stamp counter says the opening
//! has not run out: it lasts at most a millisecond and nine tenths of the
//! step, measured from a counter reading taken at the opening, which leaves
//! room for the counter's rate error and its skew between cores. The next time anyone takes the lock, the lane is
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
//! One word holds whether the lane is open (the top bit), the opening's
//! generation (12 bits), the number of grants taken (19 bits) and the budget
//! left (the low 32 bits), so that taking is a single compare-and-swap. A
//! caller reads the counter (the instant of its grant), loads the word, then
//! the opening's anchor, and swaps (a reading older than the opening measures
//! as none, dating the grant at the opening): the swap succeeds only if the word is unchanged, that is, if the
//! lane was neither sealed nor reopened meanwhile (the generation tells one
//! opening from the next even when their budgets are equal), so the anchor
//! it measured against is the one of the opening it takes from.

use std::sync::atomic::{AtomicU64, Ordering};

const REMAINING_BITS: u32 = 32;
const REMAINING_MASK: u64 = (1 << REMAINING_BITS) - 1;
const GRANT_BITS: u32 = 19;
const GRANTS_SHIFT: u32 = REMAINING_BITS;
const GRANTS_MASK: u64 = ((1 << GRANT_BITS) - 1) << GRANTS_SHIFT;
const GENERATION_SHIFT: u32 = REMAINING_BITS + GRANT_BITS;
const GENERATION_MASK: u64 = ((1 << 12) - 1) << GENERATION_SHIFT;
const OPEN: u64 = 1 << 63;
const MAX_GRANTS: u64 = (1 << GRANT_BITS) - 1;

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

/// A grant taken from the lane: the anchor it was measured against and the
/// nanoseconds measured since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Taken {
    pub(crate) anchor: Anchor,
    pub(crate) elapsed: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Lane {
    word: AtomicU64,
    anchor_counter: AtomicU64,
    anchor_nanos: AtomicU64,
    lasts: AtomicU64,
    generation: AtomicU64,
}

impl Lane {
    fn anchor(&self) -> Anchor {
        Anchor {
            counter: self.anchor_counter.load(Ordering::Acquire),
            nanos: self.anchor_nanos.load(Ordering::Acquire),
            lasts: self.lasts.load(Ordering::Acquire),
        }
    }

    /// Takes `amount` from the budget if the lane is open, has room, and
    /// `counter` (a reading of the time-stamp counter) says the opening has
    /// not run out; `elapsed` turns two readings into nanoseconds.
    #[inline]
    pub(crate) fn try_take(
        &self,
        amount: u64,
        counter: impl Fn() -> u64,
        elapsed: impl Fn(u64, u64) -> u64,
    ) -> Option<Taken> {
        // The grant's instant is this reading, taken before the word so that
        // the compare-and-swap follows the load as closely as it can. A
        // reading older than the opening measures as no time at all: the
        // grant is then dated at the opening, which its budget fits.
        let now = counter();
        let mut current = self.word.load(Ordering::Acquire);
        let mut measured: Option<(u64, Taken)> = None;
        loop {
            if current & OPEN == 0 {
                return None;
            }
            let generation = current & GENERATION_MASK;
            // Measure once per opening: the anchor is read after the word, so
            // a swap that succeeds proves it belongs to the same opening.
            let taken = match measured {
                Some((seen, taken)) if seen == generation => taken,
                _ => {
                    let anchor = self.anchor();
                    let taken = Taken {
                        anchor,
                        elapsed: elapsed(anchor.counter, now),
                    };
                    measured = Some((generation, taken));
                    taken
                }
            };
            if taken.elapsed >= taken.anchor.lasts {
                return None;
            }
            let remaining = current & REMAINING_MASK;
            let grants = (current & GRANTS_MASK) >> GRANTS_SHIFT;
            if remaining < amount || grants == MAX_GRANTS {
                return None;
            }
            let next = OPEN | generation | ((grants + 1) << GRANTS_SHIFT) | (remaining - amount);
            match self.word.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(taken),
                Err(actual) => current = actual,
            }
        }
    }

    /// Closes the lane; returns what it granted since it opened.
    pub(crate) fn seal(&self) -> Sealed {
        let word = self.word.swap(0, Ordering::AcqRel);
        Sealed {
            grants: (word & GRANTS_MASK) >> GRANTS_SHIFT,
            remaining: word & REMAINING_MASK,
        }
    }

    /// Opens the lane with `budget` (at most [`MAX_BUDGET`]) from `anchor`.
    /// Call it only when the lane is sealed.
    pub(crate) fn open(&self, budget: u64, anchor: Anchor) {
        let generation = (self.generation.fetch_add(1, Ordering::Relaxed) + 1) << GENERATION_SHIFT;
        self.anchor_counter.store(anchor.counter, Ordering::Release);
        self.anchor_nanos.store(anchor.nanos, Ordering::Release);
        self.lasts.store(anchor.lasts, Ordering::Release);
        self.word.store(
            OPEN | (generation & GENERATION_MASK) | budget.min(MAX_BUDGET),
            Ordering::Release,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANCHOR: Anchor = Anchor {
        counter: 1_000,
        nanos: 0,
        lasts: 100,
    };

    fn take(lane: &Lane, amount: u64, at: u64) -> bool {
        lane.try_take(amount, || at, |from, to| to.saturating_sub(from))
            .is_some()
    }

    #[test]
    fn takes_until_the_budget_or_the_opening_runs_out() {
        let lane = Lane::default();
        assert!(!take(&lane, 1, 1_000), "closed at first");
        lane.open(5, ANCHOR);
        assert!(take(&lane, 3, 1_010));
        let taken = lane.try_take(2, || 1_099, |from, to| to - from).unwrap();
        assert_eq!(
            taken,
            Taken {
                anchor: ANCHOR,
                elapsed: 99
            }
        );
        assert!(!take(&lane, 1, 1_099), "budget spent");
        assert_eq!(
            lane.seal(),
            Sealed {
                grants: 2,
                remaining: 0
            }
        );
        lane.open(5, ANCHOR);
        assert!(!take(&lane, 1, 1_100), "opening over");
        assert!(take(&lane, 0, 1_050), "a zero cost still counts as a grant");
        assert_eq!(
            lane.seal(),
            Sealed {
                grants: 1,
                remaining: 5
            }
        );
        assert!(!take(&lane, 0, 1_050), "sealed");
    }

    #[test]
    fn threads_never_take_more_than_the_budget() {
        let lane = std::sync::Arc::new(Lane::default());
        lane.open(
            100_000,
            Anchor {
                lasts: u64::MAX,
                ..ANCHOR
            },
        );
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let lane = lane.clone();
                std::thread::spawn(move || (0..50_000).filter(|_| take(&lane, 1, 1_000)).count())
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
