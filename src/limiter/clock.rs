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

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::time::Instant;

/// How many reads of a standing clock prove that it is paused: a running one
/// moves between two reads even where it ticks coarsely (100 ns).
const STANDING_READS: u32 = 64;

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
