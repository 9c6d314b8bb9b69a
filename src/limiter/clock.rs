//! Where a limiter reads the time.
//!
//! # Implementation details
//!
//! The limiter's time is tokio's clock: every instant the state holds comes
//! from `tokio::time::Instant::now()`, so a paused clock is followed exactly
//! and a real one is the system's monotonic clock.
//!
//! Reading that clock costs a system call's worth of time (about 25 ns on a
//! virtual machine), more than the rest of the fast lane. The lane therefore
//! reads the processor's time-stamp counter (through `quanta`, a third of the
//! cost), but only to measure time *within one opening of the lane*, at most
//! one coalescing step long, from an anchor read on tokio's clock when the
//! lane opened. A counter's rate can be off by hundreds of parts per million
//! (seen on this project's machines): over a step of a millisecond that is
//! well under a microsecond, and it never accumulates.
//!
//! The lane is not used while tokio's clock is paused (its virtual time does
//! not follow the counter). A paused clock stands still between two reads,
//! which a running one never does: that is checked when the limiter is built
//! and again on the slow paths (an acquire about to sleep, a refused
//! `try_acquire`), in case the clock was paused after the limiter was built.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How many reads of a standing clock prove that it is paused: a running one
/// moves between two reads even where it ticks coarsely (100 ns).
const STANDING_READS: u32 = 64;

/// How long a thread's anchor (see [`Clock::now_or_later`]) serves before it
/// is read again, in nanoseconds of the counter.
const ANCHOR_SERVES_NANOS: u64 = 1_000_000;

/// What a reading from an anchor may be behind the time, at most: the
/// counter's rate error over [`ANCHOR_SERVES_NANOS`] (hundreds of parts per
/// million, well under a microsecond) with room to spare.
const ANCHOR_ERROR_NANOS: u64 = 5_000;

thread_local! {
    /// A reading of the counter and, just after it, of tokio's clock.
    static ANCHOR: Cell<Option<(u64, Instant)>> = const { Cell::new(None) };
}

/// Whether tokio's clock on this thread is paused.
fn tokio_clock_is_paused() -> bool {
    // Only a runtime's clock can be paused; outside one, tokio reads the
    // system clock.
    if tokio::runtime::Handle::try_current().is_err() {
        return false;
    }
    let first = Instant::now();
    (0..STANDING_READS).all(|_| Instant::now() == first)
}

/// The limiter's clock, and the counter its fast lane measures with.
#[derive(Debug)]
pub(crate) struct Clock {
    counter: Option<quanta::Clock>,
    paused: AtomicBool,
}

impl Clock {
    /// The clock for a limiter built now.
    pub(crate) fn detect() -> Clock {
        let paused = tokio_clock_is_paused();
        Clock {
            counter: (!paused).then(quanta::Clock::new),
            paused: AtomicBool::new(paused),
        }
    }

    /// A clock for another limiter, as this one stands (a paused clock stays
    /// noticed).
    pub(crate) fn fork(&self) -> Clock {
        Clock {
            counter: self.counter.clone(),
            paused: AtomicBool::new(self.paused.load(Ordering::Relaxed)),
        }
    }

    /// The limiter's time now.
    #[inline]
    pub(crate) fn now(&self) -> Instant {
        Instant::now()
    }

    /// An instant no earlier than tokio's time now, and at most a few
    /// microseconds later, at a third of the cost of reading tokio's clock:
    /// for a check that may only say "not yet" when it is sure.
    ///
    /// On a running clock this measures with the counter from a per-thread
    /// anchor, read again each millisecond; the anchor's tokio reading comes
    /// after its counter reading, so that measuring from it never lands
    /// before the time. On a paused clock it is tokio's time.
    #[inline]
    pub(crate) fn now_or_later(&self) -> Instant {
        let Some(counter) = self.counter() else {
            return Instant::now();
        };
        let raw = counter.raw();
        let since_anchor = ANCHOR.get().and_then(|(at, instant)| {
            let nanos = counter.delta_as_nanos(at, raw);
            (raw >= at && nanos <= ANCHOR_SERVES_NANOS).then_some((instant, nanos))
        });
        match since_anchor {
            Some((instant, nanos)) => instant + Duration::from_nanos(nanos + ANCHOR_ERROR_NANOS),
            None => {
                let instant = Instant::now();
                ANCHOR.set(Some((raw, instant)));
                instant
            }
        }
    }

    /// The counter, unless tokio's clock has been seen paused.
    #[inline]
    pub(crate) fn counter(&self) -> Option<&quanta::Clock> {
        if self.paused.load(Ordering::Relaxed) {
            None
        } else {
            self.counter.as_ref()
        }
    }

    /// Whether tokio's clock has been seen paused.
    #[inline]
    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// On a slow path: notes whether tokio's clock has been paused since the
    /// limiter was built, which turns the fast lane off for good.
    pub(crate) fn notice_pause(&self) {
        if self.counter.is_some() && !self.paused.load(Ordering::Relaxed) && tokio_clock_is_paused()
        {
            self.paused.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_or_later_is_never_before_the_time_and_little_after() {
        let clock = Clock::detect();
        assert!(clock.counter().is_some(), "no runtime: a running clock");
        for _ in 0..100_000 {
            let before = Instant::now();
            let read = clock.now_or_later();
            let after = Instant::now();
            assert!(read >= before, "{:?} early", before - read);
            assert!(
                read <= after + Duration::from_micros(100),
                "{:?} late",
                read - after
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn now_or_later_is_tokio_time_on_a_paused_clock() {
        let clock = Clock::detect();
        assert!(clock.is_paused());
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs(3_600)).await;
        assert_eq!(clock.now_or_later(), start + Duration::from_secs(3_600));
    }
}
