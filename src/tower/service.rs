//! [`RateLimit`] and [`KeyedRateLimit`]: services that acquire before each
//! call.

use std::fmt;
use std::hash::Hash;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower_service::Service;

use super::cost::{OneRequest, RequestCost};
use super::error::{RateLimitError, refused_now};
use super::future::{BoxAcquire, ResponseFuture};
use crate::error::AcquireError;
use crate::keyed::{KeyedError, KeyedRateLimiter};
use crate::limit::Limiter;

/// A service that acquires the request's cost from a [`Limiter`] before it
/// passes the request on. Made by [`RateLimitLayer`](super::RateLimitLayer),
/// whose documentation says where it acquires and why.
///
/// Clones share the limiter (and so its window and its queue).
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use paceline::RateLimiter;
/// use paceline::tower::RateLimit;
/// use tower::{ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = RateLimiter::new(1, Duration::from_secs(1))?;
/// let echo = service_fn(|n: u32| async move { Ok::<_, Infallible>(n) });
/// let service = RateLimit::new(echo, limiter.clone());
/// assert_eq!(service.clone().oneshot(7).await?, 7);
/// assert_eq!(limiter.stats().in_window, 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RateLimit<S, L, C = OneRequest> {
    inner: S,
    limiter: L,
    cost: C,
    max_wait: Option<Duration>,
}

impl<S, L> RateLimit<S, L> {
    /// `inner`, behind `limiter`: each request costs one request and waits as
    /// long as it takes.
    ///
    /// # Examples
    ///
    /// See [`RateLimit`].
    pub fn new(inner: S, limiter: L) -> Self {
        RateLimit {
            inner,
            limiter,
            cost: OneRequest,
            max_wait: None,
        }
    }
}

impl<S, L, C> RateLimit<S, L, C> {
    pub(crate) fn from_parts(inner: S, limiter: L, cost: C, max_wait: Option<Duration>) -> Self {
        RateLimit {
            inner,
            limiter,
            cost,
            max_wait,
        }
    }

    /// The limiter.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::RateLimiter;
    /// # use paceline::tower::RateLimit;
    /// let limiter = RateLimiter::new(5, std::time::Duration::from_secs(1))?;
    /// let service = RateLimit::new((), limiter);
    /// assert_eq!(service.limiter().stats().max, 5);
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    pub fn limiter(&self) -> &L {
        &self.limiter
    }

    /// The inner service.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::RateLimiter;
    /// # use paceline::tower::RateLimit;
    /// let service = RateLimit::new("inner", RateLimiter::new(5, std::time::Duration::from_secs(1))?);
    /// assert_eq!(*service.get_ref(), "inner");
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::RateLimiter;
    /// # use paceline::tower::RateLimit;
    /// let mut service = RateLimit::new(1, RateLimiter::new(5, std::time::Duration::from_secs(1))?);
    /// *service.get_mut() += 1;
    /// assert_eq!(service.into_inner(), 2);
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, without the limit.
    ///
    /// # Examples
    ///
    /// See [`get_mut`](Self::get_mut).
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug, L: fmt::Debug, C> fmt::Debug for RateLimit<S, L, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .field("cost", &std::any::type_name::<C>())
            .field("max_wait", &self.max_wait)
            .finish()
    }
}

impl<S, L, C, Req> Service<Req> for RateLimit<S, L, C>
where
    S: Service<Req> + Clone,
    L: Limiter,
    C: RequestCost<Req>,
{
    type Response = S::Response;
    type Error = RateLimitError<S::Error>;
    type Future = ResponseFuture<S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(RateLimitError::Inner)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let cost = self.cost.cost(&request);
        let limiter = self.limiter.clone();
        let acquire: BoxAcquire<AcquireError> = match self.max_wait {
            None => Box::pin(async move { limiter.acquire_cost(cost).await }),
            Some(wait) if wait.is_zero() => {
                Box::pin(async move { limiter.try_acquire_cost(cost).await.map_err(refused_now) })
            }
            Some(wait) => {
                let deadline = deadline_after(wait);
                Box::pin(async move { limiter.acquire_cost_before(cost, deadline).await })
            }
        };
        ResponseFuture::new(acquire, take_ready(&mut self.inner), request)
    }
}

/// A service that acquires the request's cost from its key's limiter in a
/// [`KeyedRateLimiter`] before it passes the request on. Made by
/// [`KeyedRateLimitLayer`](super::KeyedRateLimitLayer).
///
/// Clones share the keyed limiter.
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use paceline::KeyedRateLimiter;
/// use paceline::tower::KeyedRateLimitLayer;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Requests are (user, payload) pairs; each user gets 1 per second.
/// let limiter = KeyedRateLimiter::<String>::new(1, Duration::from_secs(1))?;
/// let layer = KeyedRateLimitLayer::new(limiter.clone(), |(user, _): &(String, u32)| user.clone());
/// let service = layer.layer(service_fn(|(_, n): (String, u32)| async move { Ok::<_, Infallible>(n) }));
/// assert_eq!(service.clone().oneshot(("alice".into(), 1)).await?, 1);
/// assert_eq!(service.clone().oneshot(("bob".into(), 2)).await?, 2);
/// assert_eq!(limiter.len(), 2);
/// # Ok(()) }
/// ```
pub struct KeyedRateLimit<S, K, F, C = OneRequest> {
    inner: S,
    limiter: KeyedRateLimiter<K>,
    key: F,
    cost: C,
    max_wait: Option<Duration>,
}

impl<S: Clone, K, F: Clone, C: Clone> Clone for KeyedRateLimit<S, K, F, C> {
    fn clone(&self) -> Self {
        KeyedRateLimit {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
            key: self.key.clone(),
            cost: self.cost.clone(),
            max_wait: self.max_wait,
        }
    }
}

impl<S, K, F, C> KeyedRateLimit<S, K, F, C> {
    pub(crate) fn from_parts(
        inner: S,
        limiter: KeyedRateLimiter<K>,
        key: F,
        cost: C,
        max_wait: Option<Duration>,
    ) -> Self {
        KeyedRateLimit {
            inner,
            limiter,
            key,
            cost,
            max_wait,
        }
    }

    /// The keyed limiter.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::KeyedRateLimiter;
    /// # use paceline::tower::KeyedRateLimitLayer;
    /// # use tower::Layer;
    /// let limiter = KeyedRateLimiter::<u32>::new(5, std::time::Duration::from_secs(1))?;
    /// let service = KeyedRateLimitLayer::new(limiter, |n: &u32| *n).layer(());
    /// assert!(service.limiter().is_empty());
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    pub fn limiter(&self) -> &KeyedRateLimiter<K> {
        &self.limiter
    }

    /// The inner service.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::KeyedRateLimiter;
    /// # use paceline::tower::KeyedRateLimitLayer;
    /// # use tower::Layer;
    /// let limiter = KeyedRateLimiter::<u32>::new(5, std::time::Duration::from_secs(1))?;
    /// let service = KeyedRateLimitLayer::new(limiter, |n: &u32| *n).layer("inner");
    /// assert_eq!(*service.get_ref(), "inner");
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::KeyedRateLimiter;
    /// # use paceline::tower::KeyedRateLimitLayer;
    /// # use tower::Layer;
    /// let limiter = KeyedRateLimiter::<u32>::new(5, std::time::Duration::from_secs(1))?;
    /// let mut service = KeyedRateLimitLayer::new(limiter, |n: &u32| *n).layer(1);
    /// *service.get_mut() += 1;
    /// assert_eq!(service.into_inner(), 2);
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, without the limit.
    ///
    /// # Examples
    ///
    /// See [`get_mut`](Self::get_mut).
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug, K: Hash + Eq, F, C> fmt::Debug for KeyedRateLimit<S, K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimit")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .field("key", &std::any::type_name::<F>())
            .field("cost", &std::any::type_name::<C>())
            .field("max_wait", &self.max_wait)
            .finish()
    }
}

impl<S, K, F, C, Req> Service<Req> for KeyedRateLimit<S, K, F, C>
where
    S: Service<Req> + Clone,
    K: Hash + Eq + Send + Sync + 'static,
    F: Fn(&Req) -> K,
    C: RequestCost<Req>,
{
    type Response = S::Response;
    type Error = RateLimitError<S::Error, KeyedError<AcquireError>>;
    type Future = ResponseFuture<S, Req, KeyedError<AcquireError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(RateLimitError::Inner)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let key = (self.key)(&request);
        let cost = self.cost.cost(&request);
        let acquire: BoxAcquire<KeyedError<AcquireError>> = match self.max_wait {
            None => Box::pin(self.limiter.acquire_owned(key, cost, None)),
            Some(wait) if wait.is_zero() => {
                // Taken when the future is first polled, with the call.
                let limiter = self.limiter.clone();
                Box::pin(async move {
                    limiter
                        .try_acquire_owned(key, cost)
                        .map_err(|err| match err {
                            KeyedError::Limiter(err) => KeyedError::Limiter(refused_now(err)),
                            KeyedError::TooManyKeys { max_keys } => {
                                KeyedError::TooManyKeys { max_keys }
                            }
                        })
                })
            }
            Some(wait) => Box::pin(self.limiter.acquire_owned(
                key,
                cost,
                Some(deadline_after(wait)),
            )),
        };
        ResponseFuture::new(acquire, take_ready(&mut self.inner), request)
    }
}

/// The instant `wait` from now, or as far as tokio's clock goes.
fn deadline_after(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait)
        .unwrap_or_else(|| now + crate::quota::Quota::MAX_WINDOW)
}

/// Takes the service that `poll_ready` made ready, leaving a clone in its
/// place: the ready one goes with the call, the clone is polled next time.
fn take_ready<S: Clone>(service: &mut S) -> S {
    let fresh = service.clone();
    std::mem::replace(service, fresh)
}
