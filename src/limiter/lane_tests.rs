//! The fast lane with the state it feeds, driven with explicit clock readings
//! the way `Shared` drives them: every grant, through the lane or under the
//! lock, is checked against the strict window at its own reading.

use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::lane::{Anchor, Lane, MAX_BUDGET};
use super::state::LimiterState;
use crate::quota::{Cost, Quota};

#[derive(Debug, Clone)]
enum Step {
    /// The clock moves on by this many nanoseconds.
    Advance(u64),
    /// A caller takes this many requests through the lane, or under the lock
    /// if the lane refuses.
    Take(u64),
    /// Someone reads the stats (which seals and reopens the lane).
    Look,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => prop_oneof![1u64..1_000, 1_000u64..1_000_000, 1_000_000u64..2_000_000_000]
            .prop_map(Step::Advance),
        6 => (1u64..8).prop_map(Step::Take),
        1 => Just(Step::Look),
    ]
}

/// What `Shared::lock` and the drop of its guard do, in one place.
struct Harness {
    t0: Instant,
    lane: Lane,
    state: LimiterState,
    grants: Vec<(Instant, u64)>,
}

impl Harness {
    fn at(&self, nanos: u64) -> Instant {
        self.t0 + Duration::from_nanos(nanos)
    }

    fn locked<T>(&mut self, nanos: u64, f: impl FnOnce(&mut LimiterState, Instant) -> T) -> T {
        let mut now = self.state.observe(self.at(nanos));
        if self.state.lane_is_open() {
            let sealed = self.lane.seal();
            now = self.state.observe(self.at(nanos));
            self.state.close_lane(sealed.grants, sealed.remaining, now);
        }
        let result = f(&mut self.state, now);
        if let Some((budget, deadline)) = self.state.open_lane(now, MAX_BUDGET) {
            // The counter here is the nanoseconds since t0, exactly.
            let opened = u64::try_from((now - self.t0).as_nanos()).unwrap();
            let lasts = u64::try_from((deadline - now).as_nanos()).unwrap();
            self.lane.open(
                budget,
                Anchor {
                    counter: opened,
                    nanos: opened,
                    lasts,
                },
            );
        }
        result
    }

    fn take(&mut self, amount: u64, nanos: u64) {
        let taken = self.lane.try_take(
            amount,
            u64::MAX,
            || nanos,
            |from, to| to.saturating_sub(from),
        );
        if taken.is_some() {
            self.grants.push((self.at(nanos), amount));
            return;
        }
        let granted = self.locked(nanos, |state, now| {
            state.try_acquire(Cost::requests(amount), now).ok()
        });
        if let Some(at) = granted {
            self.grants.push((at, amount));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|cases| cases.parse().ok())
            .unwrap_or(128),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_lane_keeps_every_window_strict(
        max in 1_025u64..3_000,
        window_ms in 1_000u64..20_000,
        steps in prop::collection::vec(step(), 1..600),
    ) {
        let quota = Quota::new(max, Duration::from_millis(window_ms)).unwrap();
        let t0 = Instant::now();
        let mut harness = Harness {
            t0,
            lane: Lane::default(),
            state: LimiterState::new(&[quota]).unwrap(),
            grants: Vec::new(),
        };
        // The lane opens at the first locked look, as a limiter's does.
        harness.locked(0, |_, _| ());
        let mut nanos = 0u64;
        for step in steps {
            match step {
                Step::Advance(d) => nanos += d,
                Step::Take(amount) => {
                    // Many takes at one reading, as a busy caller makes them.
                    for _ in 0..20 {
                        harness.take(amount, nanos);
                    }
                }
                Step::Look => {
                    let stats = harness.locked(nanos, |state, now| state.stats(now));
                    prop_assert!(stats.in_window <= max);
                }
            }
        }
        // Every window ending at a grant, by a sliding sum over the grants in
        // time order.
        let window = quota.window();
        let mut grants = harness.grants.clone();
        grants.sort_by_key(|&(at, _)| at);
        let (mut oldest, mut in_window) = (0, 0u64);
        for (newest, &(end, amount)) in grants.iter().enumerate() {
            in_window += amount;
            while grants[oldest].0 + window <= end {
                in_window -= grants[oldest].1;
                oldest += 1;
            }
            let tied: u64 = grants[newest + 1..]
                .iter()
                .take_while(|&&(at, _)| at == end)
                .map(|&(_, amount)| amount)
                .sum();
            prop_assert!(
                in_window + tied <= max,
                "{} > {max} in the window ending at {:?}",
                in_window + tied,
                end - t0
            );
        }
        let total: u64 = harness.grants.iter().map(|&(_, amount)| amount).sum();
        let stats = harness.locked(nanos, |state, now| state.stats(now));
        prop_assert_eq!(stats.granted, harness.grants.len() as u64);
        prop_assert!(stats.in_window <= total);
    }
}
