//! Feature `redis`: [`RedisRateLimiter`], one set of quotas shared by every
//! process that connects to the same Redis under the same name.
//!
//! # How it works
//!
//! Each quota is a sorted set in Redis, the sliding log: one member per grant,
//! scored by its instant on the Redis server's clock (`TIME`; the clients'
//! clocks never enter). One Lua script ([`limiter.lua`], loaded once and run
//! by its SHA1, loaded again if the server has lost it) does an acquire in one
//! round trip: it drops what left the windows, finds the earliest instant at
//! which the cost fits every quota and comes after every reservation already
//! made (so grants are FIFO by arrival at Redis), and records the grant there,
//! possibly in the future. The caller then sleeps until its slot and confirms
//! it (a second round trip, only for acquires that waited). A dropped acquire
//! removes its reservation.
//!
//! # The contract across processes
//!
//! The in-process [`RateLimiter`]'s contract holds, with these differences,
//! all of which come from a waiter sleeping until a slot fixed in advance:
//!
//! - **FIFO** is by arrival at Redis, over every process.
//! - **A pause** (one process heard 429) holds every process: reservations
//!   already made are moved past it, in their order, ahead of later
//!   arrivals; a waiter learns its new slot when it confirms the old one. A
//!   grant whose slot came before the pause was set stands.
//! - **A new quota** applies to the reservations already made at once: after
//!   a downgrade they are moved later (in order) so the window holds for the
//!   new quota, and a queued cost above the new `max` fails. Reservations are
//!   never moved earlier, so an upgrade benefits acquires made after it.
//!   Waiters in the process that changed the quotas, or that learns of the
//!   change from any answer, confirm at once.
//! - **A cancelled reservation** frees its capacity for acquires made after
//!   it; waiters already scheduled keep their slots.
//! - **A deadline** is checked when the slot is reserved and again whenever
//!   the waiter learns that its slot moved: at once in the process that set
//!   the pause or the quotas (or that hears of new quotas in any answer from
//!   Redis), otherwise when it confirms its old slot.
//! - **Time is Redis's.** Slots are instants of the Redis server's clock, so
//!   this limiter runs in real time even under tokio's paused clock (where a
//!   wait becomes a series of confirmations until Redis's time comes).
//!
//! Keys are `{prefix:name}:meta` (a hash: the quotas, the pause, counts) and
//! `{prefix:name}:log:<i>`; the hash tag keeps them in one Redis Cluster slot.
//! All of them expire together, between one and two seconds after the longest
//! window has passed over the last reservation (and the pause), so an idle
//! limiter vanishes; the expiry is moved about once a second, not on every
//! call.
//!
//! A quota with `max` above 1,024 coalesces past grants, bucket by bucket of
//! `window / 1000`, into one entry dated at the latest grant of the bucket,
//! as the in-process limiter does: Redis memory stays within about 1,000
//! entries per quota plus the bucket still filling and the reservations
//! ahead, a grant is only ever counted later than it was made (never more
//! admitted), and at most 0.1% of the quota's capacity is given up.
//!
//! An uncontended acquire is one round trip and four commands inside Redis
//! (`TIME`, `HMGET`, `ZADD`, `HSET`). Redis 5 or later is needed.
//!
//! # When Redis does not answer
//!
//! Every call to Redis is bounded by [`timeout`](RedisRateLimiterBuilder::timeout).
//! When one fails, the limiter follows its [`FailurePolicy`] for the
//! [`retry_interval`](RedisRateLimiterBuilder::retry_interval) that follows,
//! without trying Redis, and then tries Redis again:
//!
//! - [`FailurePolicy::FailClosed`] (the default): acquires fail with
//!   [`AcquireError::Unavailable`]. Nothing is granted that Redis did not
//!   record.
//! - [`FailurePolicy::FallBackLocal`]: acquires go to an in-process
//!   [`RateLimiter`] with every quota's `max` scaled by `share` (give each of N
//!   processes `1 / N`). Grants made locally are not in Redis: when Redis
//!   returns, its windows do not count them.
//!
//! [`limiter.lua`]: https://docs.rs/crate/paceline/latest/source/src/redis/limiter.lua

mod keys;
mod script;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::Either;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, warn};

use self::keys::Keys;
use self::script::{Decision, RawReply, RawStats, Reply, Script, StatsReply, server_time};
use crate::error::{AcquireError, ConfigError, TryAcquireError};
use crate::limit::Limiter;
use crate::limiter::{Grant, RateLimiter};
use crate::quota::{Cost, Quota};
use crate::stats::{QuotaStats, Stats};

/// Why a [`RedisRateLimiter`] could not be made or reconfigured.
///
/// # Examples
///
/// ```
/// use paceline::{Quota, redis::{RedisLimiterError, RedisRateLimiter}};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), paceline::ConfigError> {
/// let err = RedisRateLimiter::builder("redis://127.0.0.1:6379", "flash")
///     .prefix("")
///     .quota(Quota::per_minute(15)?)
///     .connect()
///     .await
///     .unwrap_err();
/// assert_eq!(err, RedisLimiterError::EmptyKeyPart { part: "prefix" });
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RedisLimiterError {
    /// A quota cannot work.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The Redis URL could not be read.
    #[error("invalid Redis URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The key prefix or the limiter's name was empty.
    #[error("the limiter's key {part} must not be empty")]
    EmptyKeyPart {
        /// `"prefix"` or `"name"`.
        part: &'static str,
    },
    /// The key prefix or the limiter's name holds a brace (which would break
    /// the hash tag) or a control character.
    #[error("the limiter's key {part} {value:?} must not contain braces or control characters")]
    InvalidKeyPart {
        /// `"prefix"` or `"name"`.
        part: &'static str,
        /// The value given.
        value: String,
    },
    /// A share for the local fallback outside `(0, 1]`.
    #[error("the fallback share must be above 0 and at most 1, not {0}")]
    InvalidShare(f64),
    /// One of the limiter's keys holds a value of another type.
    #[error("the Redis key {key:?} holds a {found}, not a {expected}")]
    WrongType {
        /// The key.
        key: String,
        /// The type found there.
        found: String,
        /// The type the limiter keeps there.
        expected: &'static str,
    },
    /// Redis could not be reached, or answered with an error.
    #[error("Redis: {0}")]
    Redis(String),
}

/// What a [`RedisRateLimiter`] does while Redis does not answer.
///
/// # Examples
///
/// ```
/// use paceline::redis::FailurePolicy;
///
/// // Four worker processes: each may use a quarter of the quota on its own.
/// let policy = FailurePolicy::FallBackLocal { share: 0.25 };
/// # let _ = policy;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Acquires fail with [`AcquireError::Unavailable`] (within the
    /// limiter's timeout); nothing is granted that Redis did not record.
    #[default]
    FailClosed,
    /// Acquires go to an in-process limiter whose quotas are `share` of the
    /// shared ones (at least 1 each).
    FallBackLocal {
        /// The part of each quota this process may use alone, in `(0, 1]`.
        share: f64,
    },
}

/// Builds a [`RedisRateLimiter`]: see [`RedisRateLimiter::builder`].
///
/// # Examples
///
/// ```no_run
/// use paceline::{Quota, redis::{FailurePolicy, RedisRateLimiter}};
/// use std::time::Duration;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = RedisRateLimiter::builder("redis://127.0.0.1:6379", "gemini-flash")
///     .quota(Quota::per_minute(15)?)
///     .quota(Quota::per_day(1_500)?)
///     .timeout(Duration::from_millis(500))
///     .on_failure(FailurePolicy::FallBackLocal { share: 0.25 })
///     .connect()
///     .await?;
/// # let _ = limiter;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisRateLimiterBuilder {
    url: String,
    name: String,
    prefix: String,
    quotas: Vec<Quota>,
    timeout: Duration,
    retry_interval: Duration,
    policy: FailurePolicy,
}

impl RedisRateLimiterBuilder {
    /// Adds a quota; a grant must fit all of them.
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quotas.push(quota);
        self
    }

    /// The first part of every key (default `paceline`); limiters of several
    /// applications sharing one Redis keep apart by it.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long one call to Redis may take (default 1 s); past it, the call
    /// has failed and the [`FailurePolicy`] applies.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long after a failed call the limiter follows its
    /// [`FailurePolicy`] without trying Redis (default 1 s).
    pub fn retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval;
        self
    }

    /// What to do while Redis does not answer (default: fail closed).
    pub fn on_failure(mut self, policy: FailurePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Connects, loads the script, checks that the limiter's keys hold what
    /// it keeps there, and stores this limiter's quotas in Redis, where they
    /// apply to every process sharing the name (the last to connect or
    /// reconfigure sets them).
    ///
    /// # Errors
    ///
    /// A bad quota, URL, prefix, name or share; a key of another type; Redis
    /// not answering within the timeout.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future leaves nothing behind but, perhaps, the stored
    /// quotas.
    pub async fn connect(self) -> Result<RedisRateLimiter, RedisLimiterError> {
        if self.quotas.is_empty() {
            return Err(ConfigError::NoQuota.into());
        }
        for quota in &self.quotas {
            keys::check_quota(quota)?;
        }
        let keys = Keys::new(&self.prefix, &self.name, self.quotas.len())?;
        let fallback = match self.policy {
            FailurePolicy::FailClosed => None,
            FailurePolicy::FallBackLocal { share } => {
                if !(share > 0.0 && share <= 1.0) {
                    return Err(RedisLimiterError::InvalidShare(share));
                }
                Some(local_share(&self.quotas, share)?)
            }
        };
        let client = ::redis::Client::open(self.url.as_str()).map_err(|err| {
            RedisLimiterError::InvalidUrl {
                url: self.url.clone(),
                reason: err.to_string(),
            }
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(self.timeout);
        let timeout = self.timeout;
        let (mut conn, script) = bounded(timeout, async move {
            let mut conn = client.get_connection_manager_with_config(config).await?;
            let script = Script::load(&mut conn).await?;
            Ok((conn, script))
        })
        .await
        .map_err(RedisLimiterError::Redis)?;
        for (i, key) in keys.all().enumerate() {
            let expected = if i == 0 { "hash" } else { "zset" };
            let found: String = bounded(
                timeout,
                ::redis::cmd("TYPE").arg(key).query_async(&mut conn),
            )
            .await
            .map_err(RedisLimiterError::Redis)?;
            if found != "none" && found != expected {
                return Err(RedisLimiterError::WrongType {
                    key: key.to_owned(),
                    found,
                    expected,
                });
            }
        }
        let encoded = keys::encode(&self.quotas);
        let (closed, _) = watch::channel(false);
        let limiter = RedisRateLimiter {
            inner: Arc::new(Inner {
                conn,
                script,
                keys,
                view: Mutex::new(View {
                    quotas: self.quotas,
                    encoded,
                    logged: Vec::new(),
                    paused_until: None,
                }),
                timeout,
                retry_interval: self.retry_interval,
                fallback,
                down_until: Mutex::new(None),
                closed,
                changed: watch::channel(0).0,
                tag: format!("{:x}-{:08x}", std::process::id(), fastrand::u32(..)),
                next_id: AtomicU64::new(0),
                waiting: AtomicUsize::new(0),
                granted: AtomicU64::new(0),
                waited: AtomicU64::new(0),
                wait_nanos: AtomicU64::new(0),
            }),
        };
        let reply = limiter
            .call(&["configure", &limiter.encoded()])
            .await
            .map_err(RedisLimiterError::Redis)?;
        limiter.learn(&reply);
        Ok(limiter)
    }
}

/// The quotas of the local fallback: `share` of each, at least 1.
fn local_share(quotas: &[Quota], share: f64) -> Result<RateLimiter, ConfigError> {
    let mut builder = RateLimiter::builder();
    for quota in quotas {
        let max = ((quota.max() as f64 * share).floor() as u64).max(1);
        builder = builder.quota(Quota::new(max, quota.window())?.counting(quota.unit()));
    }
    builder.build()
}

/// Runs a Redis call within `limit`, with its error as text.
async fn bounded<T>(
    limit: Duration,
    call: impl Future<Output = ::redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}

/// What this process knows of the shared limiter.
#[derive(Debug)]
struct View {
    quotas: Vec<Quota>,
    encoded: String,
    /// Cost logged per quota, as of the last reply.
    logged: Vec<u64>,
    paused_until: Option<Instant>,
}

struct Inner {
    conn: ConnectionManager,
    script: Script,
    keys: Keys,
    view: Mutex<View>,
    timeout: Duration,
    retry_interval: Duration,
    fallback: Option<RateLimiter>,
    down_until: Mutex<Option<Instant>>,
    closed: watch::Sender<bool>,
    /// Counts the changes of quotas and the pauses this process has seen,
    /// so that its waiters confirm their reservations at once.
    changed: watch::Sender<u64>,
    /// Makes this process's reservation ids unique among processes.
    tag: String,
    next_id: AtomicU64,
    waiting: AtomicUsize,
    granted: AtomicU64,
    waited: AtomicU64,
    wait_nanos: AtomicU64,
}

/// A strict sliding-window limiter whose log lives in Redis, so that every
/// process connected under the same name shares its quotas: the same contract
/// as [`RateLimiter`] across processes (see the [module docs](self)).
///
/// Clones are the same limiter, sharing one connection (a
/// [`ConnectionManager`], which reconnects after a failure).
///
/// # Examples
///
/// ```no_run
/// use paceline::{Quota, redis::RedisRateLimiter};
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Every worker process runs this: together they make 15 calls a minute.
/// let limiter = RedisRateLimiter::builder("redis://127.0.0.1:6379", "gemini-flash")
///     .quota(Quota::per_minute(15)?)
///     .connect()
///     .await?;
/// let grant = limiter.acquire().await?;
/// println!("granted at {:?} (Redis time)", grant.recorded_at());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisRateLimiter {
    inner: Arc<Inner>,
}

impl fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("keys", &self.inner.keys)
            .field("quotas", &self.inner.view.lock().quotas)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

/// A reservation made in Redis for an acquire still waiting for its slot;
/// dropped while armed, it is removed from Redis in the background.
struct Reservation {
    limiter: RedisRateLimiter,
    id: String,
    cost: Cost,
    armed: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.limiter.inner.waiting.fetch_sub(1, Ordering::Relaxed);
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let limiter = self.limiter.clone();
        let id = std::mem::take(&mut self.id);
        let cost = self.cost;
        runtime.spawn(async move {
            let (requests, tokens) = (cost.requests.to_string(), cost.tokens.to_string());
            let encoded = limiter.encoded();
            match limiter
                .call_raw(&["cancel", &encoded, &requests, &tokens, &id])
                .await
            {
                Ok(raw) => debug!(id, removed = Reply::removed(&raw), "reservation cancelled"),
                Err(err) => debug!(id, %err, "reservation not cancelled"),
            }
        });
    }
}

impl RedisRateLimiter {
    /// Starts building a limiter on the Redis at `url` (`redis://host:port/db`),
    /// shared by every process that uses the same `name` (and prefix).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use paceline::{Quota, redis::RedisRateLimiter};
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let limiter = RedisRateLimiter::builder("redis://127.0.0.1:6379", "pro")
    ///     .quota(Quota::per_minute(5)?)
    ///     .connect()
    ///     .await?;
    /// # let _ = limiter;
    /// # Ok(()) }
    /// ```
    pub fn builder(url: impl Into<String>, name: impl Into<String>) -> RedisRateLimiterBuilder {
        RedisRateLimiterBuilder {
            url: url.into(),
            name: name.into(),
            prefix: "paceline".to_owned(),
            quotas: Vec::new(),
            timeout: Duration::from_secs(1),
            retry_interval: Duration::from_secs(1),
            policy: FailurePolicy::FailClosed,
        }
    }

    /// Waits for one request, in turn (FIFO by arrival at Redis).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped while waiting for its slot, or while its call to
    /// Redis is on the way, the acquire removes its reservation from Redis (in
    /// a background task on the current runtime), so its capacity is not lost
    /// to acquires made after that. A grant Redis made at once for a call
    /// whose answer was lost is counted and never used.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use paceline::{Quota, redis::RedisRateLimiter};
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let limiter = RedisRateLimiter::builder("redis://127.0.0.1:6379", "pro").quota(Quota::per_minute(5)?).connect().await?;
    /// limiter.acquire().await?;
    /// # Ok(()) }
    /// ```
    pub async fn acquire(&self) -> Result<Grant, AcquireError> {
        self.acquire_inner(Cost::requests(1), None).await
    }

    /// Waits for `n` requests at once.
    ///
    /// # Cancel safety
    ///
    /// As [`acquire`](RedisRateLimiter::acquire).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use paceline::{Quota, redis::RedisRateLimiter};
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let limiter = RedisRateLimiter::builder("redis://127.0.0.1:6379", "pro").quota(Quota::per_minute(5)?).connect().await?;
    /// limiter.acquire_many(3).await?;
    /// # Ok(()) }
    /// ```
    pub async fn acquire_many(&self, n: u64) -> Result<Grant, AcquireError> {
        self.acquire_inner(Cost::requests(n), None).await
    }

    /// Waits for a cost in requests and tokens, charged to every quota at once.
    ///
    /// # Cancel safety
    ///
    /// As [`acquire`](RedisRateLimiter::acquire).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use paceline::{Cost, Quota, Unit, redis::RedisRateLimiter};
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let limiter = RedisRateLimiter::builder("redis://127.0.0.1:6379", "flash")
    ///     .quota(Quota::per_minute(15)?)
    ///     .quota(Quota::per_minute(1_000_000)?.counting(Unit::Tokens))
    ///     .connect()
    ///     .await?;
    /// limiter.acquire_cost(Cost::tokens(812)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn acquire_cost(&self, cost: Cost) -> Result<Grant, AcquireError> {
        self.acquire_inner(cost, None).await
    }

    /// Waits for one request unless the grant cannot come by `deadline`, in
    /// which case it fails at once with [`AcquireError::DeadlineExceeded`]
    /// (Redis computes the slot before reserving it).
    ///
    /// # Cancel safety
    ///
    /// As [`acquire`](RedisRateLimiter::acquire).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use paceline::{Quota, redis::RedisRateLimiter};
    /// # use std::time::Duration;
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let limiter = RedisRateLimiter::builder("redis://127.0.0.1:6379", "pro").quota(Quota::per_day(100)?).connect().await?;
    /// let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    /// match limiter.acquire_before(deadline).await {
    ///     Ok(_) => { /* call */ }
    ///     Err(err) => eprintln!("not today: {err}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn acquire_before(&self, deadline: Instant) -> Result<Grant, AcquireError> {
        self.acquire_inner(Cost::requests(1), Some(deadline)).await
    }

    /// [`acquire_cost`](RedisRateLimiter::acquire_cost) with a deadline, as
    /// [`acquire_before`](RedisRateLimiter::acquire_before).
    ///
    /// # Cancel safety
    ///
    /// As [`acquire`](RedisRateLimiter::acquire).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use paceline::{Cost, Quota, redis::RedisRateLimiter};
    /// # use std::time::Duration;
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let limiter = RedisRateLimiter::builder("redis://127.0.0.1:6379", "pro").quota(Quota::per_day(100)?).connect().await?;
    /// let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    /// limiter.acquire_cost_before(Cost::requests(2), deadline).await?;
    /// # Ok(()) }
    /// ```
    pub async fn acquire_cost_before(
        &self,
        cost: Cost,
        deadline: Instant,
    ) -> Result<Grant, AcquireError> {
        self.acquire_inner(cost, Some(deadline)).await
    }

    /// Takes one request now, or fails saying when to retry. One round trip;
    /// fails while anyone's reservation is ahead (no barging).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped before Redis answers, a grant Redis made is lost
    /// (counted, never used).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use paceline::{Quota, redis::RedisRateLimiter};
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let limiter = RedisRateLimiter::builder("redis://127.0.0.1:6379", "pro").quota(Quota::per_minute(5)?).connect().await?;
    /// if let Err(err) = limiter.try_acquire().await {
    ///     println!("retry after {:?}", err.retry_after());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn try_acquire(&self) -> Result<Grant, TryAcquireError> {
        self.try_acquire_inner(Cost::requests(1)).await
    }

    /// Takes `n` requests now, or fails saying when to retry.
    ///
    /// # Cancel safety
    ///
    /// As [`try_acquire`](RedisRateLimiter::try_acquire).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use paceline::{Quota, redis::RedisRateLimiter};
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let limiter = RedisRateLimiter::builder("redis://127.0.0.1:6379", "pro").quota(Quota::per_minute(5)?).connect().await?;
    /// let _ = limiter.try_acquire_many(2).await;
    /// # Ok(()) }
    /// ```
    pub async fn try_acquire_many(&self, n: u64) -> Result<Grant, TryAcquireError> {
        self.try_acquire_inner(Cost::requests(n)).await
    }

    /// Takes a cost now, or fails saying when to retry.
    ///
    /// # Cancel safety
    ///
    /// As [`try_acquire`](RedisRateLimiter::try_acquire).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use paceline::{Cost, Quota, redis::RedisRateLimiter};
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let limiter = RedisRateLimiter::builder("redis://127.0.0.1:6379", "pro").quota(Quota::per_minute(5)?).connect().await?;
    /// let _ = limiter.try_acquire_cost(Cost::requests(1)).await;
    /// # Ok(()) }
    /// ```
    pub async fn try_acquire_cost(&self, cost: Cost) -> Result<Grant, TryAcquireError> {
        self.try_acquire_inner(cost).await
    }

    /// Grants nothing, in any process, for `duration` from now (Redis's now):
    /// one process's 429 pauses them all. A longer pause already set stands.
    /// Reservations already made whose slot falls in the pause are moved past
    /// it when their slot comes. The local fallback (if any) is paused too.
    ///
    /// # Errors
    ///
    /// [`AcquireError::Unavailable`] if Redis did not answer.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; dropped, the pause may or may not have been set.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use paceline::{Quota, redis::RedisRateLimiter};
    /// # use std::time::Duration;
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let limiter = RedisRateLimiter::builder("redis://127.0.0.1:6379", "pro").quota(Quota::per_minute(5)?).connect().await?;
    /// limiter.pause_for(Duration::from_secs(20)).await?; // the server said "retry in 20 s"
    /// # Ok(()) }
    /// ```
    pub async fn pause_for(&self, duration: Duration) -> Result<(), AcquireError> {
        if let Some(local) = &self.inner.fallback {
            local.pause_for(duration);
        }
        let micros = u64::try_from(duration.as_micros())
            .unwrap_or(u64::MAX)
            .min(1 << 52);
        let reply = self
            .call(&["pause", &self.encoded(), &micros.to_string()])
            .await
            .map_err(AcquireError::Unavailable)?;
        self.learn(&reply);
        self.inner.view.lock().paused_until = Some(Instant::now() + reply.wait);
        self.inner
            .changed
            .send_modify(|generation| *generation += 1);
        Ok(())
    }

    /// Grants nothing before `until` (converted to a duration from now).
    ///
    /// # Errors
    ///
    /// [`AcquireError::Unavailable`] if Redis did not answer.
    ///
    /// # Cancel safety
    ///
    /// As [`pause_for`](RedisRateLimiter::pause_for).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use paceline::{Quota, redis::RedisRateLimiter};
    /// # use std::time::Duration;
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let limiter = RedisRateLimiter::builder("redis://127.0.0.1:6379", "pro").quota(Quota::per_minute(5)?).connect().await?;
    /// limiter.pause_until(tokio::time::Instant::now() + Duration::from_secs(5)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn pause_until(&self, until: Instant) -> Result<(), AcquireError> {
        self.pause_for(until.saturating_duration_since(Instant::now()))
            .await
    }

    /// Ends a pause, for every process.
    ///
    /// # Errors
    ///
    /// [`AcquireError::Unavailable`] if Redis did not answer.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; dropped, the pause may or may not have been ended.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use paceline::{Quota, redis::RedisRateLimiter};
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let limiter = RedisRateLimiter::builder("redis://127.0.0.1:6379", "pro").quota(Quota::per_minute(5)?).connect().await?;
    /// limiter.resume().await?;
    /// # Ok(()) }
    /// ```
    pub async fn resume(&self) -> Result<(), AcquireError> {
        if let Some(local) = &self.inner.fallback {
            local.resume();
        }
        let reply = self
            .call(&["resume", &self.encoded()])
            .await
            .map_err(AcquireError::Unavailable)?;
        self.learn(&reply);
        self.inner.view.lock().paused_until = None;
        Ok(())
    }

    /// Replaces every quota, for every process sharing the limiter (a tier
    /// upgrade). Grants already logged count against the new quotas;
    /// reservations already made keep their slots.
    ///
    /// # Errors
    ///
    /// A bad quota, a different number of quotas, a quota whose unit
    /// changes, or Redis not answering.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; dropped, the change may or may not have been made.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use paceline::{Quota, redis::RedisRateLimiter};
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let limiter = RedisRateLimiter::builder("redis://127.0.0.1:6379", "pro").quota(Quota::per_minute(5)?).connect().await?;
    /// limiter.set_quotas([Quota::per_minute(150)?]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_quotas(
        &self,
        quotas: impl IntoIterator<Item = Quota>,
    ) -> Result<(), RedisLimiterError> {
        let quotas: Vec<Quota> = quotas.into_iter().collect();
        {
            let view = self.inner.view.lock();
            if quotas.len() != view.quotas.len() {
                return Err(ConfigError::QuotaCount {
                    expected: view.quotas.len(),
                    given: quotas.len(),
                }
                .into());
            }
            for (index, (old, new)) in view.quotas.iter().zip(&quotas).enumerate() {
                keys::check_quota(new)?;
                if old.unit() != new.unit() {
                    return Err(ConfigError::UnitChanged {
                        index,
                        from: old.unit(),
                        to: new.unit(),
                    }
                    .into());
                }
            }
        }
        let encoded = keys::encode(&quotas);
        let reply = self
            .call(&["configure", &encoded])
            .await
            .map_err(RedisLimiterError::Redis)?;
        if let Some(local) = &self.inner.fallback {
            let share = {
                let view = self.inner.view.lock();
                view.quotas
                    .first()
                    .zip(local.quotas().first())
                    .map_or(1.0, |(shared, local)| {
                        local.max() as f64 / shared.max() as f64
                    })
            };
            let scaled = local_share(&quotas, share)?;
            local.set_quotas(scaled.quotas())?;
        }
        {
            let mut view = self.inner.view.lock();
            view.quotas = quotas;
            view.encoded = encoded;
        }
        self.learn(&reply);
        self.inner
            .changed
            .send_modify(|generation| *generation += 1);
        Ok(())
    }

    /// Replaces one quota, as [`set_quotas`](RedisRateLimiter::set_quotas).
    ///
    /// # Errors
    ///
    /// As [`set_quotas`](RedisRateLimiter::set_quotas), and
    /// [`ConfigError::NoSuchQuota`] for a bad index.
    ///
    /// # Cancel safety
    ///
    /// As [`set_quotas`](RedisRateLimiter::set_quotas).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use paceline::{Quota, redis::RedisRateLimiter};
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let limiter = RedisRateLimiter::builder("redis://127.0.0.1:6379", "pro").quota(Quota::per_minute(5)?).connect().await?;
    /// limiter.set_quota(0, Quota::per_minute(150)?).await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_quota(&self, index: usize, quota: Quota) -> Result<(), RedisLimiterError> {
        let mut quotas = self.quotas();
        let count = quotas.len();
        let slot = quotas
            .get_mut(index)
            .ok_or(ConfigError::NoSuchQuota { index, count })?;
        *slot = quota;
        self.set_quotas(quotas).await
    }

    /// The quotas, as this process last learned them from Redis.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use paceline::{Quota, redis::RedisRateLimiter};
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let limiter = RedisRateLimiter::builder("redis://127.0.0.1:6379", "pro").quota(Quota::per_minute(5)?).connect().await?;
    /// assert_eq!(limiter.quotas()[0].max(), 5);
    /// # Ok(()) }
    /// ```
    pub fn quotas(&self) -> Vec<Quota> {
        self.inner.view.lock().quotas.clone()
    }

    /// The shared limiter's figures, read from Redis now: in-window cost per
    /// quota, reservations waiting (over all processes), the pause; the totals
    /// granted and waited are this process's.
    ///
    /// # Errors
    ///
    /// [`AcquireError::Unavailable`] if Redis did not answer.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use paceline::{Quota, redis::RedisRateLimiter};
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let limiter = RedisRateLimiter::builder("redis://127.0.0.1:6379", "pro").quota(Quota::per_minute(5)?).connect().await?;
    /// let stats = limiter.stats().await?;
    /// println!("{} of {} used", stats.in_window, stats.max);
    /// # Ok(()) }
    /// ```
    pub async fn stats(&self) -> Result<Stats, AcquireError> {
        let encoded = self.encoded();
        let raw: RawStats = self
            .timed(self.inner.script.run(
                &mut self.inner.conn.clone(),
                &self.inner.keys,
                &["stats", &encoded],
            ))
            .await
            .map_err(AcquireError::Unavailable)?;
        let reply = StatsReply::parse(raw)
            .ok_or_else(|| AcquireError::Unavailable("malformed stats reply".to_owned()))?;
        let quotas = keys::decode(&reply.quotas).unwrap_or_else(|| self.quotas());
        let per_quota: Vec<QuotaStats> = quotas
            .iter()
            .zip(&reply.per_quota)
            .map(|(quota, &(in_window, _, _))| quota_stats(*quota, in_window))
            .collect();
        let queued = reply.per_quota.iter().map(|q| q.2).max().unwrap_or(0);
        let paused_until = (!reply.pause_left.is_zero()).then(|| Instant::now() + reply.pause_left);
        let mut stats = self.stats_from(per_quota, paused_until);
        stats.queued = usize::try_from(queued).unwrap_or(usize::MAX);
        Ok(stats)
    }

    /// The figures as of the last answer from Redis, without a round trip:
    /// "in window" counts the cost logged then, reservations ahead included;
    /// "queued" counts this process's acquires waiting for their slot.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use paceline::{Quota, redis::RedisRateLimiter};
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let limiter = RedisRateLimiter::builder("redis://127.0.0.1:6379", "pro").quota(Quota::per_minute(5)?).connect().await?;
    /// limiter.acquire().await?;
    /// assert!(limiter.snapshot().in_window >= 1);
    /// # Ok(()) }
    /// ```
    pub fn snapshot(&self) -> Stats {
        let (per_quota, paused_until) = {
            let view = self.inner.view.lock();
            let per_quota = view
                .quotas
                .iter()
                .enumerate()
                .map(|(i, quota)| quota_stats(*quota, view.logged.get(i).copied().unwrap_or(0)))
                .collect();
            (
                per_quota,
                view.paused_until.filter(|until| *until > Instant::now()),
            )
        };
        let mut stats = self.stats_from(per_quota, paused_until);
        stats.queued = self.inner.waiting.load(Ordering::Relaxed);
        stats
    }

    /// Closes this process's handle (and its clones): acquires waiting fail
    /// with [`AcquireError::Closed`] and give back their reservations; new
    /// ones fail at once. Other processes and the state in Redis are not
    /// touched.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use paceline::{AcquireError, Quota, redis::RedisRateLimiter};
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let limiter = RedisRateLimiter::builder("redis://127.0.0.1:6379", "pro").quota(Quota::per_minute(5)?).connect().await?;
    /// limiter.close();
    /// assert_eq!(limiter.acquire().await.unwrap_err(), AcquireError::Closed);
    /// # Ok(()) }
    /// ```
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
        if let Some(local) = &self.inner.fallback {
            local.close();
        }
    }

    /// Whether [`close`](RedisRateLimiter::close) was called.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use paceline::{Quota, redis::RedisRateLimiter};
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let limiter = RedisRateLimiter::builder("redis://127.0.0.1:6379", "pro").quota(Quota::per_minute(5)?).connect().await?;
    /// assert!(!limiter.is_closed());
    /// # Ok(()) }
    /// ```
    pub fn is_closed(&self) -> bool {
        *self.inner.closed.borrow()
    }

    fn stats_from(&self, per_quota: Vec<QuotaStats>, paused_until: Option<Instant>) -> Stats {
        let first = per_quota[0].clone();
        Stats {
            in_window: first.in_window,
            max: first.quota.max(),
            queued: 0,
            available: first.available,
            utilization_percent: first.utilization_percent,
            granted: self.inner.granted.load(Ordering::Relaxed),
            waited: self.inner.waited.load(Ordering::Relaxed),
            wait_time: Duration::from_nanos(self.inner.wait_nanos.load(Ordering::Relaxed)),
            paused_until,
            closed: self.is_closed(),
            quotas: per_quota,
        }
    }

    fn encoded(&self) -> String {
        self.inner.view.lock().encoded.clone()
    }

    /// One operation of the script, bounded by the timeout, with its error
    /// as text.
    async fn call_raw(&self, args: &[&str]) -> Result<RawReply, String> {
        let mut conn = self.inner.conn.clone();
        self.timed(self.inner.script.run(&mut conn, &self.inner.keys, args))
            .await
    }

    async fn call(&self, args: &[&str]) -> Result<Reply, String> {
        let raw = self.call_raw(args).await?;
        Reply::parse(raw).ok_or_else(|| "malformed reply from the limiter's script".to_owned())
    }

    async fn timed<T>(
        &self,
        call: impl Future<Output = ::redis::RedisResult<T>>,
    ) -> Result<T, String> {
        let result = bounded(self.inner.timeout, call).await;
        if let Err(err) = &result {
            warn!(keys = ?self.inner.keys.meta, %err, "Redis call failed");
            *self.inner.down_until.lock() = Some(Instant::now() + self.inner.retry_interval);
        }
        result
    }

    /// Whether a recent failure says not to try Redis yet.
    fn is_down(&self) -> bool {
        let mut down = self.inner.down_until.lock();
        match *down {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                *down = None;
                false
            }
            None => false,
        }
    }

    /// Takes in what a reply says of the shared state.
    fn learn(&self, reply: &Reply) {
        let mut view = self.inner.view.lock();
        if let Some(stored) = &reply.stored_quotas {
            if let Some(quotas) = keys::decode(stored).filter(|q| q.len() == view.quotas.len()) {
                debug!(quotas = stored, "quotas changed in Redis");
                view.quotas = quotas;
                view.encoded.clone_from(stored);
                self.inner
                    .changed
                    .send_modify(|generation| *generation += 1);
            }
        }
        view.logged.clone_from(&reply.logged);
    }

    fn cost_exceeds_at(&self, cost: Cost, index: usize) -> AcquireError {
        let view = self.inner.view.lock();
        match view.quotas.get(index) {
            Some(quota) => AcquireError::cost_exceeds(cost, quota),
            None => AcquireError::Unavailable("the shared quotas changed".to_owned()),
        }
    }

    fn granted(&self, cost: Cost, started: Instant, slot: u64) -> Grant {
        let now = Instant::now();
        let waited = now.saturating_duration_since(started);
        self.inner.granted.fetch_add(1, Ordering::Relaxed);
        if !waited.is_zero() {
            self.inner.waited.fetch_add(1, Ordering::Relaxed);
            let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
            self.inner.wait_nanos.fetch_add(nanos, Ordering::Relaxed);
        }
        Grant::new(cost, now, waited).recorded(server_time(slot))
    }

    async fn acquire_inner(
        &self,
        cost: Cost,
        deadline: Option<Instant>,
    ) -> Result<Grant, AcquireError> {
        if self.is_closed() {
            return Err(AcquireError::Closed);
        }
        let started = Instant::now();
        if self.is_down() {
            return self
                .unavailable(cost, deadline, "Redis failed recently".to_owned())
                .await;
        }
        let id = format!(
            "{}-{}",
            self.inner.tag,
            self.inner.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let (requests, tokens) = (cost.requests.to_string(), cost.tokens.to_string());
        let budget = |deadline: Option<Instant>| match deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                u64::try_from(left.as_micros())
                    .unwrap_or(u64::MAX)
                    .min(1 << 52)
                    .to_string()
            }
            None => "-1".to_owned(),
        };
        // Armed before the call: if the answer is lost (a timeout, a drop)
        // after Redis reserved a slot, the reservation is still removed.
        self.inner.waiting.fetch_add(1, Ordering::Relaxed);
        let mut reservation = Reservation {
            limiter: self.clone(),
            id,
            cost,
            armed: true,
        };
        let mut closed = self.inner.closed.subscribe();
        // Marked seen before each call, so that a change heard while a call
        // is on its way wakes the wait that follows.
        let mut changed = self.inner.changed.subscribe();
        let encoded = self.encoded();
        let mut reply = match self
            .call(&[
                "acquire",
                &encoded,
                &requests,
                &tokens,
                &reservation.id,
                &budget(deadline),
            ])
            .await
        {
            Ok(reply) => reply,
            Err(err) => {
                drop(reservation);
                return self.unavailable(cost, deadline, err).await;
            }
        };
        loop {
            self.learn(&reply);
            match reply.decision {
                Decision::Granted => {
                    reservation.armed = false;
                    return Ok(self.granted(cost, started, reply.slot));
                }
                Decision::TooLate(wait) => {
                    reservation.armed = false;
                    return Err(AcquireError::DeadlineExceeded {
                        earliest: Some(Instant::now() + wait),
                    });
                }
                Decision::CostExceeds(index) => {
                    reservation.armed = false;
                    return Err(self.cost_exceeds_at(cost, index));
                }
                Decision::Reserved(wait) => {
                    reservation.armed = true;
                    // Wait for the slot; confirm sooner when the quotas
                    // change or a pause is set (a cost may no longer fit, a
                    // slot may move past the deadline).
                    let was_closed = {
                        let sleep = std::pin::pin!(tokio::time::sleep(wait));
                        let close = std::pin::pin!(closed.wait_for(|closed| *closed));
                        let change = std::pin::pin!(changed.changed());
                        let woken =
                            futures::future::select(sleep, futures::future::select(close, change));
                        matches!(woken.await, Either::Right((Either::Left(_), _)))
                    };
                    if was_closed {
                        return Err(AcquireError::Closed);
                    }
                    let slot = reply.slot.to_string();
                    let encoded = self.encoded();
                    changed.borrow_and_update();
                    let args = [
                        "confirm",
                        &encoded,
                        &requests,
                        &tokens,
                        &reservation.id,
                        &budget(deadline),
                        &slot,
                        &reply.epoch,
                    ];
                    reply = match self.call(&args).await {
                        Ok(reply) => reply,
                        Err(err) => {
                            drop(reservation);
                            return self.unavailable(cost, deadline, err).await;
                        }
                    };
                }
            }
        }
    }

    async fn unavailable(
        &self,
        cost: Cost,
        deadline: Option<Instant>,
        reason: String,
    ) -> Result<Grant, AcquireError> {
        match &self.inner.fallback {
            None => Err(AcquireError::Unavailable(reason)),
            Some(local) => match deadline {
                Some(deadline) => local.acquire_cost_before(cost, deadline).await,
                None => local.acquire_cost(cost).await,
            },
        }
    }

    async fn try_acquire_inner(&self, cost: Cost) -> Result<Grant, TryAcquireError> {
        if self.is_closed() {
            return Err(TryAcquireError::Closed);
        }
        let fallback = |reason: String| match &self.inner.fallback {
            None => Err(TryAcquireError::Unavailable(reason)),
            Some(local) => local.try_acquire_cost(cost),
        };
        if self.is_down() {
            return fallback("Redis failed recently".to_owned());
        }
        let started = Instant::now();
        let id = format!(
            "{}-{}",
            self.inner.tag,
            self.inner.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let encoded = self.encoded();
        let args = [
            "acquire",
            &encoded,
            &cost.requests.to_string(),
            &cost.tokens.to_string(),
            &id,
            "0",
        ];
        let reply = match self.call(&args).await {
            Ok(reply) => reply,
            Err(err) => return fallback(err),
        };
        self.learn(&reply);
        match reply.decision {
            Decision::Granted => Ok(self.granted(cost, started, reply.slot)),
            Decision::TooLate(retry_after) | Decision::Reserved(retry_after) => {
                Err(TryAcquireError::RateLimited { retry_after })
            }
            Decision::CostExceeds(index) => match self.cost_exceeds_at(cost, index) {
                AcquireError::CostExceedsQuota {
                    unit,
                    cost,
                    max,
                    window,
                } => Err(TryAcquireError::CostExceedsQuota {
                    unit,
                    cost,
                    max,
                    window,
                }),
                other => Err(TryAcquireError::Unavailable(other.to_string())),
            },
        }
    }
}

fn quota_stats(quota: Quota, in_window: u64) -> QuotaStats {
    QuotaStats {
        quota,
        in_window,
        available: quota.max().saturating_sub(in_window),
        utilization_percent: in_window as f64 * 100.0 / quota.max() as f64,
    }
}

impl Limiter for RedisRateLimiter {
    async fn acquire_cost(&self, cost: Cost) -> Result<Grant, AcquireError> {
        self.acquire_inner(cost, None).await
    }

    async fn acquire_cost_before(
        &self,
        cost: Cost,
        deadline: Instant,
    ) -> Result<Grant, AcquireError> {
        self.acquire_inner(cost, Some(deadline)).await
    }

    async fn try_acquire_cost(&self, cost: Cost) -> Result<Grant, TryAcquireError> {
        self.try_acquire_inner(cost).await
    }

    async fn pause_for(&self, duration: Duration) {
        if let Err(err) = RedisRateLimiter::pause_for(self, duration).await {
            warn!(%err, "the pause could not be set in Redis");
        }
    }

    fn snapshot(&self) -> Stats {
        RedisRateLimiter::snapshot(self)
    }
}
