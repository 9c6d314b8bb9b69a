//! The tower layer in front of the Redis-backed limiter: two services (as in
//! two processes) share one quota, and a refusal is the typed `Limited`.
#![cfg(all(feature = "redis", feature = "tower"))]

mod redis_server;

use std::convert::Infallible;
use std::time::Duration;

use paceline::redis::RedisRateLimiter;
use paceline::tower::{RateLimitError, RateLimitLayer};
use paceline::{AcquireError, Quota};
use redis_server::RedisServer;
use tower::{Layer, Service, ServiceExt, service_fn};

async fn shared(server: &RedisServer) -> RedisRateLimiter {
    RedisRateLimiter::builder(server.url(), "tower")
        .quota(Quota::new(3, Duration::from_secs(60)).unwrap())
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_share_one_redis_quota_and_refuse_past_it() {
    let server = RedisServer::start();
    let echo = service_fn(|n: u32| async move { Ok::<u32, Infallible>(n) });
    let layer_a = RateLimitLayer::new(shared(&server).await).max_wait(Duration::ZERO);
    let layer_b = RateLimitLayer::new(shared(&server).await).max_wait(Duration::ZERO);
    let (mut a, mut b) = (layer_a.layer(echo), layer_b.layer(echo));
    assert_eq!(a.ready().await.unwrap().call(1).await.unwrap(), 1);
    assert_eq!(b.ready().await.unwrap().call(2).await.unwrap(), 2);
    assert_eq!(a.ready().await.unwrap().call(3).await.unwrap(), 3);
    // Three of three used, by both services together: the next is refused
    // without calling the inner service.
    let err = b.ready().await.unwrap().call(4).await.unwrap_err();
    match err {
        RateLimitError::Limited(AcquireError::DeadlineExceeded { .. }) => {}
        other => panic!("{other:?}"),
    }
    let stats = shared(&server).await.stats().await.unwrap();
    assert_eq!(stats.in_window, 3);
}
