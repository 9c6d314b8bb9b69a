//! Where a limiter reads the time.
//!
//! # Implementation details
//!
//! Reading `tokio::time::Instant::now()` costs a system clock read (about
//! 25 ns on a virtual machine), more than everything else on the hot path put
//! together. The processor's time-stamp counter, read through `quanta`, costs
//! a third of that. But tokio's clock can be paused in tests, and then the
//! limiter must follow tokio's virtual time exactly.
//!
//! So a limiter picks its clock when it is built: tokio's if tokio's clock is
//! paused at that moment (it stands still between two reads, which a running
//! clock never does), otherwise the counter, anchored to tokio's clock at that
//! instant so that both speak of the same `Instant`s. In case tokio's clock is
//! paused only later (a limiter built before `tokio::time::pause()`), the slow
//! paths (an acquire about to sleep, a refused `try_acquire`) check again and
//! switch for good; the limiter then shifts what it remembers onto the new
//! clock, keeping every grant's age.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The limiter's clock. It is read before the limiter's lock is taken, to
/// keep the lock's hold short; it switches to tokio's clock at most once, under
/// the lock.
#[derive(Debug)]
pub(crate) struct Clock {
    counter: Option<Counter>,
    follows_tokio: AtomicBool,
}

/// The time-stamp counter, anchored to tokio's clock when it was read first.
#[derive(Debug)]
struct Counter {
    clock: quanta::Clock,
    origin_raw: u64,
    origin: Instant,
}

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

impl Clock {
    /// The clock for a limiter built now.
    pub(crate) fn detect() -> Clock {
        let counter = (!tokio_clock_is_paused()).then(|| {
            let clock = quanta::Clock::new();
            Counter {
                origin_raw: clock.raw(),
                origin: Instant::now(),
                clock,
            }
        });
        Clock {
            follows_tokio: AtomicBool::new(counter.is_none()),
            counter,
        }
    }

    /// The counter's reading in nanoseconds since its origin, unless the
    /// clock follows tokio's.
    #[inline]
    pub(crate) fn counter_nanos(&self) -> Option<u64> {
        match &self.counter {
            Some(counter) if !self.follows_tokio.load(Ordering::Relaxed) => Some(
                counter
                    .clock
                    .delta_as_nanos(counter.origin_raw, counter.clock.raw()),
            ),
            _ => None,
        }
    }

    /// The instant of a counter reading.
    #[inline]
    pub(crate) fn instant_at(&self, nanos: u64) -> Instant {
        match &self.counter {
            Some(counter) => counter.origin + Duration::from_nanos(nanos),
            None => Instant::now(),
        }
    }

    /// The counter reading of an instant (0 before the origin).
    pub(crate) fn nanos_at(&self, instant: Instant) -> u64 {
        match &self.counter {
            Some(counter) => {
                let nanos = instant.saturating_duration_since(counter.origin).as_nanos();
                u64::try_from(nanos).unwrap_or(u64::MAX)
            }
            None => 0,
        }
    }

    /// The time now, and whether it was read on tokio's clock.
    #[inline]
    pub(crate) fn now(&self) -> (Instant, bool) {
        match self.counter_nanos() {
            Some(nanos) => (self.instant_at(nanos), false),
            None => (Instant::now(), true),
        }
    }

    /// Whether the clock reads tokio's clock now.
    #[inline]
    pub(crate) fn follows_tokio(&self) -> bool {
        self.follows_tokio.load(Ordering::Relaxed)
    }

    /// Switches to tokio's clock if it has been paused since the limiter was
    /// built. Returns the time on the old clock and on tokio's at the switch.
    /// Call it under the limiter's lock, so that the switch and the shift of
    /// the state onto the new clock are one step.
    pub(crate) fn follow_paused_tokio(&self) -> Option<(Instant, Instant)> {
        if self.follows_tokio() || !tokio_clock_is_paused() {
            return None;
        }
        let (old, _) = self.now();
        self.follows_tokio.store(true, Ordering::Relaxed);
        Some((old, Instant::now()))
    }
}
