//! Who may race for the leader key when the cluster has none.
//!
//! The rule (documented in docs/ARCHITECTURE.md, "Choosing the new leader"):
//! 1. A member tagged `nofailover`, or whose PostgreSQL is not a running replica, never races.
//! 2. While any reachable peer still runs PostgreSQL as a primary, nobody races (that member's
//!    agent is about to demote it or to take the key back).
//! 3. A member races only if no reachable, eligible peer reports a higher position, compared
//!    by (timeline, LSN): a newer timeline is the history that won (ties all race; the
//!    compare-and-swap on the leader key picks one). A member on an older timeline than the
//!    newest known (history, member documents, peers) races only if its position is at or
//!    before the point where its timeline ended (the `history` key): then it holds a prefix
//!    of the newest history and is merely behind. Past that point its WAL holds a branch the
//!    cluster abandoned, and it never races in asynchronous mode. Among members at the same
//!    position, one whose peer has a higher `failover_priority` tag does not race (for
//!    `loop_wait` after the cluster lost its leader, as below for a peer ahead). A
//!    member's timeline is the one of the newest WAL it holds (its replay timeline, not the
//!    control file's), the same definition it reports to its peers. While a switchover
//!    hands over from a member (the `failover` key names it as leader, for 2 × ttl after
//!    the key was released), that member does not compete: it neither races (decide/leaderless.rs)
//!    nor counts as a peer ahead, so the others elect among themselves.
//!    In asynchronous mode a peer ahead is waited for only `loop_wait` after the cluster
//!    lost its leader: woken by the same DCS change, it races at once unless it cannot (its
//!    DCS too slow to answer), and the cluster must not stay leaderless for it.
//! 4. Lag is measured against the freshest position known: the largest of the leader's last
//!    published position, every peer's fresh report and our own. Within
//!    `maximum_lag_on_failover` the member races at once.
//! 5. Synchronous mode: only a member the `sync` key names races (quorum: only when enough of
//!    the named members answered), and only named members compete on position; the lag bound
//!    and rule 6 do not apply.
//! 6. When even the most advanced member is beyond the bound (the position it is compared
//!    with may be stale, or the WAL was never replicated), it still races once the cluster
//!    has been leaderless for a full `ttl`: a cluster is never left without a leader only
//!    because every replica looks too lagged. Synchronous mode never takes this path.
//! 7. Failsafe mode: a member that promised a failsafe leader (`POST /failsafe`) does not
//!    race until the promise ends, and a member the `failsafe` key does not name never races
//!    (the leader without the DCS did not ask it; see `failsafe.rs`); such a member does
//!    not compete in rule 3 either.

use std::collections::BTreeMap;

use crate::observation::{DcsView, PeerView, RunningPg};
use crate::switchover::handing_over_from;
use crate::{HaConfig, Lsn, Millis};

/// The outcome of [`evaluate_candidacy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Candidacy {
    /// Race for the leader key.
    Eligible {
        lsn: Lsn,
        lag: u64,
        despite_lag: bool,
    },
    /// Tagged nofailover.
    NoFailoverTag,
    /// A peer still runs PostgreSQL as a primary.
    PrimaryStillRunning { member: String },
    /// A peer is more advanced.
    PeerAhead {
        member: String,
        peer_lsn: Lsn,
        lsn: Lsn,
    },
    /// A peer at the same position has a higher `failover_priority`.
    PeerPreferred {
        member: String,
        priority: u32,
        mine: u32,
    },
    /// Too far behind; waiting for the grace period before racing anyway.
    TooLagged { lag: u64, max: u64, wait_ms: Millis },
    /// Synchronous mode: not a member that holds every acknowledged commit.
    NotSynchronous(String),
    /// Quorum mode: too few named members answered with a final position, and these
    /// answered with one read while they still saw a leader, and before this member found
    /// the key gone; asked again shortly.
    PeersUnsettled { members: Vec<String> },
    /// On an older timeline than the cluster's newest, past the point where that timeline
    /// ended (or that point is not recorded): its WAL may have diverged.
    OldTimeline { mine: u32, newest: u32 },
    /// Failsafe mode: promised a leader without the DCS not to compete for this long.
    FailsafePromised { remaining_ms: Millis },
    /// Failsafe mode: the `failsafe` key does not name this member.
    NotInFailsafeTopology,
}

/// Decide whether this replica races for the leader key (see the module rule).
#[allow(clippy::too_many_arguments)]
pub fn evaluate_candidacy(
    cfg: &HaConfig,
    me: &RunningPg,
    view: &DcsView,
    peers: &BTreeMap<String, PeerView>,
    leaderless_for: Millis,
    no_leader_read_for: Millis,
    failsafe_promise_left: Option<Millis>,
    unix_now_ms: u64,
) -> Candidacy {
    if cfg.nofailover {
        return Candidacy::NoFailoverTag;
    }
    if let Some(remaining_ms) = failsafe_promise_left {
        return Candidacy::FailsafePromised { remaining_ms };
    }
    if cfg.failsafe_mode
        && view
            .failsafe
            .as_ref()
            .is_some_and(|k| !k.contains(&cfg.name))
    {
        return Candidacy::NotInFailsafeTopology;
    }
    let sync = cfg.synchronous.enabled();
    let named: Vec<String> = if sync {
        view.sync
            .as_ref()
            .map(|k| k.members.clone())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut reference = view.leader_optime.unwrap_or(0).max(me.lsn);
    // The newest timeline known: recorded switches, published member documents, fresh reports.
    let newest_timeline = view.newest_timeline_with(peers);
    let former_leader = handing_over_from(cfg, view, leaderless_for, unix_now_ms);
    let mut reachable_named = 0;
    let mut unsettled_named = Vec::new();
    for (name, peer) in peers {
        if name == &cfg.name {
            continue;
        }
        let PeerView::Report {
            replica_running,
            primary_running,
            lsn,
            nofailover,
            timeline,
            failover_priority,
            settled,
            read_within_ms,
        } = peer
        else {
            continue;
        };
        let peer_timeline = timeline.unwrap_or(0);
        if *primary_running {
            return Candidacy::PrimaryStillRunning {
                member: name.clone(),
            };
        }
        // A peer whose position is unknown cannot be compared: it does not count.
        let Some(peer_lsn) = *lsn else { continue };
        // Nor does a peer whose WAL left the cluster's history (an abandoned branch): it
        // can never race, so it must not hold others back, and its position is no measure
        // of what the cluster wrote (found by the simulator: a caught-up replica judged
        // 1.27 MB behind a diverged one waited an extra ttl).
        if !view.on_cluster_history(peer_timeline, peer_lsn, newest_timeline) {
            continue;
        }
        // For the quorum rule a named member counts only with a final position: one read
        // while it still saw a leader may be older than commits that leader acknowledged
        // with its flush (found by the real-runtime simulation, quorum soak seed 101119: a
        // slow standby promoted on a report of its peers from before their last WAL, and an
        // acknowledged commit was lost).
        // A position the peer read after this member found the key gone counts as well (a
        // peer whose own DCS answers slowly may go on reporting "a leader seen" for seconds:
        // quorum soak seed 301567 of `quorum1` waited for one until the old leader returned).
        // `no_leader_read_for` runs from a moment after this member's read found the key
        // gone, every read since finding none (a failed read restarts it: a leader may have
        // come, had commits acknowledged and gone unseen in between).
        let read_after_key_went = read_within_ms.is_some_and(|ago| ago <= no_leader_read_for);
        if named.contains(name) {
            if *settled || read_after_key_went {
                reachable_named += 1;
            } else {
                unsettled_named.push(name.clone());
            }
        }
        reference = reference.max(peer_lsn);
        // In synchronous mode only the named members can be promoted: only they compete.
        // A peer outside the failsafe topology never races, so it does not compete either
        // (else a cluster whose best member is outside could stay leaderless).
        let outside_topology = cfg.failsafe_mode
            && view
                .failsafe
                .as_ref()
                .is_some_and(|k| !k.iter().any(|n| n == name));
        let competes = !*nofailover
            && !outside_topology
            && former_leader != Some(name.as_str())
            && if sync {
                named.contains(name)
            } else {
                *replica_running
            };
        // Positions compare by timeline first: a newer timeline is the history that won.
        // Asynchronous mode waits for a peer ahead for loop_wait after the key went: it was
        // woken by the same change and races at once unless it cannot (a DCS too slow for
        // its requests, found by the real-runtime simulation: the cluster stayed leaderless
        // while a healthy member deferred to it). Then the others race too, within the lag
        // bound (rule 4). Synchronous mode always waits (quorum safety rests on it).
        let waited_enough = !sync && leaderless_for >= cfg.loop_wait_ms;
        if competes && !waited_enough && (peer_timeline, peer_lsn) > (me.timeline, me.lsn) {
            return Candidacy::PeerAhead {
                member: name.clone(),
                peer_lsn,
                lsn: me.lsn,
            };
        }
        // At the same position the higher failover_priority races (Patroni 3.1's rule), and
        // is waited for only loop_wait after the key went, in either mode (no WAL is at stake
        // between equal positions): one whose DCS is too slow to race would otherwise hold
        // the cluster leaderless (found by the real-runtime simulation, seeds 4313, 4409).
        if competes
            && leaderless_for < cfg.loop_wait_ms
            && (peer_timeline, peer_lsn) == (me.timeline, me.lsn)
            && *failover_priority > cfg.failover_priority
        {
            return Candidacy::PeerPreferred {
                member: name.clone(),
                priority: *failover_priority,
                mine: cfg.failover_priority,
            };
        }
    }
    if sync {
        // A named member holds every acknowledged commit: lag does not disqualify it.
        return match crate::sync::may_promote(cfg, view, reachable_named) {
            Ok(()) => Candidacy::Eligible {
                lsn: me.lsn,
                lag: reference.saturating_sub(me.lsn),
                despite_lag: false,
            },
            Err(_) if !unsettled_named.is_empty() => Candidacy::PeersUnsettled {
                members: unsettled_named,
            },
            Err(why) => Candidacy::NotSynchronous(why),
        };
    }
    if !view.on_cluster_history(me.timeline, me.lsn, newest_timeline) {
        // Our WAL may hold a branch the cluster abandoned; promoting it would discard what
        // the newer timeline acknowledged. Not even after the lag grace period.
        return Candidacy::OldTimeline {
            mine: me.timeline,
            newest: newest_timeline,
        };
    }
    let lag = reference.saturating_sub(me.lsn);
    if lag <= cfg.maximum_lag_on_failover {
        return Candidacy::Eligible {
            lsn: me.lsn,
            lag,
            despite_lag: false,
        };
    }
    if leaderless_for >= cfg.ttl_ms {
        return Candidacy::Eligible {
            lsn: me.lsn,
            lag,
            despite_lag: true,
        };
    }
    Candidacy::TooLagged {
        lag,
        max: cfg.maximum_lag_on_failover,
        wait_ms: cfg.ttl_ms - leaderless_for,
    }
}
