//! Synchronous replication scenarios with fixed faults, each over several seeds (the seed
//! still varies delays, job durations and failures). Invariants 1–8 are checked after every
//! event of each run (no acknowledged commit lost at any promotion, the sync key names only
//! members holding every acknowledged commit, strict mode never acknowledges alone); the
//! tests assert on what happened on top.

use pgbaton_sim::{
    run, Candidate, FaultKind, Happening, Millis, ScriptedFault, SimConfig, SimReport, SyncConfig,
    SyncMode, Target,
};

const FAULT_AT: Millis = 10_000;
const SEEDS: std::ops::Range<u64> = 0..25;

fn first(strict: bool) -> SyncConfig {
    SyncConfig {
        mode: SyncMode::On,
        strict,
        count: 1,
    }
}

fn scenario(seed: u64, sync: SyncConfig, faults: Vec<ScriptedFault>) -> SimReport {
    let cfg = SimConfig {
        synchronous: Some(sync),
        ..SimConfig::scripted(seed, 30_000, faults)
    };
    let report = run(&cfg);
    assert!(
        report.violations.is_empty(),
        "{}\n{}",
        report.violations[0],
        report.trace.join("\n")
    );
    assert!(
        report.converged_at.is_some(),
        "seed {seed}: never healthy again ({:?})\n{}",
        report.leaderless_by_design,
        report.trace.join("\n")
    );
    report
}

fn fault(at_ms: Millis, target: Target, kind: FaultKind) -> ScriptedFault {
    ScriptedFault {
        at_ms,
        target,
        kind,
    }
}

fn trace(r: &SimReport) -> String {
    r.trace.join("\n")
}

/// Who the sync key named last before `t`.
fn named_before(r: &SimReport, t: Millis) -> Vec<String> {
    r.happenings
        .iter()
        .rev()
        .find_map(|h| match h {
            Happening::SyncKeyWritten { at, members, .. } if *at < t => Some(members.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn victims(r: &SimReport) -> Vec<String> {
    r.happenings
        .iter()
        .filter_map(|h| match h {
            Happening::FaultStarted { member, .. } => Some(member.clone()),
            _ => None,
        })
        .collect()
}

fn key_taken_after(r: &SimReport, t: Millis) -> Vec<String> {
    r.happenings
        .iter()
        .filter_map(|h| match h {
            Happening::LeaderKeyTaken { at, member } if *at >= t => Some(member.clone()),
            _ => None,
        })
        .collect()
}

fn became_primary_after(r: &SimReport, t: Millis) -> Vec<(Millis, String)> {
    r.happenings
        .iter()
        .filter_map(|h| match h {
            Happening::BecamePrimary { at, member, .. } if *at >= t => Some((*at, member.clone())),
            _ => None,
        })
        .collect()
}

fn acks_between(r: &SimReport, from: Millis, to: Millis) -> usize {
    r.acks.iter().filter(|a| a.at >= from && a.at <= to).count()
}

/// WAL positions recorded when the fault at `t` started.
fn positions_at(r: &SimReport, t: Millis) -> Vec<(String, u64)> {
    r.happenings
        .iter()
        .find_map(|h| match h {
            Happening::Positions { at, lsns } if *at == t => Some(lsns.clone()),
            _ => None,
        })
        .expect("positions recorded at the fault")
}

#[test]
fn sync_leader_crash_promotes_only_the_sync_standby_and_every_acked_commit_survives() {
    for seed in SEEDS {
        let r = scenario(
            seed,
            first(false),
            vec![fault(
                FAULT_AT,
                Target::Leader,
                FaultKind::CrashMember { down_ms: 15_000 },
            )],
        );
        let old = victims(&r)[0].clone();
        let named = named_before(&r, FAULT_AT);
        assert_eq!(named.len(), 1, "seed {seed}: one synchronous standby");
        let taken = key_taken_after(&r, FAULT_AT);
        assert_eq!(
            taken.first(),
            Some(&named[0]),
            "seed {seed}: the sync standby {named:?} takes over\n{}",
            trace(&r)
        );
        let promoted = became_primary_after(&r, FAULT_AT);
        assert!(
            promoted.iter().all(|(_, m)| *m == named[0]),
            "seed {seed}: only the sync standby becomes a primary: {promoted:?}"
        );
        assert!(
            promoted
                .first()
                .is_some_and(|(at, _)| *at <= FAULT_AT + 6_000),
            "seed {seed}: promoted in time: {promoted:?}"
        );
        // Clients were acknowledged before the crash and by the new leader after it; the
        // promotion check (invariant 6) saw every one of the first on the new leader.
        assert!(acks_between(&r, 0, FAULT_AT) > 100, "seed {seed}");
        assert!(
            r.acks
                .iter()
                .any(|a| a.at > FAULT_AT && a.member == named[0] && a.promised),
            "seed {seed}"
        );
        assert!(r.acks.iter().all(|a| a.promised), "seed {seed}");
        assert_ne!(old, named[0]);
    }
}

#[test]
fn sync_an_async_replica_ahead_of_the_sync_standby_is_not_promoted() {
    // The synchronous standby has a slow disk: the asynchronous replica is further ahead
    // when the leader's node crashes. Only the synchronous standby is known to hold every
    // acknowledged commit, so it is promoted; the asynchronous one is rewound.
    // (Later than the other scenarios: the synchronous standby must be settled first.)
    let crash_at = 16_000;
    let mut ahead_seen = 0;
    for seed in SEEDS {
        let r = scenario(
            seed,
            first(false),
            vec![
                fault(
                    crash_at - 4_000,
                    Target::SyncStandby,
                    FaultKind::SlowStandby { ms: 10_000 },
                ),
                fault(
                    crash_at,
                    Target::Leader,
                    FaultKind::CrashMember { down_ms: 15_000 },
                ),
            ],
        );
        let v = victims(&r);
        let (sync, old) = (v[0].clone(), v[1].clone());
        assert_eq!(
            named_before(&r, crash_at),
            vec![sync.clone()],
            "seed {seed}"
        );
        let async_replica = (1..=3)
            .map(|i| format!("m{i}"))
            .find(|m| *m != sync && *m != old)
            .expect("a third member");
        let lsns = positions_at(&r, crash_at);
        let lsn = |m: &str| lsns.iter().find(|(n, _)| n == m).map(|(_, l)| *l);
        if lsn(&async_replica) > lsn(&sync) {
            ahead_seen += 1;
        }
        assert_eq!(
            key_taken_after(&r, crash_at).first(),
            Some(&sync),
            "seed {seed}\n{}",
            trace(&r)
        );
        assert!(
            became_primary_after(&r, crash_at)
                .iter()
                .all(|(_, m)| *m == sync),
            "seed {seed}: {async_replica} must not be promoted\n{}",
            trace(&r)
        );
    }
    assert!(
        ahead_seen >= 20,
        "the asynchronous replica was ahead in only {ahead_seen} of 25 seeds"
    );
}

#[test]
fn strict_mode_with_both_replicas_down_acknowledges_nothing_until_one_returns() {
    let down = 8_000;
    for seed in SEEDS {
        let r = scenario(
            seed,
            first(true),
            vec![
                fault(
                    FAULT_AT,
                    Target::Replica,
                    FaultKind::CrashMember { down_ms: down },
                ),
                fault(
                    FAULT_AT,
                    Target::Replica,
                    FaultKind::CrashMember { down_ms: down },
                ),
            ],
        );
        let v = victims(&r);
        assert_ne!(v[0], v[1], "seed {seed}: both replicas");
        assert!(acks_between(&r, 0, FAULT_AT - 1) > 100, "seed {seed}");
        assert_eq!(
            acks_between(&r, FAULT_AT + 1, FAULT_AT + down),
            0,
            "seed {seed}: no commit acknowledged without a standby\n{}",
            trace(&r)
        );
        // A replica returns (agent start, PostgreSQL start, streaming): commits flow again.
        let resumed = r
            .acks
            .iter()
            .find(|a| a.at > FAULT_AT)
            .map(|a| a.at)
            .expect("commits acknowledged again");
        assert!(
            resumed <= FAULT_AT + down + 3_000,
            "seed {seed}: acknowledged again only at {resumed}\n{}",
            trace(&r)
        );
        assert!(key_taken_after(&r, FAULT_AT).is_empty(), "seed {seed}");
    }
}

fn switchover_checks(seed: u64, r: &SimReport, not_before: Millis) -> (String, String) {
    let (old, candidate) = r
        .happenings
        .iter()
        .find_map(|h| match h {
            Happening::SwitchoverRequested {
                leader: Some(l),
                candidate,
                ..
            } => Some((l.clone(), candidate.clone())),
            _ => None,
        })
        .expect("a switchover request");
    let taken = key_taken_after(r, FAULT_AT);
    let new = taken.first().cloned().expect("a new leader");
    assert_eq!(taken.len(), 1, "seed {seed}: one handover: {taken:?}");
    if let Some(c) = candidate {
        assert_eq!(new, c, "seed {seed}: the candidate leads\n{}", trace(r));
    }
    assert_ne!(new, old);
    let stopped = r
        .happenings
        .iter()
        .find_map(|h| match h {
            Happening::PrimaryStopped { at, member } if *member == old && *at >= FAULT_AT => {
                Some(*at)
            }
            _ => None,
        })
        .expect("the old leader stops");
    let promoted = became_primary_after(r, FAULT_AT);
    assert_eq!(promoted.len(), 1, "seed {seed}: {promoted:?}");
    assert_eq!(promoted[0].1, new);
    assert!(
        stopped >= not_before && stopped < promoted[0].0,
        "seed {seed}: the old primary stopped at {stopped}, the new one began at {}: never two\n{}",
        promoted[0].0,
        trace(r)
    );
    // The clean stop sent every byte to the candidate: the old leader only needs to follow.
    let after = |h: &Happening| match h {
        Happening::WalDiscarded { member, .. } | Happening::Cloned { member, .. } => *member == old,
        _ => false,
    };
    assert!(
        !r.happenings.iter().any(after),
        "seed {seed}: the old leader lost WAL or was re-cloned\n{}",
        trace(r)
    );
    assert!(
        r.happenings
            .iter()
            .any(|h| matches!(h, Happening::FailoverCleared { .. })),
        "seed {seed}: the request is deleted"
    );
    assert!(
        r.acks
            .iter()
            .any(|a| a.member == new && a.at > promoted[0].0),
        "seed {seed}"
    );
    (old, new)
}

#[test]
fn planned_switchover_to_the_sync_standby_hands_over_without_rewind_or_loss() {
    for seed in SEEDS {
        let r = scenario(
            seed,
            first(false),
            vec![fault(
                FAULT_AT,
                Target::Leader,
                FaultKind::Switchover {
                    candidate: Candidate::SyncStandby,
                    scheduled_in_ms: None,
                },
            )],
        );
        let (_, new) = switchover_checks(seed, &r, FAULT_AT);
        assert_eq!(named_before(&r, FAULT_AT), vec![new], "seed {seed}");
    }
}

#[test]
fn scheduled_switchover_without_candidate_waits_then_hands_over() {
    let delay = 5_000;
    for seed in SEEDS {
        let r = scenario(
            seed,
            first(false),
            vec![fault(
                FAULT_AT,
                Target::Leader,
                FaultKind::Switchover {
                    candidate: Candidate::Any,
                    scheduled_in_ms: Some(delay),
                },
            )],
        );
        switchover_checks(seed, &r, FAULT_AT + delay);
    }
}

#[test]
fn a_switchover_to_an_asynchronous_replica_is_refused_in_sync_mode() {
    for seed in SEEDS {
        let r = scenario(
            seed,
            first(false),
            vec![fault(
                FAULT_AT,
                Target::Leader,
                FaultKind::Switchover {
                    candidate: Candidate::AsyncReplica,
                    scheduled_in_ms: None,
                },
            )],
        );
        let requested = r.happenings.iter().find_map(|h| match h {
            Happening::SwitchoverRequested { candidate, .. } => candidate.clone(),
            _ => None,
        });
        assert!(
            requested.is_some(),
            "seed {seed}: an asynchronous candidate"
        );
        assert!(
            key_taken_after(&r, FAULT_AT).is_empty(),
            "seed {seed}: the leader stays\n{}",
            trace(&r)
        );
        assert!(
            r.happenings.iter().any(
                |h| matches!(h, Happening::FailoverCleared { at, .. } if *at < FAULT_AT + 1_500)
            ),
            "seed {seed}: the request is refused and deleted"
        );
    }
}
