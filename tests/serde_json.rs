//! Feature `serde`: the JSON that a health endpoint returns for the
//! limiter's stats, the keyed limiter's, the executor's stats and its job
//! reports. Durations are milliseconds; instants are milliseconds from the
//! moment of serialising (negative in the past).
#![cfg(feature = "serde")]
mod common;

use std::future::Future;
use std::time::Duration;

use common::{ms, secs};
use paceline::{
    AcquireError, ClassConfig, Cost, Executor, Failure, ItemError, JobId, KeyedError,
    KeyedRateLimiter, Quota, RateLimiter, RetryPolicy, TryAcquireError, Unit, Workload,
};
use serde_json::{Value, json};

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap()
}

#[tokio::test(start_paused = true)]
async fn limiter_stats_serialise_with_their_rust_names() {
    let limiter = RateLimiter::builder()
        .quota(Quota::per_minute(15).unwrap())
        .quota(Quota::per_minute(1_000).unwrap().counting(Unit::Tokens))
        .build()
        .unwrap();
    for _ in 0..3 {
        limiter.acquire_cost(Cost::tokens(100)).await.unwrap();
    }
    limiter.pause_for(ms(1_500));
    let waiter = common::spawn_queued({
        let limiter = limiter.clone();
        async move { limiter.acquire().await }
    })
    .await;
    let stats = limiter.stats();
    assert_eq!(
        to_json(&stats),
        json!({
            "in_window": 3,
            "max": 15,
            "queued": 1,
            "available": 12,
            "utilization_percent": 20.0,
            "granted": 3,
            "waited": 0,
            "wait_time": 0.0,
            "paused_until": 1_500.0,
            "closed": false,
            "quotas": [
                {
                    "quota": { "max": 15, "window": 60_000.0, "unit": "requests" },
                    "in_window": 3,
                    "available": 12,
                    "utilization_percent": 20.0
                },
                {
                    "quota": { "max": 1_000, "window": 60_000.0, "unit": "tokens" },
                    "in_window": 300,
                    "available": 700,
                    "utilization_percent": 30.0
                }
            ]
        })
    );
    // Serialised later, the same snapshot's pause is nearer.
    tokio::time::sleep(ms(500)).await;
    assert_eq!(to_json(&stats)["paused_until"], json!(1_000.0));
    waiter.await.unwrap().unwrap();
    let after = to_json(&limiter.stats());
    assert_eq!(after["paused_until"], Value::Null);
    assert_eq!(after["wait_time"], json!(1_500.0));
}

#[test]
fn durations_keep_what_is_below_a_millisecond() {
    let quota = Quota::new(3, Duration::from_micros(1_500)).unwrap();
    assert_eq!(
        to_json(&quota),
        json!({ "max": 3, "window": 1.5, "unit": "requests" })
    );
    assert_eq!(
        to_json(&Cost::tokens(812)),
        json!({ "requests": 1, "tokens": 812 })
    );
}

#[tokio::test(start_paused = true)]
async fn errors_serialise_as_snake_case_variants() {
    let earliest = tokio::time::Instant::now() + secs(20);
    assert_eq!(to_json(&AcquireError::Closed), json!("closed"));
    assert_eq!(
        to_json(&AcquireError::DeadlineExceeded {
            earliest: Some(earliest)
        }),
        json!({ "deadline_exceeded": { "earliest": 20_000.0 } })
    );
    assert_eq!(
        to_json(&TryAcquireError::RateLimited {
            retry_after: ms(250)
        }),
        json!({ "rate_limited": { "retry_after": 250.0 } })
    );
    assert_eq!(
        to_json(&AcquireError::CostExceedsQuota {
            unit: Unit::Tokens,
            cost: 9,
            max: 8,
            window: secs(1)
        }),
        json!({ "cost_exceeds_quota": { "unit": "tokens", "cost": 9, "max": 8, "window": 1_000.0 } })
    );
    assert_eq!(
        to_json(&KeyedError::<AcquireError>::TooManyKeys { max_keys: 10 }),
        json!({ "too_many_keys": { "max_keys": 10 } })
    );
    assert_eq!(
        to_json(&KeyedError::Limiter(AcquireError::Closed)),
        json!({ "limiter": "closed" })
    );
}

#[tokio::test(start_paused = true)]
async fn keyed_stats_serialise() {
    let limiter = KeyedRateLimiter::<String>::builder()
        .quota(Quota::per_second(1).unwrap())
        .max_keys(2)
        .build()
        .unwrap();
    limiter.try_acquire("a").unwrap();
    limiter.try_acquire("b").unwrap();
    assert!(limiter.try_acquire("c").is_err());
    assert_eq!(
        to_json(&limiter.stats()),
        json!({ "keys": 2, "max_keys": 2, "evicted": 0, "refused": 1 })
    );
    assert_eq!(to_json(&limiter.key_stats("a").unwrap())["in_window"], 1);
}

/// Items are seconds to sleep; 0 fails for good.
struct Sleeps;

impl Workload for Sleeps {
    type Job = Vec<u64>;
    type Item = u64;
    type Output = u64;
    type Error = String;
    type Class = &'static str;

    fn items(&self, job: &Vec<u64>) -> Vec<u64> {
        job.clone()
    }

    fn class(&self, _: &Vec<u64>) -> &'static str {
        "flash"
    }

    fn process(
        &self,
        _: &Vec<u64>,
        item: &u64,
        _: u32,
    ) -> impl Future<Output = Result<u64, String>> + Send {
        let item = *item;
        async move {
            if item == 0 {
                return Err("400 bad request".to_owned());
            }
            tokio::time::sleep(secs(item)).await;
            Ok(item * 10)
        }
    }

    fn classify(&self, _: &String) -> Failure {
        Failure::Fatal
    }
}

#[tokio::test(start_paused = true)]
async fn executor_stats_and_job_reports_serialise() {
    let limiter = RateLimiter::new(1, secs(1)).unwrap();
    let executor = Executor::builder(Sleeps)
        .class("flash", ClassConfig::new(limiter).max_in_flight(4))
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    let handle = executor.submit(vec![2, 0]).unwrap();
    tokio::time::sleep(ms(500)).await;
    let stats = to_json(&executor.stats());
    assert_eq!(stats["jobs_active"], 1);
    // One item sleeps, the other holds its slot while it waits for a grant.
    assert_eq!(stats["items_in_flight"], 2);
    assert_eq!(stats["classes"][0]["class"], "\"flash\"");
    assert_eq!(stats["classes"][0]["max_in_flight"], 4);
    assert_eq!(stats["classes"][0]["limiter"]["in_window"], 1);

    let report = handle.await;
    // The failed item waited a second for its grant; the report is read a
    // second after the job ended.
    tokio::time::sleep(secs(1)).await;
    assert_eq!(
        to_json(&report),
        json!({
            "id": 0,
            "status": "failed",
            "items": [
                {
                    "index": 0,
                    "result": { "Ok": 20 },
                    "attempts": 1,
                    "rate_limited": 0,
                    "limiter_wait": 0.0,
                    "started_at": -3_000.0,
                    "finished_at": -1_000.0
                },
                {
                    "index": 1,
                    "result": { "Err": { "failed": "400 bad request" } },
                    "attempts": 1,
                    "rate_limited": 0,
                    "limiter_wait": 1_000.0,
                    "started_at": -3_000.0,
                    "finished_at": -2_000.0
                }
            ],
            "submitted_at": -3_000.0,
            "started_at": -3_000.0,
            "finished_at": -1_000.0
        })
    );
    assert_eq!(
        to_json(&report.summary()),
        json!({
            "id": 0,
            "status": "failed",
            "items": 2,
            "succeeded": 1,
            "attempts": 2,
            "rate_limited": 0,
            "submitted_at": -3_000.0,
            "started_at": -3_000.0,
            "finished_at": -1_000.0
        })
    );
    assert_eq!(to_json(&executor.failed_jobs())[0]["id"], 0);
    assert_eq!(to_json(&JobId(7)), json!(7));
}

#[test]
fn item_errors_serialise_with_their_payloads() {
    let errors: Vec<ItemError<String>> = vec![
        ItemError::Failed("boom".into()),
        ItemError::RetryAfterDeadline {
            error: "429".into(),
            retry_after: secs(30),
        },
        ItemError::AttemptTimedOut(ms(2_500)),
        ItemError::JobTimedOut,
        ItemError::Limiter(AcquireError::Closed),
    ];
    assert_eq!(
        to_json(&errors),
        json!([
            { "failed": "boom" },
            { "retry_after_deadline": { "error": "429", "retry_after": 30_000.0 } },
            { "attempt_timed_out": 2_500.0 },
            "job_timed_out",
            { "limiter": "closed" }
        ])
    );
}
