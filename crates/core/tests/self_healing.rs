//! Nothing needs a human when a replica falls behind: the leader keeps a departed member's
//! slot for `member_slots_ttl`; a replica whose upstream no longer has the WAL it needs is
//! re-cloned (its data directory moved aside), at most once per `reclone_interval`, never
//! while the `sync` key names it, and not when the archive may still provide the WAL; a rewind
//! that did not help is not repeated.

use pgbaton_core::{JobAction, PgAction};
use std::collections::BTreeMap;

use pgbaton_core::*;

const ME: &str = "node2";
const LEADER: &str = "node1";
const NOW: Millis = 1_000_000;

fn cfg() -> HaConfig {
    HaConfig::with_defaults(ME)
}

fn leader_cfg() -> HaConfig {
    HaConfig::with_defaults(LEADER)
}

fn running(in_recovery: bool, lsn: Lsn, streaming: bool) -> LocalPg {
    LocalPg::Running(RunningPg {
        system_id: 42,
        in_recovery,
        timeline: 1,
        lsn,
        streaming,
        replicas: Vec::new(),
    })
}

fn stopped_replica() -> LocalPg {
    LocalPg::Stopped {
        system_id: 42,
        was_primary: false,
        timeline: 1,
        lsn: 100,
    }
}

fn member(is_primary: bool) -> MemberView {
    MemberView {
        state: "running".into(),
        is_primary,
        is_standby_leader: false,
        lsn: Some(1_000),
        timeline: Some(1),
        nofailover: false,
        replicatefrom: None,
        nosync: false,
        clonefrom: false,
    }
}

/// node1 leads; `members` are the other member keys present.
fn view(members: &[&str]) -> DcsView {
    let mut docs = BTreeMap::new();
    docs.insert(LEADER.to_string(), member(true));
    for m in members {
        docs.insert(m.to_string(), member(false));
    }
    DcsView {
        initialize: Initialize::SystemId(42),
        leader: Some(LEADER.into()),
        members: docs,
        leader_optime: Some(1_000_000_000),
        history: Default::default(),
        config_revision: None,
        failover: None,
        sync: None,
        failsafe: None,
        leader_oldest_wal: None,
        routers: Default::default(),
    }
}

fn obs(now: Millis, pg: LocalPg, view: DcsView) -> Observation {
    Observation {
        now,
        pg,
        job: JobView::Idle,
        dcs: Some(view),
        lease_valid_until: Some(now + 3_000),
        peers: BTreeMap::new(),
        configured_upstream: Some(LEADER.into()),
        follows_remote_primary: false,
        unix_now_ms: 1_800_000_000_000,
        configured_sync: None,
        failsafe_acked_at: None,
        failsafe_promised_until: None,
        missing_wal_segment: None,
        forked_from_upstream: false,
        slot_copies_ready: false,
        command: None,
        watchdog: Default::default(),
    }
}

fn replica_state() -> MemberState {
    MemberState {
        phase: Phase::Replica,
        ..MemberState::new()
    }
}

fn slot_members(d: &Decision) -> Vec<String> {
    d.actions
        .iter()
        .find_map(|a| match a {
            Action::Pg(PgAction::SyncSlots { members }) => Some(members.clone()),
            _ => None,
        })
        .expect("a leader keeps slots")
}

fn pg_ops(d: &Decision) -> Vec<Action> {
    d.actions
        .iter()
        .filter(|a| !a.is_dcs() && !matches!(a, Action::Pg(PgAction::SyncSlots { .. })))
        .cloned()
        .collect()
}

const SEGMENT: &str = "000000010000000000000003";

/// The replica has not streamed since `NOW`; `at` is `NOW` + the timeout, and the log says the
/// leader removed the segment it asks for.
fn stuck_with_segment_removed(state: &MemberState) -> (Decision, Observation) {
    let first = obs(NOW, running(true, 5_000, false), view(&[ME, "node3"]));
    let d = decide(state, &first, &cfg());
    assert_eq!(
        pg_ops(&d),
        vec![],
        "no action before the not-streaming timeout"
    );
    let later = Observation {
        missing_wal_segment: Some(SEGMENT.into()),
        forked_from_upstream: false,
        slot_copies_ready: false,
        command: None,
        ..obs(
            NOW + cfg().not_streaming_timeout_ms,
            running(true, 5_000, false),
            view(&[ME, "node3"]),
        )
    };
    (decide(&d.state, &later, &cfg()), later)
}

// --- The leader keeps a departed member's slot for member_slots_ttl ---

#[test]
fn leader_keeps_the_slot_of_a_member_whose_key_expired_until_member_slots_ttl() {
    let leader = MemberState {
        phase: Phase::Leader,
        ..MemberState::new()
    };
    let present = obs(NOW, running(false, 1_000, false), view(&[ME, "node3"]));
    let d = decide(&leader, &present, &leader_cfg());
    assert_eq!(slot_members(&d), ["node2", "node3"]);

    // node2's key expired (its agent paused): its slot stays.
    let gone = obs(NOW + 8_000, running(false, 1_000, false), view(&["node3"]));
    let d = decide(&d.state, &gone, &leader_cfg());
    assert_eq!(slot_members(&d), ["node2", "node3"]);
    assert_eq!(d.reason, Reason::LeaderHealthy);

    // Still kept just before the ttl runs out, dropped once it has.
    let ttl = leader_cfg().member_slots_ttl_ms;
    let almost = Observation {
        now: NOW + ttl - 1,
        lease_valid_until: Some(NOW + ttl + 3_000),
        ..gone.clone()
    };
    let d = decide(&d.state, &almost, &leader_cfg());
    assert_eq!(slot_members(&d), ["node2", "node3"]);
    let after = Observation {
        now: NOW + ttl,
        lease_valid_until: Some(NOW + ttl + 3_000),
        ..gone
    };
    let d = decide(&d.state, &after, &leader_cfg());
    assert_eq!(slot_members(&d), ["node3"]);
    assert!(!d.state.slot_members_seen.contains_key("node2"));
}

#[test]
fn a_member_that_comes_back_within_the_ttl_starts_a_new_ttl_when_it_leaves_again() {
    let cfg = HaConfig {
        member_slots_ttl_ms: 60_000,
        ..leader_cfg()
    };
    let leader = MemberState {
        phase: Phase::Leader,
        ..MemberState::new()
    };
    let at = |now: Millis, members: &[&str]| Observation {
        lease_valid_until: Some(now + 3_000),
        ..obs(now, running(false, 1_000, false), view(members))
    };
    let d = decide(&leader, &at(NOW, &[ME]), &cfg);
    let d = decide(&d.state, &at(NOW + 50_000, &[]), &cfg);
    assert_eq!(slot_members(&d), [ME]);
    let d = decide(&d.state, &at(NOW + 55_000, &[ME]), &cfg);
    let d = decide(&d.state, &at(NOW + 100_000, &[]), &cfg);
    assert_eq!(slot_members(&d), [ME], "seen at 55 s: kept until 115 s");
    let d = decide(&d.state, &at(NOW + 115_000, &[]), &cfg);
    assert!(slot_members(&d).is_empty());
}

#[test]
fn with_member_slots_ttl_zero_a_departed_members_slot_is_dropped_at_once() {
    let cfg = HaConfig {
        member_slots_ttl_ms: 0,
        ..leader_cfg()
    };
    let leader = MemberState {
        phase: Phase::Leader,
        ..MemberState::new()
    };
    let d = decide(
        &leader,
        &obs(NOW, running(false, 1_000, false), view(&[ME, "node3"])),
        &cfg,
    );
    let d = decide(
        &d.state,
        &obs(NOW + 1, running(false, 1_000, false), view(&["node3"])),
        &cfg,
    );
    assert_eq!(slot_members(&d), ["node3"]);
}

#[test]
fn a_cascading_member_is_not_kept_by_the_leader_when_it_leaves() {
    let leader = MemberState {
        phase: Phase::Leader,
        ..MemberState::new()
    };
    let mut cascading = view(&[ME, "node3"]);
    cascading
        .members
        .get_mut("node3")
        .expect("node3")
        .replicatefrom = Some(ME.into());
    let d = decide(
        &leader,
        &obs(NOW, running(false, 1_000, false), cascading),
        &leader_cfg(),
    );
    assert_eq!(slot_members(&d), [ME], "node2 keeps node3's slot");
    let d = decide(
        &d.state,
        &obs(NOW + 5_000, running(false, 1_000, false), view(&[ME])),
        &leader_cfg(),
    );
    assert_eq!(slot_members(&d), [ME]);
}

// --- A replica whose upstream no longer has its WAL is re-cloned ---

#[test]
fn missing_wal_in_the_log_leads_to_a_reclone_with_the_data_directory_moved_aside() {
    let (d, later) = stuck_with_segment_removed(&replica_state());
    let missing = MissingWal::SegmentRemoved {
        segment: SEGMENT.into(),
    };
    assert_eq!(
        d.reason,
        Reason::RecloningForMissingWal {
            missing,
            from: LEADER.into()
        }
    );
    assert_eq!(
        pg_ops(&d),
        vec![Action::Job(JobAction::Stop {
            mode: StopMode::Fast
        })]
    );
    assert!(d.state.reclone_pending && d.state.wal_missing);
    assert!(!d.state.rewind_needed, "a rewind cannot bring WAL back");
    assert_eq!(d.published.as_str(), "WAL missing");
    assert!(d
        .reason
        .to_string()
        .contains("its upstream no longer has WAL segment 000000010000000000000003"));

    // Stopped: moved aside (never deleted), then cloned.
    let stopped = obs(later.now + 500, stopped_replica(), view(&[ME, "node3"]));
    let d = decide(&d.state, &stopped, &cfg());
    assert_eq!(d.reason, Reason::MovingAsideForMissingWal);
    assert_eq!(
        pg_ops(&d),
        vec![Action::Pg(PgAction::MoveDataAside {
            reason: "wal-missing"
        })]
    );
    assert_eq!(d.state.phase, Phase::Cloning);
    assert_eq!(d.state.last_reclone_at, Some(later.now + 500));
    assert_eq!(d.published.as_str(), "WAL missing");

    let empty = obs(later.now + 600, LocalPg::NoData, view(&[ME, "node3"]));
    let d = decide(&d.state, &empty, &cfg());
    assert_eq!(
        pg_ops(&d),
        vec![Action::Job(JobAction::Clone {
            from: LEADER.into()
        })]
    );

    // Streaming again: the member is healthy and says so.
    let healthy = obs(
        later.now + 60_000,
        running(true, 9_000, true),
        view(&[ME, "node3"]),
    );
    let d = decide(&d.state, &healthy, &cfg());
    assert!(matches!(d.reason, Reason::FollowingLeader { .. }));
    assert!(!d.state.wal_missing);
    assert_eq!(d.published.as_str(), "running");
}

#[test]
fn missing_wal_is_only_acted_on_once_the_replica_has_not_streamed_for_the_timeout() {
    let first = Observation {
        missing_wal_segment: Some(SEGMENT.into()),
        forked_from_upstream: false,
        slot_copies_ready: false,
        command: None,
        ..obs(NOW, running(true, 5_000, false), view(&[ME]))
    };
    let d = decide(&replica_state(), &first, &cfg());
    assert_eq!(pg_ops(&d), vec![]);
    assert!(matches!(d.reason, Reason::FollowingLeader { .. }));
}

#[test]
fn a_position_older_than_the_leaders_oldest_wal_that_does_not_move_means_missing_wal() {
    let mut v = view(&[ME]);
    v.leader_oldest_wal = Some(0x0900_0000);
    let first = obs(NOW, running(true, 0x0300_0000, false), v.clone());
    let d = decide(&replica_state(), &first, &cfg());
    let later = obs(
        NOW + cfg().not_streaming_timeout_ms,
        running(true, 0x0300_0000, false),
        v,
    );
    let d = decide(&d.state, &later, &cfg());
    let missing = MissingWal::BehindLeaderWal {
        lsn: 0x0300_0000,
        oldest: 0x0900_0000,
    };
    assert_eq!(
        d.reason,
        Reason::RecloningForMissingWal {
            missing,
            from: LEADER.into()
        }
    );
    assert!(d
        .reason
        .to_string()
        .contains("its position 0/3000000 has not moved and is older than the oldest WAL the leader still holds (0/9000000)"));
}

#[test]
fn a_replica_still_replaying_is_not_judged_by_the_leaders_oldest_wal() {
    // Its position moved during the timeout (local WAL being replayed): no missing-WAL
    // verdict, the ordinary not-streaming rule applies.
    let mut v = view(&[ME]);
    v.leader_oldest_wal = Some(0x0900_0000);
    let first = obs(NOW, running(true, 0x0100_0000, false), v.clone());
    let d = decide(&replica_state(), &first, &cfg());
    let moving = obs(NOW + 4_000, running(true, 0x0200_0000, false), v.clone());
    let d = decide(&d.state, &moving, &cfg());
    let later = obs(
        NOW + cfg().not_streaming_timeout_ms,
        running(true, 0x0200_0000, false),
        v,
    );
    let d = decide(&d.state, &later, &cfg());
    assert!(
        matches!(d.reason, Reason::NotStreaming { .. }),
        "{}",
        d.reason
    );
    assert!(d.state.rewind_needed && !d.state.reclone_pending);
}

#[test]
fn with_restore_command_the_replica_waits_for_the_archive_without_stopping() {
    let cfg = HaConfig {
        archive_recovery: true,
        ..cfg()
    };
    let first = obs(NOW, running(true, 5_000, false), view(&[ME]));
    let d = decide(&replica_state(), &first, &cfg);
    let later = Observation {
        missing_wal_segment: Some(SEGMENT.into()),
        forked_from_upstream: false,
        slot_copies_ready: false,
        command: None,
        ..obs(
            NOW + cfg.not_streaming_timeout_ms,
            running(true, 5_000, false),
            view(&[ME]),
        )
    };
    let d = decide(&d.state, &later, &cfg);
    assert!(matches!(d.reason, Reason::MissingWalWaitingForArchive(_)));
    assert!(d.reason.to_string().contains("restore_command is set"));
    assert_eq!(pg_ops(&d), vec![]);
    assert!(!d.state.reclone_pending && !d.state.rewind_needed);
    // And stays so, without stopping PostgreSQL, cycle after cycle.
    let much_later = Observation {
        now: later.now + 30_000,
        lease_valid_until: Some(later.now + 33_000),
        ..later
    };
    let d = decide(&d.state, &much_later, &cfg);
    assert!(matches!(d.reason, Reason::MissingWalWaitingForArchive(_)));
    assert_eq!(pg_ops(&d), vec![]);
}

#[test]
fn a_member_the_sync_key_names_keeps_its_data() {
    let cfg = HaConfig {
        synchronous: SyncConfig {
            mode: SyncMode::On,
            strict: false,
            count: 1,
        },
        ..cfg()
    };
    let mut v = view(&[ME]);
    v.sync = Some(SyncKey {
        leader: Some(LEADER.into()),
        members: vec![ME.into()],
        quorum: None,
    });
    let first = obs(NOW, running(true, 5_000, false), v.clone());
    let d = decide(&replica_state(), &first, &cfg);
    let later = Observation {
        missing_wal_segment: Some(SEGMENT.into()),
        forked_from_upstream: false,
        slot_copies_ready: false,
        command: None,
        ..obs(
            NOW + cfg.not_streaming_timeout_ms,
            running(true, 5_000, false),
            v,
        )
    };
    let d = decide(&d.state, &later, &cfg);
    assert!(matches!(
        d.reason,
        Reason::MissingWalKeepingSynchronousData(_)
    ));
    assert_eq!(pg_ops(&d), vec![]);
}

#[test]
fn the_sync_key_naming_the_member_after_the_stop_still_keeps_its_data() {
    let (d, later) = stuck_with_segment_removed(&replica_state());
    assert!(d.state.reclone_pending);
    let cfg = HaConfig {
        synchronous: SyncConfig {
            mode: SyncMode::On,
            strict: false,
            count: 1,
        },
        ..cfg()
    };
    let mut v = view(&[ME, "node3"]);
    v.sync = Some(SyncKey {
        leader: Some(LEADER.into()),
        members: vec![ME.into()],
        quorum: None,
    });
    let d = decide(&d.state, &obs(later.now + 500, stopped_replica(), v), &cfg);
    assert_eq!(
        pg_ops(&d),
        vec![Action::Job(JobAction::StartReplica {
            upstream: Some(LEADER.into())
        })]
    );
    assert!(!d.state.reclone_pending);
}

#[test]
fn auto_reclone_off_leaves_it_to_the_operator() {
    let cfg = HaConfig {
        auto_reclone: false,
        ..cfg()
    };
    let first = obs(NOW, running(true, 5_000, false), view(&[ME]));
    let d = decide(&replica_state(), &first, &cfg);
    let later = Observation {
        missing_wal_segment: Some(SEGMENT.into()),
        forked_from_upstream: false,
        slot_copies_ready: false,
        command: None,
        ..obs(
            NOW + cfg.not_streaming_timeout_ms,
            running(true, 5_000, false),
            view(&[ME]),
        )
    };
    let d = decide(&d.state, &later, &cfg);
    assert!(matches!(d.reason, Reason::MissingWalAutoRecloneOff(_)));
    assert!(d.reason.to_string().contains("pgbaton ctl reinit"));
    assert_eq!(pg_ops(&d), vec![]);
    assert_eq!(d.published.as_str(), "WAL missing");
}

#[test]
fn at_most_one_automatic_reclone_per_reclone_interval() {
    let recloned = MemberState {
        last_reclone_at: Some(NOW - 60_000),
        ..replica_state()
    };
    let (d, later) = stuck_with_segment_removed(&recloned);
    let Reason::MissingWalRecloneLater { in_ms, .. } = d.reason else {
        panic!("expected to wait for the interval: {}", d.reason);
    };
    assert_eq!(
        in_ms,
        cfg().reclone_interval_ms - 60_000 - cfg().not_streaming_timeout_ms
    );
    assert_eq!(pg_ops(&d), vec![]);
    // Once the interval has passed, it re-clones again.
    let due = Observation {
        now: later.now + in_ms,
        lease_valid_until: Some(later.now + in_ms + 3_000),
        ..later
    };
    let d = decide(&d.state, &due, &cfg());
    assert!(matches!(d.reason, Reason::RecloningForMissingWal { .. }));
}

// --- A rewind is not repeated forever ---

#[test]
fn a_replica_still_not_streaming_after_a_rewind_is_not_stopped_again() {
    // First time: stop to rewind (as before).
    let first = obs(NOW, running(true, 5_000, false), view(&[ME]));
    let d = decide(&replica_state(), &first, &cfg());
    let t = cfg().not_streaming_timeout_ms;
    let d = decide(
        &d.state,
        &obs(NOW + t, running(true, 5_000, false), view(&[ME])),
        &cfg(),
    );
    assert!(matches!(d.reason, Reason::NotStreaming { .. }));
    // Stopped: rewind (pg_rewind will say "no rewind required"), then start.
    let d = decide(
        &d.state,
        &obs(NOW + t + 500, stopped_replica(), view(&[ME])),
        &cfg(),
    );
    assert_eq!(
        pg_ops(&d),
        vec![Action::Job(JobAction::Rewind {
            from: LEADER.into()
        })]
    );
    assert_eq!(d.state.rewound_for, Some((LEADER.to_string(), Some(1))));
    let d = decide(
        &d.state,
        &obs(NOW + t + 1_000, stopped_replica(), view(&[ME])),
        &cfg(),
    );
    assert!(matches!(
        pg_ops(&d)[..],
        [Action::Job(JobAction::StartReplica { .. })]
    ));
    // Running again, still not streaming, nothing says why: it waits, without a stop.
    let again = NOW + t + 2_000;
    let d = decide(
        &d.state,
        &obs(again, running(true, 5_000, false), view(&[ME])),
        &cfg(),
    );
    let d = decide(
        &d.state,
        &obs(again + t, running(true, 5_000, false), view(&[ME])),
        &cfg(),
    );
    assert_eq!(
        d.reason,
        Reason::NotStreamingAfterRewind {
            leader: LEADER.into()
        }
    );
    assert_eq!(pg_ops(&d), vec![]);
    let d = decide(
        &d.state,
        &obs(again + 3 * t, running(true, 5_000, false), view(&[ME])),
        &cfg(),
    );
    assert_eq!(pg_ops(&d), vec![], "never stopped again every cycle");
    // Then the log shows the WAL is gone: re-clone.
    let d = decide(
        &d.state,
        &Observation {
            missing_wal_segment: Some(SEGMENT.into()),
            forked_from_upstream: false,
            slot_copies_ready: false,
            command: None,
            ..obs(again + 4 * t, running(true, 5_000, false), view(&[ME]))
        },
        &cfg(),
    );
    assert!(matches!(d.reason, Reason::RecloningForMissingWal { .. }));
    // Streaming clears the memory of the rewind.
    let d = decide(
        &MemberState {
            rewound_for: Some((LEADER.into(), Some(1))),
            ..replica_state()
        },
        &obs(again, running(true, 5_000, true), view(&[ME])),
        &cfg(),
    );
    assert_eq!(d.state.rewound_for, None);
}

#[test]
fn a_rewind_against_a_former_leader_does_not_hold_back_one_against_the_new_leader() {
    let state = MemberState {
        rewound_for: Some(("node3".into(), Some(1))),
        ..replica_state()
    };
    let first = obs(NOW, running(true, 5_000, false), view(&[ME, "node3"]));
    let d = decide(&state, &first, &cfg());
    let d = decide(
        &d.state,
        &obs(
            NOW + cfg().not_streaming_timeout_ms,
            running(true, 5_000, false),
            view(&[ME, "node3"]),
        ),
        &cfg(),
    );
    assert!(matches!(d.reason, Reason::NotStreaming { .. }));
}

#[test]
fn a_failed_rewind_does_not_count_as_tried() {
    let state = MemberState {
        rewound_for: Some((LEADER.into(), Some(1))),
        ..replica_state()
    };
    let failed = Observation {
        job: JobView::Failed {
            kind: JobKind::Rewind,
            error: "cannot connect".into(),
        },
        ..obs(NOW, running(true, 5_000, false), view(&[ME]))
    };
    let d = decide(&state, &failed, &cfg());
    assert_eq!(d.state.rewound_for, None);
}

#[test]
fn a_new_timeline_of_the_same_leader_may_need_a_new_rewind() {
    let state = MemberState {
        rewound_for: Some((LEADER.into(), Some(1))),
        ..replica_state()
    };
    let mut v = view(&[ME]);
    v.members.get_mut(LEADER).expect("leader").timeline = Some(2);
    let first = obs(NOW, running(true, 5_000, false), v.clone());
    let d = decide(&state, &first, &cfg());
    let d = decide(
        &d.state,
        &obs(
            NOW + cfg().not_streaming_timeout_ms,
            running(true, 5_000, false),
            v,
        ),
        &cfg(),
    );
    assert!(
        matches!(d.reason, Reason::NotStreaming { .. }),
        "{}",
        d.reason
    );
}

// --- A replica that cannot finish its start because its WAL is gone ---

fn starting_without_wal(now: Millis, job: JobView) -> Observation {
    Observation {
        missing_wal_segment: Some(SEGMENT.into()),
        forked_from_upstream: false,
        slot_copies_ready: false,
        command: None,
        job,
        ..obs(now, LocalPg::Starting, view(&[ME, "node3"]))
    }
}

#[test]
fn a_start_that_waits_for_removed_wal_is_aborted_and_the_replica_recloned() {
    let running_start = JobView::Running(JobKind::Start);
    let d = decide(
        &replica_state(),
        &starting_without_wal(NOW, running_start.clone()),
        &cfg(),
    );
    assert_eq!(d.reason, Reason::WaitingForJob(JobKind::Start));
    assert_eq!(pg_ops(&d), vec![], "PostgreSQL may still get the WAL");

    let later = NOW + cfg().not_streaming_timeout_ms;
    let d = decide(
        &d.state,
        &starting_without_wal(later, running_start),
        &cfg(),
    );
    assert_eq!(
        d.reason,
        Reason::RecloningForMissingWal {
            missing: MissingWal::SegmentRemoved {
                segment: SEGMENT.into()
            },
            from: LEADER.into()
        }
    );
    // The start job is still waiting: only an immediate stop ends it.
    assert_eq!(
        pg_ops(&d),
        vec![Action::Job(JobAction::Stop {
            mode: StopMode::Immediate
        })]
    );
    assert!(d.state.reclone_pending && d.state.wal_missing);
    assert_eq!(d.published.as_str(), "WAL missing");

    let stopped = obs(later + 500, stopped_replica(), view(&[ME, "node3"]));
    let d = decide(&d.state, &stopped, &cfg());
    assert_eq!(
        pg_ops(&d),
        vec![Action::Pg(PgAction::MoveDataAside {
            reason: "wal-missing"
        })]
    );
}

#[test]
fn a_start_that_timed_out_waiting_for_removed_wal_is_stopped_and_recloned() {
    let failed = JobView::Failed {
        kind: JobKind::Start,
        error: "PostgreSQL did not accept connections within 120.0 s".into(),
    };
    // An agent that restarted finds PostgreSQL starting: its phase is not known yet.
    let d = decide(
        &MemberState::new(),
        &starting_without_wal(NOW, failed.clone()),
        &cfg(),
    );
    assert_eq!(d.reason, Reason::WaitingForPostgres);
    let d = decide(
        &d.state,
        &starting_without_wal(NOW + cfg().not_streaming_timeout_ms, failed),
        &cfg(),
    );
    assert_eq!(
        pg_ops(&d),
        vec![Action::Job(JobAction::Stop {
            mode: StopMode::Fast
        })]
    );
    assert!(d.state.reclone_pending);
}

#[test]
fn a_starting_replica_without_a_removed_segment_in_its_log_is_left_to_start() {
    let plain = obs(NOW + 60_000, LocalPg::Starting, view(&[ME, "node3"]));
    let d = decide(&replica_state(), &plain, &cfg());
    assert_eq!(d.reason, Reason::WaitingForPostgres);
    assert_eq!(pg_ops(&d), vec![]);
}

#[test]
fn a_starting_replica_whose_wal_is_gone_waits_for_the_archive_when_one_is_configured() {
    let cfg = HaConfig {
        archive_recovery: true,
        ..cfg()
    };
    let job = JobView::Running(JobKind::Start);
    let d = decide(
        &replica_state(),
        &starting_without_wal(NOW, job.clone()),
        &cfg,
    );
    let d = decide(
        &d.state,
        &starting_without_wal(NOW + cfg.not_streaming_timeout_ms, job),
        &cfg,
    );
    assert!(matches!(d.reason, Reason::MissingWalWaitingForArchive(_)));
    assert_eq!(pg_ops(&d), vec![]);
}

/// A replica still starting whose log says its data forked off the leader's history (it was
/// rewound against a leader lost before it became consistent) is stopped at once and
/// rewound, once that has been logged for the not-streaming timeout; before, nothing.
#[test]
fn a_starting_replica_whose_data_forked_is_stopped_and_rewound() {
    let starting = |now: Millis, job: JobView| Observation {
        job,
        forked_from_upstream: true,
        ..obs(now, LocalPg::Starting, view(&[ME, "node3"]))
    };
    let start_job = JobView::Running(JobKind::Start);
    let d = decide(&replica_state(), &starting(NOW, start_job.clone()), &cfg());
    assert_eq!(pg_ops(&d), vec![], "{}", d.reason);
    let later = starting(NOW + cfg().not_streaming_timeout_ms, start_job);
    let d = decide(&d.state, &later, &cfg());
    assert_eq!(
        pg_ops(&d),
        vec![Action::Job(JobAction::Stop {
            mode: StopMode::Immediate
        })],
        "{}",
        d.reason
    );
    assert!(d.reason.to_string().contains("forked off"), "{}", d.reason);
    // Stopped: the rewind row runs against the leader.
    let stopped = obs(later.now + 1_000, stopped_replica(), view(&[ME, "node3"]));
    let d = decide(&d.state, &stopped, &cfg());
    assert!(
        pg_ops(&d)
            .iter()
            .any(|a| matches!(a, Action::Job(JobAction::Rewind { .. }))),
        "{:?} {}",
        d.actions,
        d.reason
    );
}

/// Found forked, then started again without a rewind because the leader was gone at that
/// moment (a leaderless member starts as a replica of nobody): when the next leader's
/// stream says the same, the replica is stopped for the rewind at once, with no second
/// not-streaming timeout (found by the real-runtime simulation, seed 1050: two waits and a
/// switchover between them kept it from following for 30 s).
#[test]
fn a_replica_found_forked_before_is_stopped_for_the_rewind_without_a_second_wait() {
    let state = MemberState {
        rewind_needed: true,
        ..replica_state()
    };
    let o = Observation {
        job: JobView::Running(JobKind::Start),
        forked_from_upstream: true,
        ..obs(NOW, LocalPg::Starting, view(&[ME, "node3"]))
    };
    let d = decide(&state, &o, &cfg());
    assert_eq!(
        pg_ops(&d),
        vec![Action::Job(JobAction::Stop {
            mode: StopMode::Immediate
        })],
        "{}",
        d.reason
    );
}

/// A replica still starting that this agent did not start (the agent restarted while it
/// started) is pointed at the leader, which its configuration may not name.
#[test]
fn a_starting_replica_of_a_restarted_agent_is_pointed_at_the_leader() {
    let o = Observation {
        configured_upstream: None,
        ..obs(NOW, LocalPg::Starting, view(&[ME, "node3"]))
    };
    let d = decide(&MemberState::new(), &o, &cfg());
    assert_eq!(
        pg_ops(&d),
        vec![Action::Pg(PgAction::Repoint {
            upstream: Some(LEADER.into())
        })],
        "{}",
        d.reason
    );
    // Once it names the leader: wait for it to answer.
    let o = obs(NOW + 1_000, LocalPg::Starting, view(&[ME, "node3"]));
    let d = decide(&d.state, &o, &cfg());
    assert_eq!(pg_ops(&d), vec![], "{}", d.reason);
}
