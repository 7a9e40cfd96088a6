//! The transition tables of docs/ARCHITECTURE.md checked against the code: `decide` runs on
//! a large seeded exploration of states and observations (every phase, every kind of local
//! PostgreSQL, job, DCS contents, lease, failover key, synchronous mode, failsafe), chained
//! so that each decision's state feeds the next, and every phase change it makes must be a
//! row of a table in the document (a `from` cell naming the phase, or `any`/`other`, and a
//! `to` cell naming the new one). A transition the code makes and the document does not
//! list fails the test with the row to add; so does a phase the document never names.

use std::collections::{BTreeMap, HashMap, HashSet};

use pgbaton_core::*;

const ME: &str = "node1";
const OTHERS: [&str; 2] = ["node2", "node3"];

/// Every phase; the match makes a new phase a compile error here until it is listed.
fn all_phases() -> [Phase; 13] {
    let all = [
        Phase::Init,
        Phase::Bootstrapping,
        Phase::Cloning,
        Phase::Rewinding,
        Phase::Replica,
        Phase::Candidate,
        Phase::Promoting,
        Phase::Leader,
        Phase::StandbyLeader,
        Phase::RestartingPrimary,
        Phase::Demoting,
        Phase::HandingOver,
        Phase::Halted,
    ];
    for p in all {
        match p {
            Phase::Init
            | Phase::Bootstrapping
            | Phase::Cloning
            | Phase::Rewinding
            | Phase::Replica
            | Phase::Candidate
            | Phase::Promoting
            | Phase::Leader
            | Phase::StandbyLeader
            | Phase::RestartingPrimary
            | Phase::Demoting
            | Phase::HandingOver
            | Phase::Halted => {}
        }
    }
    all
}

/// One documented row: the phases it leaves from and the phases it goes to.
#[derive(Debug)]
struct Row {
    line: usize,
    from: HashSet<Phase>,
    to: HashSet<Phase>,
    unchanged: bool,
}

fn phases_named(cell: &str) -> HashSet<Phase> {
    let words: HashSet<String> = cell
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    all_phases()
        .into_iter()
        .filter(|p| words.contains(&format!("{p:?}")))
        .collect()
}

fn cells(line: &str) -> Vec<String> {
    let t = line.trim().trim_start_matches('|').trim_end_matches('|');
    t.split('|').map(|c| c.trim().to_string()).collect()
}

/// Every table of the document with a `to` (or `next state`) column.
fn documented_rows(doc: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    let lines: Vec<&str> = doc.lines().collect();
    let mut i = 0;
    while i + 1 < lines.len() {
        let header = lines[i];
        let is_table =
            header.trim_start().starts_with('|') && lines[i + 1].trim_start().starts_with("|---");
        if !is_table {
            i += 1;
            continue;
        }
        let names: Vec<String> = cells(header).iter().map(|c| c.to_lowercase()).collect();
        let to_col = names.iter().position(|c| c == "to" || c == "next state");
        let from_col = names.iter().position(|c| c == "from");
        i += 2;
        while i < lines.len() && lines[i].trim_start().starts_with('|') {
            if let Some(to_col) = to_col {
                let row = cells(lines[i]);
                let to_cell = row.get(to_col).cloned().unwrap_or_default();
                let from = match from_col {
                    None => all_phases().into_iter().collect(),
                    Some(c) => {
                        let cell = row.get(c).cloned().unwrap_or_default();
                        let lower = cell.to_lowercase();
                        if lower.contains("any") || lower.contains("other") {
                            all_phases().into_iter().collect()
                        } else {
                            phases_named(&cell)
                        }
                    }
                };
                rows.push(Row {
                    line: i + 1,
                    from,
                    to: phases_named(&to_cell),
                    unchanged: to_cell.to_lowercase().contains("unchanged"),
                });
            }
            i += 1;
        }
    }
    rows
}

/// xorshift64*: the exploration is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize].clone()
    }
}

const JOBS: [JobKind; 6] = [
    JobKind::Bootstrap,
    JobKind::Clone,
    JobKind::Rewind,
    JobKind::Start,
    JobKind::Stop,
    JobKind::Promote,
];

fn local_pg(r: &mut Rng) -> LocalPg {
    let system_id = if r.chance(95) { 42 } else { 7 };
    let timeline = 1 + r.below(3) as u32;
    let lsn = 1_000 + r.below(4_000_000);
    match r.below(6) {
        0 => LocalPg::NoData,
        1 => LocalPg::Starting,
        2 | 3 => LocalPg::Stopped {
            system_id,
            was_primary: r.chance(50),
            timeline,
            lsn,
        },
        _ => {
            let in_recovery = r.chance(60);
            let mut replicas = Vec::new();
            for name in OTHERS {
                if r.chance(60) {
                    replicas.push(ReplicaConnection {
                        name: name.to_string(),
                        streaming: r.chance(80),
                        synchronous: r.chance(40),
                        flush_lsn: Some(lsn.saturating_sub(r.below(2_000_000))),
                    });
                }
            }
            LocalPg::Running(RunningPg {
                system_id,
                in_recovery,
                timeline,
                lsn,
                streaming: in_recovery && r.chance(70),
                replicas: if in_recovery { Vec::new() } else { replicas },
            })
        }
    }
}

fn member_view(r: &mut Rng, is_primary: bool) -> MemberView {
    MemberView {
        state: r
            .pick(&["running", "stopped", "starting", "creating replica"])
            .into(),
        is_primary,
        is_standby_leader: !is_primary && r.chance(10),
        lsn: Some(1_000 + r.below(4_000_000)),
        timeline: Some(1 + r.below(3) as u32),
        nofailover: r.chance(10),
        replicatefrom: None,
        nosync: r.chance(10),
        clonefrom: r.chance(10),
    }
}

fn dcs_view(r: &mut Rng, unix_now_ms: u64) -> DcsView {
    let leader = match r.below(3) {
        0 => None,
        1 => Some(ME.to_string()),
        _ => Some(r.pick(&OTHERS).to_string()),
    };
    let mut members = BTreeMap::new();
    for name in std::iter::once(ME).chain(OTHERS) {
        if r.chance(85) {
            let is_primary = leader.as_deref() == Some(name);
            members.insert(name.to_string(), member_view(r, is_primary));
        }
    }
    let failover = match r.below(8) {
        0 => Some(FailoverRequest {
            leader: Some(ME.into()),
            candidate: Some(r.pick(&OTHERS).into()),
            scheduled_at_unix_ms: None,
            revision: 7,
        }),
        1 => Some(FailoverRequest {
            leader: Some(ME.into()),
            candidate: None,
            scheduled_at_unix_ms: r.chance(30).then_some(unix_now_ms + 60_000),
            revision: 8,
        }),
        2 => Some(FailoverRequest {
            leader: Some(r.pick(&OTHERS).into()),
            candidate: r.chance(50).then(|| ME.to_string()),
            scheduled_at_unix_ms: None,
            revision: 7,
        }),
        3 => Some(FailoverRequest {
            leader: None,
            candidate: Some(r.pick(&[ME, "node2"]).into()),
            scheduled_at_unix_ms: None,
            revision: 7,
        }),
        _ => None,
    };
    let initialize = match r.below(10) {
        0 => Initialize::Absent,
        1 => Initialize::ClaimedBy(r.pick(&[ME, "node2"]).into()),
        _ => Initialize::SystemId(if r.chance(97) { 42 } else { 7 }),
    };
    let sync_members: Vec<String> = [ME, "node2", "node3"]
        .into_iter()
        .filter(|_| r.chance(50))
        .map(str::to_string)
        .collect();
    let sync = r.chance(30).then(|| SyncKey {
        leader: leader.clone(),
        members: sync_members.clone(),
        quorum: None,
    });
    // Registered routers: none, one that acknowledged revision 7, one that did not.
    let mut routers = BTreeMap::new();
    if r.chance(40) {
        routers.insert("router1".to_string(), r.chance(50).then_some(7));
    }
    let mut history = BTreeMap::new();
    if r.chance(50) {
        history.insert(1, 500_000 + r.below(1_000_000));
    }
    DcsView {
        initialize,
        leader,
        members,
        leader_optime: r.chance(80).then(|| 1_000 + r.below(4_000_000)),
        history,
        config_revision: r.chance(90).then_some(7),
        failover,
        sync,
        failsafe: r
            .chance(20)
            .then(|| vec![ME.to_string(), "node2".to_string()]),
        leader_oldest_wal: r.chance(30).then(|| r.below(2_000_000)),
        routers,
    }
}

fn observation(r: &mut Rng, now: Millis) -> Observation {
    let unix_now_ms = 1_800_000_000_000 + now;
    let job = match r.below(4) {
        0 | 1 => JobView::Idle,
        2 => JobView::Running(r.pick(&JOBS)),
        _ => JobView::Failed {
            kind: r.pick(&JOBS),
            error: "failed".into(),
        },
    };
    let mut peers = BTreeMap::new();
    for name in OTHERS {
        if r.chance(50) {
            let view = if r.chance(20) {
                PeerView::Unreachable
            } else {
                PeerView::Report {
                    replica_running: r.chance(70),
                    primary_running: r.chance(10),
                    lsn: Some(1_000 + r.below(4_000_000)),
                    timeline: Some(1 + r.below(3) as u32),
                    nofailover: r.chance(10),
                    failover_priority: 1,
                    settled: true,
                    read_within_ms: None,
                }
            };
            peers.insert(name.to_string(), view);
        }
    }
    Observation {
        now,
        pg: local_pg(r),
        job,
        dcs: r.chance(85).then(|| dcs_view(r, unix_now_ms)),
        lease_valid_until: match r.below(4) {
            0 => None,
            1 => Some(now.saturating_sub(1_000)),
            2 => Some(now + 300),
            _ => Some(now + 3_000),
        },
        peers,
        configured_upstream: r.chance(50).then(|| r.pick(&OTHERS).to_string()),
        follows_remote_primary: r.chance(50),
        unix_now_ms,
        configured_sync: None,
        failsafe_acked_at: r.chance(20).then(|| now.saturating_sub(r.below(6_000))),
        failsafe_promised_until: r.chance(10).then(|| now + r.below(4_000)),
        missing_wal_segment: r.chance(10).then(|| "000000010000000000000003".to_string()),
        forked_from_upstream: false,
        slot_copies_ready: r.chance(10),
        command: match r.below(20) {
            0 => Some(MemberCommand::Restart),
            1 => Some(MemberCommand::Reinitialize {
                force: r.chance(50),
            }),
            _ => None,
        },
        watchdog: Default::default(),
    }
}

fn config(r: &mut Rng) -> HaConfig {
    let mut cfg = HaConfig::with_defaults(ME);
    cfg.synchronous = match r.below(4) {
        0 => SyncConfig {
            mode: SyncMode::On,
            strict: r.chance(50),
            count: 1,
        },
        1 => SyncConfig {
            mode: SyncMode::Quorum,
            strict: r.chance(50),
            count: 1,
        },
        _ => SyncConfig::off(),
    };
    cfg.failsafe_mode = r.chance(20);
    cfg.use_pg_rewind = r.chance(80);
    cfg.archive_recovery = r.chance(10);
    cfg.auto_reclone = r.chance(80);
    // A standby cluster: the adapter turns synchronous and failsafe mode off.
    cfg.standby_cluster = r.chance(15);
    if cfg.standby_cluster {
        cfg.synchronous = SyncConfig::off();
        cfg.failsafe_mode = false;
    }
    cfg
}

fn random_state(r: &mut Rng, now: Millis) -> MemberState {
    let phases = all_phases();
    let mut s = MemberState::new();
    s.phase = r.pick(&phases);
    s.rewind_needed = r.chance(20);
    s.prepared_as_replica = r.chance(20);
    s.reclone_pending = r.chance(10);
    s.reinit_pending = r.chance(5);
    s.restart_deadline = r.chance(30).then(|| now + r.below(20_000) - 10_000);
    s.leaderless_since = r.chance(30).then(|| now.saturating_sub(r.below(10_000)));
    s.not_streaming_since = r.chance(30).then(|| now.saturating_sub(r.below(20_000)));
    s.promoted_from = r.chance(20).then_some((1, 500_000));
    s
}

#[test]
fn every_phase_change_decide_makes_is_a_row_of_the_documented_tables() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/ARCHITECTURE.md"
    ))
    .expect("docs/ARCHITECTURE.md");
    let rows = documented_rows(&doc);
    assert!(rows.len() > 30, "the tables were not found: {rows:?}");
    let documented = |from: Phase, to: Phase| {
        rows.iter().any(|row| {
            row.from.contains(&from) && (row.to.contains(&to) || (row.unchanged && from == to))
        })
    };

    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    let mut seen: HashMap<(Phase, Phase), String> = HashMap::new();
    let mut now: Millis = 1_000_000;
    let mut state = MemberState::new();
    let mut cfg = config(&mut r);
    for step in 0..300_000u32 {
        if step % 40 == 0 {
            cfg = config(&mut r);
            state = random_state(&mut r, now);
        }
        now += r.below(1_500);
        let obs = observation(&mut r, now);
        let d = decide(&state, &obs, &cfg);
        if d.state.phase != state.phase {
            seen.entry((state.phase, d.state.phase))
                .or_insert_with(|| d.reason.to_string());
        }
        state = d.state;
    }

    let mut missing: Vec<String> = seen
        .iter()
        .filter(|((from, to), _)| !documented(*from, *to))
        .map(|((from, to), reason)| format!("{from:?} -> {to:?} (reason: {reason})"))
        .collect();
    missing.sort();
    assert!(
        missing.is_empty(),
        "phase changes decide() makes that no table of docs/ARCHITECTURE.md lists (add a row with `from` and `to`):\n{}",
        missing.join("\n")
    );
    // The exploration reaches far: most phase changes of the tables happen in it.
    assert!(
        seen.len() >= 25,
        "only {} phase changes explored: {seen:?}",
        seen.len()
    );
}

#[test]
fn every_phase_is_named_in_the_tables() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/ARCHITECTURE.md"
    ))
    .expect("docs/ARCHITECTURE.md");
    let rows = documented_rows(&doc);
    for phase in all_phases() {
        assert!(
            rows.iter().any(|r| r.to.contains(&phase)),
            "no table row of docs/ARCHITECTURE.md leads to {phase:?}"
        );
    }
    // A row names real phases only in its `to` cell, with a line to point at.
    assert!(rows.iter().all(|r| r.line > 0));
}
