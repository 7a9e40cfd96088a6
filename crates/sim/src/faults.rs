//! Faults: what can go wrong, whom it hits, and the random schedule drawn from a seed.
//! Every fault heals on its own after its length; the world applies and heals them.

use std::fmt;

use pgbaton_core::Millis;
use rand::rngs::StdRng;
use rand::Rng;

/// One thing that goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// SIGKILL of agent and PostgreSQL (a node crash); both start again after `down_ms`
    /// (PostgreSQL stays stopped until the new agent starts it).
    CrashMember { down_ms: Millis },
    /// SIGKILL of the postmaster only; the agent notices at once.
    KillPostmaster,
    /// SIGKILL of the agent only: PostgreSQL keeps running. A new agent starts after `down_ms`.
    KillAgent { down_ms: Millis },
    /// The member cannot reach the DCS (nor the DCS it) for `ms`.
    PartitionFromDcs { ms: Millis },
    /// The member cannot reach any other member (replication, REST API) for `ms`.
    IsolateFromMembers { ms: Millis },
    /// etcd answers nobody for `ms` (the targeted member is irrelevant).
    DcsOutage { ms: Millis },
    /// DCS messages from and to the member take up to `max_delay_ms` each way for `ms`.
    DelayMessages { ms: Millis, max_delay_ms: Millis },
    /// SIGSTOP of the agent for `ms` (PostgreSQL keeps running). With `mid_cycle` the stop
    /// hits the agent's next cycle that decides an operation on PostgreSQL (within the
    /// fault's length), between deciding and acting: it carries the decision out on SIGCONT.
    StallAgent { ms: Millis, mid_cycle: bool },
    /// The member's replication connection is cut for `ms` (its WAL receiver gets nothing;
    /// DCS and REST API still work): a replica stops streaming for a while.
    StopStreaming { ms: Millis },
    /// The member flushes received WAL slowly for `ms` (a slow disk): it lags behind.
    SlowStandby { ms: Millis },
    /// An operator asks for a switchover through the `failover` key (`leader` is whoever
    /// leads then), to `candidate`, now or `scheduled_in_ms` later.
    Switchover {
        candidate: Candidate,
        scheduled_in_ms: Option<Millis>,
    },
}

/// The candidate named in a switchover request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidate {
    /// None: the leader picks the healthiest.
    Any,
    /// A random member that does not lead.
    Replica,
    /// The first member the `sync` key names (none if it names nobody).
    SyncStandby,
    /// A member that neither leads nor is named in the `sync` key.
    AsyncReplica,
    /// Member by index (0-based).
    Member(usize),
}

impl FaultKind {
    /// Time from the fault's start until it heals.
    pub fn length(&self) -> Millis {
        match *self {
            FaultKind::CrashMember { down_ms } | FaultKind::KillAgent { down_ms } => down_ms,
            FaultKind::KillPostmaster => 0,
            FaultKind::PartitionFromDcs { ms }
            | FaultKind::IsolateFromMembers { ms }
            | FaultKind::DcsOutage { ms }
            | FaultKind::DelayMessages { ms, .. }
            | FaultKind::StallAgent { ms, .. }
            | FaultKind::StopStreaming { ms }
            | FaultKind::SlowStandby { ms } => ms,
            FaultKind::Switchover {
                scheduled_in_ms, ..
            } => scheduled_in_ms.unwrap_or(0),
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultKind::CrashMember { down_ms } => write!(f, "node crash for {down_ms} ms"),
            FaultKind::KillPostmaster => write!(f, "postmaster killed"),
            FaultKind::KillAgent { down_ms } => write!(f, "agent killed for {down_ms} ms"),
            FaultKind::PartitionFromDcs { ms } => write!(f, "partitioned from the DCS for {ms} ms"),
            FaultKind::IsolateFromMembers { ms } => {
                write!(f, "isolated from the other members for {ms} ms")
            }
            FaultKind::DcsOutage { ms } => write!(f, "DCS outage for {ms} ms"),
            FaultKind::DelayMessages { ms, max_delay_ms } => {
                write!(
                    f,
                    "DCS messages delayed up to {max_delay_ms} ms for {ms} ms"
                )
            }
            FaultKind::StallAgent {
                ms,
                mid_cycle: false,
            } => write!(f, "agent stopped (SIGSTOP) for {ms} ms"),
            FaultKind::StallAgent {
                ms,
                mid_cycle: true,
            } => {
                write!(
                    f,
                    "agent stopped (SIGSTOP) for {ms} ms between deciding and acting"
                )
            }
            FaultKind::StopStreaming { ms } => {
                write!(f, "replication connection cut for {ms} ms")
            }
            FaultKind::SlowStandby { ms } => write!(f, "slow standby for {ms} ms"),
            FaultKind::Switchover {
                candidate,
                scheduled_in_ms,
            } => {
                write!(f, "switchover requested to {candidate:?}")?;
                match scheduled_in_ms {
                    Some(ms) => write!(f, ", scheduled in {ms} ms"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Whom a fault hits, resolved when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The holder of the leader key at that moment (a random member if there is none).
    Leader,
    /// Some member that does not hold the leader key (preferably one no active fault hits).
    Replica,
    /// The first member the `sync` key names (a replica if it names nobody).
    SyncStandby,
    /// Member by index (0-based).
    Member(usize),
}

/// A fault at a given virtual time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScriptedFault {
    pub at_ms: Millis,
    pub target: Target,
    pub kind: FaultKind,
}

/// Draw a random schedule: about `rate_per_min` faults per virtual minute, starting in
/// `[from_ms, until_ms)`. Half of them hit whoever leads at that moment.
pub fn random_schedule(
    rng: &mut StdRng,
    members: usize,
    ttl_ms: Millis,
    from_ms: Millis,
    until_ms: Millis,
    rate_per_min: f64,
) -> Vec<ScriptedFault> {
    let mut faults = Vec::new();
    if rate_per_min <= 0.0 || until_ms <= from_ms {
        return faults;
    }
    let mean_gap = (60_000.0 / rate_per_min).max(1.0) as Millis;
    let mut at = from_ms + rng.random_range(0..=mean_gap);
    while at < until_ms {
        let target = if rng.random_bool(0.5) {
            Target::Leader
        } else {
            Target::Member(rng.random_range(0..members))
        };
        faults.push(ScriptedFault {
            at_ms: at,
            target,
            kind: random_kind(rng, ttl_ms),
        });
        at += rng.random_range(1..=2 * mean_gap);
    }
    faults
}

/// A schedule focused on DCS trouble, for failsafe mode: mostly etcd outages and partitions
/// of members from etcd (long ones too), mixed with what makes a failsafe round fail or a
/// promise matter (agent kills and stops, isolation from the members, node crashes).
/// Drawn from its own generator seeded with `seed`.
pub fn random_dcs_schedule(
    seed: u64,
    members: usize,
    ttl_ms: Millis,
    from_ms: Millis,
    until_ms: Millis,
    rate_per_min: f64,
) -> Vec<ScriptedFault> {
    use rand::SeedableRng;
    let mut rng = StdRng::seed_from_u64(seed ^ 0xfa11_5afe);
    let mut faults = Vec::new();
    if rate_per_min <= 0.0 || until_ms <= from_ms {
        return faults;
    }
    let mean_gap = (60_000.0 / rate_per_min).max(1.0) as Millis;
    let mut at = from_ms + rng.random_range(0..=mean_gap);
    while at < until_ms {
        let target = if rng.random_bool(0.5) {
            Target::Leader
        } else {
            Target::Member(rng.random_range(0..members))
        };
        let ttl = ttl_ms;
        let kind = match rng.random_range(0..100) {
            0..25 => FaultKind::DcsOutage {
                ms: rng.random_range(ttl / 2..=6 * ttl),
            },
            25..50 => FaultKind::PartitionFromDcs {
                ms: rng.random_range(ttl / 2..=5 * ttl),
            },
            50..62 => FaultKind::KillAgent {
                down_ms: rng.random_range(500..=2 * ttl),
            },
            62..74 => FaultKind::IsolateFromMembers {
                ms: rng.random_range(1_000..=4 * ttl),
            },
            74..84 => FaultKind::StallAgent {
                ms: rng.random_range(ttl / 4..=2 * ttl),
                mid_cycle: rng.random_bool(0.5),
            },
            84..92 => FaultKind::CrashMember {
                down_ms: rng.random_range(500..=3 * ttl),
            },
            _ => FaultKind::DelayMessages {
                ms: rng.random_range(2_000..=4 * ttl),
                max_delay_ms: rng.random_range(100..=2_000),
            },
        };
        faults.push(ScriptedFault {
            at_ms: at,
            target,
            kind,
        });
        at += rng.random_range(1..=2 * mean_gap);
    }
    faults
}

/// Operations in quick succession, the kind that once left a cluster leaderless for minutes
/// (a member's timeline read from pg_control, which lags after a switch until the next
/// restartpoint): about `rate_per_min` sequences per virtual minute starting in
/// `[from_ms, until_ms)`, each one of
/// - a switchover (to a named replica or without candidate), then the new leader's node
///   lost 1.5–5.5 s later (the handover takes about half a second: 1–5 s after it);
/// - a failover (the leader's node lost), then the new leader's node lost 8–12 s later;
/// - two switchovers without candidate 2–6 s apart.
///
/// Drawn from their own generator seeded with `seed`, so that adding them to a seed's
/// random schedule leaves the rest of it as it was.
pub fn random_quick_succession(
    seed: u64,
    members: usize,
    from_ms: Millis,
    until_ms: Millis,
    rate_per_min: f64,
) -> Vec<ScriptedFault> {
    use rand::SeedableRng;
    let mut rng = StdRng::seed_from_u64(seed ^ 0x05ee_d0c5_1cce);
    let mut faults = Vec::new();
    if rate_per_min <= 0.0 || until_ms <= from_ms || members < 2 {
        return faults;
    }
    let mean_gap = (60_000.0 / rate_per_min).max(1.0) as Millis;
    let mut at = from_ms + rng.random_range(0..=mean_gap);
    while at < until_ms {
        let mut push = |at_ms: Millis, kind: FaultKind| {
            faults.push(ScriptedFault {
                at_ms,
                target: Target::Leader,
                kind,
            })
        };
        let lost = |rng: &mut StdRng| FaultKind::CrashMember {
            down_ms: rng.random_range(3_000..=15_000),
        };
        match rng.random_range(0..3) {
            0 => {
                let candidate = if rng.random_bool(0.5) {
                    Candidate::Any
                } else {
                    Candidate::Replica
                };
                push(
                    at,
                    FaultKind::Switchover {
                        candidate,
                        scheduled_in_ms: None,
                    },
                );
                let later = at + rng.random_range(1_500..=5_500);
                push(later, lost(&mut rng));
            }
            1 => {
                push(at, lost(&mut rng));
                let later = at + rng.random_range(8_000..=12_000);
                push(later, lost(&mut rng));
            }
            _ => {
                let switchover = FaultKind::Switchover {
                    candidate: Candidate::Any,
                    scheduled_in_ms: None,
                };
                push(at, switchover);
                push(at + rng.random_range(2_000..=6_000), switchover);
            }
        }
        at += rng.random_range(1..=2 * mean_gap);
    }
    faults
}

fn random_kind(rng: &mut StdRng, ttl: Millis) -> FaultKind {
    match rng.random_range(0..112) {
        0..15 => FaultKind::CrashMember {
            down_ms: rng.random_range(500..=15_000),
        },
        15..27 => FaultKind::KillPostmaster,
        27..42 => {
            let down_ms = if rng.random_bool(0.6) {
                1_000
            } else {
                rng.random_range(ttl / 2..=2 * ttl)
            };
            FaultKind::KillAgent { down_ms }
        }
        42..57 => FaultKind::PartitionFromDcs {
            ms: rng.random_range(ttl / 2..=3 * ttl),
        },
        57..69 => FaultKind::IsolateFromMembers {
            ms: rng.random_range(1_000..=20_000),
        },
        69..77 => FaultKind::DcsOutage {
            ms: rng.random_range(ttl / 2..=ttl * 5 / 2),
        },
        77..88 => FaultKind::DelayMessages {
            ms: rng.random_range(2_000..=15_000),
            max_delay_ms: rng.random_range(100..=2_000),
        },
        88..100 => FaultKind::StallAgent {
            ms: rng.random_range(ttl / 2..=3 * ttl),
            mid_cycle: rng.random_bool(0.5),
        },
        100..104 => FaultKind::StopStreaming {
            ms: rng.random_range(500..=10_000),
        },
        104..108 => FaultKind::SlowStandby {
            ms: rng.random_range(1_000..=15_000),
        },
        _ => FaultKind::Switchover {
            candidate: match rng.random_range(0..3) {
                0 => Candidate::Any,
                1 => Candidate::Replica,
                _ => Candidate::SyncStandby,
            },
            scheduled_in_ms: rng
                .random_bool(0.3)
                .then(|| rng.random_range(1_000..=10_000)),
        },
    }
}
