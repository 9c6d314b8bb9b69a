//! [`bounded_map`] and its stream form, [`BoundedMapExt::bounded_map`]: at
//! most `limit` futures in flight, refilled the moment any one completes.
//!
//! Both run their futures in a small set of slots, one per future in flight.
//! A slot is allocated the first time it is needed and reused for every later
//! future, with its own waker, so running a future allocates nothing once the
//! slots exist. Futures are polled in the order they became due, newly
//! started or woken; the woken ones are collected once per poll, so a future
//! that wakes itself is polled again only after the task has yielded or
//! another future has completed.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::stream::{FusedStream, Stream};
use parking_lot::Mutex;
use pin_project::pin_project;

/// Runs `f` over every item with at most `limit` of its futures in flight, and
/// returns every output, in input order.
///
/// - **Bounded.** `f` is called for an item only when fewer than `limit` of
///   the futures it returned are still running, so at no moment are more than
///   `limit` in flight. Items are taken from `items` one at a time, only then.
/// - **Refilled at once.** The moment any future completes, the next item
///   starts: not when a batch completes, and not when the oldest does.
/// - **Every output kept.** `outputs[i]` is the output of the `i`-th item.
///   With `Result` outputs, an error takes its place in the vector and the
///   other items run on.
///
/// The futures run concurrently inside the returned future, on the task that
/// awaits it, as with [`join_all`](futures::future::join_all): nothing is
/// spawned. For parallelism on a multi-threaded runtime, have `f` spawn and
/// return the task's handle.
///
/// For outputs as they complete, use the stream form,
/// [`BoundedMapExt::bounded_map`].
///
/// # Panics
///
/// Panics when called, not when first polled, if `limit` is 0: no future
/// could ever start, so the call could only hang.
///
/// A panic in `f` or in one of its futures propagates to the task awaiting
/// the returned future.
///
/// # Cancel safety
///
/// Dropping the returned future drops the futures in flight and the items not
/// yet taken, for which `f` is never called. Nothing else is held: no task is
/// spawned, so nothing outlives it. The outputs of the futures already
/// completed are dropped too; the stream form hands each one over as it
/// completes.
///
/// # Examples
///
/// Two at a time: the third item starts when the first one completes.
///
/// ```
/// use std::time::Duration;
/// use paceline::bounded_map;
/// use tokio::time::{Instant, sleep};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let start = Instant::now();
/// let lengths = bounded_map(["a", "bcd", "ef"], 2, |word| async move {
///     sleep(Duration::from_secs(word.len() as u64)).await;
///     word.len()
/// })
/// .await;
/// assert_eq!(lengths, [1, 3, 2]);
/// // "a" ran from 0 to 1 s, "bcd" from 0 to 3 s, "ef" from 1 to 3 s.
/// assert_eq!(start.elapsed(), Duration::from_secs(3));
/// # }
/// ```
///
/// Errors are outputs like any other:
///
/// ```
/// use paceline::bounded_map;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let parsed = bounded_map(["1", "x", "3"], 8, |s| async move { s.parse::<u8>() }).await;
/// assert_eq!(parsed[0], Ok(1));
/// assert!(parsed[1].is_err());
/// assert_eq!(parsed[2], Ok(3));
/// # }
/// ```
///
/// With a [`RateLimiter`](crate::RateLimiter): at most 2 calls at a time, and
/// at most 2 per second.
///
/// ```
/// use std::time::Duration;
/// use paceline::{RateLimiter, bounded_map};
/// use tokio::time::Instant;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), paceline::ConfigError> {
/// let limiter = RateLimiter::new(2, Duration::from_secs(1))?;
/// let start = Instant::now();
/// let limiter = &limiter;
/// let granted = bounded_map(0..5, 2, |_| async move {
///     let grant = limiter.acquire().await?;
///     // ... call the API ...
///     Ok::<_, paceline::AcquireError>(grant.granted_at() - start)
/// })
/// .await;
/// let secs: Vec<u64> = granted.into_iter().map(|at| at.unwrap().as_secs()).collect();
/// assert_eq!(secs, [0, 0, 1, 1, 2]);
/// # Ok(()) }
/// ```
#[track_caller]
pub fn bounded_map<I, F, Fut>(
    items: I,
    limit: usize,
    mut f: F,
) -> impl Future<Output = Vec<Fut::Output>>
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: Future,
{
    check_limit(limit);
    let mut items = items.into_iter();
    async move {
        let mut outputs: Vec<Option<Fut::Output>> = Vec::with_capacity(items.size_hint().0);
        let mut in_flight = InFlight::new();
        let mut exhausted = false;
        std::future::poll_fn(|cx| {
            loop {
                while !exhausted && in_flight.len() < limit {
                    match items.next() {
                        Some(item) => {
                            in_flight.push(outputs.len(), f(item));
                            outputs.push(None);
                        }
                        None => exhausted = true,
                    }
                }
                match in_flight.poll_next(cx) {
                    Poll::Ready(Some((index, output))) => outputs[index] = Some(output),
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await;
        outputs
            .into_iter()
            .map(|output| output.expect("every started future ran to completion"))
            .collect()
    }
}

/// The stream form of [`bounded_map`], for every [`Stream`].
///
/// An iterator becomes a stream with [`futures::stream::iter`].
pub trait BoundedMapExt: Stream + Sized {
    /// Runs `f` over every item of the stream with at most `limit` of its
    /// futures in flight, and yields `(index, output)` as each completes.
    ///
    /// - **Completion order.** Outputs come in the order the futures complete,
    ///   each with the index of its item in the input stream (from 0).
    /// - **Backpressure.** An item is taken from the input stream, and `f`
    ///   called for it, only when fewer than `limit` futures are in flight, so
    ///   at no moment are more than `limit` in flight. A completed future
    ///   frees its slot when its output is yielded; the next item starts on
    ///   the next poll. While nobody polls, nothing is taken.
    /// - **Every output kept.** With `Result` outputs, an error is yielded like
    ///   any other output and the other items run on.
    ///
    /// The stream ends once the input stream has ended and every future has
    /// completed. The futures run inside the stream, on the task that polls
    /// it: nothing is spawned.
    ///
    /// # Panics
    ///
    /// Panics when called if `limit` is 0: no future could ever start, so the
    /// stream could only hang.
    ///
    /// A panic in `f` or in one of its futures propagates to the task polling
    /// the stream; the stream is not to be polled again after it.
    ///
    /// # Cancel safety
    ///
    /// Polling for the next item (`StreamExt::next` in a `tokio::select!`) is
    /// cancel-safe: an output leaves the stream only in the poll that returns
    /// it, and the futures in flight keep their progress inside the stream.
    /// Dropping the stream drops the futures in flight and the input stream;
    /// nothing else is held.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use futures::{StreamExt, stream};
    /// use paceline::BoundedMapExt;
    /// use tokio::time::sleep;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let done: Vec<(usize, u64)> = stream::iter([3, 1, 2])
    ///     .bounded_map(3, |secs| async move {
    ///         sleep(Duration::from_secs(secs)).await;
    ///         secs
    ///     })
    ///     .collect()
    ///     .await;
    /// assert_eq!(done, [(1, 1), (2, 2), (0, 3)]);
    /// # }
    /// ```
    #[track_caller]
    fn bounded_map<F, Fut>(self, limit: usize, f: F) -> BoundedMap<Self, F, Fut>
    where
        F: FnMut(Self::Item) -> Fut,
        Fut: Future,
    {
        check_limit(limit);
        BoundedMap {
            stream: self,
            f,
            limit,
            next_index: 0,
            input_done: false,
            in_flight: InFlight::new(),
        }
    }
}

impl<St: Stream> BoundedMapExt for St {}

/// The stream returned by [`BoundedMapExt::bounded_map`]: yields
/// `(index, output)` in completion order.
///
/// # Examples
///
/// ```
/// use futures::{StreamExt, stream};
/// use paceline::BoundedMapExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut doubled = stream::iter(1..=3).bounded_map(2, |n| async move { n * 2 });
/// let mut outputs = Vec::new();
/// while let Some((index, output)) = doubled.next().await {
///     outputs.push((index, output));
/// }
/// outputs.sort();
/// assert_eq!(outputs, [(0, 2), (1, 4), (2, 6)]);
/// # }
/// ```
#[pin_project]
#[must_use = "streams do nothing unless polled"]
pub struct BoundedMap<St, F, Fut> {
    #[pin]
    stream: St,
    f: F,
    limit: usize,
    /// The index of the next item taken from `stream`.
    next_index: usize,
    /// Set once `stream` has ended: it is not polled again.
    input_done: bool,
    in_flight: InFlight<Fut>,
}

impl<St, F, Fut> Stream for BoundedMap<St, F, Fut>
where
    St: Stream,
    F: FnMut(St::Item) -> Fut,
    Fut: Future,
{
    type Item = (usize, Fut::Output);

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        while !*this.input_done && this.in_flight.len() < *this.limit {
            match this.stream.as_mut().poll_next(cx) {
                Poll::Ready(Some(item)) => {
                    this.in_flight.push(*this.next_index, (this.f)(item));
                    *this.next_index += 1;
                }
                Poll::Ready(None) => *this.input_done = true,
                Poll::Pending => break,
            }
        }
        match this.in_flight.poll_next(cx) {
            Poll::Ready(Some(done)) => Poll::Ready(Some(done)),
            // Nothing in flight: the input stream decides, and when it is
            // pending it was polled above and will wake this task.
            Poll::Ready(None) if *this.input_done => Poll::Ready(None),
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let running = self.in_flight.len();
        let (lower, upper) = if self.input_done {
            (0, Some(0))
        } else {
            self.stream.size_hint()
        };
        (
            lower.saturating_add(running),
            upper.and_then(|upper| upper.checked_add(running)),
        )
    }
}

impl<St, F, Fut> FusedStream for BoundedMap<St, F, Fut>
where
    St: Stream,
    F: FnMut(St::Item) -> Fut,
    Fut: Future,
{
    fn is_terminated(&self) -> bool {
        self.input_done && self.in_flight.len() == 0
    }
}

impl<St: fmt::Debug, F, Fut> fmt::Debug for BoundedMap<St, F, Fut> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedMap")
            .field("stream", &self.stream)
            .field("limit", &self.limit)
            .field("in_flight", &self.in_flight.len())
            .field("started", &self.next_index)
            .field("input_done", &self.input_done)
            .finish_non_exhaustive()
    }
}

#[track_caller]
fn check_limit(limit: usize) {
    assert!(limit != 0, "bounded_map: limit must be at least 1");
}

/// The futures in flight, in reusable slots.
struct InFlight<Fut> {
    slots: Vec<Slot<Fut>>,
    /// Slots whose future has completed, ready for the next one.
    free: Vec<usize>,
    /// Slots due for a poll, newly started or woken, in the order they became
    /// due.
    to_poll: VecDeque<usize>,
    /// Where the woken slots are taken to; kept to reuse its allocation.
    taken: Vec<usize>,
    woken: Arc<WokenSlots>,
    len: usize,
}

struct Slot<Fut> {
    /// Boxed once and then reused: a future is pinned in place, and `set`
    /// drops the old one where it lies.
    future: Pin<Box<Option<Fut>>>,
    /// The input index of the future in the slot.
    index: usize,
    wake: Arc<SlotWake>,
    waker: Waker,
}

impl<Fut> InFlight<Fut> {
    fn new() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            to_poll: VecDeque::new(),
            taken: Vec::new(),
            woken: Arc::new(WokenSlots {
                pending: AtomicBool::new(false),
                state: Mutex::new(WokenState {
                    slots: Vec::new(),
                    task: None,
                }),
            }),
            len: 0,
        }
    }

    fn len(&self) -> usize {
        self.len
    }
}

impl<Fut: Future> InFlight<Fut> {
    /// Starts `future`, the output of item `index`; it is first polled by the
    /// next `poll_next`.
    fn push(&mut self, index: usize, future: Fut) {
        let id = self.free.pop().unwrap_or_else(|| self.new_slot());
        let slot = &mut self.slots[id];
        slot.future.set(Some(future));
        slot.index = index;
        self.to_poll.push_back(id);
        self.len += 1;
    }

    /// Adds an empty slot, for one more future in flight than ever before.
    fn new_slot(&mut self) -> usize {
        let id = self.slots.len();
        let wake = Arc::new(SlotWake {
            id,
            queued: AtomicBool::new(false),
            woken: Arc::clone(&self.woken),
        });
        self.slots.push(Slot {
            future: Box::pin(None),
            index: 0,
            waker: Waker::from(Arc::clone(&wake)),
            wake,
        });
        id
    }

    /// Polls the futures due for a poll until one completes, and returns its
    /// index and output; `Ready(None)` when none is in flight.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<(usize, Fut::Output)>> {
        if self.len == 0 {
            return Poll::Ready(None);
        }
        // Taken once per poll: a future that wakes itself while polled waits
        // for the next poll, and the task yields in between.
        let took = self.woken.pending.load(Ordering::Acquire);
        if took {
            self.take_woken(cx.waker());
        }
        while let Some(id) = self.to_poll.pop_front() {
            let slot = &mut self.slots[id];
            // A slot freed since it was queued.
            let Some(future) = slot.future.as_mut().as_pin_mut() else {
                continue;
            };
            if let Poll::Ready(output) = future.poll(&mut Context::from_waker(&slot.waker)) {
                slot.future.set(None);
                self.free.push(id);
                self.len -= 1;
                return Poll::Ready(Some((slot.index, output)));
            }
        }
        // The task's waker is handed over only when returning `Pending` (or
        // with the woken slots): a poll that completes a future needs no
        // wake, and the next poll finds the slots woken in between whichever
        // waker they woke.
        if !took {
            let woken_meanwhile = {
                let mut state = self.woken.state.lock();
                state.hand_over(cx.waker()) && !state.slots.is_empty()
            };
            // Those wakes went to the waker handed over before this one.
            if woken_meanwhile {
                cx.waker().wake_by_ref();
            }
        }
        Poll::Pending
    }

    /// Moves the woken slots to `to_poll`, and hands over `task` to be woken
    /// for the next ones.
    fn take_woken(&mut self, task: &Waker) {
        {
            let mut state = self.woken.state.lock();
            state.hand_over(task);
            mem::swap(&mut state.slots, &mut self.taken);
            self.woken.pending.store(false, Ordering::Relaxed);
        }
        for &id in &self.taken {
            // Cleared before the poll, so that a wake during or after it
            // queues the slot again.
            self.slots[id].wake.queued.store(false, Ordering::Release);
        }
        self.to_poll.extend(self.taken.drain(..));
    }
}

/// The slots woken since the owner last looked, and the task to wake for
/// them. Shared with every slot's waker, which may be on any thread.
struct WokenSlots {
    /// Set when `state.slots` gains its first slot, and the task is woken for
    /// it; cleared when the owner takes them. While set, further wakes need
    /// not wake the task again, and while clear the owner need not lock.
    pending: AtomicBool,
    state: Mutex<WokenState>,
}

struct WokenState {
    slots: Vec<usize>,
    task: Option<Waker>,
}

impl WokenState {
    /// Makes `task` the waker to wake; whether it replaced a different one.
    fn hand_over(&mut self, task: &Waker) -> bool {
        if self.task.as_ref().is_some_and(|t| t.will_wake(task)) {
            return false;
        }
        self.task = Some(task.clone());
        true
    }
}

impl WokenSlots {
    fn push(&self, id: usize) {
        let task = {
            let mut state = self.state.lock();
            state.slots.push(id);
            if self.pending.load(Ordering::Relaxed) {
                None
            } else {
                self.pending.store(true, Ordering::Release);
                state.task.clone()
            }
        };
        // Outside the lock: waking may run arbitrary code.
        if let Some(task) = task {
            task.wake();
        }
    }
}

/// The waker of one slot. It outlives the future it was handed to (a timer
/// may hold it), so a stale wake can reach the slot's next future: a
/// spurious poll, which futures allow.
struct SlotWake {
    id: usize,
    /// Whether the slot is already queued in `woken`: a slot is queued once
    /// however often it is woken.
    queued: AtomicBool,
    woken: Arc<WokenSlots>,
}

impl Wake for SlotWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.woken.push(self.id);
        }
    }
}
