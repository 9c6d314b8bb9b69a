//! The limiter's Lua script: loading it, running it by its SHA1 (loading it
//! again when the server has lost it), and reading its replies.

use std::time::{Duration, SystemTime};

use ::redis::aio::ConnectionManager;
use ::redis::{ErrorKind, RedisError, RedisResult, ServerErrorKind};

use super::keys::Keys;

/// The script's source; one file, every operation of the limiter.
pub(crate) const SOURCE: &str = include_str!("limiter.lua");

/// The script on one server: its SHA1, as `SCRIPT LOAD` gave it.
#[derive(Debug, Clone)]
pub(crate) struct Script {
    sha: String,
}

impl Script {
    /// Loads the script (`SCRIPT LOAD`), learning its SHA1.
    pub(crate) async fn load(conn: &mut ConnectionManager) -> RedisResult<Script> {
        let sha = ::redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(SOURCE)
            .query_async(conn)
            .await?;
        Ok(Script { sha })
    }

    /// Runs one operation with `EVALSHA`; when the server answers NOSCRIPT (a
    /// restart, a `SCRIPT FLUSH`), loads the script and runs it again.
    pub(crate) async fn run<T: ::redis::FromRedisValue>(
        &self,
        conn: &mut ConnectionManager,
        keys: &Keys,
        args: &[&str],
    ) -> RedisResult<T> {
        let mut cmd = ::redis::cmd("EVALSHA");
        cmd.arg(&self.sha).arg(keys.logs.len() + 1);
        for key in keys.all() {
            cmd.arg(key);
        }
        for arg in args {
            cmd.arg(*arg);
        }
        match cmd.query_async(conn).await {
            Err(err) if is_no_script(&err) => {
                let _: String = ::redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(SOURCE)
                    .query_async(conn)
                    .await?;
                cmd.query_async(conn).await
            }
            other => other,
        }
    }
}

fn is_no_script(err: &RedisError) -> bool {
    err.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

/// What the script decided about one acquire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Granted now.
    Granted,
    /// Reserved: the grant is this far ahead.
    Reserved(Duration),
    /// Refused: the slot would come this far ahead, past the caller's limit;
    /// nothing was reserved.
    TooLate(Duration),
    /// The cost exceeds the quota at this index (0-based).
    CostExceeds(usize),
}

/// One reply of the acquire, confirm, cancel, pause, resume and configure
/// operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) decision: Decision,
    /// The wait the script reported (for a pause: the pause left).
    pub(crate) wait: Duration,
    /// The slot, in microseconds of the server's clock.
    pub(crate) slot: u64,
    /// The quotas stored in Redis, when they differ from the caller's.
    pub(crate) stored_quotas: Option<String>,
    /// Cost logged per quota (grants in the window and reservations ahead).
    pub(crate) logged: Vec<u64>,
    /// The limiter's epoch (when its hash was made).
    pub(crate) epoch: String,
}

/// The raw reply: status, wait, quota index, slot, stored quotas, counts, epoch.
pub(crate) type RawReply = (i64, String, i64, String, String, String, String);

impl Reply {
    pub(crate) fn parse(raw: RawReply) -> Option<Reply> {
        let (status, wait, index, slot, stored, logged, epoch) = raw;
        let wait = Duration::from_micros(wait.parse().ok()?);
        let decision = match status {
            0 => Decision::Granted,
            1 => Decision::Reserved(wait),
            2 => Decision::TooLate(wait),
            3 => Decision::CostExceeds(usize::try_from(index).ok()?.checked_sub(1)?),
            _ => return None,
        };
        Some(Reply {
            decision,
            wait,
            slot: slot.parse().ok()?,
            stored_quotas: (!stored.is_empty()).then_some(stored),
            logged: parse_list(&logged)?,
            epoch,
        })
    }

    /// The number the cancel operation answers with: reservations removed.
    pub(crate) fn removed(raw: &RawReply) -> i64 {
        raw.0
    }
}

/// The stats operation's reply: the server's time, the pause left, the
/// stored quotas, and per quota in-window, logged and queued.
pub(crate) type RawStats = (String, String, String, String);

/// A parsed stats reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StatsReply {
    pub(crate) now: SystemTime,
    pub(crate) pause_left: Duration,
    pub(crate) quotas: String,
    /// Per quota: (in window, logged, reservations ahead).
    pub(crate) per_quota: Vec<(u64, u64, u64)>,
}

impl StatsReply {
    pub(crate) fn parse(raw: RawStats) -> Option<StatsReply> {
        let (now, pause, quotas, per_quota) = raw;
        let per_quota = per_quota
            .split(';')
            .map(|part| match parse_list(part)?.as_slice() {
                [a, b, c] => Some((*a, *b, *c)),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        Some(StatsReply {
            now: server_time(now.parse().ok()?),
            pause_left: Duration::from_micros(pause.parse().ok()?),
            quotas,
            per_quota,
        })
    }
}

/// An instant of the server's clock, from its microseconds.
pub(crate) fn server_time(micros: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_micros(micros)
}

fn parse_list(text: &str) -> Option<Vec<u64>> {
    text.split(',').map(|n| n.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(status: i64, wait: &str, index: i64) -> RawReply {
        (
            status,
            wait.into(),
            index,
            "1700000000000000".into(),
            String::new(),
            "3,40".into(),
            "17".into(),
        )
    }

    #[test]
    fn replies_parse() {
        let reply = Reply::parse(raw(0, "0", 0)).unwrap();
        assert_eq!(reply.decision, Decision::Granted);
        assert_eq!(reply.slot, 1_700_000_000_000_000);
        assert_eq!(reply.logged, [3, 40]);
        assert_eq!(reply.stored_quotas, None);
        assert_eq!(reply.epoch, "17");
        assert_eq!(
            Reply::parse(raw(1, "1500", 0)).unwrap().decision,
            Decision::Reserved(Duration::from_micros(1_500))
        );
        assert_eq!(
            Reply::parse(raw(2, "7", 0)).unwrap().decision,
            Decision::TooLate(Duration::from_micros(7))
        );
        assert_eq!(
            Reply::parse(raw(3, "0", 2)).unwrap().decision,
            Decision::CostExceeds(1)
        );
    }

    #[test]
    fn malformed_replies_are_none() {
        assert_eq!(Reply::parse(raw(9, "0", 0)), None);
        assert_eq!(Reply::parse(raw(3, "0", 0)), None);
        assert_eq!(Reply::parse(raw(1, "x", 0)), None);
        let mut bad = raw(0, "0", 0);
        bad.5 = "1,,2".into();
        assert_eq!(Reply::parse(bad), None);
    }

    #[test]
    fn stats_replies_parse() {
        let stats = StatsReply::parse((
            "1000000".into(),
            "250".into(),
            "15,60000000,r".into(),
            "4,6,2;1,1,0".into(),
        ))
        .unwrap();
        assert_eq!(stats.now, SystemTime::UNIX_EPOCH + Duration::from_secs(1));
        assert_eq!(stats.pause_left, Duration::from_micros(250));
        assert_eq!(stats.per_quota, [(4, 6, 2), (1, 1, 0)]);
        assert_eq!(
            StatsReply::parse(("1".into(), "0".into(), String::new(), "1,2".into())),
            None
        );
    }
}
