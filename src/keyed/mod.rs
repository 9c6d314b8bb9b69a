//! [`KeyedRateLimiter`]: one limiter per key (per API key, per user, per
//! address), made on first use, with bounded memory.

mod error;
mod slot;
mod store;

use std::borrow::Borrow;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

pub use self::error::KeyedError;
use self::slot::Begun;
use self::store::{Full, Store};
use crate::error::{AcquireError, ConfigError, TryAcquireError};
use crate::limiter::{Grant, RateLimiter};
use crate::quota::{Cost, Quota};
use crate::stats::Stats;

/// A strict sliding-window limit per key: each key gets its own
/// [`RateLimiter`] with the same quotas, made the first time the key is
/// used, and evicted once it is idle.
///
/// **The contract, per key.** Every key's limiter is a full
/// [`RateLimiter`]: its quotas are strict sliding windows, its waiters are
/// served FIFO, acquires are cancel-safe, and so on. Keys are independent:
/// one key's queue or window never delays another's.
///
/// **Eviction.** A key is idle when none of its grants counts in any window
/// any more, it is not paused, nobody waits on it, and no handle to its
/// limiter ([`limiter`](Self::limiter)) is held outside. An idle key is
/// indistinguishable from a new one, so evicting it changes nothing but the
/// key's totals in [`key_stats`](Self::key_stats). Idle keys are swept as the
/// map grows (a sweep each time the number of keys has doubled since the
/// last, so the cost is constant per new key and the map holds at most about
/// twice its live keys), whenever a new key finds the map full, and by
/// [`evict_idle`](Self::evict_idle).
///
/// **The cap.** At most [`max_keys`](KeyedRateLimiterBuilder::max_keys) keys
/// are live at once ([`DEFAULT_MAX_KEYS`](Self::DEFAULT_MAX_KEYS) unless set).
/// A new key that finds the map full sweeps it once; if no key is idle, the
/// new key is refused with [`KeyedError::TooManyKeys`], and so is every new
/// key until the earliest instant a live key can go idle (when its last grant
/// leaves the window): keys already live are served as before, and the map
/// never grows past the cap.
///
/// **Cost.** An existing key costs one hash and one shard read lock of a
/// concurrent map, then its own record. A key whose limit is one request
/// quota of at most 1,024 per window (the usual per-key limit) starts with a
/// light record: the instants of its grants that still count, 8 bytes each,
/// and a refusal of a full window is answered from the map's entry alone.
/// The first time such a key needs more (an acquire that has to wait, a
/// [`limiter`](Self::limiter) handle), it gets a full [`RateLimiter`] with
/// the same grants, which it keeps until it is evicted. Keys with several
/// quotas, a token quota or a larger `max` have a full limiter from the
/// start (a few hundred bytes, plus its log: see the limiter's memory bound).
///
/// A clone is a handle to the same keyed limiter.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use paceline::KeyedRateLimiter;
/// use tokio::time::Instant;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Two requests per second per API key.
/// let limiter = KeyedRateLimiter::<String>::new(2, Duration::from_secs(1))?;
/// let start = Instant::now();
/// for _ in 0..3 {
///     limiter.acquire("alice").await?;
/// }
/// assert_eq!(start.elapsed(), Duration::from_secs(1)); // alice waited for her third
/// limiter.acquire("bob").await?; // bob did not wait for alice
/// assert_eq!(start.elapsed(), Duration::from_secs(1));
/// assert_eq!(limiter.len(), 2);
/// # Ok(()) }
/// ```
pub struct KeyedRateLimiter<K> {
    store: Arc<Store<K>>,
}

impl<K> Clone for KeyedRateLimiter<K> {
    fn clone(&self) -> Self {
        KeyedRateLimiter {
            store: Arc::clone(&self.store),
        }
    }
}

impl<K: Hash + Eq> fmt::Debug for KeyedRateLimiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimiter")
            .field("quotas", &self.store.quotas())
            .field("keys", &self.store.len())
            .field("max_keys", &self.store.max_keys())
            .finish_non_exhaustive()
    }
}

/// Builds a [`KeyedRateLimiter`]: the quotas every key gets, and the cap on
/// live keys.
///
/// # Examples
///
/// ```
/// use paceline::{KeyedRateLimiter, Quota};
///
/// let limiter = KeyedRateLimiter::<u64>::builder()
///     .quota(Quota::per_second(10)?)
///     .quota(Quota::per_day(10_000)?)
///     .max_keys(50_000)
///     .build()?;
/// assert_eq!(limiter.max_keys(), 50_000);
/// # Ok::<(), paceline::ConfigError>(())
/// ```
pub struct KeyedRateLimiterBuilder<K> {
    quotas: Vec<Quota>,
    max_keys: usize,
    key: PhantomData<fn(K)>,
}

impl<K> fmt::Debug for KeyedRateLimiterBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimiterBuilder")
            .field("quotas", &self.quotas)
            .field("max_keys", &self.max_keys)
            .finish()
    }
}

impl<K: Hash + Eq> KeyedRateLimiterBuilder<K> {
    /// Adds a quota that every key gets. Call it once per quota.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::{KeyedRateLimiter, Quota};
    /// let limiter = KeyedRateLimiter::<u32>::builder().quota(Quota::per_minute(15)?).build()?;
    /// assert_eq!(limiter.quotas(), [Quota::per_minute(15)?]);
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    #[must_use]
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quotas.push(quota);
        self
    }

    /// The most keys live at once (at least 1); see the cap in
    /// [`KeyedRateLimiter`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::{ConfigError, KeyedRateLimiter, Quota};
    /// let builder = KeyedRateLimiter::<u32>::builder().quota(Quota::per_second(1)?);
    /// assert_eq!(builder.max_keys(0).build().unwrap_err(), ConfigError::ZeroMaxKeys);
    /// # Ok::<(), ConfigError>(())
    /// ```
    #[must_use]
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// Builds the keyed limiter.
    ///
    /// # Errors
    ///
    /// [`ConfigError::NoQuota`] without a quota, [`ConfigError::ZeroMaxKeys`]
    /// for a cap of zero keys.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::{ConfigError, KeyedRateLimiter};
    /// assert_eq!(KeyedRateLimiter::<u32>::builder().build().unwrap_err(), ConfigError::NoQuota);
    /// ```
    pub fn build(self) -> Result<KeyedRateLimiter<K>, ConfigError> {
        // The quotas are checked once here, by the limiter every key's is
        // made like.
        let template = RateLimiter::with_quotas(&self.quotas)?;
        if self.max_keys == 0 {
            return Err(ConfigError::ZeroMaxKeys);
        }
        Ok(KeyedRateLimiter {
            store: Arc::new(Store::new(template, self.quotas, self.max_keys)),
        })
    }
}

/// A snapshot of a [`KeyedRateLimiter`] as a whole.
///
/// # Examples
///
/// ```
/// # use std::time::Duration;
/// # use paceline::KeyedRateLimiter;
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), paceline::ConfigError> {
/// let limiter = KeyedRateLimiter::<String>::builder()
///     .quota(paceline::Quota::per_second(1)?)
///     .max_keys(1)
///     .build()?;
/// limiter.try_acquire("a").unwrap();
/// assert!(limiter.try_acquire("b").is_err());
/// let stats = limiter.stats();
/// assert_eq!((stats.keys, stats.max_keys, stats.evicted, stats.refused), (1, 1, 0, 1));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct KeyedStats {
    /// Keys live now.
    pub keys: usize,
    /// The cap on live keys.
    pub max_keys: usize,
    /// Idle keys evicted so far.
    pub evicted: u64,
    /// New keys refused so far because the map was full
    /// ([`KeyedError::TooManyKeys`]).
    pub refused: u64,
}

impl<K: Hash + Eq + Send + Sync + 'static> KeyedRateLimiter<K> {
    /// The cap on live keys when the builder sets none: 100,000.
    pub const DEFAULT_MAX_KEYS: usize = 100_000;

    /// A keyed limiter of `max` requests per sliding `window` for each key,
    /// with the default cap on live keys.
    ///
    /// # Errors
    ///
    /// As [`Quota::new`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use paceline::KeyedRateLimiter;
    /// let limiter = KeyedRateLimiter::<String>::new(100, Duration::from_secs(60))?;
    /// assert_eq!(limiter.max_keys(), KeyedRateLimiter::<String>::DEFAULT_MAX_KEYS);
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    pub fn new(max: u64, window: Duration) -> Result<Self, ConfigError> {
        Self::builder().quota(Quota::new(max, window)?).build()
    }

    /// A builder, for several quotas per key or another cap.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::{KeyedRateLimiter, Quota};
    /// let limiter = KeyedRateLimiter::<String>::builder()
    ///     .quota(Quota::per_minute(60)?)
    ///     .max_keys(10_000)
    ///     .build()?;
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    pub fn builder() -> KeyedRateLimiterBuilder<K> {
        KeyedRateLimiterBuilder {
            quotas: Vec::new(),
            max_keys: Self::DEFAULT_MAX_KEYS,
            key: PhantomData,
        }
    }

    /// The key's limiter, made if the key is new: a handle to pause the key
    /// after the server's 429, to look at it, or to acquire from it many
    /// times without looking the key up again. While the handle lives, the
    /// key is not evicted. A key evicted after its quotas were changed
    /// through a handle comes back with the keyed limiter's quotas.
    ///
    /// # Errors
    ///
    /// [`KeyedError::TooManyKeys`] if the key is new and the map is full.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use paceline::KeyedRateLimiter;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let limiter = KeyedRateLimiter::<String>::new(100, Duration::from_secs(60))?;
    /// // The server rate-limited alice's key for 20 s: pause her alone.
    /// limiter.limiter("alice")?.pause_for(Duration::from_secs(20));
    /// assert_eq!(limiter.acquire("alice").await?.waited(), Duration::from_secs(20));
    /// # Ok(()) }
    /// ```
    pub fn limiter<Q>(&self, key: &Q) -> Result<RateLimiter, KeyedError<Infallible>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let store = &self.store;
        store
            .with(key, |slot| {
                slot.full(store.origin(), store.template(), store.quotas())
                    .clone()
            })
            .map_err(|Full| self.too_many())
    }

    /// Waits for a grant of one request for `key`, in turn with the key's
    /// other waiters.
    ///
    /// The key is looked up (and made, if new) when the future is first
    /// polled, and the acquire takes its place in the key's queue then.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe, as [`RateLimiter::acquire`]: dropping the future loses
    /// its place in the key's queue and nothing else. A key made for a
    /// future dropped before it was granted is idle and evicted as any other;
    /// a future dropped before its first poll made nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use paceline::KeyedRateLimiter;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let limiter = KeyedRateLimiter::<u64>::new(1, Duration::from_secs(1))?;
    /// limiter.acquire(&7).await?;
    /// assert_eq!(limiter.acquire(&7).await?.waited(), Duration::from_secs(1));
    /// # Ok(()) }
    /// ```
    pub fn acquire<Q>(
        &self,
        key: &Q,
    ) -> impl Future<Output = Result<Grant, KeyedError<AcquireError>>> + Send + use<K, Q>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.acquire_with(key, Cost::requests(1), None)
    }

    /// Waits for a grant of `cost` for `key`; see [`acquire`](Self::acquire).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe, as [`acquire`](Self::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use paceline::{Cost, KeyedRateLimiter, Quota, Unit};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let limiter = KeyedRateLimiter::<String>::builder()
    ///     .quota(Quota::per_minute(1_000)?.counting(Unit::Tokens))
    ///     .build()?;
    /// limiter.acquire_cost("alice", Cost::tokens(800)).await?;
    /// let grant = limiter.acquire_cost("alice", Cost::tokens(800)).await?;
    /// assert_eq!(grant.waited(), Duration::from_secs(60));
    /// # Ok(()) }
    /// ```
    pub fn acquire_cost<Q>(
        &self,
        key: &Q,
        cost: Cost,
    ) -> impl Future<Output = Result<Grant, KeyedError<AcquireError>>> + Send + use<K, Q>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.acquire_with(key, cost, None)
    }

    /// Waits for a grant of `cost` for `key` that comes no later than
    /// `deadline`; fails at once with
    /// [`AcquireError::DeadlineExceeded`] when it cannot (see
    /// [`RateLimiter::acquire_before`]). A deadline of now grants only what
    /// fits at once.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe, as [`acquire`](Self::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use paceline::{AcquireError, Cost, KeyedError, KeyedRateLimiter};
    /// # use tokio::time::Instant;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let limiter = KeyedRateLimiter::<String>::new(1, Duration::from_secs(60))?;
    /// limiter.acquire("alice").await?;
    /// let refused = limiter.acquire_cost_before("alice", Cost::requests(1), Instant::now()).await;
    /// assert!(matches!(
    ///     refused,
    ///     Err(KeyedError::Limiter(AcquireError::DeadlineExceeded { earliest: Some(_) }))
    /// ));
    /// # Ok(()) }
    /// ```
    pub fn acquire_cost_before<Q>(
        &self,
        key: &Q,
        cost: Cost,
        deadline: Instant,
    ) -> impl Future<Output = Result<Grant, KeyedError<AcquireError>>> + Send + use<K, Q>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.acquire_with(key, cost, Some(deadline))
    }

    fn acquire_with<Q>(
        &self,
        key: &Q,
        cost: Cost,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<Grant, KeyedError<AcquireError>>> + Send + use<K, Q>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.acquire_owned(key.to_owned(), cost, deadline)
    }

    /// As [`acquire_cost_before`](Self::acquire_cost_before) (or without a
    /// deadline), for a key the caller owns.
    pub(crate) fn acquire_owned(
        &self,
        key: K,
        cost: Cost,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<Grant, KeyedError<AcquireError>>> + Send + use<K> {
        let store = Arc::clone(&self.store);
        async move {
            // Looked up at the first poll: a future never polled takes
            // nothing, and holds no key.
            let begun = store.with_owned(key, |slot| {
                slot.begin(
                    store.origin(),
                    cost,
                    deadline,
                    store.template(),
                    store.quotas(),
                )
            });
            let limiter = match begun {
                Ok(Begun::Done(result)) => return result.map_err(KeyedError::Limiter),
                Ok(Begun::Wait(limiter)) => limiter,
                Err(Full) => {
                    return Err(KeyedError::TooManyKeys {
                        max_keys: store.max_keys(),
                    });
                }
            };
            // The handle travels with the future: the key stays live (and is
            // not evicted) until the future is done or dropped.
            let acquire = match deadline {
                Some(deadline) => limiter.acquire_cost_before(cost, deadline),
                None => limiter.acquire_cost(cost),
            };
            acquire.await.map_err(KeyedError::Limiter)
        }
    }

    /// As [`try_acquire_cost`](Self::try_acquire_cost), for a key the caller
    /// owns.
    #[cfg(feature = "tower")]
    pub(crate) fn try_acquire_owned(
        &self,
        key: K,
        cost: Cost,
    ) -> Result<Grant, KeyedError<TryAcquireError>> {
        let quotas = self.store.quotas();
        match self.store.with_owned(key, |slot| {
            slot.try_acquire(self.store.origin(), quotas, cost)
        }) {
            Ok(result) => result.map_err(KeyedError::Limiter),
            Err(Full) => Err(self.too_many()),
        }
    }

    /// Takes one request for `key` now if it fits and nobody waits on the
    /// key.
    ///
    /// # Errors
    ///
    /// [`KeyedError::Limiter`] with the key's [`TryAcquireError`] (its
    /// `retry_after` says when to come back), or
    /// [`KeyedError::TooManyKeys`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use paceline::KeyedRateLimiter;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), paceline::ConfigError> {
    /// let limiter = KeyedRateLimiter::<String>::new(1, Duration::from_secs(10))?;
    /// assert!(limiter.try_acquire("alice").is_ok());
    /// assert!(limiter.try_acquire("bob").is_ok());
    /// let refused = limiter.try_acquire("alice").unwrap_err();
    /// assert_eq!(refused.retry_after(), Some(Duration::from_secs(10)));
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn try_acquire<Q>(&self, key: &Q) -> Result<Grant, KeyedError<TryAcquireError>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.try_acquire_cost(key, Cost::requests(1))
    }

    /// Takes `cost` for `key` now if it fits and nobody waits on the key.
    ///
    /// # Errors
    ///
    /// As [`try_acquire`](Self::try_acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use paceline::{Cost, KeyedRateLimiter};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), paceline::ConfigError> {
    /// let limiter = KeyedRateLimiter::<u32>::new(10, Duration::from_secs(1))?;
    /// assert!(limiter.try_acquire_cost(&1, Cost::requests(10)).is_ok());
    /// assert!(limiter.try_acquire_cost(&1, Cost::requests(1)).is_err());
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn try_acquire_cost<Q>(
        &self,
        key: &Q,
        cost: Cost,
    ) -> Result<Grant, KeyedError<TryAcquireError>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        match self.store.try_acquire(key, cost) {
            Ok(result) => result.map_err(KeyedError::Limiter),
            Err(Full) => Err(self.too_many()),
        }
    }

    /// A snapshot of the key's limiter, if the key is live (looking does not
    /// make it).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use paceline::KeyedRateLimiter;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), paceline::ConfigError> {
    /// let limiter = KeyedRateLimiter::<String>::new(5, Duration::from_secs(1))?;
    /// limiter.try_acquire("alice").unwrap();
    /// assert_eq!(limiter.key_stats("alice").map(|s| s.in_window), Some(1));
    /// assert_eq!(limiter.key_stats("bob"), None);
    /// # Ok(()) }
    /// ```
    pub fn key_stats<Q>(&self, key: &Q) -> Option<Stats>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let quotas = self.store.quotas();
        self.store
            .existing(key, |slot| slot.stats(self.store.origin(), quotas))
    }

    /// The keyed limiter's figures: live keys, the cap, evictions and
    /// refused keys.
    ///
    /// # Examples
    ///
    /// See [`KeyedStats`].
    pub fn stats(&self) -> KeyedStats {
        KeyedStats {
            keys: self.store.len(),
            max_keys: self.store.max_keys(),
            evicted: self.store.evicted(),
            refused: self.store.refused(),
        }
    }

    /// Evicts every idle key now and returns how many. Sweeps also run by
    /// themselves as the map grows; call this from a periodic task to give
    /// memory back sooner after a burst of keys.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use paceline::KeyedRateLimiter;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), paceline::ConfigError> {
    /// let limiter = KeyedRateLimiter::<u32>::new(10, Duration::from_secs(1))?;
    /// for key in 0..100 {
    ///     limiter.try_acquire(&key).unwrap();
    /// }
    /// assert_eq!(limiter.evict_idle(), 0); // every key's grant still counts
    /// tokio::time::sleep(Duration::from_secs(1)).await;
    /// assert_eq!(limiter.evict_idle(), 100);
    /// assert!(limiter.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn evict_idle(&self) -> usize {
        self.store.evict_idle()
    }

    /// Keys live now.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::KeyedRateLimiter;
    /// let limiter = KeyedRateLimiter::<u32>::new(1, std::time::Duration::from_secs(1))?;
    /// assert_eq!(limiter.len(), 0);
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Whether no key is live.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::KeyedRateLimiter;
    /// let limiter = KeyedRateLimiter::<u32>::new(1, std::time::Duration::from_secs(1))?;
    /// assert!(limiter.is_empty());
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cap on live keys.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::{KeyedRateLimiter, Quota};
    /// let limiter = KeyedRateLimiter::<u32>::builder().quota(Quota::per_second(1)?).max_keys(3).build()?;
    /// assert_eq!(limiter.max_keys(), 3);
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    pub fn max_keys(&self) -> usize {
        self.store.max_keys()
    }

    /// The quotas every key gets, in the order given.
    ///
    /// # Examples
    ///
    /// ```
    /// # use paceline::{KeyedRateLimiter, Quota};
    /// let limiter = KeyedRateLimiter::<u32>::new(15, std::time::Duration::from_secs(60))?;
    /// assert_eq!(limiter.quotas(), [Quota::per_minute(15)?]);
    /// # Ok::<(), paceline::ConfigError>(())
    /// ```
    pub fn quotas(&self) -> &[Quota] {
        self.store.quotas()
    }

    fn too_many<E>(&self) -> KeyedError<E> {
        KeyedError::TooManyKeys {
            max_keys: self.store.max_keys(),
        }
    }
}
