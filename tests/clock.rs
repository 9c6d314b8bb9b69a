//! The limiter follows tokio's paused clock, even one paused after it was built.
mod common;

use common::{paused_runtime, secs};
use futures::future::join_all;
use paceline::RateLimiter;
use tokio::time::Instant;

#[test]
fn a_limiter_built_outside_the_runtime_follows_its_paused_clock() {
    let limiter = RateLimiter::new(15, secs(60)).unwrap();
    let rt = paused_runtime();
    rt.block_on(async {
        let start = Instant::now();
        let grants = join_all((0..45).map(|_| limiter.acquire())).await;
        for (i, grant) in grants.into_iter().enumerate() {
            let at = grant.unwrap().granted_at();
            assert_eq!(
                (at - start).as_secs(),
                60 * (i as u64 / 15),
                "grant {i} on virtual time"
            );
        }
        assert_eq!(Instant::now() - start, secs(120));
    });
}

#[tokio::test]
async fn a_limiter_built_before_the_clock_is_paused_follows_it() {
    let limiter = RateLimiter::new(1, secs(3_600)).unwrap();
    limiter.try_acquire().unwrap();
    tokio::time::pause();
    let start = Instant::now();
    // The refusal looks at tokio's clock again and counts on virtual time.
    let retry = limiter.try_acquire().unwrap_err().retry_after().unwrap();
    assert!(retry > secs(3_599) && retry <= secs(3_600), "{retry:?}");
    tokio::time::advance(retry).await;
    limiter.try_acquire().unwrap();
    assert_eq!(Instant::now() - start, retry);
}
