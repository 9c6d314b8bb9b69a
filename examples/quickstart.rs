//! Quick start: 40 calls through a limit of 15 per minute, in virtual time.
//!
//! Run with `cargo run --example quickstart`. The clock is tokio's paused
//! clock, so the three minutes of waiting take no time at all.

use std::time::Duration;

use futures::future::join_all;
use paceline::{Quota, RateLimiter};
use tokio::time::Instant;

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Gemini's free tier for one model: 15 requests per minute, 1,500 per day.
    let limiter = RateLimiter::builder()
        .quota(Quota::per_minute(15)?)
        .quota(Quota::per_day(1_500)?)
        .build()?;

    let start = Instant::now();
    let calls = (0..40).map(|i| {
        let limiter = limiter.clone();
        async move {
            let grant = limiter.acquire().await?;
            // The real API call goes here.
            Ok::<_, paceline::AcquireError>((i, grant.granted_at() - start))
        }
    });
    let mut per_minute = [0u32; 3];
    for result in join_all(calls).await {
        let (i, at) = result?;
        per_minute[(at.as_secs() / 60) as usize] += 1;
        if i % 15 == 0 {
            println!("call {i:>2} granted at t = {:>3} s", at.as_secs());
        }
    }
    println!("calls per minute: {per_minute:?}");
    assert_eq!(per_minute, [15, 15, 10]);

    let stats = limiter.stats();
    println!(
        "in window: {}/{}, queued: {}, available: {}, utilization: {:.0}%",
        stats.in_window, stats.max, stats.queued, stats.available, stats.utilization_percent
    );
    println!(
        "granted: {}, of which waited: {} (for {:?} in all)",
        stats.granted, stats.waited, stats.wait_time
    );
    assert_eq!(Instant::now() - start, Duration::from_secs(120));
    Ok(())
}
