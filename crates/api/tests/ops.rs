//! Switchover and failover checks: every refusal reason with its HTTP status, and the
//! `failover` document written when the request is accepted.

use chrono::{Duration, TimeZone, Utc};
use pgbaton_api::ops::{
    parse_schedule, validate_failover, validate_switchover, validate_switchover_at, Limits, OpError,
};
use pgbaton_dcs::{ClusterState, FailoverDoc, Versioned};
use pgbaton_testkit::states::*;
use serde_json::json;

const MAX_LAG: u64 = 1_048_576;

fn switchover(
    state: &ClusterState,
    leader: Option<&str>,
    candidate: Option<&str>,
) -> Result<FailoverDoc, OpError> {
    validate_switchover(state, leader, candidate, None, MAX_LAG, false)
}

fn refused(result: Result<FailoverDoc, OpError>, status: u16, words: &str) {
    match result {
        Ok(doc) => panic!("accepted {doc:?}, expected a {status} refusal about {words:?}"),
        Err(e) => {
            assert_eq!(e.status(), status, "{e}");
            assert!(
                e.to_string().contains(words),
                "{e:?} does not say {words:?}"
            );
        }
    }
}

#[test]
fn a_healthy_streaming_candidate_is_accepted() {
    let doc = switchover(&healthy(), Some("node1"), Some("node2")).expect("accepted");
    assert_eq!(doc.leader.as_deref(), Some("node1"));
    assert_eq!(doc.member.as_deref(), Some("node2"));
    assert_eq!(doc.scheduled_at, None);
    // Without --leader the current leader is filled in.
    let doc = switchover(&healthy(), None, Some("node2")).expect("accepted");
    assert_eq!(doc.leader.as_deref(), Some("node1"));
    // Without a candidate: accepted while some member qualifies.
    let doc = switchover(&healthy(), Some("node1"), None).expect("accepted");
    assert_eq!(doc.member, None);
}

#[test]
fn unknown_candidate_is_refused() {
    refused(
        switchover(&healthy(), None, Some("node9")),
        412,
        "node9 is not a member",
    );
}

#[test]
fn candidate_equal_to_leader_is_refused() {
    refused(
        switchover(&healthy(), None, Some("node1")),
        412,
        "already the leader",
    );
}

#[test]
fn naming_the_wrong_leader_is_refused() {
    refused(
        switchover(&healthy(), Some("node2"), Some("node3")),
        412,
        "node1 is the leader, not node2",
    );
}

#[test]
fn no_leader_is_503() {
    let mut state = healthy();
    state.leader = None;
    refused(
        switchover(&state, None, Some("node2")),
        503,
        "no running leader",
    );
    // A leader key whose member does not run counts as no leader too.
    let mut state = healthy();
    state.members.get_mut("node1").unwrap().state = "stopped".into();
    refused(
        switchover(&state, None, Some("node2")),
        503,
        "no running leader",
    );
}

#[test]
fn candidate_not_streaming_or_not_running_is_refused() {
    // node3 does not stream.
    refused(
        switchover(&healthy(), None, Some("node3")),
        412,
        "not a running, streaming replica",
    );
    let mut state = healthy();
    state.members.get_mut("node2").unwrap().state = "starting".into();
    refused(
        switchover(&state, None, Some("node2")),
        412,
        "state starting",
    );
}

#[test]
fn nofailover_candidate_is_refused() {
    let mut state = healthy();
    state
        .members
        .get_mut("node2")
        .unwrap()
        .tags
        .insert("nofailover".into(), json!(true));
    refused(
        switchover(&state, None, Some("node2")),
        412,
        "tagged nofailover",
    );
}

#[test]
fn lagging_candidate_is_refused() {
    let mut state = healthy();
    let node3 = state.members.get_mut("node3").unwrap();
    node3.replication_state = Some("streaming".into());
    refused(
        switchover(&state, None, Some("node3")),
        412,
        "lags 3145728 bytes behind the leader, more than maximum_lag_on_failover (1048576)",
    );
    // With a larger bound it is fine.
    validate_switchover(&state, None, Some("node3"), None, 4 * MAX_LAG, false)
        .expect("within bound");
}

#[test]
fn in_sync_mode_only_a_sync_standby_is_accepted() {
    let state = with_sync(healthy(), "node3");
    refused(
        validate_switchover(&state, None, Some("node2"), None, MAX_LAG, true),
        412,
        "not a synchronous standby",
    );
    let state = with_sync(healthy(), "node2");
    validate_switchover(&state, None, Some("node2"), None, MAX_LAG, true).expect("sync standby");
}

#[test]
fn a_pending_switchover_is_refused() {
    let mut state = healthy();
    state.failover = Some(Versioned {
        value: FailoverDoc {
            member: Some("node2".into()),
            ..FailoverDoc::default()
        },
        mod_revision: 9,
    });
    refused(
        switchover(&state, None, Some("node2")),
        412,
        "already pending (to node2)",
    );
}

#[test]
fn no_healthy_member_without_candidate_is_refused() {
    let mut state = healthy();
    state.members.remove("node2");
    refused(
        switchover(&state, Some("node1"), None),
        412,
        "no member other than node1",
    );
    // The refusal says why each member is not a candidate.
    refused(
        switchover(&state, Some("node1"), None),
        412,
        "(node3 is not a running, streaming replica (state running, replication none)); retry when one is",
    );
    let node3 = state.members.get_mut("node3").expect("node3");
    node3.replication_state = Some("streaming".into());
    refused(
        switchover(&state, Some("node1"), None),
        412,
        "(node3 lags 3145728 bytes behind the leader, more than maximum_lag_on_failover",
    );
}

#[test]
fn scheduled_at_must_parse_and_lie_in_the_future() {
    let now = Utc.with_ymd_and_hms(2026, 11, 26, 15, 0, 0).unwrap();
    let limits = Limits {
        max_lag: MAX_LAG,
        sync_mode: false,
    };
    let at =
        |s: &str| validate_switchover_at(&healthy(), None, Some("node2"), Some(s), limits, now);
    let doc = at("2026-11-26T15:05:00+00:00").expect("future time");
    assert_eq!(
        doc.scheduled_at.as_deref(),
        Some("2026-11-26T15:05:00+00:00")
    );
    refused(at("tomorrow-ish"), 400, "cannot parse scheduled_at");
    refused(at("2026-11-26T14:00:00+00:00"), 400, "in the past");
    assert_eq!(at("now").expect("now").scheduled_at, None);
    let later = parse_schedule(Some("2026-11-26 16:00:00+01:00"), now).expect("space form");
    assert_eq!(later.as_deref(), Some("2026-11-26T16:00:00+01:00"));
    assert!(parse_schedule(Some("2026-11-26 16:00"), now - Duration::days(365)).is_ok());
}

#[test]
fn failover_with_a_healthy_leader_is_a_switchover_to_the_candidate() {
    let doc = validate_failover(&healthy(), Some("node2"), MAX_LAG, false).expect("accepted");
    assert_eq!(doc.leader.as_deref(), Some("node1"));
    assert_eq!(doc.member.as_deref(), Some("node2"));
    refused(
        validate_failover(&healthy(), None, MAX_LAG, false),
        400,
        "needs a candidate",
    );
    refused(
        validate_failover(&healthy(), Some("node3"), MAX_LAG, false),
        412,
        "streaming",
    );
}

#[test]
fn failover_without_a_leader_needs_a_running_eligible_candidate() {
    let mut state = healthy();
    state.leader = None;
    let doc = validate_failover(&state, Some("node3"), MAX_LAG, false).expect("accepted");
    assert_eq!((doc.leader, doc.member.as_deref()), (None, Some("node3")));
    refused(
        validate_failover(&state, None, MAX_LAG, false),
        400,
        "needs a candidate",
    );
    refused(
        validate_failover(&state, Some("node7"), MAX_LAG, false),
        412,
        "not a member",
    );
    state.members.get_mut("node3").unwrap().state = "stopped".into();
    refused(
        validate_failover(&state, Some("node3"), MAX_LAG, false),
        412,
        "not running",
    );
    state
        .members
        .get_mut("node2")
        .unwrap()
        .tags
        .insert("nofailover".into(), json!("true"));
    refused(
        validate_failover(&state, Some("node2"), MAX_LAG, false),
        412,
        "nofailover",
    );
    let state = with_sync(state, "node3");
    refused(
        validate_failover(&state, Some("node1"), MAX_LAG, true),
        412,
        "not a synchronous standby",
    );
}
