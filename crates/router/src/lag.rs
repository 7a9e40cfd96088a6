//! Replica lag for read routing, from the freshest source at hand and without I/O.
//!
//! The agents' REST API (`GET api_url`, Patroni's `/patroni` document) says where each
//! member's WAL is now: `xlog.location` on the leader, `xlog.received_location`,
//! `xlog.replayed_location` and `xlog.replayed_timestamp` on a replica. The `poller` asks
//! every `rest_poll_interval`; a member whose last answer is older than three intervals (or
//! that never answered) is measured from its DCS member document instead, as with
//! `lag_source: dcs`.
//!
//! - Leader position: the larger of the DCS view (`status` optime, leader document) and a
//!   fresh REST `xlog.location`.
//! - Bytes behind: leader position − replayed position, since a read sees what the replica
//!   has replayed, not what it received (a replica whose replay is paused or slow receives
//!   everything yet serves old data). `received` stands in only when `replayed` is unknown;
//!   the DCS fallback is the document's `replay_lsn` (else `xlog_location`) as of the agent's
//!   last loop.
//! - Replay delay: zero when the replica has replayed what the leader had written one poll
//!   earlier (so an idle leader writing a checkpoint record between two polls does not make
//!   a caught-up replica look late); otherwise now − `replayed_timestamp` (the commit time
//!   of the last replayed transaction, by the leader's clock). Unknown from the DCS alone or
//!   when the replica has replayed no transaction since it started: a time bound then does
//!   not exclude it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use pgbaton_dcs::MemberDoc;
use serde_json::Value;

/// What one member's REST API answered, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestSample {
    pub fetched: Instant,
    /// `xlog.location` (the leader's current WAL position).
    pub location: Option<u64>,
    /// `xlog.received_location`
    pub received: Option<u64>,
    /// `xlog.replayed_location`
    pub replayed: Option<u64>,
    /// `xlog.replayed_timestamp`, parsed.
    pub replayed_at: Option<SystemTime>,
    /// `location` of this member's previous answer: where a leader was one poll earlier.
    pub previous_location: Option<u64>,
}

impl RestSample {
    /// Read Patroni's `/patroni` document (None when it has no `xlog` section).
    pub fn from_patroni(body: &Value, fetched: Instant) -> Option<RestSample> {
        let xlog = body.get("xlog")?;
        let number = |key: &str| xlog.get(key).and_then(Value::as_u64);
        Some(RestSample {
            fetched,
            location: number("location"),
            received: number("received_location"),
            replayed: number("replayed_location"),
            replayed_at: xlog
                .get("replayed_timestamp")
                .and_then(Value::as_str)
                .and_then(parse_timestamp),
            previous_location: None,
        })
    }
}

/// A PostgreSQL `timestamptz` as text (`2026-11-26 14:51:02.232496+00`, `+00:00`, or ISO
/// 8601 with `T`).
pub fn parse_timestamp(text: &str) -> Option<SystemTime> {
    let micros = pgbaton_core::pg_text::timestamp_micros(text)?;
    let since_epoch = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(since_epoch)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(since_epoch)
    }
}

/// The poller's latest answers, per member name.
pub type RestLag = BTreeMap<String, RestSample>;

/// "Now", passed in so that the computation stays pure.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub now: Instant,
    pub wall: SystemTime,
}

impl Clock {
    pub fn now() -> Clock {
        Clock {
            now: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

/// The member's REST sample if it is fresh enough to use.
pub fn fresh<'a>(
    rest: &'a RestLag,
    name: &str,
    clock: Clock,
    max_age: Duration,
) -> Option<&'a RestSample> {
    rest.get(name)
        .filter(|s| clock.now.saturating_duration_since(s.fetched) <= max_age)
}

/// One replica's distance from the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measured {
    /// The replica's position as readers see it: replayed (received when unknown).
    pub position: Option<u64>,
    pub lag_bytes: Option<u64>,
    pub replay_delay: Option<Duration>,
    /// `rest` or `dcs`.
    pub source: &'static str,
}

/// The leader's position: the DCS view, or a fresher REST answer.
pub fn leader_position(dcs: Option<u64>, leader_rest: Option<&RestSample>) -> Option<u64> {
    dcs.max(leader_rest.and_then(|s| s.location))
}

/// How far `doc`'s member is behind `leader_position`, from `rest` (a fresh sample of this
/// member) or else from its document. `leader_rest` is the leader's fresh sample.
pub fn measure(
    doc: &MemberDoc,
    rest: Option<&RestSample>,
    leader_position: Option<u64>,
    leader_rest: Option<&RestSample>,
    clock: Clock,
) -> Measured {
    let from_rest = rest.filter(|s| s.received.is_some() || s.replayed.is_some());
    let Some(sample) = from_rest else {
        let position = doc.replay_lsn.or(doc.xlog_location);
        return Measured {
            position,
            lag_bytes: leader_position
                .zip(position)
                .map(|(l, p)| l.saturating_sub(p)),
            replay_delay: None,
            source: "dcs",
        };
    };
    let position = sample.replayed.or(sample.received);
    let lag_bytes = leader_position
        .zip(position)
        .map(|(l, p)| l.saturating_sub(p));
    // What the leader had written one poll ago (or now, before its second answer).
    let reference = leader_rest
        .and_then(|l| l.previous_location)
        .or(leader_position);
    let replay_delay = match (sample.replayed, reference) {
        (Some(replayed), Some(reference)) if replayed >= reference => Some(Duration::ZERO),
        _ => sample
            .replayed_at
            .map(|at| clock.wall.duration_since(at).unwrap_or(Duration::ZERO)),
    };
    Measured {
        position,
        lag_bytes,
        replay_delay,
        source: "rest",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MB: u64 = 1 << 20;

    fn clock() -> Clock {
        Clock {
            now: Instant::now(),
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        }
    }

    fn doc(xlog: u64) -> MemberDoc {
        MemberDoc {
            role: "replica".into(),
            xlog_location: Some(xlog),
            ..MemberDoc::default()
        }
    }

    #[test]
    fn patroni_documents_are_read() {
        let at = Instant::now();
        let replica = json!({"state": "running", "role": "replica", "xlog": {
            "received_location": 5000, "replayed_location": 4000,
            "replayed_timestamp": "2027-01-15 08:00:00.5+00", "paused": true}});
        let sample = RestSample::from_patroni(&replica, at).expect("sample");
        assert_eq!((sample.received, sample.replayed), (Some(5000), Some(4000)));
        assert_eq!(sample.location, None);
        let expected = SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_500);
        assert_eq!(sample.replayed_at, Some(expected));
        let leader = json!({"role": "master", "xlog": {"location": 9000}});
        let sample = RestSample::from_patroni(&leader, at).expect("sample");
        assert_eq!(sample.location, Some(9000));
        assert!(RestSample::from_patroni(&json!({"state": "starting"}), at).is_none());
    }

    #[test]
    fn timestamps_in_the_forms_postgres_and_patroni_write() {
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        for text in [
            "2027-01-15 08:00:00+00",
            "2027-01-15 08:00:00+00:00",
            "2027-01-15T08:00:00+0000",
            "2027-01-15 10:00:00+02",
            "2027-01-15 08:00:00.000000+00:00",
        ] {
            assert_eq!(parse_timestamp(text), Some(base), "{text}");
        }
        assert_eq!(parse_timestamp("yesterday"), None);
    }

    #[test]
    fn rest_answers_win_while_fresh_then_the_dcs_takes_over() {
        let c = clock();
        let mut rest = RestLag::new();
        rest.insert(
            "b".into(),
            RestSample {
                fetched: c.now,
                location: None,
                received: Some(100 * MB),
                replayed: Some(99 * MB),
                replayed_at: None,
                previous_location: None,
            },
        );
        let sample = fresh(&rest, "b", c, Duration::from_secs(3));
        // Readers see what was replayed: 1 MB behind, though everything was received.
        let m = measure(&doc(90 * MB), sample, Some(100 * MB), None, c);
        assert_eq!((m.lag_bytes, m.source), (Some(MB), "rest"));
        let later = Clock {
            now: c.now + Duration::from_secs(4),
            ..c
        };
        let sample = fresh(&rest, "b", later, Duration::from_secs(3));
        assert!(sample.is_none(), "older than three intervals");
        let m = measure(&doc(90 * MB), sample, Some(100 * MB), None, later);
        assert_eq!((m.lag_bytes, m.source), (Some(10 * MB), "dcs"));
        assert_eq!(m.replay_delay, None);
    }

    #[test]
    fn replay_delay_counts_only_when_replay_trails_the_leader_of_one_poll_ago() {
        let c = clock();
        let leader = RestSample {
            fetched: c.now,
            location: Some(1000),
            received: None,
            replayed: None,
            replayed_at: None,
            previous_location: Some(900),
        };
        let replica = |replayed: u64| RestSample {
            fetched: c.now,
            location: None,
            received: Some(1000),
            replayed: Some(replayed),
            replayed_at: Some(c.wall - Duration::from_secs(30)),
            previous_location: None,
        };
        let pos = leader_position(Some(800), Some(&leader));
        assert_eq!(pos, Some(1000));
        // Replayed what the leader had a poll ago: not late, whatever the last commit time.
        let m = measure(&doc(0), Some(&replica(950)), pos, Some(&leader), c);
        assert_eq!(m.replay_delay, Some(Duration::ZERO));
        // Replay paused behind that: as late as the last replayed commit, and the bytes
        // count from what was replayed, not from what was received.
        let m = measure(&doc(0), Some(&replica(850)), pos, Some(&leader), c);
        assert_eq!(m.replay_delay, Some(Duration::from_secs(30)));
        assert_eq!(m.lag_bytes, Some(150));
        // Without a previous leader answer, the current position is the reference.
        let first = RestSample {
            previous_location: None,
            ..leader.clone()
        };
        let m = measure(&doc(0), Some(&replica(950)), pos, Some(&first), c);
        assert_eq!(m.replay_delay, Some(Duration::from_secs(30)));
    }
}
