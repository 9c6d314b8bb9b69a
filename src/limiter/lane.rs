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
//! generation (18 bits), the number of grants taken (17 bits) and the budget
//! left (the low 28 bits), so that taking is a single compare-and-swap. A
//! caller reads the counter (the instant of its grant), loads the word, then
//! the opening's anchor, and swaps (a reading older than the opening measures
//! as none, dating the grant at the opening): the swap succeeds only if the
//! word is unchanged, that is, if the lane was neither sealed nor reopened
//! meanwhile (the generation tells one opening from the next even when their
//! budgets are equal, for 262,144 openings: a caller stalled that long
//! between its load and its swap is not a concern), so the anchor it measured
//! against is the one of the opening it takes from.
//!
//! The budget is split between a few such words, the shards, each on cache
//! lines of its own, and each thread takes from its own shard: threads
//! granting at once never fight over one word, as they would over a single
//! counter (or a GCRA state). A shard that runs dry sends its thread to the
//! lock, which seals every shard and opens the lane again with the budget
//! split anew. Sealing swaps the shards one after the other, all before the
//! reading that dates the entry, so the argument above holds shard by shard.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const REMAINING_BITS: u32 = 28;
const REMAINING_MASK: u64 = (1 << REMAINING_BITS) - 1;
const GRANT_BITS: u32 = 17;
const GRANTS_SHIFT: u32 = REMAINING_BITS;
const GRANTS_MASK: u64 = ((1 << GRANT_BITS) - 1) << GRANTS_SHIFT;
const GENERATION_SHIFT: u32 = REMAINING_BITS + GRANT_BITS;
const GENERATION_BITS: u32 = 18;
const GENERATION_MASK: u64 = ((1 << GENERATION_BITS) - 1) << GENERATION_SHIFT;
const OPEN: u64 = 1 << 63;
const _: () = assert!(REMAINING_BITS + GRANT_BITS + GENERATION_BITS == 63);
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

/// One part of the lane's budget, alone on its cache lines: threads taking
/// from different shards never contend for one word.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    word: AtomicU64,
}

/// The lane's words: one, inline (for a limiter that never opens its lane,
/// or a machine with one core), or several shards.
#[derive(Debug)]
enum Words {
    One(AtomicU64),
    Shards(Box<[Shard]>),
}

#[derive(Debug)]
pub(crate) struct Lane {
    words: Words,
    anchor_counter: AtomicU64,
    anchor_nanos: AtomicU64,
    lasts: AtomicU64,
    generation: AtomicU64,
}

impl Default for Lane {
    fn default() -> Self {
        Lane::new(1)
    }
}

/// The shard of the calling thread, among `count` (a power of two): threads
/// are numbered in the order they first take from any lane, so a runtime's
/// few workers land on different shards.
fn thread_shard(count: usize) -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static NUMBER: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    let number = NUMBER.with(|number| {
        if number.get() == usize::MAX {
            number.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        number.get()
    });
    number & (count - 1)
}

/// How many shards a lane gets on this machine: a power of two at least
/// twice its parallelism (so that a runtime's workers and the thread that
/// started it seldom share one), at most 32.
pub(crate) fn shards_for_this_machine() -> usize {
    let parallelism = std::thread::available_parallelism().map_or(1, |n| n.get());
    (parallelism * 2).next_power_of_two().clamp(1, 32)
}

impl Lane {
    /// A sealed lane whose budget is split in `shards` parts (rounded up to
    /// a power of two).
    pub(crate) fn new(shards: usize) -> Lane {
        let words = match shards.max(1).next_power_of_two() {
            1 => Words::One(AtomicU64::new(0)),
            count => Words::Shards((0..count).map(|_| Shard::default()).collect()),
        };
        Lane {
            words,
            anchor_counter: AtomicU64::new(0),
            anchor_nanos: AtomicU64::new(0),
            lasts: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        }
    }

    /// Every word, in order.
    fn words(&self) -> impl Iterator<Item = &AtomicU64> {
        let (one, shards) = match &self.words {
            Words::One(word) => (Some(word), &[][..]),
            Words::Shards(shards) => (None, &shards[..]),
        };
        one.into_iter()
            .chain(shards.iter().map(|shard| &shard.word))
    }

    fn anchor(&self) -> Anchor {
        Anchor {
            counter: self.anchor_counter.load(Ordering::Acquire),
            nanos: self.anchor_nanos.load(Ordering::Acquire),
            lasts: self.lasts.load(Ordering::Acquire),
        }
    }

    /// Takes `amount` from the calling thread's shard of the budget if the
    /// lane is open, the shard has room, `counter` (a reading of the
    /// time-stamp counter) says the opening has not run out, and the grant's
    /// instant (in the anchors' nanoseconds) is no later than `not_after`;
    /// `elapsed` turns two readings into nanoseconds.
    #[inline]
    pub(crate) fn try_take(
        &self,
        amount: u64,
        not_after: u64,
        counter: impl Fn() -> u64,
        elapsed: impl Fn(u64, u64) -> u64,
    ) -> Option<Taken> {
        let word = match &self.words {
            Words::One(word) => word,
            Words::Shards(shards) => &shards[thread_shard(shards.len())].word,
        };
        // The grant's instant is this reading, taken before the word so that
        // the compare-and-swap follows the load as closely as it can. A
        // reading older than the opening measures as no time at all: the
        // grant is then dated at the opening, which its budget fits.
        let now = counter();
        let mut current = word.load(Ordering::Acquire);
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
            if taken.elapsed >= taken.anchor.lasts
                || taken.anchor.nanos.saturating_add(taken.elapsed) > not_after
            {
                return None;
            }
            let remaining = current & REMAINING_MASK;
            let grants = (current & GRANTS_MASK) >> GRANTS_SHIFT;
            if remaining < amount || grants == MAX_GRANTS {
                return None;
            }
            let next = OPEN | generation | ((grants + 1) << GRANTS_SHIFT) | (remaining - amount);
            match word.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(taken),
                Err(actual) => current = actual,
            }
        }
    }

    /// Closes the lane, shard by shard; returns what it granted since it
    /// opened. A grant taken from a shard before that shard closed is
    /// counted, and every shard closes before this returns.
    pub(crate) fn seal(&self) -> Sealed {
        let mut sealed = Sealed {
            grants: 0,
            remaining: 0,
        };
        for word in self.words() {
            let word = word.swap(0, Ordering::AcqRel);
            sealed.grants += (word & GRANTS_MASK) >> GRANTS_SHIFT;
            sealed.remaining += word & REMAINING_MASK;
        }
        sealed
    }

    /// Opens the lane with `budget` (at most [`MAX_BUDGET`]) from `anchor`,
    /// split evenly between the shards. Call it only when the lane is sealed.
    pub(crate) fn open(&self, budget: u64, anchor: Anchor) {
        let generation = (self.generation.fetch_add(1, Ordering::Relaxed) + 1) << GENERATION_SHIFT;
        self.anchor_counter.store(anchor.counter, Ordering::Release);
        self.anchor_nanos.store(anchor.nanos, Ordering::Release);
        self.lasts.store(anchor.lasts, Ordering::Release);
        let budget = budget.min(MAX_BUDGET);
        let count = self.words().count() as u64;
        let (share, extra) = (budget / count, budget % count);
        for (i, word) in self.words().enumerate() {
            let part = share + u64::from((i as u64) < extra);
            word.store(
                OPEN | (generation & GENERATION_MASK) | part,
                Ordering::Release,
            );
        }
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
        lane.try_take(amount, u64::MAX, || at, |from, to| to.saturating_sub(from))
            .is_some()
    }

    #[test]
    fn takes_until_the_budget_or_the_opening_runs_out() {
        let lane = Lane::default();
        assert!(!take(&lane, 1, 1_000), "closed at first");
        lane.open(5, ANCHOR);
        assert!(take(&lane, 3, 1_010));
        let taken = lane
            .try_take(2, u64::MAX, || 1_099, |from, to| to - from)
            .unwrap();
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
    fn a_grant_after_its_deadline_is_not_taken() {
        let lane = Lane::default();
        lane.open(5, ANCHOR);
        // The anchor's nanoseconds are 0: a reading 30 in is instant 30.
        let at = |not_after| {
            lane.try_take(1, not_after, || 1_030, |from, to| to - from)
                .is_some()
        };
        assert!(!at(29), "instant 30 is past 29");
        assert!(at(30));
        assert_eq!(lane.seal().grants, 1);
    }

    #[test]
    fn shards_split_the_budget_and_seal_together() {
        let lane = Lane::new(3);
        assert_eq!(lane.words().count(), 4);
        lane.open(10, ANCHOR);
        // This thread takes from one shard: 2 or 3 of the 10 (3 + 3 + 2 + 2).
        let mine = (0..10).filter(|_| take(&lane, 1, 1_010)).count() as u64;
        assert!((2..=3).contains(&mine), "{mine}");
        assert_eq!(
            lane.seal(),
            Sealed {
                grants: mine,
                remaining: 10 - mine
            }
        );
        assert!(!take(&lane, 1, 1_010), "every shard sealed");
    }

    #[test]
    fn threads_on_shards_never_take_more_than_the_budget() {
        let lane = std::sync::Arc::new(Lane::new(4));
        lane.open(
            100_000,
            Anchor {
                lasts: u64::MAX,
                ..ANCHOR
            },
        );
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let lane = lane.clone();
                std::thread::spawn(move || (0..50_000).filter(|_| take(&lane, 1, 1_000)).count())
            })
            .collect();
        let taken: u64 = handles.into_iter().map(|h| h.join().unwrap() as u64).sum();
        assert!(taken <= 100_000);
        let sealed = lane.seal();
        assert_eq!(sealed.grants, taken);
        assert_eq!(sealed.grants + sealed.remaining, 100_000);
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
