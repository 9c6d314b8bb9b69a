//! FIFO waiters: a doubly linked list threaded through a slot arena.
//!
//! # Implementation details
//!
//! A waiter keeps its slot from the moment it queues until its `Acquire`
//! future takes the outcome (or is dropped): a granted or closed waiter leaves
//! the list but keeps its slot, so that the future can read its outcome and a
//! dropped future can refund a grant it never saw. Freed slots are reused, so
//! a limiter in steady state queues and grants without allocating. Linking and
//! unlinking are O(1), so a waiter anywhere in a long queue can leave at once.

use std::task::Waker;

use tokio::time::Instant;

use crate::quota::{Cost, Quota};

const NIL: u32 = u32::MAX;

/// Where a waiter stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaiterStatus {
    /// In the queue.
    Waiting,
    /// Granted at this instant, not yet taken by its future.
    Granted(Instant),
    /// The limiter closed while it waited.
    Closed,
    /// This quota shrank below its cost while it waited.
    Refused(Quota),
}

#[derive(Debug)]
pub(crate) struct Waiter {
    pub(crate) cost: Cost,
    pub(crate) queued_at: Instant,
    pub(crate) status: WaiterStatus,
    pub(crate) waker: Option<Waker>,
    prev: u32,
    next: u32,
}

#[derive(Debug)]
enum Slot {
    Used(Waiter),
    Free { next_free: u32 },
}

/// A handle to a queued waiter's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WaiterKey(u32);

/// The FIFO queue of waiters.
#[derive(Debug)]
pub(crate) struct WaiterQueue {
    slots: Vec<Slot>,
    free: u32,
    head: u32,
    tail: u32,
    waiting: usize,
    /// Slots in use: waiting, or holding an outcome for their future.
    used: usize,
}

impl Default for WaiterQueue {
    fn default() -> Self {
        WaiterQueue {
            slots: Vec::new(),
            free: NIL,
            head: NIL,
            tail: NIL,
            waiting: 0,
            used: 0,
        }
    }
}

impl WaiterQueue {
    /// How many waiters are in the queue (not counting granted or closed ones
    /// whose futures have not taken their outcome yet).
    pub(crate) fn len(&self) -> usize {
        self.waiting
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.waiting == 0
    }

    /// Whether a waiter out of the queue still holds its slot (an outcome its
    /// future has not taken).
    pub(crate) fn has_outcomes(&self) -> bool {
        self.used > self.waiting
    }

    /// The first waiter in the queue.
    pub(crate) fn head(&self) -> Option<WaiterKey> {
        (self.head != NIL).then_some(WaiterKey(self.head))
    }

    /// The waiter after `key` in the queue.
    pub(crate) fn next(&self, key: WaiterKey) -> Option<WaiterKey> {
        let next = self.waiter(key).next;
        (next != NIL).then_some(WaiterKey(next))
    }

    /// Adds a waiter at the tail.
    ///
    /// # Panics
    ///
    /// If more than `u32::MAX - 1` slots are in use at once.
    pub(crate) fn push_back(&mut self, cost: Cost, queued_at: Instant, waker: Waker) -> WaiterKey {
        let waiter = Waiter {
            cost,
            queued_at,
            status: WaiterStatus::Waiting,
            waker: Some(waker),
            prev: self.tail,
            next: NIL,
        };
        let index = if self.free != NIL {
            let index = self.free;
            match self.slots[index as usize] {
                Slot::Free { next_free } => self.free = next_free,
                Slot::Used(_) => unreachable!("the free list points at a used slot"),
            }
            self.slots[index as usize] = Slot::Used(waiter);
            index
        } else {
            let index = u32::try_from(self.slots.len())
                .ok()
                .filter(|&i| i != NIL)
                .expect("more than u32::MAX - 1 waiters at once");
            self.slots.push(Slot::Used(waiter));
            index
        };
        if self.tail != NIL {
            self.waiter_at_mut(self.tail).next = index;
        } else {
            self.head = index;
        }
        self.tail = index;
        self.waiting += 1;
        self.used += 1;
        WaiterKey(index)
    }

    pub(crate) fn waiter(&self, key: WaiterKey) -> &Waiter {
        match &self.slots[key.0 as usize] {
            Slot::Used(waiter) => waiter,
            Slot::Free { .. } => unreachable!("a waiter key outlived its slot"),
        }
    }

    pub(crate) fn waiter_mut(&mut self, key: WaiterKey) -> &mut Waiter {
        self.waiter_at_mut(key.0)
    }

    fn waiter_at_mut(&mut self, index: u32) -> &mut Waiter {
        match &mut self.slots[index as usize] {
            Slot::Used(waiter) => waiter,
            Slot::Free { .. } => unreachable!("a waiter key outlived its slot"),
        }
    }

    /// Takes a waiting waiter out of the queue with a new status, keeping its
    /// slot. Returns its waker.
    pub(crate) fn unlink(&mut self, key: WaiterKey, status: WaiterStatus) -> Option<Waker> {
        let (prev, next) = {
            let waiter = self.waiter_mut(key);
            debug_assert_eq!(waiter.status, WaiterStatus::Waiting);
            waiter.status = status;
            let links = (waiter.prev, waiter.next);
            waiter.prev = NIL;
            waiter.next = NIL;
            links
        };
        if prev != NIL {
            self.waiter_at_mut(prev).next = next;
        } else {
            self.head = next;
        }
        if next != NIL {
            self.waiter_at_mut(next).prev = prev;
        } else {
            self.tail = prev;
        }
        self.waiting -= 1;
        self.waiter_mut(key).waker.take()
    }

    /// Frees the slot of a waiter, unlinking it first if it still waits.
    pub(crate) fn remove(&mut self, key: WaiterKey) -> Waiter {
        if self.waiter(key).status == WaiterStatus::Waiting {
            self.unlink(key, WaiterStatus::Waiting);
        }
        let slot = std::mem::replace(
            &mut self.slots[key.0 as usize],
            Slot::Free {
                next_free: self.free,
            },
        );
        self.free = key.0;
        self.used -= 1;
        match slot {
            Slot::Used(waiter) => waiter,
            Slot::Free { .. } => unreachable!("a waiter key outlived its slot"),
        }
    }

    /// The keys in queue order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = WaiterKey> + '_ {
        std::iter::successors(self.head(), move |&key| self.next(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn push(q: &mut WaiterQueue, n: u64) -> WaiterKey {
        q.push_back(Cost::requests(n), Instant::now(), Waker::noop().clone())
    }

    fn order(q: &WaiterQueue) -> Vec<u64> {
        q.iter().map(|k| q.waiter(k).cost.requests).collect()
    }

    #[test]
    fn keeps_fifo_order_through_removals_anywhere() {
        let mut q = WaiterQueue::default();
        let keys: Vec<_> = (1..=5).map(|n| push(&mut q, n)).collect();
        q.remove(keys[2]);
        q.remove(keys[0]);
        q.remove(keys[4]);
        assert_eq!(order(&q), [2, 4]);
        assert_eq!(q.len(), 2);
        let six = push(&mut q, 6);
        assert_eq!(order(&q), [2, 4, 6]);
        q.unlink(keys[1], WaiterStatus::Granted(Instant::now()));
        assert_eq!(order(&q), [4, 6]);
        assert_eq!(q.head(), Some(keys[3]));
        q.remove(keys[1]);
        q.remove(keys[3]);
        assert!(!q.has_outcomes());
        q.unlink(six, WaiterStatus::Closed);
        assert!(q.has_outcomes());
        q.remove(six);
        assert!(q.is_empty());
        assert!(!q.has_outcomes());
        assert_eq!(q.head(), None);
    }

    #[test]
    fn reuses_freed_slots() {
        let mut q = WaiterQueue::default();
        for _ in 0..1_000 {
            let k = push(&mut q, 1);
            q.remove(k);
        }
        assert_eq!(q.slots.len(), 1);
    }
}
