//! The watchdog rule: a member whose configuration requires a watchdog
//! (`watchdog.mode: required`) and whose device is not usable never leads.
//!
//! Patroni's rule, kept: such a member does not race for the leader key, does not promote
//! when it holds the key anyway (a switchover named it, or the device broke after it won the
//! race: it releases the key), does not create a new cluster, and a leader that finds its
//! device unusable (a restarted agent that cannot open it again) stops its primary and then
//! releases the key. It stays a replica and serves reads. The other members do not wait for
//! it: its REST API says `watchdog_failed` and its member document too, and the adapter
//! counts such a peer as one that may not be promoted (like `nofailover`).
//!
//! In `automatic` and `off` modes leading never depends on the device; the agent arms one
//! when it can. Arming, feeding and disarming the device are the agent's (crates/agent/src/watchdog/): it
//! arms before every promotion or start as a primary and reports a failure here.

use crate::action::{DcsAction, JobAction};
use std::fmt;

use crate::action::{Action, StopMode};
use crate::observation::{LocalPg, Observation};
use crate::reason::Reason;
use crate::state::{MemberState, Phase};

/// Whether this member may lead as far as its watchdog is concerned (an observation).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum WatchdogState {
    /// No watchdog is required (`mode: off` or `automatic`): leading does not depend on it.
    #[default]
    NotRequired,
    /// Required, and the device is usable (armed, or present and writable).
    Ready,
    /// Required, and the device is not usable: why (missing, not writable, an ioctl refused,
    /// a timeout it does not accept, ttl too short for the safety margin).
    Unusable(String),
}

impl WatchdogState {
    /// Why this member may not lead (`None`: it may).
    pub fn refusal(&self) -> Option<&str> {
        match self {
            WatchdogState::Unusable(why) => Some(why),
            _ => None,
        }
    }
}

/// What a member with an unusable required watchdog does instead of leading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchdogRefusal {
    /// Does not claim `initialize`: another member creates the cluster.
    NotBootstrapping,
    /// The cluster has no leader: does not race for the key.
    NotRacing,
    /// Holds the leader key without a primary: releases it without promoting.
    ReleasingLeaderKey,
    /// Runs a primary (or one that may be starting): stops it; the key goes next cycle.
    Demoting,
}

impl fmt::Display for WatchdogRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WatchdogRefusal::NotBootstrapping => "not creating the cluster",
            WatchdogRefusal::NotRacing => "no leader; not racing for the leader key",
            WatchdogRefusal::ReleasingLeaderKey => "releasing the leader key without promoting",
            WatchdogRefusal::Demoting => "stopping the primary before giving the leader key up",
        })
    }
}

type Step = (Reason, Vec<Action>);

fn refused(obs: &Observation, what: WatchdogRefusal) -> Option<Reason> {
    let why = obs.watchdog.refusal()?;
    Some(Reason::WatchdogRequired {
        why: why.to_string(),
        what,
    })
}

/// `initialize` is absent: a member that may not lead leaves the cluster's creation to others.
pub(crate) fn refuse_to_bootstrap(s: &mut MemberState, obs: &Observation) -> Option<Step> {
    let reason = refused(obs, WatchdogRefusal::NotBootstrapping)?;
    s.phase = Phase::Init;
    Some((reason, vec![]))
}

/// The cluster has no leader and this replica could race: it does not.
pub(crate) fn refuse_to_race(s: &mut MemberState, obs: &Observation) -> Option<Step> {
    let reason = refused(obs, WatchdogRefusal::NotRacing)?;
    s.phase = Phase::Replica;
    Some((reason, vec![]))
}

/// The leader key names this member (lease confirmed): without a usable required watchdog it
/// stops a primary first (releasing the key while it runs could make two primaries), and
/// releases the key once no primary runs.
pub(crate) fn refuse_to_lead(s: &mut MemberState, obs: &Observation) -> Option<Step> {
    obs.watchdog.refusal()?;
    s.restart_deadline = None;
    let may_be_primary = obs.pg.is_primary()
        || (obs.pg == LocalPg::Starting
            && matches!(
                s.phase,
                Phase::Leader | Phase::Promoting | Phase::RestartingPrimary | Phase::Demoting
            ));
    if may_be_primary {
        let reason = refused(obs, WatchdogRefusal::Demoting)?;
        s.phase = Phase::Demoting;
        let stop = Action::Job(JobAction::Stop {
            mode: StopMode::Immediate,
        });
        return Some((reason, vec![stop]));
    }
    let reason = refused(obs, WatchdogRefusal::ReleasingLeaderKey)?;
    s.phase = Phase::Replica;
    Some((reason, vec![Action::Dcs(DcsAction::ReleaseLeader)]))
}
