//! Wake-ups finer than tokio's timer, for the last stretch of a wait.
//!
//! # Implementation details
//!
//! tokio's timer counts whole milliseconds: a sleep until `t` ends on the
//! first tick at or after `t`, up to a millisecond late (more if the worker
//! is busy). A waiter at the head of the queue is granted when it wakes, so
//! that lag is capacity given up on every wait: a millisecond per window is
//! 1% of a 100 ms quota. (It cannot be made up by dating the grant earlier:
//! the call leaves when the waiter runs, and the server's window sees it
//! then.)
//!
//! So the last stretch of a wait on a running clock is timed here instead:
//! the acquire sleeps on tokio's timer until [`LEAD`] before its instant,
//! then hands its waker to one process-wide thread that sleeps on a condition
//! variable (the operating system's timers: tens of microseconds) and wakes
//! it at the instant. Nothing spins. A paused clock never comes here: its
//! virtual time is exact already and only tokio's timer follows it.
//!
//! An entry whose acquire was dropped meanwhile stays until its instant and
//! then wakes a task that no longer waits for it, which is harmless; entries
//! are at most [`LEAD`] ahead, so few are ever held.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::OnceLock;
use std::task::Waker;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// How far ahead of its instant a wait moves from tokio's timer to this one:
/// more than tokio's timer can be late by, so that the hand-over comes first.
pub(crate) const LEAD: Duration = Duration::from_millis(2);

/// One pending wake-up.
struct Entry {
    at: Instant,
    /// Keeps entries for one instant in the order they came.
    seq: u64,
    waker: Waker,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Default)]
struct Pending {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
}

struct FineTimer {
    pending: Mutex<Pending>,
    changed: Condvar,
}

/// The timer, and whether its thread could be started.
fn timer() -> Option<&'static FineTimer> {
    static TIMER: OnceLock<Option<&'static FineTimer>> = OnceLock::new();
    *TIMER.get_or_init(|| {
        let timer: &'static FineTimer = Box::leak(Box::new(FineTimer {
            pending: Mutex::new(Pending::default()),
            changed: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("paceline-timer".to_owned())
            .spawn(move || timer.run())
            .ok()
            .map(|_| timer)
    })
}

impl FineTimer {
    fn run(&self) {
        let mut due = Vec::new();
        loop {
            {
                let mut pending = self.pending.lock();
                loop {
                    let now = Instant::now();
                    match pending.heap.peek() {
                        Some(Reverse(first)) if first.at <= now => {
                            if let Some(Reverse(entry)) = pending.heap.pop() {
                                due.push(entry.waker);
                            }
                        }
                        _ if !due.is_empty() => break,
                        Some(Reverse(first)) => {
                            let at = first.at;
                            self.changed.wait_until(&mut pending, at);
                        }
                        None => self.changed.wait(&mut pending),
                    }
                }
            }
            // Outside the lock: a woken task may register again at once.
            for waker in due.drain(..) {
                waker.wake();
            }
        }
    }
}

/// Wakes `waker` at `at` (within the operating system's timer resolution),
/// or returns `false` if there is no timer thread (it could not be started),
/// in which case the caller keeps to tokio's timer.
pub(crate) fn wake_at(at: Instant, waker: &Waker) -> bool {
    let Some(timer) = timer() else {
        return false;
    };
    let mut pending = timer.pending.lock();
    let earliest = pending
        .heap
        .peek()
        .is_none_or(|Reverse(first)| at < first.at);
    pending.seq += 1;
    let seq = pending.seq;
    pending.heap.push(Reverse(Entry {
        at,
        seq,
        waker: waker.clone(),
    }));
    drop(pending);
    if earliest {
        timer.changed.notify_one();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    /// Records when it was woken.
    struct Record(Mutex<Vec<Instant>>, std::thread::Thread);

    impl Wake for Record {
        fn wake(self: Arc<Self>) {
            self.0.lock().push(Instant::now());
            self.1.unpark();
        }
    }

    #[test]
    fn wakes_each_entry_at_its_instant_never_before() {
        let record = Arc::new(Record(Mutex::new(Vec::new()), std::thread::current()));
        let waker = Waker::from(Arc::clone(&record));
        let start = Instant::now();
        let (late, early) = (
            start + Duration::from_millis(5),
            start + Duration::from_millis(2),
        );
        // The later one first: the earlier must still come first.
        assert!(wake_at(late, &waker));
        assert!(wake_at(early, &waker));
        while record.0.lock().len() < 2 {
            std::thread::park_timeout(Duration::from_millis(50));
            assert!(start.elapsed() < Duration::from_secs(10), "never woken");
        }
        let woken = record.0.lock().clone();
        assert!(
            woken[0] >= early && woken[1] >= late,
            "{woken:?} for {early:?}, {late:?}"
        );
    }
}
