//! Feature `tower`: middleware that acquires from a limiter before each call.
//!
//! - [`RateLimitLayer`] puts any [`Limiter`](crate::Limiter) (the in-process
//!   [`RateLimiter`](crate::RateLimiter), or the Redis-backed limiter of the
//!   `redis` feature) in front of a service.
//! - [`KeyedRateLimitLayer`] limits each key on its own (an API key, a user,
//!   an address) through a [`KeyedRateLimiter`](crate::KeyedRateLimiter),
//!   with a function that picks the key from the request.
//!
//! Clones of the services share their limiter: unlike a limit whose state
//! lives in each service clone, the limit here holds for all of them
//! together, however the stack clones its services.
//!
//! # Where the grant is taken, and why
//!
//! `poll_ready` only asks the inner service; the grant is taken in the
//! response future that `call` returns, and the inner service is called, in
//! the same poll, the moment the grant comes.
//!
//! - **Readiness must not hold a grant.** A caller may poll a service ready
//!   and then never call it (a load balancer picking another, a `select!`,
//!   a shutdown). A grant taken in `poll_ready` would count against the
//!   window for a call that never happens: in a sliding window it cannot be
//!   given back once the window counts it. Taken in the response future, a
//!   grant always goes with its call; dropping the future before the grant
//!   leaves the limiter's queue and leaks nothing.
//! - **The cost depends on the request** (tokens estimated from a body, a
//!   batch's size, the key), which only `call` sees.
//! - **FIFO order is the order of calls**, each queued in the limiter's
//!   queue when its future is first polled, not the order in which callers
//!   happened to poll for readiness.
//!
//! The price: the inner service's readiness is reserved while the request
//! waits. `call` takes the inner service that `poll_ready` made ready and
//! leaves a clone in its place (the inner service must be `Clone`, as with
//! most of tower's middleware that defers the call), and the ready one
//! travels in the response future until the grant. Whatever that readiness
//! holds (a concurrency permit, a buffer slot) is held while the request
//! waits for its grant, and released if the future is dropped: a concurrency
//! limit in the same stack counts requests waiting for a grant as in flight.
//! Where waiting requests must not hold capacity, bound the wait with
//! [`max_wait`](RateLimitLayer::max_wait); `Duration::ZERO` never waits.
//!
//! # Errors
//!
//! The services' error is [`RateLimitError`]: `Limited(R)` when the limiter
//! refused (the inner service was not called), `Inner(E)` when the inner
//! service failed, so the two never mix and both stay typed. `R` is
//! [`AcquireError`](crate::AcquireError) for [`RateLimit`] and
//! [`KeyedError<AcquireError>`](crate::KeyedError) for [`KeyedRateLimit`].
//! Where a stack wants tower's boxed errors,
//! [`RateLimitError::into_box_error`] gives one (the limiter's error
//! downcasts to `R`); in axum, `HandleErrorLayer` takes the typed error.
//!
//! # In front of an axum handler
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use axum::{Router, body::Body, error_handling::HandleErrorLayer, http::{Request, StatusCode}, routing::get};
//! use paceline::{AcquireError, KeyedError, KeyedRateLimiter};
//! use paceline::tower::{KeyedRateLimitLayer, RateLimitError};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! fn api_key(request: &Request<Body>) -> String {
//!     let key = request.headers().get("x-api-key").and_then(|v| v.to_str().ok());
//!     key.unwrap_or("anonymous").to_owned()
//! }
//!
//! async fn refused(err: RateLimitError<Infallible, KeyedError<AcquireError>>) -> (StatusCode, String) {
//!     (StatusCode::TOO_MANY_REQUESTS, err.to_string())
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Five requests per second per API key; answer 429 rather than wait.
//! let limiter = KeyedRateLimiter::<String>::new(5, Duration::from_secs(1))?;
//! let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(
//!     ServiceBuilder::new()
//!         .layer(HandleErrorLayer::new(refused))
//!         .layer(KeyedRateLimitLayer::new(limiter, api_key).max_wait(Duration::ZERO)),
//! );
//!
//! let call = |key: &str| Request::get("/").header("x-api-key", key).body(Body::empty()).unwrap();
//! for _ in 0..5 {
//!     assert_eq!(app.clone().oneshot(call("alice")).await?.status(), StatusCode::OK);
//! }
//! assert_eq!(app.clone().oneshot(call("alice")).await?.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(app.oneshot(call("bob")).await?.status(), StatusCode::OK);
//! # Ok(()) }
//! ```

mod cost;
mod error;
mod future;
mod layer;
mod service;

pub use self::cost::{OneRequest, RequestCost};
pub use self::error::{BoxError, RateLimitError};
pub use self::future::ResponseFuture;
pub use self::layer::{KeyedRateLimitLayer, RateLimitLayer};
pub use self::service::{KeyedRateLimit, RateLimit};
