//! The names of a shared limiter's keys, and its quotas as the script reads
//! them: pure, with no connection.

use std::time::Duration;

use crate::error::ConfigError;
use crate::quota::{Quota, Unit};

use super::RedisLimiterError;

/// The largest `max` a shared quota takes: the script counts in Lua numbers,
/// which are exact up to 2^53.
pub(crate) const REDIS_MAX_MAX: u64 = (1 << 53) - 1;

/// The keys of one limiter. All share the hash tag `{prefix:name}`, so in a
/// Redis Cluster they live in one slot and one script can touch them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keys {
    /// The limiter's hash: quotas, pause, counts, epoch.
    pub(crate) meta: String,
    /// One sorted set per quota: the sliding log.
    pub(crate) logs: Vec<String>,
}

impl Keys {
    pub(crate) fn new(prefix: &str, name: &str, quotas: usize) -> Result<Keys, RedisLimiterError> {
        check_part("prefix", prefix)?;
        check_part("name", name)?;
        let tag = format!("{{{prefix}:{name}}}");
        Ok(Keys {
            meta: format!("{tag}:meta"),
            logs: (0..quotas).map(|i| format!("{tag}:log:{i}")).collect(),
        })
    }

    /// Every key, the hash first, in the order the script expects them.
    pub(crate) fn all(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.meta.as_str()).chain(self.logs.iter().map(String::as_str))
    }
}

fn check_part(what: &'static str, value: &str) -> Result<(), RedisLimiterError> {
    if value.is_empty() {
        return Err(RedisLimiterError::EmptyKeyPart { part: what });
    }
    if value.contains(['{', '}']) || value.chars().any(char::is_control) {
        return Err(RedisLimiterError::InvalidKeyPart {
            part: what,
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// A quota's window in whole microseconds, rounded up: a longer window only
/// ever admits less.
fn window_micros(window: Duration) -> u64 {
    let micros = window.as_micros();
    let rounded = if window.subsec_nanos() % 1_000 == 0 {
        micros
    } else {
        micros + 1
    };
    u64::try_from(rounded).unwrap_or(u64::MAX)
}

/// Checks that the script can count a quota exactly.
pub(crate) fn check_quota(quota: &Quota) -> Result<(), ConfigError> {
    if quota.max() > REDIS_MAX_MAX {
        return Err(ConfigError::MaxTooLarge {
            max: quota.max(),
            limit: REDIS_MAX_MAX,
        });
    }
    Ok(())
}

/// The quotas as the script stores them: `max,window_us,unit;...`.
pub(crate) fn encode(quotas: &[Quota]) -> String {
    quotas
        .iter()
        .map(|q| {
            let unit = match q.unit() {
                Unit::Requests => 'r',
                Unit::Tokens => 't',
            };
            format!("{},{},{unit}", q.max(), window_micros(q.window()))
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// The quotas stored in Redis, or `None` if the text is not what [`encode`]
/// writes.
pub(crate) fn decode(text: &str) -> Option<Vec<Quota>> {
    text.split(';')
        .map(|part| {
            let mut fields = part.split(',');
            let max = fields.next()?.parse().ok()?;
            let window = Duration::from_micros(fields.next()?.parse().ok()?);
            let unit = match fields.next()? {
                "r" => Unit::Requests,
                "t" => Unit::Tokens,
                _ => return None,
            };
            if fields.next().is_some() {
                return None;
            }
            Some(Quota::new(max, window).ok()?.counting(unit))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag() {
        let keys = Keys::new("paceline", "gemini-flash", 2).unwrap();
        assert_eq!(keys.meta, "{paceline:gemini-flash}:meta");
        assert_eq!(
            keys.logs,
            [
                "{paceline:gemini-flash}:log:0",
                "{paceline:gemini-flash}:log:1"
            ]
        );
        assert_eq!(keys.all().count(), 3);
    }

    #[test]
    fn bad_key_parts_are_refused() {
        assert_eq!(
            Keys::new("", "a", 1),
            Err(RedisLimiterError::EmptyKeyPart { part: "prefix" })
        );
        assert_eq!(
            Keys::new("p", "", 1),
            Err(RedisLimiterError::EmptyKeyPart { part: "name" })
        );
        assert!(matches!(
            Keys::new("p{x}", "a", 1),
            Err(RedisLimiterError::InvalidKeyPart { part: "prefix", .. })
        ));
        assert!(matches!(
            Keys::new("p", "a\n", 1),
            Err(RedisLimiterError::InvalidKeyPart { part: "name", .. })
        ));
    }

    #[test]
    fn quotas_round_trip() {
        let quotas = vec![
            Quota::per_minute(15).unwrap(),
            Quota::per_day(1_500).unwrap(),
            Quota::per_minute(1_000_000).unwrap().counting(Unit::Tokens),
        ];
        let text = encode(&quotas);
        assert_eq!(text, "15,60000000,r;1500,86400000000,r;1000000,60000000,t");
        assert_eq!(decode(&text), Some(quotas));
        assert_eq!(decode("15,60000000,x"), None);
        assert_eq!(decode("15,60000000"), None);
        assert_eq!(decode("0,1,r"), None);
        assert_eq!(decode("1,2,r,4"), None);
    }

    #[test]
    fn sub_microsecond_windows_round_up() {
        let quota = Quota::new(1, Duration::from_nanos(1_500)).unwrap();
        assert_eq!(encode(&[quota]), "1,2,r");
        let quota = Quota::new(1, Duration::from_nanos(1)).unwrap();
        assert_eq!(encode(&[quota]), "1,1,r");
    }

    #[test]
    fn max_is_bounded_by_exact_lua_numbers() {
        assert!(check_quota(&Quota::new(REDIS_MAX_MAX, Duration::from_secs(1)).unwrap()).is_ok());
        assert_eq!(
            check_quota(&Quota::new(REDIS_MAX_MAX + 1, Duration::from_secs(1)).unwrap()),
            Err(ConfigError::MaxTooLarge {
                max: REDIS_MAX_MAX + 1,
                limit: REDIS_MAX_MAX
            })
        );
    }
}
