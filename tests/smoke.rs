//! Quick checks.
use std::time::Duration;

use paceline::RateLimiter;
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn hundred_on_15_per_minute() {
    let limiter = RateLimiter::new(15, Duration::from_secs(60)).unwrap();
    let start = Instant::now();
    let mut handles = Vec::new();
    for i in 0..100u64 {
        let l = limiter.clone();
        handles.push(tokio::spawn(async move {
            let g = l.acquire().await.unwrap();
            (i, g.granted_at() - start)
        }));
        tokio::task::yield_now().await;
    }
    for h in handles {
        let (i, at) = h.await.unwrap();
        assert_eq!(at, Duration::from_secs(60 * (i / 15)), "request {i}");
    }
    assert_eq!(Instant::now() - start, Duration::from_secs(360));
}
