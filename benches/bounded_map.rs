//! `bounded_map` against futures' `buffered` and `buffer_unordered`, in one
//! run, side by side, on a current-thread runtime.
//!
//! - `ready`: 100,000 futures that complete on their first poll, so the cost
//!   measured is the machinery's own: taking an item, starting its future,
//!   polling it once and storing its output.
//! - `yielding`: 10,000 futures that yield to the runtime three times each,
//!   so every future is woken and polled again through its waker.
//!
//! Each at `k` = 1, 16 and 256 futures in flight. Every contender returns
//! every output: `bounded_map` and `buffered` in input order, the stream form
//! and `buffer_unordered` in completion order, collected into a vector.

use std::future::Future;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use futures::{StreamExt, stream};
use paceline::{BoundedMapExt, bounded_map};
use tokio::runtime::Runtime;

const READY_ITEMS: u64 = 100_000;
const YIELDING_ITEMS: u64 = 10_000;
const YIELDS: usize = 3;
const LIMITS: [usize; 3] = [1, 16, 256];

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
}

async fn ready(x: u64) -> u64 {
    x
}

async fn yielding(x: u64) -> u64 {
    for _ in 0..YIELDS {
        tokio::task::yield_now().await;
    }
    x
}

/// Benchmarks the four contenders on `items` futures made by `f`.
fn contenders<Fut>(c: &mut Criterion, name: &str, items: u64, f: fn(u64) -> Fut)
where
    Fut: Future<Output = u64>,
{
    let rt = runtime();
    let mut group = c.benchmark_group(name);
    group
        .throughput(Throughput::Elements(items))
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for k in LIMITS {
        group.bench_with_input(BenchmarkId::new("paceline_vec", k), &k, |b, &k| {
            b.to_async(&rt)
                .iter(|| async move { black_box(bounded_map(0..items, k, f).await) });
        });
        group.bench_with_input(BenchmarkId::new("paceline_stream", k), &k, |b, &k| {
            b.to_async(&rt).iter(|| async move {
                let done: Vec<(usize, u64)> =
                    stream::iter(0..items).bounded_map(k, f).collect().await;
                black_box(done)
            });
        });
        group.bench_with_input(BenchmarkId::new("buffered", k), &k, |b, &k| {
            b.to_async(&rt).iter(|| async move {
                let done: Vec<u64> = stream::iter(0..items).map(f).buffered(k).collect().await;
                black_box(done)
            });
        });
        group.bench_with_input(BenchmarkId::new("buffer_unordered", k), &k, |b, &k| {
            b.to_async(&rt).iter(|| async move {
                let done: Vec<u64> = stream::iter(0..items)
                    .map(f)
                    .buffer_unordered(k)
                    .collect()
                    .await;
                black_box(done)
            });
        });
    }
    group.finish();
}

fn main() {
    // No plots: rendering them takes longer than the measurements.
    let mut criterion = Criterion::default().without_plots().configure_from_args();
    contenders(&mut criterion, "ready", READY_ITEMS, ready);
    contenders(&mut criterion, "yielding", YIELDING_ITEMS, yielding);
    criterion.final_summary();
}
