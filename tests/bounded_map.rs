//! `bounded_map` and its stream form: input order, the bound, immediate
//! refill, backpressure and exact completion instants in virtual time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use futures::stream::FusedStream;
use futures::{Stream, StreamExt, stream};
use paceline::{BoundedMapExt, bounded_map};
use proptest::prelude::*;
use tokio::time::{Instant, sleep};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Counts the futures in flight and remembers the most seen at once. A future
/// counts from the moment `f` returns it until it completes.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Gauge {
    fn enter(&self) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }

    fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

/// Sleeps for `duration` and returns when it completed, relative to `start`.
async fn sleep_for(start: Instant, duration: Duration) -> Duration {
    sleep(duration).await;
    start.elapsed()
}

/// When each item completes if item `i` starts, in input order, as soon as
/// fewer than `limit` items are running: the schedule `bounded_map` promises.
fn model(durations: &[u64], limit: usize) -> Vec<u64> {
    let mut running = BinaryHeap::new();
    durations
        .iter()
        .map(|&duration| {
            let start = if running.len() < limit {
                0
            } else {
                running.pop().map_or(0, |Reverse(end)| end)
            };
            running.push(Reverse(start + duration));
            start + duration
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn outputs_come_in_input_order_whatever_the_durations() {
    let durations = [5, 1, 4, 2, 3, 9, 1, 1];
    let start = Instant::now();
    let outputs = bounded_map(durations.iter().enumerate(), 3, |(i, &d)| async move {
        sleep(secs(d)).await;
        i
    })
    .await;
    assert_eq!(outputs, (0..durations.len()).collect::<Vec<_>>());
    // 0..5, 1..1, 2..4 | 3 1..3, 4 3..6, 5 4..13, 6 5..6, 7 6..7.
    assert_eq!(start.elapsed(), secs(13));
}

#[tokio::test(start_paused = true)]
async fn never_more_than_limit_in_flight_and_the_limit_is_reached() {
    for limit in [1, 2, 3, 7] {
        let gauge = Gauge::default();
        let durations: Vec<u64> = (0..40).map(|i| (i * 7 % 5) + 1).collect();
        let outputs = bounded_map(&durations, limit, |&d| {
            gauge.enter();
            let gauge = &gauge;
            async move {
                sleep(secs(d)).await;
                gauge.leave();
                d
            }
        })
        .await;
        assert_eq!(outputs, durations);
        assert_eq!(gauge.max(), limit, "limit {limit}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_free_slot_is_refilled_at_once_not_after_the_slowest() {
    let start = Instant::now();
    let ends = bounded_map([10, 1, 1, 1], 2, |d| sleep_for(start, secs(d))).await;
    // Item 0 holds one slot for 10 s; items 1, 2 and 3 follow each other in
    // the other one.
    assert_eq!(ends, [secs(10), secs(1), secs(2), secs(3)]);
    assert_eq!(start.elapsed(), secs(10));
}

#[tokio::test(start_paused = true)]
async fn items_are_taken_only_when_a_slot_is_free() {
    let limit = 3;
    let taken = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let items = (0..20u64).inspect(|_| {
        let taken = taken.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(taken - done.load(Ordering::SeqCst) <= limit);
    });
    let outputs = bounded_map(items, limit, |i| {
        let done = &done;
        async move {
            sleep(secs(i % 4 + 1)).await;
            done.fetch_add(1, Ordering::SeqCst);
            i
        }
    })
    .await;
    assert_eq!(outputs, (0..20).collect::<Vec<_>>());
    assert_eq!(taken.load(Ordering::SeqCst), 20);
}

#[tokio::test(start_paused = true)]
async fn failures_are_kept_and_do_not_stop_the_others() {
    let start = Instant::now();
    let outputs = bounded_map(0..6u64, 2, |i| async move {
        sleep(secs(1)).await;
        if i % 3 == 1 {
            Err(format!("item {i} failed"))
        } else {
            Ok(i * 10)
        }
    })
    .await;
    assert_eq!(
        outputs,
        [
            Ok(0),
            Err("item 1 failed".to_owned()),
            Ok(20),
            Ok(30),
            Err("item 4 failed".to_owned()),
            Ok(50),
        ]
    );
    assert_eq!(start.elapsed(), secs(3));
}

#[tokio::test(start_paused = true)]
async fn empty_input_gives_an_empty_vec_without_calling_f() {
    let calls = AtomicUsize::new(0);
    let outputs: Vec<u64> = bounded_map(Vec::<u64>::new(), 4, |i| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move { i }
    })
    .await;
    assert!(outputs.is_empty());
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    let mut empty = stream::iter(Vec::<u64>::new()).bounded_map(4, |i| async move { i });
    assert_eq!(empty.next().await, None);
    assert_eq!(empty.next().await, None);
}

#[tokio::test(start_paused = true)]
async fn a_limit_above_the_item_count_runs_them_all_at_once() {
    let gauge = Gauge::default();
    let start = Instant::now();
    let ends = bounded_map([3, 1, 2, 5, 4], 1_000, |d| {
        gauge.enter();
        let gauge = &gauge;
        async move {
            let end = sleep_for(start, secs(d)).await;
            gauge.leave();
            end
        }
    })
    .await;
    assert_eq!(ends, [secs(3), secs(1), secs(2), secs(5), secs(4)]);
    assert_eq!(gauge.max(), 5);
}

#[tokio::test(start_paused = true)]
async fn futures_that_are_ready_at_once_all_run() {
    let outputs = bounded_map(0..10_000u64, 16, |i| async move { i * 2 }).await;
    assert_eq!(outputs, (0..10_000).map(|i| i * 2).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn dropping_the_future_drops_the_futures_in_flight_and_takes_no_more() {
    struct Guard<'a>(&'a AtomicUsize);
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let (calls, dropped) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let run = bounded_map(0..10u64, 3, |i| {
        calls.fetch_add(1, Ordering::SeqCst);
        let guard = Guard(&dropped);
        async move {
            let _guard = guard;
            sleep(secs(i + 1)).await;
        }
    });
    // Items 0 and 1 complete (at 1 s and 2 s), items 2, 3 and 4 are in
    // flight at 2.5 s.
    assert!(tokio::time::timeout(ms(2_500), run).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    assert_eq!(dropped.load(Ordering::SeqCst), 5);
}

#[tokio::test(start_paused = true)]
async fn a_future_that_wakes_itself_lets_the_task_yield() {
    let ready = Arc::new(AtomicBool::new(false));
    // Runs only when the task awaiting `bounded_map` yields to the runtime.
    let setter = tokio::spawn({
        let ready = Arc::clone(&ready);
        async move { ready.store(true, Ordering::SeqCst) }
    });
    let polls = AtomicUsize::new(0);
    let outputs = bounded_map([()], 1, |()| {
        std::future::poll_fn(|cx| {
            let polls = polls.fetch_add(1, Ordering::SeqCst) + 1;
            assert!(polls < 1_000, "the task never yielded");
            if ready.load(Ordering::SeqCst) {
                Poll::Ready(polls)
            } else {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        })
    })
    .await;
    setter.await.unwrap();
    assert!(outputs[0] >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wakes_from_other_threads_are_not_lost() {
    let gauge = Gauge::default();
    let outputs = bounded_map(0..2_000u64, 8, |i| {
        gauge.enter();
        let gauge = &gauge;
        async move {
            let doubled = tokio::task::spawn_blocking(move || i * 2).await.unwrap();
            gauge.leave();
            doubled
        }
    })
    .await;
    assert_eq!(outputs, (0..2_000).map(|i| i * 2).collect::<Vec<_>>());
    assert!(gauge.max() <= 8);

    let mut done: Vec<(usize, u64)> = stream::iter(0..2_000u64)
        .bounded_map(8, |i| async move {
            tokio::task::spawn_blocking(move || i * 2).await.unwrap()
        })
        .collect()
        .await;
    done.sort_unstable();
    assert_eq!(
        done,
        (0..2_000).map(|i| (i as usize, i * 2)).collect::<Vec<_>>()
    );
}

#[tokio::test(start_paused = true)]
async fn both_forms_can_be_spawned() {
    let start = Instant::now();
    let outputs = tokio::spawn(bounded_map(vec![2, 1], 1, move |d| {
        sleep_for(start, secs(d))
    }));
    let done = tokio::spawn(
        stream::iter(vec![2, 1])
            .bounded_map(1, move |d| sleep_for(start, secs(d)))
            .collect::<Vec<_>>(),
    );
    assert_eq!(outputs.await.unwrap(), [secs(2), secs(3)]);
    assert_eq!(done.await.unwrap(), [(0, secs(2)), (1, secs(3))]);
}

#[test]
#[should_panic(expected = "bounded_map: limit must be at least 1")]
fn a_zero_limit_panics_at_the_call() {
    // Not awaited: the panic must come before any poll, never a hang.
    drop(bounded_map(0..3, 0, |i| async move { i }));
}

#[test]
#[should_panic(expected = "bounded_map: limit must be at least 1")]
fn a_zero_limit_panics_at_the_call_in_the_stream_form() {
    drop(stream::iter(0..3).bounded_map(0, |i| async move { i }));
}

#[tokio::test(start_paused = true)]
async fn the_stream_yields_in_completion_order_with_input_indices() {
    let start = Instant::now();
    let done: Vec<(usize, Duration)> = stream::iter([30, 10, 20, 0, 15])
        .bounded_map(4, |d| sleep_for(start, secs(d)))
        .collect()
        .await;
    // Item 4 starts when item 3 completes, at 0 s.
    assert_eq!(
        done,
        [
            (3, secs(0)),
            (1, secs(10)),
            (4, secs(15)),
            (2, secs(20)),
            (0, secs(30)),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_stream_takes_an_item_only_when_a_slot_is_free() {
    let pulled = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&pulled);
    let start = Instant::now();
    let mut done = stream::iter(0..6u64)
        .inspect(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
        })
        .bounded_map(3, |i| sleep_for(start, secs(i + 1)));
    assert_eq!(pulled.load(Ordering::SeqCst), 0, "nothing before a poll");

    assert_eq!(done.next().await, Some((0, secs(1))));
    assert_eq!(pulled.load(Ordering::SeqCst), 3);

    // Nobody polls for 10 s: the freed slot stays empty.
    sleep(secs(10)).await;
    assert_eq!(pulled.load(Ordering::SeqCst), 3);

    // Items 1 and 2 finished sleeping at 2 s and 3 s but complete only when
    // polled, at 11 s; each poll starts the next item first.
    assert_eq!(done.next().await, Some((1, secs(11))));
    assert_eq!(pulled.load(Ordering::SeqCst), 4);
    assert_eq!(done.next().await, Some((2, secs(11))));
    assert_eq!(pulled.load(Ordering::SeqCst), 5);
    assert_eq!(done.next().await, Some((3, secs(15))));
    assert_eq!(done.next().await, Some((4, secs(16))));
    assert_eq!(done.next().await, Some((5, secs(17))));
    assert_eq!(pulled.load(Ordering::SeqCst), 6);
    assert_eq!(done.next().await, None);
    assert!(done.is_terminated());
}

#[tokio::test(start_paused = true)]
async fn the_stream_does_not_read_ahead_of_a_slow_input() {
    let start = Instant::now();
    // Each item takes 1 s to arrive, once asked for.
    let arriving = stream::iter([10u64, 10, 10]).then(|d| async move {
        sleep(secs(1)).await;
        d
    });
    let done: Vec<(usize, Duration)> = arriving
        .bounded_map(2, |d| sleep_for(start, secs(d)))
        .collect()
        .await;
    // Items 0 and 1 arrive at 1 s and 2 s; item 2 is asked for when item 0
    // completes, at 11 s, and arrives at 12 s.
    assert_eq!(done, [(0, secs(11)), (1, secs(12)), (2, secs(22))]);
}

#[tokio::test(start_paused = true)]
async fn the_stream_keeps_failures() {
    let mut outputs: Vec<(usize, Result<u64, u64>)> = stream::iter(0..5u64)
        .bounded_map(2, |i| async move {
            sleep(secs(5 - i)).await;
            if i % 2 == 0 { Ok(i) } else { Err(i) }
        })
        .collect()
        .await;
    outputs.sort_unstable();
    assert_eq!(
        outputs,
        [(0, Ok(0)), (1, Err(1)), (2, Ok(2)), (3, Err(3)), (4, Ok(4))]
    );
}

#[tokio::test(start_paused = true)]
async fn the_stream_reports_its_size_and_debug() {
    let mut done = stream::iter(0..5u64).bounded_map(2, |i| async move {
        sleep(secs(i + 1)).await;
        i
    });
    assert_eq!(done.size_hint(), (5, Some(5)));
    assert_eq!(done.next().await, Some((0, 0)));
    // Item 1 in flight, items 2, 3 and 4 in the input.
    assert_eq!(done.size_hint(), (4, Some(4)));
    let debug = format!("{done:?}");
    assert!(debug.starts_with("BoundedMap {"), "{debug}");
    assert!(debug.contains("limit: 2"), "{debug}");
}

#[tokio::test(start_paused = true)]
async fn the_stream_runs_on_after_a_cancelled_next() {
    let start = Instant::now();
    let mut done = stream::iter([2u64, 3]).bounded_map(2, |d| sleep_for(start, secs(d)));
    // A `next()` given up before anything completes loses nothing.
    assert!(tokio::time::timeout(secs(1), done.next()).await.is_err());
    assert_eq!(done.next().await, Some((0, secs(2))));
    assert_eq!(done.next().await, Some((1, secs(3))));
}

/// Runs both forms over `durations` (in ms) under a paused clock and returns
/// the completion instants from each, and the stream's order of completion.
fn run_both(durations: &[u64], limit: usize) -> (Vec<u64>, Vec<(usize, u64)>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let as_ms = |d: Duration| u64::try_from(d.as_millis()).expect("fits");
        let start = Instant::now();
        let gauge = Gauge::default();
        let ends = bounded_map(durations, limit, |&d| {
            gauge.enter();
            let gauge = &gauge;
            async move {
                let end = sleep_for(start, ms(d)).await;
                gauge.leave();
                as_ms(end)
            }
        })
        .await;
        assert!(gauge.max() <= limit);

        let start = Instant::now();
        let order = stream::iter(durations)
            .bounded_map(limit, |&d| sleep_for(start, ms(d)))
            .map(|(i, end)| (i, as_ms(end)))
            .collect()
            .await;
        (ends, order)
    })
}

proptest! {
    #[test]
    fn completion_instants_match_the_model(
        durations in prop::collection::vec(0u64..50, 0..40),
        limit in 1usize..10,
    ) {
        let expected = model(&durations, limit);
        let (ends, order) = run_both(&durations, limit);
        prop_assert_eq!(&ends, &expected);

        // The stream completes each item at the same instant, yields every
        // index once, and in order of completion.
        let mut seen = vec![false; durations.len()];
        for &(i, end) in &order {
            prop_assert!(!seen[i], "index {} twice", i);
            seen[i] = true;
            prop_assert_eq!(end, expected[i], "item {}", i);
        }
        prop_assert!(seen.iter().all(|&s| s));
        prop_assert!(order.windows(2).all(|w| w[0].1 <= w[1].1));
    }
}
