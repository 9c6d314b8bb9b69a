//! A mock Gemini client for the examples, and the [`Workload`] that drives it.
//!
//! The mock behaves like the API where it matters to a rate limiter: each
//! model has its own server-side quota, counted over a strict sliding window
//! of the calls it accepted, and a call over it is refused at once with `429`
//! and a retry delay (what Gemini puts in `RetryInfo.retryDelay`): the time
//! until the oldest call in the server's window leaves it. Accepted calls
//! take the model's latency, and a seeded share of them fail with a transient
//! `500`. An empty prompt is a `400`. Every answer is counted.
//!
//! Time is `tokio::time::Instant`, so the mock runs as well under tokio's
//! paused clock (exact, instant) as in real time.

// Each example uses a different part of this module.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use paceline::{Failure, Workload};
use tokio::time::Instant;

/// A Gemini model class: each has its own quota, on the server and in the
/// client's limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Model {
    /// Fast, high volume.
    Flash,
    /// Slower, higher quality, a smaller quota.
    Pro,
}

impl Model {
    /// Every model, in a fixed order.
    pub(crate) const ALL: [Model; 2] = [Model::Flash, Model::Pro];

    /// The model's position in [`Model::ALL`].
    pub(crate) fn index(self) -> usize {
        match self {
            Model::Flash => 0,
            Model::Pro => 1,
        }
    }

    /// The name the API knows it by.
    pub(crate) fn api_name(self) -> &'static str {
        match self {
            Model::Flash => "gemini-2.5-flash-image",
            Model::Pro => "gemini-3-pro-image-preview",
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Model::Flash => "flash",
            Model::Pro => "pro",
        })
    }
}

/// What the server does for one model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ModelProfile {
    /// Calls the server accepts in any window.
    pub(crate) quota: u64,
    /// The server's sliding window.
    pub(crate) window: Duration,
    /// How long an accepted call takes to answer.
    pub(crate) latency: Duration,
}

/// The mock server's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct MockConfig {
    /// Flash's quota and latency.
    pub(crate) flash: ModelProfile,
    /// Pro's quota and latency.
    pub(crate) pro: ModelProfile,
    /// The share of accepted calls that fail with a transient 500.
    pub(crate) error_rate: f64,
    /// Each accepted call's latency is drawn uniformly within this fraction
    /// of the model's latency, either side (0: exactly the latency).
    pub(crate) latency_jitter: f64,
    /// Seeds the draws of 500s and latencies, so that a run is repeatable.
    pub(crate) seed: u64,
}

/// An error the API answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GeminiError {
    /// `429 RESOURCE_EXHAUSTED`, with the server's `RetryInfo.retryDelay`
    /// when it sent one.
    RateLimited {
        /// How long the server asks to wait.
        retry_delay: Option<Duration>,
    },
    /// `500 INTERNAL`: transient, worth another try.
    Internal,
    /// `400 INVALID_ARGUMENT`: the request itself is wrong; another try
    /// gets the same answer.
    BadRequest(String),
}

impl fmt::Display for GeminiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GeminiError::RateLimited {
                retry_delay: Some(delay),
            } => write!(f, "429 RESOURCE_EXHAUSTED: retry in {delay:?}"),
            GeminiError::RateLimited { retry_delay: None } => f.write_str("429 RESOURCE_EXHAUSTED"),
            GeminiError::Internal => f.write_str("500 INTERNAL"),
            GeminiError::BadRequest(why) => write!(f, "400 INVALID_ARGUMENT: {why}"),
        }
    }
}

impl std::error::Error for GeminiError {}

/// A generated image (its size stands for its bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Image {
    /// The model that made it.
    pub(crate) model: Model,
    /// Its size in bytes.
    pub(crate) bytes: usize,
}

/// What the server answered one model, so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ServerCounts {
    /// Requests received, refused ones included.
    pub(crate) calls: u64,
    /// Requests within the quota (each counts against it).
    pub(crate) accepted: u64,
    /// Images returned.
    pub(crate) ok: u64,
    /// `429`s sent.
    pub(crate) rate_limited: u64,
    /// `500`s sent.
    pub(crate) internal: u64,
    /// `400`s sent.
    pub(crate) bad_requests: u64,
}

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    accepted: AtomicU64,
    ok: AtomicU64,
    rate_limited: AtomicU64,
    internal: AtomicU64,
    bad_requests: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> ServerCounts {
        ServerCounts {
            calls: self.calls.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            ok: self.ok.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            internal: self.internal.load(Ordering::Relaxed),
            bad_requests: self.bad_requests.load(Ordering::Relaxed),
        }
    }
}

/// One model's side of the server.
#[derive(Debug)]
struct ModelServer {
    profile: ModelProfile,
    counters: Counters,
    state: Mutex<ServerState>,
}

#[derive(Debug)]
struct ServerState {
    /// The accepted calls still in the window, oldest first.
    window: VecDeque<Instant>,
    /// Every accepted call, for the examples' reports.
    log: Vec<Instant>,
    rng: fastrand::Rng,
}

/// What the server decided for one request, before any time passes.
enum Verdict {
    TooMany(Duration),
    BadRequest(Duration),
    Internal(Duration),
    Ok(Duration),
}

impl ModelServer {
    fn decide(&self, prompt: &str, error_rate: f64, jitter: f64) -> Verdict {
        let now = Instant::now();
        let mut state = self.state.lock().expect("no panic while the lock is held");
        let window = self.profile.window;
        // A call counts in (t - window, t]: it stops counting exactly one
        // window after it was made, as the client's limiter assumes.
        while state.window.front().is_some_and(|&at| at + window <= now) {
            state.window.pop_front();
        }
        let full = u64::try_from(state.window.len()).unwrap_or(u64::MAX) >= self.profile.quota;
        if let Some(&oldest) = state.window.front().filter(|_| full) {
            return Verdict::TooMany(oldest + window - now);
        }
        state.window.push_back(now);
        state.log.push(now);
        let latency = if jitter > 0.0 {
            let factor = 1.0 - jitter + 2.0 * jitter * state.rng.f64();
            self.profile.latency.mul_f64(factor)
        } else {
            self.profile.latency
        };
        // Draw for every accepted call, so that the sequence of 500s does not
        // depend on which prompts happen to be invalid.
        let fails = state.rng.f64() < error_rate;
        if prompt.trim().is_empty() {
            Verdict::BadRequest(latency / 20)
        } else if fails {
            Verdict::Internal(latency / 4)
        } else {
            Verdict::Ok(latency)
        }
    }
}

/// A mock Gemini client (and its server). Clones share the same server.
#[derive(Debug, Clone)]
pub(crate) struct MockGemini {
    inner: Arc<MockInner>,
}

#[derive(Debug)]
struct MockInner {
    config: MockConfig,
    models: [ModelServer; 2],
}

impl MockGemini {
    /// A server with these settings; nothing called yet.
    pub(crate) fn new(config: MockConfig) -> Self {
        let server = |profile: ModelProfile, stream: u64| ModelServer {
            profile,
            counters: Counters::default(),
            state: Mutex::new(ServerState {
                window: VecDeque::new(),
                log: Vec::new(),
                rng: fastrand::Rng::with_seed(config.seed.wrapping_add(stream)),
            }),
        };
        MockGemini {
            inner: Arc::new(MockInner {
                config,
                models: [server(config.flash, 0), server(config.pro, 1)],
            }),
        }
    }

    /// Generates an image: one call to the API.
    pub(crate) async fn generate(&self, model: Model, prompt: &str) -> Result<Image, GeminiError> {
        let server = &self.inner.models[model.index()];
        let counters = &server.counters;
        counters.calls.fetch_add(1, Ordering::Relaxed);
        let config = &self.inner.config;
        match server.decide(prompt, config.error_rate, config.latency_jitter) {
            Verdict::TooMany(delay) => {
                counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                Err(GeminiError::RateLimited {
                    retry_delay: Some(delay),
                })
            }
            Verdict::BadRequest(after) => {
                counters.accepted.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(after).await;
                counters.bad_requests.fetch_add(1, Ordering::Relaxed);
                Err(GeminiError::BadRequest(
                    "contents is not specified".to_owned(),
                ))
            }
            Verdict::Internal(after) => {
                counters.accepted.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(after).await;
                counters.internal.fetch_add(1, Ordering::Relaxed);
                Err(GeminiError::Internal)
            }
            Verdict::Ok(after) => {
                counters.accepted.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(after).await;
                counters.ok.fetch_add(1, Ordering::Relaxed);
                Ok(Image {
                    model,
                    // A 4K PNG, give or take.
                    bytes: 8_000_000 + 1_000 * prompt.len(),
                })
            }
        }
    }

    /// What the server answered `model` so far.
    pub(crate) fn counts(&self, model: Model) -> ServerCounts {
        self.inner.models[model.index()].counters.snapshot()
    }

    /// When the server accepted each call of `model`, in order.
    pub(crate) fn accepted_log(&self, model: Model) -> Vec<Instant> {
        self.inner.models[model.index()]
            .state
            .lock()
            .expect("no panic while the lock is held")
            .log
            .clone()
    }
}

/// The most calls of `log` (sorted) in any one sliding `window`.
pub(crate) fn peak_in_window(log: &[Instant], window: Duration) -> usize {
    let mut first = 0;
    let mut peak = 0;
    for (last, &at) in log.iter().enumerate() {
        while log[first] + window <= at {
            first += 1;
        }
        peak = peak.max(last + 1 - first);
    }
    peak
}

/// One workflow execution: a list of prompts for one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Execution {
    /// Its number, for the reports.
    pub(crate) number: usize,
    /// The model every prompt goes to.
    pub(crate) model: Model,
    /// The prompts, one image each.
    pub(crate) prompts: Vec<String>,
}

/// The "Nano Banana" workflow: each prompt of an execution is one call to
/// its model.
#[derive(Debug, Clone)]
pub(crate) struct NanoBanana {
    client: MockGemini,
}

impl NanoBanana {
    /// The workflow, calling `client`.
    pub(crate) fn new(client: MockGemini) -> Self {
        NanoBanana { client }
    }
}

impl Workload for NanoBanana {
    type Job = Execution;
    type Item = String;
    type Output = Image;
    type Error = GeminiError;
    type Class = Model;

    fn items(&self, job: &Execution) -> Vec<String> {
        job.prompts.clone()
    }

    fn class(&self, job: &Execution) -> Model {
        job.model
    }

    fn process(
        &self,
        job: &Execution,
        prompt: &String,
        _attempt: u32,
    ) -> impl Future<Output = Result<Image, GeminiError>> + Send {
        self.client.generate(job.model, prompt)
    }

    fn classify(&self, error: &GeminiError) -> Failure {
        match error {
            GeminiError::RateLimited { retry_delay } => Failure::RateLimited {
                retry_after: *retry_delay,
            },
            GeminiError::Internal => Failure::Retry,
            GeminiError::BadRequest(_) => Failure::Fatal,
        }
    }
}
