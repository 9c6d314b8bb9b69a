//! [`RateLimitLayer`] and [`KeyedRateLimitLayer`].

use std::fmt;
use std::hash::Hash;
use std::time::Duration;

use tower_layer::Layer;

use super::cost::OneRequest;
use super::service::{KeyedRateLimit, RateLimit};
use crate::keyed::KeyedRateLimiter;

/// A [`Layer`] that puts a [`Limiter`](crate::Limiter) in front of a
/// service: every request waits for a grant of its cost, in FIFO order with
/// every other user of the limiter, before the inner service is called.
///
/// The grant is taken in the response future, not in `poll_ready`; see the
/// [module documentation](super) for why. By default a request costs one
/// request ([`OneRequest`]) and waits as long as the limiter says;
/// [`cost`](Self::cost) and [`max_wait`](Self::max_wait) change that.
///
/// The layer and every service it makes share the one limiter: clone the
/// services freely, the limit is global to them (and, for the Redis-backed
/// limiter of the `redis` feature, to every process sharing its quotas).
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use paceline::RateLimiter;
/// use paceline::tower::RateLimitLayer;
/// use tokio::time::Instant;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = RateLimiter::new(2, Duration::from_secs(1))?;
/// let service = ServiceBuilder::new()
///     .layer(RateLimitLayer::new(limiter))
///     .service(service_fn(|n: u32| async move { Ok::<_, Infallible>(n * 2) }));
///
/// let start = Instant::now();
/// for n in 0..3 {
///     assert_eq!(service.clone().oneshot(n).await?, n * 2);
/// }
/// // Two calls in the first second, the third when the window allows.
/// assert_eq!(start.elapsed(), Duration::from_secs(1));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RateLimitLayer<L, C = OneRequest> {
    limiter: L,
    cost: C,
    max_wait: Option<Duration>,
}

impl<L> RateLimitLayer<L> {
    /// A layer acquiring one request from `limiter` for each call.
    ///
    /// # Examples
    ///
    /// See [`RateLimitLayer`].
    pub fn new(limiter: L) -> Self {
        RateLimitLayer {
            limiter,
            cost: OneRequest,
            max_wait: None,
        }
    }
}

impl<L, C> RateLimitLayer<L, C> {
    /// Charges each request what `cost` says: any
    /// [`RequestCost`](super::RequestCost), such as a closure
    /// `|request: &Req| Cost::tokens(..)`. The cost is known only from the
    /// request, which is one more reason the grant is taken in `call`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use std::time::Duration;
    /// use paceline::{Cost, Quota, RateLimiter, Unit};
    /// use paceline::tower::RateLimitLayer;
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let limiter = RateLimiter::builder()
    ///     .quota(Quota::per_minute(1_000)?.counting(Unit::Tokens))
    ///     .build()?;
    /// // About four bytes of prompt to a token.
    /// let layer = RateLimitLayer::new(limiter.clone())
    ///     .cost(|prompt: &String| Cost::tokens(prompt.len() as u64 / 4));
    /// let service = layer.layer(service_fn(|prompt: String| async move { Ok::<_, Infallible>(prompt.len()) }));
    /// service.oneshot("x".repeat(2_000)).await?;
    /// assert_eq!(limiter.stats().quotas[0].in_window, 500);
    /// # Ok(()) }
    /// ```
    pub fn cost<C2>(self, cost: C2) -> RateLimitLayer<L, C2> {
        RateLimitLayer {
            limiter: self.limiter,
            cost,
            max_wait: self.max_wait,
        }
    }

    /// Refuses a request whose grant cannot come within `max_wait` of the
    /// call, with [`AcquireError::DeadlineExceeded`](crate::AcquireError::DeadlineExceeded)
    /// (saying when it could come: see
    /// [`RateLimitError::retry_after`](super::RateLimitError::retry_after)).
    /// `Duration::ZERO` never waits: a request is granted at once or
    /// refused, as a server answering 429 does.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use std::time::Duration;
    /// use paceline::RateLimiter;
    /// use paceline::tower::RateLimitLayer;
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let limiter = RateLimiter::new(1, Duration::from_secs(60))?;
    /// let layer = RateLimitLayer::new(limiter).max_wait(Duration::ZERO);
    /// let service = layer.layer(service_fn(|n: u32| async move { Ok::<_, Infallible>(n) }));
    /// assert!(service.clone().oneshot(1).await.is_ok());
    /// let refused = service.oneshot(2).await.unwrap_err();
    /// assert_eq!(refused.retry_after(), Some(Duration::from_secs(60)));
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }
}

impl<L: fmt::Debug, C> fmt::Debug for RateLimitLayer<L, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limiter", &self.limiter)
            .field("cost", &std::any::type_name::<C>())
            .field("max_wait", &self.max_wait)
            .finish()
    }
}

impl<S, L: Clone, C: Clone> Layer<S> for RateLimitLayer<L, C> {
    type Service = RateLimit<S, L, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::from_parts(
            inner,
            self.limiter.clone(),
            self.cost.clone(),
            self.max_wait,
        )
    }
}

/// A [`Layer`] that limits each key on its own: `key` picks the key of a
/// request (an API key from a header, a user, an address), and the request
/// waits for a grant from that key's limiter in a [`KeyedRateLimiter`].
///
/// As [`RateLimitLayer`] otherwise: the grant is taken in the response
/// future, the cost is one request unless [`cost`](Self::cost) says
/// otherwise, [`max_wait`](Self::max_wait) bounds the wait. A new key that
/// finds the keyed limiter full fails with
/// [`KeyedError::TooManyKeys`](crate::KeyedError::TooManyKeys).
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use paceline::{AcquireError, KeyedError, KeyedRateLimiter};
/// use paceline::tower::{KeyedRateLimitLayer, RateLimitError};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// #[derive(Clone)]
/// struct Call { user: u64 }
///
/// let limiter = KeyedRateLimiter::<u64>::new(1, Duration::from_secs(60))?;
/// let layer = KeyedRateLimitLayer::new(limiter, |call: &Call| call.user).max_wait(Duration::ZERO);
/// let service = layer.layer(service_fn(|call: Call| async move { Ok::<_, Infallible>(call.user) }));
///
/// assert_eq!(service.clone().oneshot(Call { user: 1 }).await?, 1);
/// assert_eq!(service.clone().oneshot(Call { user: 2 }).await?, 2);
/// let refused = service.oneshot(Call { user: 1 }).await.unwrap_err();
/// assert!(matches!(
///     refused,
///     RateLimitError::Limited(KeyedError::Limiter(AcquireError::DeadlineExceeded { .. }))
/// ));
/// # Ok(()) }
/// ```
pub struct KeyedRateLimitLayer<K, F, C = OneRequest> {
    limiter: KeyedRateLimiter<K>,
    key: F,
    cost: C,
    max_wait: Option<Duration>,
}

impl<K, F: Clone, C: Clone> Clone for KeyedRateLimitLayer<K, F, C> {
    fn clone(&self) -> Self {
        KeyedRateLimitLayer {
            limiter: self.limiter.clone(),
            key: self.key.clone(),
            cost: self.cost.clone(),
            max_wait: self.max_wait,
        }
    }
}

impl<K, F> KeyedRateLimitLayer<K, F> {
    /// A layer acquiring one request from the limiter of `key(&request)`.
    ///
    /// # Examples
    ///
    /// See [`KeyedRateLimitLayer`].
    pub fn new(limiter: KeyedRateLimiter<K>, key: F) -> Self {
        KeyedRateLimitLayer {
            limiter,
            key,
            cost: OneRequest,
            max_wait: None,
        }
    }
}

impl<K, F, C> KeyedRateLimitLayer<K, F, C> {
    /// Charges each request what `cost` says; see [`RateLimitLayer::cost`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use std::time::Duration;
    /// use paceline::{Cost, KeyedRateLimiter};
    /// use paceline::tower::KeyedRateLimitLayer;
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // A batch of n calls costs n requests of its user's quota.
    /// let limiter = KeyedRateLimiter::<&'static str>::new(10, Duration::from_secs(1))?;
    /// let layer = KeyedRateLimitLayer::new(limiter.clone(), |b: &(&'static str, u64)| b.0)
    ///     .cost(|b: &(&'static str, u64)| Cost::requests(b.1));
    /// let service = layer.layer(service_fn(|b: (&'static str, u64)| async move { Ok::<_, Infallible>(b.1) }));
    /// service.oneshot(("alice", 7)).await?;
    /// assert_eq!(limiter.key_stats("alice").unwrap().in_window, 7);
    /// # Ok(()) }
    /// ```
    pub fn cost<C2>(self, cost: C2) -> KeyedRateLimitLayer<K, F, C2> {
        KeyedRateLimitLayer {
            limiter: self.limiter,
            key: self.key,
            cost,
            max_wait: self.max_wait,
        }
    }

    /// Refuses a request whose grant cannot come within `max_wait`; see
    /// [`RateLimitLayer::max_wait`].
    ///
    /// # Examples
    ///
    /// See [`KeyedRateLimitLayer`].
    #[must_use]
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }
}

impl<K: Hash + Eq, F, C> fmt::Debug for KeyedRateLimitLayer<K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimitLayer")
            .field("limiter", &self.limiter)
            .field("key", &std::any::type_name::<F>())
            .field("cost", &std::any::type_name::<C>())
            .field("max_wait", &self.max_wait)
            .finish()
    }
}

impl<S, K, F: Clone, C: Clone> Layer<S> for KeyedRateLimitLayer<K, F, C> {
    type Service = KeyedRateLimit<S, K, F, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedRateLimit::from_parts(
            inner,
            self.limiter.clone(),
            self.key.clone(),
            self.cost.clone(),
            self.max_wait,
        )
    }
}
