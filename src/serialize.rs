//! Feature `serde`: how durations and instants serialise.
//!
//! A [`Duration`] serialises as a number of milliseconds (a float, so that
//! nothing below a millisecond is lost: `1.5` is 1.5 ms). An [`Instant`] has
//! no meaning outside the process, so it serialises as the signed number of
//! milliseconds from the moment of serialising to it: positive in the future
//! (a pause that ends in 1.5 s is `1500.0`), negative in the past (a job that
//! finished 2 s ago, `-2000.0`). Field names are the Rust ones.

use std::time::Duration;

use serde::Serializer;
use tokio::time::Instant;

/// A duration as milliseconds.
pub(crate) fn duration_ms<S: Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(millis(*duration))
}

/// An instant as signed milliseconds from now.
pub(crate) fn instant_ms<S: Serializer>(
    instant: &Instant,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(from_now(*instant))
}

/// An optional instant as signed milliseconds from now, or null.
pub(crate) fn option_instant_ms<S: Serializer>(
    instant: &Option<Instant>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match instant {
        Some(instant) => serializer.serialize_some(&from_now(*instant)),
        None => serializer.serialize_none(),
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

fn from_now(instant: Instant) -> f64 {
    let now = Instant::now();
    if instant >= now {
        millis(instant - now)
    } else {
        -millis(now - instant)
    }
}
