//! Readable scenario tests of `decide`: one situation, the exact decision.

mod common;

use pgbaton_core::{AgentAction, DcsAction, JobAction, PgAction};
use std::collections::BTreeMap;

use common::replica;
use pgbaton_core::*;

const ME: &str = "node1";

fn cfg() -> HaConfig {
    HaConfig::with_defaults(ME)
}

fn primary(lsn: Lsn) -> LocalPg {
    LocalPg::Running(RunningPg {
        system_id: 42,
        in_recovery: false,
        timeline: 1,
        lsn,
        streaming: false,
        replicas: Vec::new(),
    })
}

fn member(state: &str, is_primary: bool) -> MemberView {
    MemberView {
        state: state.into(),
        is_primary,
        is_standby_leader: false,
        lsn: Some(100),
        timeline: Some(1),
        nofailover: false,
        replicatefrom: None,
        nosync: false,
        clonefrom: false,
    }
}

/// A builder for observations: a bootstrapped cluster (system id 42) with node1..node3.
struct Obs {
    obs: Observation,
}

impl Obs {
    fn new(pg: LocalPg) -> Self {
        let mut members = BTreeMap::new();
        for m in ["node1", "node2", "node3"] {
            members.insert(m.to_string(), member("running", false));
        }
        Obs {
            obs: Observation {
                now: 100_000,
                pg,
                job: JobView::Idle,
                dcs: Some(DcsView {
                    initialize: Initialize::SystemId(42),
                    leader: None,
                    members,
                    leader_optime: Some(100),
                    history: Default::default(),
                    config_revision: None,
                    failover: None,
                    sync: None,
                    failsafe: None,
                    leader_oldest_wal: None,
                    routers: Default::default(),
                }),
                lease_valid_until: Some(103_000),
                peers: BTreeMap::new(),
                configured_upstream: None,
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
            },
        }
    }
    fn leader(mut self, name: &str) -> Self {
        let view = self.obs.dcs.as_mut().unwrap();
        view.leader = Some(name.to_string());
        view.members
            .insert(name.to_string(), member("running", true));
        self
    }
    fn dcs_down(mut self) -> Self {
        self.obs.dcs = None;
        self
    }
    fn lease_until(mut self, until: Option<Millis>) -> Self {
        self.obs.lease_valid_until = until;
        self
    }
    fn upstream(mut self, name: &str) -> Self {
        self.obs.configured_upstream = Some(name.to_string());
        self
    }
    fn peer(mut self, name: &str, lsn: Lsn) -> Self {
        self.obs.peers.insert(
            name.to_string(),
            PeerView::Report {
                replica_running: true,
                primary_running: false,
                lsn: Some(lsn),
                timeline: Some(1),
                nofailover: false,
                failover_priority: 1,
                settled: true,
                read_within_ms: None,
            },
        );
        self
    }
    fn initialize(mut self, init: Initialize) -> Self {
        self.obs.dcs.as_mut().unwrap().initialize = init;
        self
    }
    fn job(mut self, job: JobView) -> Self {
        self.obs.job = job;
        self
    }
    fn optime(mut self, lsn: Lsn) -> Self {
        self.obs.dcs.as_mut().unwrap().leader_optime = Some(lsn);
        self
    }
    fn build(self) -> Observation {
        self.obs
    }
}

fn in_phase(phase: Phase) -> MemberState {
    MemberState {
        phase,
        ..MemberState::new()
    }
}

fn pg_actions(d: &Decision) -> Vec<Action> {
    d.actions
        .iter()
        .filter(|a| {
            !matches!(
                a,
                Action::Dcs(DcsAction::RenewLease)
                    | Action::Dcs(DcsAction::PublishMember)
                    | Action::Pg(PgAction::SyncSlots { .. })
            )
        })
        .cloned()
        .collect()
}

#[test]
fn healthy_leader_keeps_its_role_and_publishes_its_position() {
    let obs = Obs::new(primary(500)).leader(ME).build();
    let d = decide(&in_phase(Phase::Leader), &obs, &cfg());
    assert_eq!(d.reason, Reason::LeaderHealthy);
    assert_eq!(d.state.phase, Phase::Leader);
    assert_eq!(d.actions[0], Action::Dcs(DcsAction::RenewLease));
    assert!(d
        .actions
        .contains(&Action::Dcs(DcsAction::WriteStatus { optime: 500 })));
    assert!(d.actions.contains(&Action::Pg(PgAction::SyncSlots {
        members: vec!["node2".into(), "node3".into()]
    })));
    // Wakes before the lease could expire, at least every renew interval.
    assert!(d.next_wake <= 100_000 + cfg().renew_interval_ms());
}

#[test]
fn only_the_leader_keeps_declared_publications_and_subscriptions_and_not_in_pause() {
    let declared = HaConfig {
        logical_declared: true,
        ..cfg()
    };
    let leader = Obs::new(primary(500)).leader(ME).build();
    let d = decide(&in_phase(Phase::Leader), &leader, &declared);
    assert_eq!(d.reason, Reason::LeaderHealthy);
    assert!(
        d.actions.contains(&Action::Pg(PgAction::ApplyLogical)),
        "{:?}",
        d.actions
    );
    // Nothing declared: no duty.
    let d = decide(&in_phase(Phase::Leader), &leader, &cfg());
    assert!(!d.actions.contains(&Action::Pg(PgAction::ApplyLogical)));
    // Maintenance mode leaves PostgreSQL alone.
    let paused = HaConfig {
        paused: true,
        ..declared.clone()
    };
    let d = decide(&in_phase(Phase::Leader), &leader, &paused);
    assert!(
        !d.actions.contains(&Action::Pg(PgAction::ApplyLogical)),
        "{:?}",
        d.actions
    );
    // A replica never applies: the leader's objects reach it by WAL.
    let follower = Obs::new(replica(100))
        .leader("node2")
        .upstream("node2")
        .build();
    let d = decide(&in_phase(Phase::Replica), &follower, &declared);
    assert!(
        !d.actions.contains(&Action::Pg(PgAction::ApplyLogical)),
        "{:?}",
        d.actions
    );
    assert!(
        !Action::Pg(PgAction::ApplyLogical).is_dcs()
            && !Action::Pg(PgAction::ApplyLogical).is_job()
    );
}

#[test]
fn leader_demotes_before_its_lease_can_expire() {
    // The lease is valid until 100_400 but the margin is 500 ms: demote now.
    let obs = Obs::new(primary(500))
        .leader(ME)
        .lease_until(Some(100_400))
        .build();
    let d = decide(&in_phase(Phase::Leader), &obs, &cfg());
    assert_eq!(
        pg_actions(&d),
        vec![Action::Job(JobAction::Stop {
            mode: StopMode::Immediate
        })]
    );
    assert_eq!(d.state.phase, Phase::Demoting);
    assert!(matches!(d.reason, Reason::DemoteWithoutLease { .. }));
}

#[test]
fn a_primary_restarting_without_dcs_and_lease_does_not_wake_every_millisecond() {
    // PostgreSQL crashed, the DCS is away and the lease ran out at 99_000: the decision
    // acts now; the next look is a loop away, not 1 ms (it used to spin).
    let obs = Obs::new(LocalPg::Stopped {
        system_id: 42,
        was_primary: true,
        timeline: 1,
        lsn: 500,
    })
    .dcs_down()
    .lease_until(Some(99_000))
    .build();
    let d = decide(&in_phase(Phase::RestartingPrimary), &obs, &cfg());
    assert!(
        d.next_wake >= 100_000 + cfg().renew_interval_ms().min(cfg().loop_wait_ms),
        "next wake {} after now 100000 ({:?})",
        d.next_wake,
        d.reason
    );
}

#[test]
fn leader_keeps_writing_through_a_dcs_outage_while_the_lease_holds() {
    let obs = Obs::new(primary(500))
        .dcs_down()
        .lease_until(Some(102_000))
        .build();
    let d = decide(&in_phase(Phase::Leader), &obs, &cfg());
    assert_eq!(pg_actions(&d), vec![]);
    assert_eq!(
        d.reason,
        Reason::LeaderLeaseStillValid {
            remaining_ms: 1_500
        }
    );
    // and wakes in time to demote at 101_500
    assert_eq!(d.next_wake, 101_000);
    let later = Observation {
        now: 101_600,
        ..obs
    };
    let d = decide(&d.state, &later, &cfg());
    assert_eq!(
        pg_actions(&d),
        vec![Action::Job(JobAction::Stop {
            mode: StopMode::Immediate
        })]
    );
}

#[test]
fn a_primary_when_another_member_holds_the_key_is_stopped_at_once() {
    let obs = Obs::new(primary(500)).leader("node2").build();
    let d = decide(&in_phase(Phase::Init), &obs, &cfg());
    assert_eq!(
        pg_actions(&d),
        vec![Action::Job(JobAction::Stop {
            mode: StopMode::Immediate
        })]
    );
}

#[test]
fn replica_with_the_key_promotes_only_after_observing_it() {
    let obs = Obs::new(replica(100)).build();
    let d = decide(&in_phase(Phase::Replica), &obs, &cfg());
    assert_eq!(pg_actions(&d), vec![Action::Dcs(DcsAction::AcquireLeader)]);
    assert_eq!(d.state.phase, Phase::Candidate);
    assert_eq!(
        d.next_wake, obs.now,
        "the race's outcome is observed at once"
    );
    // Next cycle: the key is ours.
    let obs = Obs::new(replica(100)).leader(ME).build();
    let d = decide(&d.state, &obs, &cfg());
    assert_eq!(pg_actions(&d), vec![Action::Job(JobAction::Promote)]);
    assert_eq!(d.state.promoted_from, Some((1, 100)));
}

/// The cluster used timelines 2 and 3 on a branch whose leader was lost before this member
/// (still on timeline 1, before the branch point) streamed from it: PostgreSQL would give the
/// promotion timeline 2 again, so the history files of 2 and 3 go into `pg_wal` first.
#[test]
fn a_promotion_from_an_older_timeline_reserves_the_ids_the_cluster_used() {
    let mut obs = Obs::new(replica(100)).leader(ME).build();
    let view = obs.dcs.as_mut().expect("dcs");
    view.history = [(1, 150), (2, 400)].into_iter().collect();
    let d = decide(&in_phase(Phase::Candidate), &obs, &cfg());
    assert_eq!(
        pg_actions(&d),
        vec![
            Action::Pg(PgAction::ReserveTimelines {
                after: 1,
                through: 3,
                ended: vec![(1, 150), (2, 400)],
            }),
            Action::Job(JobAction::Promote)
        ]
    );
    // A member document on a newer timeline than the key records counts too.
    let mut obs = Obs::new(replica(100)).leader(ME).build();
    let view = obs.dcs.as_mut().expect("dcs");
    view.members
        .insert("node3".into(), member("running", false));
    view.members.get_mut("node3").expect("node3").timeline = Some(2);
    let d = decide(&in_phase(Phase::Candidate), &obs, &cfg());
    assert_eq!(
        pg_actions(&d),
        vec![
            Action::Pg(PgAction::ReserveTimelines {
                after: 1,
                through: 2,
                ended: vec![],
            }),
            Action::Job(JobAction::Promote)
        ]
    );
}

#[test]
fn no_promotion_without_a_confirmed_lease() {
    // The key names us but the lease is not confirmed: never promote; the replica gives the
    // key up rather than keep it from the others, and does not renew the lease it is on.
    let obs = Obs::new(replica(100)).leader(ME).lease_until(None).build();
    let d = decide(&in_phase(Phase::Candidate), &obs, &cfg());
    assert_eq!(pg_actions(&d), vec![Action::Dcs(DcsAction::ReleaseLeader)]);
    assert_eq!(d.reason, Reason::ReleasingKeyWithoutLease);
    assert_eq!(d.state.phase, Phase::Replica);
    assert!(!d.actions.contains(&Action::Dcs(DcsAction::RenewLease)));
}

fn crashed_primary() -> LocalPg {
    LocalPg::Stopped {
        system_id: 42,
        was_primary: true,
        timeline: 1,
        lsn: 400,
    }
}

/// A leader whose DCS answers slowly cannot confirm its lease and demotes; etcd still
/// receives its keepalives. Once the lease is over as far as it knows, it must stop sending
/// them, or the leader key on its lease lives on with nobody running a primary (simulator
/// seed 75 of the main soak).
/// A leader restarting its primary in place over a DCS too slow to confirm its lease cannot
/// start it (the agent does no StartPrimary without a certainly valid lease), while the
/// keepalives that reached etcd late keep its key alive: without a read it gives the key up
/// (compare-and-delete, sent anyway) rather than hold it through the restart budget.
#[test]
fn a_leader_restarting_in_place_without_a_certain_lease_gives_the_key_up_even_without_a_read() {
    let obs = Obs::new(crashed_primary())
        .dcs_down()
        .lease_until(Some(99_000))
        .build();
    let d = decide(&in_phase(Phase::RestartingPrimary), &obs, &cfg());
    assert_eq!(d.reason, Reason::ReleasingKeyWithoutLease);
    assert!(
        d.actions.contains(&Action::Dcs(DcsAction::ReleaseLeader)),
        "{:?}",
        d.actions
    );
    assert!(!d.actions.contains(&Action::Dcs(DcsAction::RenewLease)));
    assert_eq!(d.state.phase, Phase::Replica);
    // With its lease certainly valid it goes on restarting (no read: no change).
    let obs = Obs::new(crashed_primary())
        .dcs_down()
        .lease_until(Some(obs.now + 3_000))
        .build();
    let d = decide(&in_phase(Phase::RestartingPrimary), &obs, &cfg());
    assert_eq!(d.reason, Reason::DcsUnreachable);
}

/// The same for a leader that has just stopped its primary because the lease was gone (the
/// restart in place aborted): with PostgreSQL stopped it sends the delete without a read
/// (simulator seed 168632: late renewals kept the key alive 7 s). It stays demoting, so that
/// an etcd that was down, not slow, and comes back holding the lease lets it restart in place.
#[test]
fn a_leader_demoted_for_want_of_a_lease_gives_the_key_up_even_without_a_read() {
    let obs = Obs::new(crashed_primary())
        .dcs_down()
        .lease_until(Some(99_000))
        .build();
    let d = decide(&in_phase(Phase::Demoting), &obs, &cfg());
    assert_eq!(d.reason, Reason::ReleasingKeyWithoutLease);
    assert_eq!(d.actions, vec![Action::Dcs(DcsAction::ReleaseLeader)]);
    assert_eq!(d.state.phase, Phase::Demoting);
}

#[test]
fn a_demoted_leader_without_dcs_stops_renewing_the_lease_its_key_is_on() {
    // Demotion: the lease is about to expire, the DCS does not answer (without a readable
    // key the lease cannot give the primary back: no renewal).
    let obs = Obs::new(primary(500))
        .dcs_down()
        .lease_until(Some(100_300))
        .build();
    let d = decide(&in_phase(Phase::Leader), &obs, &cfg());
    assert_eq!(
        pg_actions(&d),
        vec![Action::Job(JobAction::Stop {
            mode: StopMode::Immediate
        })]
    );
    assert_eq!(d.state.phase, Phase::Demoting);
    assert!(!d.actions.contains(&Action::Dcs(DcsAction::RenewLease)));
    // Stopped, still no DCS: no keepalive either.
    let obs = Obs::new(crashed_primary())
        .dcs_down()
        .lease_until(Some(99_000))
        .build();
    let d = decide(&d.state, &obs, &cfg());
    assert_eq!(d.reason, Reason::ReleasingKeyWithoutLease);
    assert_eq!(d.actions, vec![Action::Dcs(DcsAction::ReleaseLeader)]);
    // A candidate that raced may hold the key too.
    let obs = Obs::new(replica(100)).dcs_down().lease_until(None).build();
    let d = decide(&in_phase(Phase::Candidate), &obs, &cfg());
    assert!(!d.actions.contains(&Action::Dcs(DcsAction::RenewLease)));
}

#[test]
fn members_that_cannot_hold_the_key_or_may_lead_keep_renewing() {
    // A replica without DCS keeps its member key alive.
    let obs = Obs::new(replica(100)).dcs_down().build();
    let d = decide(&in_phase(Phase::Replica), &obs, &cfg());
    assert_eq!(d.actions, vec![Action::Dcs(DcsAction::RenewLease)]);
    // A leader without DCS whose lease is certainly valid keeps it valid.
    let obs = Obs::new(primary(500)).dcs_down().build();
    let d = decide(&in_phase(Phase::Leader), &obs, &cfg());
    assert_eq!(d.actions, vec![Action::Dcs(DcsAction::RenewLease)]);
    // A replica following another leader renews (the key is not on its lease).
    let obs = Obs::new(replica(100))
        .leader("node2")
        .upstream("node2")
        .lease_until(None)
        .build();
    let d = decide(&in_phase(Phase::Replica), &obs, &cfg());
    assert_eq!(d.actions[0], Action::Dcs(DcsAction::RenewLease));
}

#[test]
fn a_demoted_leader_whose_lease_etcd_still_holds_restarts_in_place() {
    // Demoted (etcd was down longer than ttl); etcd answers again and says the lease still
    // lives (it resets lease TTLs when it comes back): the agent's read of the lease's time
    // to live is the observation's `lease_valid_until`. No renewal was needed to learn it.
    let obs = Obs::new(crashed_primary()).leader(ME).build();
    let d = decide(&in_phase(Phase::Demoting), &obs, &cfg());
    assert_eq!(pg_actions(&d), vec![Action::Job(JobAction::StartPrimary)]);
    assert_eq!(d.actions[0], Action::Dcs(DcsAction::RenewLease));
}

#[test]
fn a_demoted_leader_whose_lease_is_not_confirmed_releases_the_key_without_renewing() {
    for lease in [Some(100_300), Some(99_000), None] {
        let obs = Obs::new(crashed_primary())
            .leader(ME)
            .lease_until(lease)
            .build();
        let d = decide(&in_phase(Phase::Demoting), &obs, &cfg());
        assert_eq!(d.reason, Reason::ReleasingKeyWithoutLease);
        assert_eq!(
            d.actions,
            vec![
                Action::Dcs(DcsAction::ReleaseLeader),
                Action::Dcs(DcsAction::PublishMember)
            ]
        );
        assert_eq!(d.state.phase, Phase::Replica);
        assert_eq!(d.next_wake, obs.now, "the release is observed at once");
    }
    // Still shutting down (PostgreSQL does not answer): not yet, and no renewal.
    let obs = Obs::new(LocalPg::Starting)
        .leader(ME)
        .lease_until(Some(99_000))
        .build();
    let d = decide(&in_phase(Phase::Demoting), &obs, &cfg());
    assert_eq!(d.reason, Reason::LeaderKeyWithoutLease);
    assert_eq!(d.actions, vec![Action::Dcs(DcsAction::PublishMember)]);
}

#[test]
fn the_most_advanced_replica_wins_the_race() {
    let obs = Obs::new(replica(100)).peer("node2", 150).build();
    let d = decide(&in_phase(Phase::Replica), &obs, &cfg());
    assert_eq!(pg_actions(&d), vec![]);
    assert!(matches!(
        d.reason,
        Reason::NotRacing(Candidacy::PeerAhead { .. })
    ));
    // Equal positions both race: the compare-and-swap picks one.
    let obs = Obs::new(replica(150)).peer("node2", 150).build();
    let d = decide(&in_phase(Phase::Replica), &obs, &cfg());
    assert_eq!(pg_actions(&d), vec![Action::Dcs(DcsAction::AcquireLeader)]);
}

/// A peer ahead is waited for only loop_wait after the cluster lost its leader: woken by the
/// same change, it races at once unless it cannot (its DCS too slow; the real-runtime
/// simulation's seed 2209 stayed leaderless while a healthy member deferred to it). Then the
/// member behind races, within the lag bound.
#[test]
fn a_peer_ahead_that_does_not_take_the_key_within_loop_wait_is_no_longer_waited_for() {
    let obs = Obs::new(replica(100)).peer("node2", 150).build();
    let first = decide(&in_phase(Phase::Replica), &obs, &cfg());
    assert!(matches!(
        first.reason,
        Reason::NotRacing(Candidacy::PeerAhead { .. })
    ));
    let mut later = Obs::new(replica(100)).peer("node2", 150).build();
    later.now = obs.now + cfg().loop_wait_ms;
    let d = decide(&first.state, &later, &cfg());
    assert_eq!(
        pg_actions(&d),
        vec![Action::Dcs(DcsAction::AcquireLeader)],
        "{}",
        d.reason
    );
}

#[test]
fn at_equal_positions_the_higher_failover_priority_races_alone() {
    let with_priority = |peer_priority: u32| {
        let mut obs = Obs::new(replica(150)).peer("node2", 150).build();
        if let Some(PeerView::Report {
            failover_priority, ..
        }) = obs.peers.get_mut("node2")
        {
            *failover_priority = peer_priority;
        }
        obs
    };
    let mine = HaConfig {
        failover_priority: 2,
        ..cfg()
    };
    // The peer outranks us: we stand aside.
    let d = decide(&in_phase(Phase::Replica), &with_priority(3), &mine);
    assert_eq!(pg_actions(&d), vec![]);
    assert!(matches!(
        d.reason,
        Reason::NotRacing(Candidacy::PeerPreferred {
            priority: 3,
            mine: 2,
            ..
        })
    ));
    // We outrank it, or tie: we race.
    for p in [1, 2] {
        let d = decide(&in_phase(Phase::Replica), &with_priority(p), &mine);
        assert_eq!(pg_actions(&d), vec![Action::Dcs(DcsAction::AcquireLeader)]);
    }
    // It is waited for only loop_wait after the key went: a peer that has not raced by then
    // cannot (its DCS too slow), and we race.
    let outranked = with_priority(3);
    let waited = MemberState {
        phase: Phase::Replica,
        leaderless_since: Some(outranked.now - cfg().loop_wait_ms),
        ..MemberState::new()
    };
    let d = decide(&waited, &outranked, &mine);
    assert_eq!(
        pg_actions(&d),
        vec![Action::Dcs(DcsAction::AcquireLeader)],
        "{}",
        d.reason
    );
    // Priority never beats position: a more advanced peer still wins over a higher priority.
    let obs = Obs::new(replica(100)).peer("node2", 150).build();
    let d = decide(
        &in_phase(Phase::Replica),
        &obs,
        &HaConfig {
            failover_priority: 9,
            ..cfg()
        },
    );
    assert!(matches!(
        d.reason,
        Reason::NotRacing(Candidacy::PeerAhead { .. })
    ));
}

#[test]
fn nofailover_never_races() {
    let obs = Obs::new(replica(100)).build();
    let d = decide(
        &in_phase(Phase::Replica),
        &obs,
        &HaConfig {
            nofailover: true,
            ..cfg()
        },
    );
    assert_eq!(d.reason, Reason::NotRacing(Candidacy::NoFailoverTag));
}

#[test]
fn a_lagging_only_candidate_races_after_a_full_ttl() {
    // The leader's published position is 10 MB ahead of anything any replica received.
    let far = 100 + 10 * 1024 * 1024;
    let obs = Obs::new(replica(100)).optime(far).peer("node2", 90).build();
    let d = decide(&in_phase(Phase::Replica), &obs, &cfg());
    assert!(matches!(
        d.reason,
        Reason::NotRacing(Candidacy::TooLagged { .. })
    ));
    assert_eq!(d.state.leaderless_since, Some(100_000));
    let later = Observation {
        now: 100_000 + cfg().ttl_ms,
        ..obs
    };
    let d = decide(&d.state, &later, &cfg());
    assert_eq!(pg_actions(&d), vec![Action::Dcs(DcsAction::AcquireLeader)]);
    assert!(matches!(
        d.reason,
        Reason::RacingForLeader {
            despite_lag: true,
            ..
        }
    ));
}

#[test]
fn replica_follows_the_leader_and_repoints_when_it_changes() {
    let obs = Obs::new(replica(100))
        .leader("node2")
        .upstream("node3")
        .build();
    let d = decide(&in_phase(Phase::Replica), &obs, &cfg());
    assert_eq!(
        pg_actions(&d),
        vec![Action::Pg(PgAction::Repoint {
            upstream: Some("node2".into())
        })]
    );
    let obs = Obs::new(replica(100))
        .leader("node2")
        .upstream("node2")
        .build();
    let d = decide(&in_phase(Phase::Replica), &obs, &cfg());
    assert_eq!(pg_actions(&d), vec![]);
    assert!(matches!(d.reason, Reason::FollowingLeader { .. }));
}

#[test]
fn an_old_primary_is_rewound_before_it_streams() {
    let stopped = LocalPg::Stopped {
        system_id: 42,
        was_primary: true,
        timeline: 1,
        lsn: 400,
    };
    let obs = Obs::new(stopped.clone()).leader("node2").build();
    let d = decide(&in_phase(Phase::Init), &obs, &cfg());
    assert_eq!(
        pg_actions(&d),
        vec![Action::Job(JobAction::Rewind {
            from: "node2".into()
        })]
    );
    // without pg_rewind: moved aside (never deleted), then cloned
    let d = decide(
        &in_phase(Phase::Init),
        &obs,
        &HaConfig {
            use_pg_rewind: false,
            ..cfg()
        },
    );
    assert_eq!(
        pg_actions(&d),
        vec![Action::Pg(PgAction::MoveDataAside { reason: "diverged" })]
    );
    // a failed rewind: moved aside
    let obs = Obs::new(stopped)
        .leader("node2")
        .job(JobView::Failed {
            kind: JobKind::Rewind,
            error: "x".into(),
        })
        .build();
    let d = decide(&in_phase(Phase::Rewinding), &obs, &cfg());
    assert_eq!(
        pg_actions(&d),
        vec![Action::Pg(PgAction::MoveDataAside {
            reason: "rewind-failed"
        })]
    );
}

#[test]
fn a_rewind_that_could_not_reach_the_leader_is_tried_again_and_never_moves_data_aside() {
    let stopped = LocalPg::Stopped {
        system_id: 42,
        was_primary: true,
        timeline: 1,
        lsn: 400,
    };
    let unreachable = JobView::SourceUnreachable {
        kind: JobKind::Rewind,
        error: "connection to server at \"10.0.0.2\", port 5432 failed: Connection refused".into(),
    };
    // The leader's member document says it runs: rewind again at once.
    let obs = Obs::new(stopped.clone())
        .leader("node2")
        .job(unreachable.clone())
        .build();
    let d = decide(&in_phase(Phase::Rewinding), &obs, &cfg());
    assert_eq!(
        pg_actions(&d),
        vec![Action::Job(JobAction::Rewind {
            from: "node2".into()
        })]
    );
    assert_eq!(d.state.phase, Phase::Rewinding);
    // The leader's member document says it does not run: wait, saying why; the data stays.
    let mut obs = Obs::new(stopped).leader("node2").job(unreachable).build();
    obs.dcs
        .as_mut()
        .unwrap()
        .members
        .insert("node2".into(), member("stopped", true));
    let d = decide(&in_phase(Phase::Rewinding), &obs, &cfg());
    assert_eq!(pg_actions(&d), vec![]);
    assert!(
        matches!(&d.reason, Reason::RewindSourceUnreachable { from, .. } if from == "node2"),
        "{:?}",
        d.reason
    );
    assert!(d.reason.to_string().contains("nothing was changed"));
    // Next cycle, still unreachable and not running: the clone source is waited for.
    let d = decide(&d.state, &obs, &cfg());
    assert_eq!(pg_actions(&d), vec![]);
    assert!(d.state.rewind_needed);
}

#[test]
fn a_rewound_replica_starts_streaming_from_the_leader() {
    let stopped = LocalPg::Stopped {
        system_id: 42,
        was_primary: false,
        timeline: 1,
        lsn: 400,
    };
    let obs = Obs::new(stopped).leader("node2").build();
    let d = decide(&in_phase(Phase::Rewinding), &obs, &cfg());
    assert_eq!(
        pg_actions(&d),
        vec![Action::Job(JobAction::StartReplica {
            upstream: Some("node2".into())
        })]
    );
}

#[test]
fn a_foreign_data_directory_is_refused() {
    let obs = Obs::new(LocalPg::Stopped {
        system_id: 7,
        was_primary: true,
        timeline: 1,
        lsn: 1,
    })
    .leader("node2")
    .build();
    let d = decide(&MemberState::new(), &obs, &cfg());
    assert_eq!(
        d.reason,
        Reason::ForeignDataDirectory {
            local: 7,
            cluster: 42
        }
    );
    assert_eq!(pg_actions(&d), vec![]);
    assert_eq!(d.state.phase, Phase::Halted);
    // and stays halted
    let d = decide(&d.state, &obs, &cfg());
    assert!(matches!(d.reason, Reason::Halted(_)));
}

#[test]
fn empty_member_clones_from_a_running_leader_only() {
    let obs = Obs::new(LocalPg::NoData).leader("node2").build();
    let d = decide(&MemberState::new(), &obs, &cfg());
    assert_eq!(
        pg_actions(&d),
        vec![Action::Job(JobAction::Clone {
            from: "node2".into()
        })]
    );
    let mut obs = Obs::new(LocalPg::NoData).leader("node2").build();
    obs.dcs
        .as_mut()
        .unwrap()
        .members
        .get_mut("node2")
        .unwrap()
        .state = "starting".into();
    let d = decide(&MemberState::new(), &obs, &cfg());
    assert_eq!(
        d.reason,
        Reason::CloneSourceNotRunning {
            leader: "node2".into()
        }
    );
}

#[test]
fn empty_member_clones_from_a_running_clonefrom_replica_first() {
    let tag = |obs: &mut Observation, name: &str, lsn: Lsn, state: &str| {
        let m = obs.dcs.as_mut().unwrap().members.get_mut(name).unwrap();
        m.clonefrom = true;
        m.lsn = Some(lsn);
        m.state = state.into();
    };
    // node2 is the leader; node3 is a running replica tagged clonefrom: it is the source.
    let mut obs = Obs::new(LocalPg::NoData).leader("node2").build();
    tag(&mut obs, "node3", 90, "running");
    let d = decide(&MemberState::new(), &obs, &cfg());
    assert_eq!(
        pg_actions(&d),
        vec![Action::Job(JobAction::Clone {
            from: "node3".into()
        })]
    );
    // Two tagged replicas: the more advanced one.
    obs.dcs
        .as_mut()
        .unwrap()
        .members
        .insert("node4".into(), member("running", false));
    tag(&mut obs, "node4", 95, "running");
    let d = decide(&MemberState::new(), &obs, &cfg());
    assert_eq!(
        pg_actions(&d),
        vec![Action::Job(JobAction::Clone {
            from: "node4".into()
        })]
    );
    // A tagged replica that is not running is no source: back to the leader.
    let mut obs = Obs::new(LocalPg::NoData).leader("node2").build();
    tag(&mut obs, "node3", 90, "stopped");
    let d = decide(&MemberState::new(), &obs, &cfg());
    assert_eq!(
        pg_actions(&d),
        vec![Action::Job(JobAction::Clone {
            from: "node2".into()
        })]
    );
    // The leader being down does not matter when a clonefrom replica runs.
    let mut obs = Obs::new(LocalPg::NoData).leader("node2").build();
    tag(&mut obs, "node3", 90, "running");
    obs.dcs
        .as_mut()
        .unwrap()
        .members
        .get_mut("node2")
        .unwrap()
        .state = "starting".into();
    let d = decide(&MemberState::new(), &obs, &cfg());
    assert_eq!(
        pg_actions(&d),
        vec![Action::Job(JobAction::Clone {
            from: "node3".into()
        })]
    );
}

#[test]
fn bootstrap_race_then_initdb_then_leader() {
    let obs = Obs::new(LocalPg::NoData)
        .initialize(Initialize::Absent)
        .build();
    let d = decide(&MemberState::new(), &obs, &cfg());
    assert_eq!(
        pg_actions(&d),
        vec![Action::Dcs(DcsAction::ClaimInitialize)]
    );
    let obs = Obs::new(LocalPg::NoData)
        .initialize(Initialize::ClaimedBy(ME.into()))
        .build();
    let d = decide(&d.state, &obs, &cfg());
    assert_eq!(pg_actions(&d), vec![Action::Job(JobAction::Bootstrap)]);
    // initdb done, PostgreSQL runs as the new primary: publish the id, take the key.
    let obs = Obs::new(primary(10))
        .initialize(Initialize::ClaimedBy(ME.into()))
        .build();
    let d = decide(&d.state, &obs, &cfg());
    assert_eq!(
        pg_actions(&d),
        vec![
            Action::Dcs(DcsAction::WriteInitialize { system_id: 42 }),
            Action::Dcs(DcsAction::WriteBootstrapConfig),
            Action::Dcs(DcsAction::AcquireLeader)
        ]
    );
    let obs = Obs::new(primary(10)).leader(ME).build();
    let d = decide(&d.state, &obs, &cfg());
    assert_eq!(d.reason, Reason::LeaderHealthy);
}

/// A bootstrap that keeps failing (a custom `bootstrap.method` whose restore_command cannot
/// reach its target) is tried three times; each failure gives the claim back and moves the
/// directory aside; then the member stops claiming `initialize` (another member may still
/// bootstrap) instead of filling the disk with moved-aside directories.
#[test]
fn a_bootstrap_that_keeps_failing_is_tried_three_times() {
    let mut state = MemberState::new();
    for attempt in 1..=3 {
        let obs = Obs::new(LocalPg::NoData)
            .initialize(Initialize::Absent)
            .build();
        let d = decide(&state, &obs, &cfg());
        assert_eq!(
            pg_actions(&d),
            vec![Action::Dcs(DcsAction::ClaimInitialize)],
            "attempt {attempt}"
        );
        let failed = JobView::Failed {
            kind: JobKind::Bootstrap,
            error: "PostgreSQL exited during start".into(),
        };
        // From the second attempt on, the previous attempt's failure is still visible (it
        // stays until the next job starts): it does not stop this attempt.
        let mut claimed = Obs::new(LocalPg::NoData).initialize(Initialize::ClaimedBy(ME.into()));
        if attempt > 1 {
            claimed = claimed.job(failed.clone());
        }
        let d = decide(&d.state, &claimed.build(), &cfg());
        assert_eq!(
            pg_actions(&d),
            vec![Action::Job(JobAction::Bootstrap)],
            "attempt {attempt}"
        );
        assert_eq!(d.state.bootstrap_failures, attempt - 1);
        let obs = Obs::new(LocalPg::Stopped {
            system_id: 42,
            was_primary: false,
            timeline: 1,
            lsn: 10,
        })
        .initialize(Initialize::ClaimedBy(ME.into()))
        .job(failed)
        .build();
        let d = decide(&d.state, &obs, &cfg());
        assert_eq!(
            pg_actions(&d),
            vec![
                Action::Dcs(DcsAction::CancelInitialize),
                Action::Pg(PgAction::MoveDataAside {
                    reason: "bootstrap-failed"
                })
            ]
        );
        assert!(
            matches!(&d.reason, Reason::BootstrapFailed { attempt: a, max: 3, .. } if *a == attempt),
            "{:?}",
            d.reason
        );
        assert_eq!(d.state.bootstrap_failures, attempt);
        state = d.state;
    }
    assert_eq!(state.bootstrap_failures, 3);
    let obs = Obs::new(LocalPg::NoData)
        .initialize(Initialize::Absent)
        .build();
    let d = decide(&state, &obs, &cfg());
    assert_eq!(pg_actions(&d), vec![]);
    assert_eq!(d.reason, Reason::BootstrapGaveUp { failures: 3 });
    assert!(d
        .reason
        .to_string()
        .contains("does not try again until its agent restarts"));
}

#[test]
fn other_members_wait_for_the_bootstrap() {
    let obs = Obs::new(LocalPg::NoData)
        .initialize(Initialize::ClaimedBy("node2".into()))
        .build();
    let d = decide(&MemberState::new(), &obs, &cfg());
    assert_eq!(d.reason, Reason::WaitingForBootstrap { by: "node2".into() });
    assert_eq!(pg_actions(&d), vec![]);
}

#[test]
fn leader_restarts_a_crashed_postgres_in_place_then_gives_up() {
    let crashed = LocalPg::Stopped {
        system_id: 42,
        was_primary: true,
        timeline: 1,
        lsn: 400,
    };
    let obs = Obs::new(crashed.clone()).leader(ME).build();
    let d = decide(&in_phase(Phase::Leader), &obs, &cfg());
    assert_eq!(pg_actions(&d), vec![Action::Job(JobAction::StartPrimary)]);
    assert_eq!(
        d.state.restart_deadline,
        Some(100_000 + cfg().primary_restart_timeout_ms)
    );
    let late = Observation {
        now: 100_000 + cfg().primary_restart_timeout_ms,
        lease_valid_until: Some(120_000),
        ..obs
    };
    let d = decide(&d.state, &late, &cfg());
    assert_eq!(pg_actions(&d), vec![Action::Dcs(DcsAction::ReleaseLeader)]);
    assert_eq!(d.reason, Reason::GaveUpRestartingPrimary);
}

#[test]
fn a_failed_start_in_place_releases_the_key_at_once() {
    let crashed = LocalPg::Stopped {
        system_id: 42,
        was_primary: true,
        timeline: 1,
        lsn: 400,
    };
    let obs = Obs::new(crashed.clone()).leader(ME).build();
    let d = decide(&in_phase(Phase::Leader), &obs, &cfg());
    assert_eq!(pg_actions(&d), vec![Action::Job(JobAction::StartPrimary)]);
    // The start failed well before primary_restart_timeout: no second attempt with the key.
    let failed = Obs::new(crashed)
        .leader(ME)
        .job(JobView::Failed {
            kind: JobKind::Start,
            error: "PostgreSQL did not start".into(),
        })
        .build();
    let d = decide(&d.state, &failed, &cfg());
    assert_eq!(pg_actions(&d), vec![Action::Dcs(DcsAction::ReleaseLeader)]);
    assert!(matches!(d.reason, Reason::PrimaryStartFailed { .. }));
    assert_eq!(d.state.phase, Phase::Replica);
    assert_eq!(d.state.restart_deadline, None);
}

#[test]
fn a_stale_start_failure_does_not_stop_the_first_restart() {
    let crashed = LocalPg::Stopped {
        system_id: 42,
        was_primary: true,
        timeline: 1,
        lsn: 400,
    };
    // A start that failed long ago (the job view keeps it) and a leader whose PostgreSQL
    // just crashed: it restarts in place first.
    let obs = Obs::new(crashed)
        .leader(ME)
        .job(JobView::Failed {
            kind: JobKind::Start,
            error: "old".into(),
        })
        .build();
    let d = decide(&in_phase(Phase::Leader), &obs, &cfg());
    assert_eq!(pg_actions(&d), vec![Action::Job(JobAction::StartPrimary)]);
}

#[test]
fn a_start_as_primary_is_aborted_when_the_lease_goes() {
    let obs = Obs::new(LocalPg::Starting)
        .leader(ME)
        .lease_until(Some(100_100))
        .job(JobView::Running(JobKind::Start))
        .build();
    let d = decide(&in_phase(Phase::RestartingPrimary), &obs, &cfg());
    assert_eq!(
        pg_actions(&d),
        vec![Action::Job(JobAction::Stop {
            mode: StopMode::Immediate
        })]
    );
}

#[test]
fn replica_that_cannot_stream_is_rewound() {
    let stuck = LocalPg::Running(RunningPg {
        system_id: 42,
        in_recovery: true,
        timeline: 1,
        lsn: 100,
        streaming: false,
        replicas: Vec::new(),
    });
    let obs = Obs::new(stuck).leader("node2").upstream("node2").build();
    let d = decide(&in_phase(Phase::Replica), &obs, &cfg());
    assert_eq!(pg_actions(&d), vec![]);
    let later = Observation {
        now: obs.now + cfg().not_streaming_timeout_ms,
        ..obs
    };
    let d = decide(&d.state, &later, &cfg());
    assert_eq!(
        pg_actions(&d),
        vec![Action::Job(JobAction::Stop {
            mode: StopMode::Fast
        })]
    );
    assert!(d.state.rewind_needed);
    let stopped = Obs::new(LocalPg::Stopped {
        system_id: 42,
        was_primary: false,
        timeline: 1,
        lsn: 100,
    })
    .leader("node2")
    .build();
    let d = decide(&d.state, &stopped, &cfg());
    assert_eq!(
        pg_actions(&d),
        vec![Action::Job(JobAction::Rewind {
            from: "node2".into()
        })]
    );
}

#[test]
fn reasons_read_as_sentences() {
    let obs = Obs::new(replica(100)).peer("node2", 150).build();
    let d = decide(&in_phase(Phase::Replica), &obs, &cfg());
    assert_eq!(
        d.reason.to_string(),
        "no leader; not racing: node2 is ahead (150 > 100)"
    );
}

#[test]
fn a_fresh_clone_starts_as_a_replica_even_though_pg_control_says_in_production() {
    let obs = Obs::new(LocalPg::NoData).leader("node2").build();
    let d = decide(&MemberState::new(), &obs, &cfg());
    assert_eq!(
        pg_actions(&d),
        vec![Action::Job(JobAction::Clone {
            from: "node2".into()
        })]
    );
    let cloned = Obs::new(LocalPg::Stopped {
        system_id: 42,
        was_primary: true,
        timeline: 1,
        lsn: 100,
    })
    .leader("node2")
    .build();
    let d = decide(&d.state, &cloned, &cfg());
    assert_eq!(
        pg_actions(&d),
        vec![Action::Job(JobAction::StartReplica {
            upstream: Some("node2".into())
        })]
    );
}

#[test]
fn a_rewind_that_found_nothing_to_do_is_not_repeated() {
    let stopped = Obs::new(LocalPg::Stopped {
        system_id: 42,
        was_primary: true,
        timeline: 1,
        lsn: 100,
    })
    .leader("node2")
    .build();
    let d = decide(&MemberState::new(), &stopped, &cfg());
    assert_eq!(
        pg_actions(&d),
        vec![Action::Job(JobAction::Rewind {
            from: "node2".into()
        })]
    );
    let d = decide(&d.state, &stopped, &cfg());
    assert_eq!(
        pg_actions(&d),
        vec![Action::Job(JobAction::StartReplica {
            upstream: Some("node2".into())
        })]
    );
}

#[test]
fn a_replica_on_an_older_timeline_than_the_leader_is_not_following() {
    // It reports streaming (the WAL receiver keeps reconnecting) but stays on timeline 1
    // while the leader is on timeline 2: diverged. After the timeout it is stopped to rewind.
    let mut obs = Obs::new(replica(100))
        .leader("node2")
        .upstream("node2")
        .build();
    obs.dcs
        .as_mut()
        .unwrap()
        .members
        .get_mut("node2")
        .unwrap()
        .timeline = Some(2);
    let d = decide(&in_phase(Phase::Replica), &obs, &cfg());
    assert!(pg_actions(&d).is_empty());
    assert_eq!(d.state.not_streaming_since, Some(obs.now));
    let later = Observation {
        now: obs.now + cfg().not_streaming_timeout_ms,
        ..obs
    };
    let d = decide(&d.state, &later, &cfg());
    assert_eq!(
        pg_actions(&d),
        vec![Action::Job(JobAction::Stop {
            mode: StopMode::Fast
        })]
    );
    assert!(d.state.rewind_needed);
}

#[test]
fn a_member_past_the_end_of_its_old_timeline_never_races_not_even_after_the_grace_period() {
    // history says timeline 1 ended at 400 and the cluster moved to timeline 2; we are
    // still on timeline 1 at 500: our WAL holds a branch the cluster abandoned
    let mut obs = Obs::new(replica(500)).build();
    obs.dcs.as_mut().unwrap().history.insert(1, 400);
    let d = decide(&in_phase(Phase::Replica), &obs, &cfg());
    assert_eq!(
        d.reason,
        Reason::NotRacing(Candidacy::OldTimeline { mine: 1, newest: 2 })
    );
    let much_later = Observation {
        now: obs.now + 10 * cfg().ttl_ms,
        ..obs
    };
    let d = decide(&d.state, &much_later, &cfg());
    assert!(pg_actions(&d).is_empty());
}

#[test]
fn a_member_on_an_old_timeline_before_its_end_is_only_behind_and_races() {
    // Timeline 1 ended at 500 and we replayed up to exactly there (a switchover's last
    // record) before the new leader was lost: we hold a prefix of timeline 2's history.
    let mut obs = Obs::new(replica(500)).build();
    obs.dcs.as_mut().unwrap().history.insert(1, 500);
    let d = decide(&in_phase(Phase::Replica), &obs, &cfg());
    assert!(
        matches!(d.reason, Reason::RacingForLeader { .. }),
        "{}",
        d.reason
    );
    assert!(d.actions.contains(&Action::Dcs(DcsAction::AcquireLeader)));
}

#[test]
fn a_peer_on_an_abandoned_branch_neither_holds_back_nor_measures_lag() {
    // Timeline 2 ended at 1000; node2 stayed on it and wrote 2 MB past that point (an
    // abandoned branch). We are on timeline 3, caught up with the last leader.
    let mut pg = replica(5000);
    if let LocalPg::Running(r) = &mut pg {
        r.timeline = 3;
    }
    let mut obs = Obs::new(pg).optime(5000).build();
    let dcs = obs.dcs.as_mut().unwrap();
    dcs.history.insert(1, 500);
    dcs.history.insert(2, 1000);
    obs.peers.insert(
        "node2".into(),
        PeerView::Report {
            replica_running: true,
            primary_running: false,
            lsn: Some(1000 + 2 * 1024 * 1024),
            timeline: Some(2),
            nofailover: false,
            failover_priority: 1,
            settled: true,
            read_within_ms: None,
        },
    );
    let d = decide(&in_phase(Phase::Replica), &obs, &cfg());
    assert_eq!(
        d.reason,
        Reason::RacingForLeader {
            lsn: 5000,
            lag: 0,
            despite_lag: false
        }
    );
}

#[test]
fn a_member_on_an_old_timeline_whose_end_is_not_recorded_does_not_race() {
    // A member document says timeline 2 exists, but the history key does not say where
    // timeline 1 ended: we cannot tell whether our WAL diverged.
    let mut obs = Obs::new(replica(500)).build();
    let dcs = obs.dcs.as_mut().unwrap();
    dcs.members.get_mut("node2").unwrap().timeline = Some(2);
    let d = decide(&in_phase(Phase::Replica), &obs, &cfg());
    assert_eq!(
        d.reason,
        Reason::NotRacing(Candidacy::OldTimeline { mine: 1, newest: 2 })
    );
}

#[test]
fn a_peer_on_a_newer_timeline_wins_even_with_a_lower_position() {
    let mut obs = Obs::new(replica(900)).build();
    obs.peers.insert(
        "node2".into(),
        PeerView::Report {
            replica_running: true,
            primary_running: false,
            lsn: Some(800),
            timeline: Some(2),
            nofailover: false,
            failover_priority: 1,
            settled: true,
            read_within_ms: None,
        },
    );
    let d = decide(&in_phase(Phase::Replica), &obs, &cfg());
    assert!(
        matches!(d.reason, Reason::NotRacing(Candidacy::PeerAhead { .. })),
        "{}",
        d.reason
    );
}

#[test]
fn a_starting_replica_follows_a_leader_change_without_waiting_for_the_start() {
    let obs = Obs::new(LocalPg::Starting)
        .leader("node2")
        .upstream("node3")
        .job(JobView::Running(JobKind::Start))
        .build();
    let d = decide(&in_phase(Phase::Replica), &obs, &cfg());
    assert_eq!(d.reason, Reason::WaitingForJob(JobKind::Start));
    assert_eq!(
        pg_actions(&d),
        vec![Action::Pg(PgAction::Repoint {
            upstream: Some("node2".into())
        })]
    );
    // Already pointed at the leader: nothing to do but wait.
    let obs = Obs::new(LocalPg::Starting)
        .leader("node2")
        .upstream("node2")
        .job(JobView::Running(JobKind::Start))
        .build();
    let d = decide(&in_phase(Phase::Replica), &obs, &cfg());
    assert_eq!(pg_actions(&d), vec![]);
}

fn primary_on(timeline: u32, lsn: Lsn) -> LocalPg {
    let mut pg = primary(lsn);
    if let LocalPg::Running(r) = &mut pg {
        r.timeline = timeline;
    }
    pg
}

#[test]
fn a_leader_rewrites_a_history_key_that_records_its_own_timeline_number() {
    // The key says timelines 1 and 2 ended (the cluster reached 3), but we lead on a
    // timeline 2 of our own (PostgreSQL reused the number after the leader of the other
    // timeline 2 and 3 was lost): the key describes another branch and would keep our
    // replicas from racing. We write it from our history file.
    let mut obs = Obs::new(primary_on(2, 9000)).leader(ME).build();
    let dcs = obs.dcs.as_mut().unwrap();
    dcs.history.insert(1, 500);
    dcs.history.insert(2, 1000);
    let state = MemberState {
        phase: Phase::Leader,
        ..MemberState::new()
    };
    let d = decide(&state, &obs, &cfg());
    assert!(
        d.actions
            .iter()
            .any(|a| matches!(a, Action::Dcs(DcsAction::AppendHistory { timeline: 1, .. }))),
        "{:?}",
        d.actions
    );
    // A key that matches (timeline 1 ended, we are on 2) is left alone.
    let mut obs = Obs::new(primary_on(2, 9000)).leader(ME).build();
    obs.dcs.as_mut().unwrap().history.insert(1, 500);
    let d = decide(&state, &obs, &cfg());
    assert!(
        !d.actions
            .iter()
            .any(|a| matches!(a, Action::Dcs(DcsAction::AppendHistory { .. }))),
        "{:?}",
        d.actions
    );
}

/// The dynamic configuration is put in force through the decision: once for each revision of
/// the `config` key read, whatever else the cycle decides, and not again for the same one.
#[test]
fn a_new_config_revision_is_put_in_force_once() {
    let mut obs = Obs::new(replica(100)).build();
    if let Some(view) = obs.dcs.as_mut() {
        view.config_revision = Some(7);
    }
    let d = decide(&in_phase(Phase::Replica), &obs, &cfg());
    assert!(d
        .actions
        .contains(&Action::Agent(AgentAction::ApplyDynamicConfig)));
    assert_eq!(d.state.config_revision_applied, Some(7));
    let again = decide(&d.state, &obs, &cfg());
    assert!(!again
        .actions
        .contains(&Action::Agent(AgentAction::ApplyDynamicConfig)));
    if let Some(view) = obs.dcs.as_mut() {
        view.config_revision = Some(9);
    }
    let changed = decide(&d.state, &obs, &cfg());
    assert!(changed
        .actions
        .contains(&Action::Agent(AgentAction::ApplyDynamicConfig)));
    // Without a read nothing is applied.
    obs.dcs = None;
    let unread = decide(&changed.state, &obs, &cfg());
    assert!(!unread
        .actions
        .contains(&Action::Agent(AgentAction::ApplyDynamicConfig)));
}
