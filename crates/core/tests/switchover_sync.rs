//! Scenario tests of planned switchover and synchronous replication in `decide`.

use pgbaton_core::*;
use pgbaton_core::{DcsAction, JobAction, PgAction};

mod common;
use common::*;

fn sync_cfg(strict: bool) -> HaConfig {
    HaConfig {
        synchronous: SyncConfig {
            mode: SyncMode::On,
            strict,
            count: 1,
        },
        ..cfg()
    }
}

#[test]
fn switchover_stops_cleanly_then_releases_the_key() {
    let mut v = view(Some(ME));
    v.failover = request(Some(ME), Some("node2"));
    let o = obs(
        primary(
            1000,
            vec![conn("node2", 1000, false), conn("node3", 990, false)],
        ),
        v.clone(),
    );
    let d = decide(&leader_state(), &o, &cfg());
    assert_eq!(d.reason, Reason::HandingOver { to: "node2".into() });
    assert_eq!(
        ops(&d),
        vec![Action::Job(JobAction::Stop {
            mode: StopMode::CheckpointThenFast
        })]
    );
    assert_eq!(d.state.phase, Phase::HandingOver);
    // PostgreSQL stopped cleanly: give the key up (no restart in place).
    let stopped = obs(
        LocalPg::Stopped {
            system_id: 42,
            was_primary: true,
            timeline: 1,
            lsn: 1000,
        },
        v,
    );
    let d = decide(&d.state, &stopped, &cfg());
    assert_eq!(ops(&d), vec![Action::Dcs(DcsAction::ReleaseLeader)]);
}

#[test]
fn switchover_without_candidate_picks_the_most_advanced_healthy_replica() {
    let mut v = view(Some(ME));
    v.failover = request(Some(ME), None);
    let o = obs(
        primary(
            1000,
            vec![conn("node2", 900, false), conn("node3", 990, false)],
        ),
        v,
    );
    let d = decide(&leader_state(), &o, &cfg());
    assert_eq!(d.reason, Reason::HandingOver { to: "node3".into() });
}

#[test]
fn switchover_to_an_unhealthy_or_lagging_member_is_refused_and_cancelled() {
    let mut v = view(Some(ME));
    v.failover = request(Some(ME), Some("node2"));
    // node2 is not streaming from us at all
    let o = obs(primary(1000, vec![conn("node3", 1000, false)]), v.clone());
    let d = decide(&leader_state(), &o, &cfg());
    assert!(
        matches!(d.reason, Reason::SwitchoverRefused(ref why) if why.starts_with("node2 is not a running, streaming replica")),
        "{:?}",
        d.reason
    );
    assert!(ops(&d).contains(&Action::Dcs(DcsAction::ClearFailover)));
    assert_eq!(d.state.phase, Phase::Leader);
    // node2 lags 2 MB
    let o = obs(
        primary(3_000_000, vec![conn("node2", 900, false)]),
        v.clone(),
    );
    let d = decide(&leader_state(), &o, &cfg());
    assert!(matches!(d.reason, Reason::SwitchoverRefused(ref why) if why.contains("lags")));
    // node2 is nofailover
    let mut v2 = v.clone();
    v2.members.get_mut("node2").unwrap().nofailover = true;
    let o = obs(primary(1000, vec![conn("node2", 1000, false)]), v2);
    let d = decide(&leader_state(), &o, &cfg());
    assert_eq!(
        d.reason,
        Reason::SwitchoverRefused(
            "node2 is tagged nofailover (or failover_priority 0), or its required watchdog is not usable, and may not become the leader"
                .into()
        )
    );
    // unknown member
    let mut v3 = v;
    v3.failover = request(Some(ME), Some("node9"));
    let o = obs(primary(1000, vec![]), v3);
    let d = decide(&leader_state(), &o, &cfg());
    assert_eq!(
        d.reason,
        Reason::SwitchoverRefused("node9 is not a member of the cluster".into())
    );
}

#[test]
fn a_scheduled_switchover_waits_for_its_time() {
    let mut v = view(Some(ME));
    v.failover = Some(FailoverRequest {
        leader: Some(ME.into()),
        candidate: Some("node2".into()),
        scheduled_at_unix_ms: Some(1_800_000_060_000),
        revision: 1,
    });
    let o = obs(primary(1000, vec![conn("node2", 1000, false)]), v);
    let d = decide(&leader_state(), &o, &cfg());
    assert_eq!(d.reason, Reason::SwitchoverScheduled { in_ms: 60_000 });
    assert!(ops(&d).is_empty());
    let due = Observation {
        unix_now_ms: 1_800_000_060_000,
        ..o
    };
    let d = decide(&leader_state(), &due, &cfg());
    assert_eq!(d.reason, Reason::HandingOver { to: "node2".into() });
}

#[test]
fn while_the_key_is_free_only_the_candidate_races() {
    let mut v = view(None);
    v.failover = request(Some("node3"), Some("node2"));
    let d = decide(
        &MemberState {
            phase: Phase::Replica,
            ..MemberState::new()
        },
        &obs(replica(1000), v.clone()),
        &cfg(),
    );
    assert_eq!(
        d.reason,
        Reason::StandingAside {
            candidate: "node2".into()
        }
    );
    assert!(ops(&d).is_empty());
    let node2 = HaConfig::with_defaults("node2");
    let d = decide(
        &MemberState {
            phase: Phase::Replica,
            ..MemberState::new()
        },
        &obs(replica(1000), v),
        &node2,
    );
    assert_eq!(ops(&d), vec![Action::Dcs(DcsAction::AcquireLeader)]);
}

#[test]
fn the_new_leader_clears_the_request() {
    let mut v = view(Some(ME));
    v.failover = request(Some("node3"), Some(ME));
    let d = decide(&leader_state(), &obs(primary(1000, vec![]), v), &cfg());
    assert!(ops(&d).contains(&Action::Dcs(DcsAction::ClearFailover)));
    assert_eq!(d.reason, Reason::LeaderHealthy);
}

#[test]
fn the_new_leader_of_a_switchover_without_candidate_clears_the_request_quietly() {
    let mut v = view(Some(ME));
    v.failover = request(Some("node3"), None);
    let d = decide(&leader_state(), &obs(primary(1000, vec![]), v), &cfg());
    assert!(ops(&d).contains(&Action::Dcs(DcsAction::ClearFailover)));
    assert_eq!(d.reason, Reason::LeaderHealthy);
}

fn peer(lsn: Lsn, timeline: u32) -> PeerView {
    report(lsn, timeline, true, None)
}

/// A quorum peer's position read while it still saw a leader, `read_within_ms` before the
/// observation at most (None: it does not say).
fn unsettled_peer(lsn: Lsn, read_within_ms: Option<Millis>) -> PeerView {
    report(lsn, 1, false, read_within_ms)
}

fn report(lsn: Lsn, timeline: u32, settled: bool, read_within_ms: Option<Millis>) -> PeerView {
    PeerView::Report {
        replica_running: true,
        primary_running: false,
        lsn: Some(lsn),
        timeline: Some(timeline),
        nofailover: false,
        failover_priority: 1,
        settled,
        read_within_ms,
    }
}

fn replica_state() -> MemberState {
    MemberState {
        phase: Phase::Replica,
        leaderless_since: Some(50_000),
        ..MemberState::new()
    }
}

#[test]
fn the_old_leader_of_a_switchover_without_candidate_never_races_for_the_key_back() {
    // node1 handed over and restarted as a replica; it holds the most WAL (its own
    // shutdown checkpoint), but the request names it as the leader handed over from.
    let mut v = view(None);
    v.failover = request(Some(ME), None);
    let mut o = obs(replica(1100), v);
    o.peers.insert("node2".into(), peer(1000, 1));
    o.peers.insert("node3".into(), peer(1000, 1));
    let d = decide(&replica_state(), &o, &cfg());
    assert_eq!(d.reason, Reason::FormerLeaderStandsAside);
    assert!(ops(&d).is_empty());
    // Before 2 x ttl the window holds; after it, the old leader is an ordinary member again.
    let later = Observation {
        now: 50_000 + 2 * cfg().ttl_ms,
        ..o
    };
    let d = decide(&replica_state(), &later, &cfg());
    assert_eq!(ops(&d), vec![Action::Dcs(DcsAction::AcquireLeader)]);
}

#[test]
fn the_old_leader_of_a_switchover_without_candidate_does_not_count_as_a_peer_ahead() {
    // node2 handed over; it is ahead of node1 and node3 (it wrote the last record), but
    // the others elect among themselves: node1 is the most advanced of them.
    let mut v = view(None);
    v.failover = request(Some("node2"), None);
    let mut o = obs(replica(1000), v);
    o.peers.insert("node2".into(), peer(1100, 1));
    o.peers.insert("node3".into(), peer(990, 1));
    let d = decide(&replica_state(), &o, &cfg());
    assert_eq!(
        ops(&d),
        vec![Action::Dcs(DcsAction::AcquireLeader)],
        "{}",
        d.reason
    );
    // node3, behind node1, does not race.
    let node3 = HaConfig::with_defaults("node3");
    let mut o3 = o.clone();
    o3.pg = replica(990);
    o3.peers.remove("node3");
    o3.peers.insert(ME.into(), peer(1000, 1));
    let d = decide(&replica_state(), &o3, &node3);
    assert!(ops(&d).is_empty(), "{}", d.reason);
}

#[test]
fn a_scheduled_switchover_does_not_hold_back_the_leader_it_names_before_its_time() {
    // The leader named by a switchover scheduled for later crashed and came back as a
    // replica: the switchover has not begun, so it is an ordinary member.
    let mut v = view(None);
    v.failover = Some(FailoverRequest {
        leader: Some(ME.into()),
        candidate: None,
        scheduled_at_unix_ms: Some(1_800_000_000_000 + 60_000),
        revision: 1,
    });
    let mut o = obs(replica(1100), v);
    o.peers.insert("node2".into(), peer(1000, 1));
    let d = decide(&replica_state(), &o, &cfg());
    assert_eq!(
        ops(&d),
        vec![Action::Dcs(DcsAction::AcquireLeader)],
        "{}",
        d.reason
    );
}

#[test]
fn a_scheduled_switchover_does_not_hold_back_the_others_before_its_time() {
    // The leader was lost before a switchover to node3 was due: nothing was handed over, so
    // the election is an ordinary one (simulator, synchronous soak on1 seed 32: everyone
    // stood aside for a candidate that could not race).
    let mut v = view(None);
    v.failover = Some(FailoverRequest {
        leader: Some("node2".into()),
        candidate: Some("node3".into()),
        scheduled_at_unix_ms: Some(1_800_000_000_000 + 60_000),
        revision: 1,
    });
    let mut o = obs(replica(1100), v.clone());
    o.peers.insert("node3".into(), peer(1000, 1));
    let d = decide(&replica_state(), &o, &cfg());
    assert_eq!(
        ops(&d),
        vec![Action::Dcs(DcsAction::AcquireLeader)],
        "{}",
        d.reason
    );
    // Once it is due, the others stand aside for the candidate.
    o.unix_now_ms = 1_800_000_000_000 + 60_000;
    let d = decide(&replica_state(), &o, &cfg());
    assert!(ops(&d).is_empty(), "{}", d.reason);
}

#[test]
fn sync_standby_enters_postgres_first_and_the_key_after_confirmation() {
    let c = sync_cfg(false);
    let v = view(Some(ME));
    // 1. names not yet in force: set them
    let o = obs(
        primary(
            1000,
            vec![conn("node2", 1000, false), conn("node3", 900, false)],
        ),
        v.clone(),
    );
    let d = decide(&leader_state(), &o, &c);
    let names = SyncStandbyNames::First {
        count: 1,
        members: vec!["node2".into()],
    };
    assert_eq!(
        ops(&d),
        vec![Action::Pg(PgAction::SetSyncStandbyNames {
            names: Some(names.clone())
        })]
    );
    // 2. in force: the position to confirm against is taken now, nothing written yet
    let o = Observation {
        configured_sync: Some(names.clone()),
        ..o
    };
    let d = decide(&d.state, &o, &c);
    assert!(ops(&d).is_empty(), "{:?}", d.actions);
    assert_eq!(d.state.sync_changed_at, Some(1000));
    // 3. reported synchronous but not yet flushed past that position: not in the key
    let o = Observation {
        pg: primary(
            1200,
            vec![conn("node2", 990, true), conn("node3", 900, false)],
        ),
        ..o
    };
    let d2 = decide(&d.state, &o, &c);
    assert_eq!(
        ops(&d2),
        vec![Action::Dcs(DcsAction::WriteSync {
            members: vec![],
            quorum: None
        })]
    );
    // 4. synchronous and caught up: now in the key
    let o = Observation {
        pg: primary(
            1200,
            vec![conn("node2", 1100, true), conn("node3", 900, false)],
        ),
        ..o
    };
    let d3 = decide(&d.state, &o, &c);
    assert_eq!(
        ops(&d3),
        vec![Action::Dcs(DcsAction::WriteSync {
            members: vec!["node2".into()],
            quorum: None
        })]
    );
}

#[test]
fn quorum_key_grows_before_the_names_and_shrinks_after() {
    let c = HaConfig {
        synchronous: SyncConfig {
            mode: SyncMode::Quorum,
            strict: false,
            count: 1,
        },
        ..cfg()
    };
    let mut v = view(Some(ME));
    v.sync = Some(SyncKey {
        leader: Some(ME.into()),
        members: vec!["node2".into()],
        quorum: Some(1),
    });
    let in_force = SyncStandbyNames::Any {
        count: 1,
        members: vec!["node2".into()],
    };
    // node3 joins: the key grows first
    let mut o = obs(
        primary(
            1000,
            vec![conn("node2", 1000, true), conn("node3", 1000, false)],
        ),
        v.clone(),
    );
    o.configured_sync = Some(in_force);
    let d = decide(&leader_state(), &o, &c);
    assert_eq!(
        ops(&d),
        vec![Action::Dcs(DcsAction::WriteSync {
            members: vec!["node2".into(), "node3".into()],
            quorum: Some(1)
        })]
    );
    // then the names
    v.sync = Some(SyncKey {
        leader: Some(ME.into()),
        members: vec!["node2".into(), "node3".into()],
        quorum: Some(1),
    });
    let o = Observation {
        dcs: Some(v.clone()),
        ..o
    };
    let d = decide(&d.state, &o, &c);
    let both = SyncStandbyNames::Any {
        count: 1,
        members: vec!["node2".into(), "node3".into()],
    };
    assert_eq!(
        ops(&d),
        vec![Action::Pg(PgAction::SetSyncStandbyNames {
            names: Some(both.clone())
        })]
    );
    // node2 leaves: the names shrink first, the key only once the rest caught up
    let mut o = obs(primary(2000, vec![conn("node3", 1500, true)]), v.clone());
    o.configured_sync = Some(both);
    let d = decide(&leader_state(), &o, &c);
    let only3 = SyncStandbyNames::Any {
        count: 1,
        members: vec!["node3".into()],
    };
    assert_eq!(
        ops(&d),
        vec![Action::Pg(PgAction::SetSyncStandbyNames {
            names: Some(only3.clone())
        })]
    );
    let o = Observation {
        configured_sync: Some(only3),
        ..o
    };
    let d = decide(&d.state, &o, &c);
    assert!(
        ops(&d).is_empty(),
        "position taken, key unchanged: {:?}",
        d.actions
    );
    let o = Observation {
        pg: primary(2100, vec![conn("node3", 2000, true)]),
        ..o
    };
    let d = decide(&d.state, &o, &c);
    assert_eq!(
        ops(&d),
        vec![Action::Dcs(DcsAction::WriteSync {
            members: vec!["node3".into()],
            quorum: Some(1)
        })]
    );
}

#[test]
fn a_leaving_sync_standby_leaves_the_key_before_postgres() {
    let c = sync_cfg(false);
    let mut v = view(Some(ME));
    v.sync = Some(SyncKey {
        leader: Some(ME.into()),
        members: vec!["node2".into()],
        quorum: None,
    });
    let names = SyncStandbyNames::First {
        count: 1,
        members: vec!["node2".into()],
    };
    // node2 disconnected; node3 streams
    let mut o = obs(primary(1000, vec![conn("node3", 1000, false)]), v);
    o.configured_sync = Some(names);
    let d = decide(&leader_state(), &o, &c);
    assert_eq!(
        ops(&d),
        vec![Action::Dcs(DcsAction::WriteSync {
            members: vec![],
            quorum: None
        })]
    );
}

#[test]
fn strict_mode_without_standbys_makes_commits_wait() {
    let c = sync_cfg(true);
    let o = obs(primary(1000, vec![]), view(Some(ME)));
    let d = decide(&leader_state(), &o, &c);
    assert_eq!(
        ops(&d),
        vec![Action::Pg(PgAction::SetSyncStandbyNames {
            names: Some(SyncStandbyNames::Wildcard)
        })]
    );
    // without strict: asynchronous, and the sync key says no member is synchronous
    let d = decide(&leader_state(), &o, &sync_cfg(false));
    assert!(ops(&d).is_empty());
    let d = decide(&d.state, &o, &sync_cfg(false));
    assert_eq!(
        ops(&d),
        vec![Action::Dcs(DcsAction::WriteSync {
            members: vec![],
            quorum: None
        })]
    );
}

#[test]
fn in_sync_mode_only_a_named_synchronous_standby_is_promoted() {
    let c = sync_cfg(false);
    let mut v = view(None);
    v.sync = Some(SyncKey {
        leader: Some("node3".into()),
        members: vec!["node2".into()],
        quorum: None,
    });
    let d = decide(
        &MemberState {
            phase: Phase::Replica,
            ..MemberState::new()
        },
        &obs(replica(5000), v.clone()),
        &c,
    );
    assert!(
        matches!(d.reason, Reason::NotRacing(Candidacy::NotSynchronous(_))),
        "{}",
        d.reason
    );
    // node2 races even if it looks lagged
    let node2 = HaConfig {
        name: "node2".into(),
        ..c.clone()
    };
    let mut v2 = v;
    v2.leader_optime = Some(50_000_000);
    let d = decide(
        &MemberState {
            phase: Phase::Replica,
            ..MemberState::new()
        },
        &obs(replica(900), v2),
        &node2,
    );
    assert_eq!(ops(&d), vec![Action::Dcs(DcsAction::AcquireLeader)]);
    // a new leader in sync mode first empties the sync key (so nobody it named can be
    // promoted without its commits), then starts with commits waiting for any standby
    let mut v3 = view(Some("node2"));
    v3.sync = Some(SyncKey {
        leader: Some("node3".into()),
        members: vec!["node2".into()],
        quorum: None,
    });
    let d = decide(
        &MemberState {
            phase: Phase::Candidate,
            ..MemberState::new()
        },
        &obs(replica(900), v3.clone()),
        &node2,
    );
    assert_eq!(
        ops(&d),
        vec![Action::Dcs(DcsAction::WriteSync {
            members: vec![],
            quorum: None
        })]
    );
    assert_eq!(d.reason, Reason::ClaimingSyncKey);
    v3.sync = Some(SyncKey {
        leader: Some("node2".into()),
        members: vec![],
        quorum: None,
    });
    let d = decide(&d.state, &obs(replica(900), v3), &node2);
    assert_eq!(
        ops(&d),
        vec![
            Action::Pg(PgAction::SetSyncStandbyNames {
                names: Some(SyncStandbyNames::Wildcard)
            }),
            Action::Job(JobAction::Promote)
        ]
    );
}

/// Quorum mode, commits waiting for 1 of node1..node3 (a promotion needs 3 - 1 + 1 = 3 of
/// them to answer), the leader gone.
fn quorum_one_of_three() -> (HaConfig, DcsView) {
    let c = HaConfig {
        synchronous: SyncConfig {
            mode: SyncMode::Quorum,
            strict: false,
            count: 1,
        },
        ..cfg()
    };
    let mut v = view(None);
    v.sync = Some(SyncKey {
        leader: Some("node0".into()),
        members: vec!["node1".into(), "node2".into(), "node3".into()],
        quorum: Some(1),
    });
    (c, v)
}

#[test]
fn quorum_promotion_needs_enough_named_members() {
    let (c, v) = quorum_one_of_three();
    let mut o = obs(replica(1000), v);
    o.peers.insert(
        "node2".into(),
        PeerView::Report {
            replica_running: true,
            primary_running: false,
            lsn: Some(900),
            timeline: Some(1),
            nofailover: false,
            failover_priority: 1,
            settled: true,
            read_within_ms: None,
        },
    );
    let d = decide(
        &MemberState {
            phase: Phase::Replica,
            ..MemberState::new()
        },
        &o,
        &c,
    );
    assert!(
        matches!(d.reason, Reason::NotRacing(Candidacy::NotSynchronous(ref w)) if w.contains("quorum")),
        "{}",
        d.reason
    );
    o.peers.insert(
        "node3".into(),
        PeerView::Report {
            replica_running: true,
            primary_running: false,
            lsn: Some(950),
            timeline: Some(1),
            nofailover: false,
            failover_priority: 1,
            settled: true,
            read_within_ms: None,
        },
    );
    let d = decide(
        &MemberState {
            phase: Phase::Replica,
            ..MemberState::new()
        },
        &o,
        &c,
    );
    assert_eq!(ops(&d), vec![Action::Dcs(DcsAction::AcquireLeader)]);
}

/// Quorum mode: a named member's position counts only when it read it after finding no
/// leader key (`settled`): one read while the leader still ran can be older than commits the
/// leader acknowledged with that member's flush (the real-runtime simulation's quorum seed
/// 101119 lost one this way). Until the peers report settled positions, the candidate does
/// not race and asks again within `PEERS_RECHECK_MS`; then the member ahead wins.
#[test]
fn quorum_promotion_counts_only_positions_read_after_the_leader_key_went() {
    let (c, v) = quorum_one_of_three();
    let unsettled = |lsn| unsettled_peer(lsn, None);
    let mut o = obs(replica(1000), v);
    // Both peers answered from before their last WAL: they look behind us.
    o.peers.insert("node2".into(), unsettled(990));
    o.peers.insert("node3".into(), unsettled(990));
    let replica_phase = MemberState {
        phase: Phase::Replica,
        ..MemberState::new()
    };
    let d = decide(&replica_phase, &o, &c);
    assert!(
        matches!(d.reason, Reason::NotRacing(Candidacy::PeersUnsettled { ref members }) if members.len() == 2),
        "{}",
        d.reason
    );
    assert!(!ops(&d).contains(&Action::Dcs(DcsAction::AcquireLeader)));
    assert_eq!(d.next_wake, o.now + PEERS_RECHECK_MS);
    // Their settled reports show node3 ahead: node3 races, not us.
    o.peers.insert("node2".into(), peer(1000, 1));
    o.peers.insert("node3".into(), peer(1010, 1));
    let d = decide(&replica_phase, &o, &c);
    assert!(
        matches!(d.reason, Reason::NotRacing(Candidacy::PeerAhead { ref member, .. }) if member == "node3"),
        "{}",
        d.reason
    );
    // Settled and not ahead: we race.
    o.peers.insert("node3".into(), peer(1000, 1));
    let d = decide(&replica_phase, &o, &c);
    assert_eq!(ops(&d), vec![Action::Dcs(DcsAction::AcquireLeader)]);
}

/// Quorum mode: a position the peer read after this member found the key gone is final too,
/// whatever the peer's own DCS view was (`read_within_ms` no longer ago than the key went);
/// one read before still is not (quorum soak seed 301567 of `quorum1`: a peer whose DCS
/// answered slowly kept reporting "a leader seen", and the cluster stayed leaderless until
/// the old leader returned).
#[test]
fn quorum_counts_a_position_read_after_the_candidate_found_the_key_gone() {
    let (c, v) = quorum_one_of_three();
    let read_ago = |lsn, ago| unsettled_peer(lsn, Some(ago));
    let mut o = obs(replica(1000), v);
    // The key went 300 ms ago (this member's first read without it).
    let leaderless = MemberState {
        phase: Phase::Replica,
        leaderless_since: Some(o.now - 300),
        no_leader_read_since: Some(o.now - 300),
        ..MemberState::new()
    };
    o.peers.insert("node2".into(), read_ago(1000, 200));
    o.peers.insert("node3".into(), read_ago(990, 301));
    let d = decide(&leaderless, &o, &c);
    assert!(
        matches!(d.reason, Reason::NotRacing(Candidacy::PeersUnsettled { ref members }) if members == &["node3".to_string()]),
        "node3 read its position before the key went: {}",
        d.reason
    );
    assert!(!ops(&d).contains(&Action::Dcs(DcsAction::AcquireLeader)));
    // Read since: it counts, and a position ahead of ours still wins.
    o.peers.insert("node3".into(), read_ago(1010, 300));
    let d = decide(&leaderless, &o, &c);
    assert!(
        matches!(d.reason, Reason::NotRacing(Candidacy::PeerAhead { ref member, .. }) if member == "node3"),
        "{}",
        d.reason
    );
    o.peers.insert("node3".into(), read_ago(1000, 300));
    let d = decide(&leaderless, &o, &c);
    assert_eq!(ops(&d), vec![Action::Dcs(DcsAction::AcquireLeader)]);
    assert_eq!(d.state.no_leader_read_since, Some(o.now - 300));
    // A read that failed since (a leader may have come, had commits acknowledged and gone
    // unseen): only positions read after the next read without a key count.
    let after_a_failed_read = MemberState {
        no_leader_read_since: None,
        ..leaderless.clone()
    };
    let d = decide(&after_a_failed_read, &o, &c);
    assert!(
        matches!(d.reason, Reason::NotRacing(Candidacy::PeersUnsettled { ref members }) if members.len() == 2),
        "{}",
        d.reason
    );
    assert_eq!(d.state.no_leader_read_since, Some(o.now));
    let failed = Observation {
        dcs: None,
        now: o.now + 250,
        ..o.clone()
    };
    let d = decide(&leaderless, &failed, &c);
    assert_eq!(d.state.no_leader_read_since, None);
}

#[test]
fn a_restarted_leader_reuses_the_names_the_sync_key_promises() {
    let c = sync_cfg(false);
    let mut v = view(Some(ME));
    v.sync = Some(SyncKey {
        leader: Some(ME.into()),
        members: vec!["node2".into()],
        quorum: None,
    });
    let crashed = LocalPg::Stopped {
        system_id: 42,
        was_primary: true,
        timeline: 1,
        lsn: 1000,
    };
    let d = decide(
        &MemberState {
            phase: Phase::Init,
            ..MemberState::new()
        },
        &obs(crashed, v),
        &c,
    );
    let names = SyncStandbyNames::First {
        count: 1,
        members: vec!["node2".into()],
    };
    assert_eq!(
        ops(&d),
        vec![
            Action::Pg(PgAction::SetSyncStandbyNames { names: Some(names) }),
            Action::Job(JobAction::StartPrimary)
        ]
    );
}

#[test]
fn the_leader_that_wrote_the_sync_key_may_be_promoted_again() {
    let c = sync_cfg(false);
    let mut v = view(None);
    v.sync = Some(SyncKey {
        leader: Some(ME.into()),
        members: vec![],
        quorum: None,
    });
    let d = decide(
        &MemberState {
            phase: Phase::Replica,
            ..MemberState::new()
        },
        &obs(replica(1000), v),
        &c,
    );
    assert_eq!(ops(&d), vec![Action::Dcs(DcsAction::AcquireLeader)]);
}

/// A failover request naming a candidate does not skip the quorum check: while a named member
/// has not answered, the requested candidate does not race either (the simulator once saw a
/// candidate promoted this way without a commit another named member held).
#[test]
fn a_requested_failover_candidate_still_needs_the_quorum() {
    let (c, mut v) = quorum_one_of_three();
    v.failover = request(None, Some(ME));
    let mut o = obs(replica(1000), v);
    o.peers.insert("node2".into(), peer(900, 1));
    let d = decide(&replica_state(), &o, &c);
    assert!(
        !ops(&d).contains(&Action::Dcs(DcsAction::AcquireLeader)),
        "{}",
        d.reason
    );
    o.peers.insert("node3".into(), peer(950, 1));
    let d = decide(&replica_state(), &o, &c);
    assert!(
        ops(&d).contains(&Action::Dcs(DcsAction::AcquireLeader)),
        "{}",
        d.reason
    );
}

/// A new leader that finds the previous leader's `sync` key writes a key of its own before it
/// changes `synchronous_standby_names` (the simulator once saw a new leader keep
/// a stale key while its names changed every cycle, and the stale key let a member without an
/// acknowledged commit be promoted).
#[test]
fn a_new_leader_replaces_the_previous_leaders_sync_key_first() {
    let c = sync_cfg(false);
    let mut v = view(Some(ME));
    v.sync = Some(SyncKey {
        leader: Some("node3".into()),
        members: vec![ME.into()],
        quorum: None,
    });
    let o = obs(
        primary(
            1000,
            vec![conn("node2", 1000, false), conn("node3", 900, false)],
        ),
        v,
    );
    let d = decide(&leader_state(), &o, &c);
    let actions = ops(&d);
    assert!(
        actions.contains(&Action::Dcs(DcsAction::WriteSync {
            members: Vec::new(),
            quorum: None
        })),
        "{actions:?}"
    );
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Pg(PgAction::SetSyncStandbyNames { .. }))),
        "{actions:?}"
    );
}
