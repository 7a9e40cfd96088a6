//! Why a decision was taken: one plain sentence per cycle, as an enum tests can match.

use std::fmt;

use crate::election::Candidacy;
use crate::observation::JobKind;
use crate::{Lsn, Millis};

/// What shows that the WAL a replica needs is gone from its upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MissingWal {
    /// Its PostgreSQL logged that the upstream answered "requested WAL segment ... has already
    /// been removed".
    SegmentRemoved { segment: String },
    /// Its position has not moved for the not-streaming timeout and is older than the oldest
    /// WAL the leader still holds (the leader publishes it in `status`).
    BehindLeaderWal { lsn: Lsn, oldest: Lsn },
}

use crate::pg_text::format_lsn as lsn_text;

impl fmt::Display for MissingWal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MissingWal::SegmentRemoved { segment } => write!(
                f,
                "its upstream no longer has WAL segment {segment} (PostgreSQL: requested WAL segment has already been removed)"
            ),
            MissingWal::BehindLeaderWal { lsn, oldest } => write!(
                f,
                "its position {} has not moved and is older than the oldest WAL the leader still holds ({})",
                lsn_text(*lsn),
                lsn_text(*oldest)
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// PostgreSQL runs as a primary without an unexpired lease on the leader key.
    DemoteWithoutLease {
        key_holder: Option<String>,
    },
    /// A background operation runs; waiting for its outcome.
    WaitingForJob(JobKind),
    /// An operation that could make PostgreSQL a primary runs, and the lease is gone.
    AbortPrimaryJobWithoutLease(JobKind),
    Halted(String),
    /// The local data directory belongs to another cluster.
    ForeignDataDirectory {
        local: u64,
        cluster: u64,
    },
    /// DCS unreachable; the leader keeps its role while its lease is certainly valid.
    LeaderLeaseStillValid {
        remaining_ms: Millis,
    },
    DcsUnreachable,
    /// DCS unreachable; failsafe mode: every member acknowledged this leader.
    FailsafeLeader {
        remaining_ms: Millis,
    },
    /// The DCS answers again without a leader key: the failsafe leader takes it back.
    FailsafeRetakingLeaderKey,
    /// Holding the leader key, but promised a failsafe leader not to promote yet.
    FailsafePromised {
        remaining_ms: Millis,
    },
    ClaimingInitialize,
    Bootstrapping,
    BootstrapFailed {
        error: String,
        /// This member's failed bootstraps so far, and how many it makes at most.
        attempt: u32,
        max: u32,
    },
    /// This member's bootstraps failed `failures` times: it no longer claims `initialize`.
    BootstrapGaveUp {
        failures: u32,
    },
    FinishingBootstrap {
        system_id: u64,
    },
    AdoptingDataDirectory {
        system_id: u64,
    },
    WaitingForBootstrap {
        by: String,
    },
    LeaderKeyWithoutLease,
    /// The leader key names this member, its lease is not confirmed (by a renewal, nor by
    /// etcd's answer how long it still lives) and its PostgreSQL is not a primary: it gives the
    /// key up so that another member can take over.
    ReleasingKeyWithoutLease,
    LeaderHealthy,
    /// An operator asked for a restart: stopping PostgreSQL (started again in its role).
    RestartRequested,
    /// An operator asked for a reinitialize: stopping PostgreSQL first.
    ReinitializeStopping,
    /// Reinitialize: moving the data directory aside; it is cloned again from the leader.
    Reinitializing,
    /// Standby cluster: this member holds the leader key and follows the remote primary.
    StandbyLeaderFollowingRemote,
    /// Standby cluster: the new standby leader points its replica at the remote primary.
    StandbyLeaderRepointing,
    /// Standby cluster: the standby leader's PostgreSQL is stopped: start it as a replica of
    /// the remote primary.
    StartingStandbyLeader,
    /// Standby cluster: the standby leader gives the key to the switchover candidate (nothing
    /// to drain: a standby cluster takes no writes).
    StandbyLeaderHandingOver {
        to: String,
    },
    /// Standby cluster: the bootstrap copied the remote primary; the cluster is recorded with
    /// its system identifier.
    StandbyClusterCopied {
        system_id: u64,
    },
    Promoting {
        timeline: u32,
        lsn: Lsn,
    },
    RestartingPrimary {
        remaining_ms: Millis,
    },
    GaveUpRestartingPrimary,
    /// The leader's PostgreSQL failed to start in place: the key goes to a replica.
    PrimaryStartFailed {
        error: String,
    },
    ReleasingKeyWithoutPrimaryData,
    FollowingLeader {
        leader: String,
        upstream: String,
    },
    Repointing {
        upstream: String,
    },
    /// A replica restarts to install copies of the leader's logical slots.
    InstallingSlotCopies,
    NotStreaming {
        since_ms: Millis,
    },
    Rewinding {
        from: String,
    },
    RewindFailed(String),
    /// pg_rewind could not connect to the leader and changed nothing: rewound again later.
    RewindSourceUnreachable {
        from: String,
        error: String,
    },
    DivergedWithoutRewind,
    StartingReplica {
        upstream: Option<String>,
    },
    Cloning {
        from: String,
    },
    CloneSourceNotRunning {
        leader: String,
    },
    WaitingForLeaderToClone,
    RacingForLeader {
        lsn: Lsn,
        lag: u64,
        despite_lag: bool,
    },
    NotRacing(Candidacy),
    /// `watchdog.mode: required` and the device is not usable: this member does not lead.
    WatchdogRequired {
        why: String,
        what: crate::WatchdogRefusal,
    },
    WaitingForPostgres,
    Paused,
    HandingOver {
        to: String,
    },
    /// The switchover goes on although these routers did not pause within
    /// `switchover_drain_timeout`.
    HandingOverUnpaused {
        to: String,
        not_paused: Vec<String>,
    },
    /// The switchover waits for the routers serving the cluster to pause their write
    /// traffic and acknowledge, within `switchover_drain_timeout`.
    SwitchoverDraining {
        to: String,
        waiting_for: Vec<String>,
        remaining_ms: u64,
    },
    /// Failsafe mode: the switchover waits until the `failsafe` key names its candidate (a
    /// member outside the failsafe topology never races).
    SwitchoverWaitingForFailsafeKey {
        to: String,
    },
    SwitchoverScheduled {
        in_ms: u64,
    },
    SwitchoverRefused(String),
    StandingAside {
        candidate: String,
    },
    SwitchoverCandidate,
    /// The switchover hands over from this member: it does not race for the key back.
    FormerLeaderStandsAside,
    ClaimingSyncKey,
    KeepingSynchronousData,
    /// A rewind already ran against this leader and the replica still does not stream, with no
    /// sign that WAL it needs is gone: waiting, without stopping it again.
    NotStreamingAfterRewind {
        leader: String,
    },
    /// A replica still starting cannot become consistent: its data forked off the upstream's
    /// history before its recovery point (its log says so): stopping it to rewind.
    ForkedWhileStarting {
        leader: String,
    },
    /// The WAL the replica needs is gone: stopping it to re-clone.
    RecloningForMissingWal {
        missing: MissingWal,
        from: String,
    },
    /// Stopped to re-clone: moving the data directory aside.
    MovingAsideForMissingWal,
    /// The WAL is gone but `restore_command` is set: waiting for the archive.
    MissingWalWaitingForArchive(MissingWal),
    /// The WAL is gone but the `sync` key names this member: its data is kept.
    MissingWalKeepingSynchronousData(MissingWal),
    /// The WAL is gone and `pgbaton.auto_reclone` is off.
    MissingWalAutoRecloneOff(MissingWal),
    /// The WAL is gone and this member was re-cloned automatically less than
    /// `pgbaton.reclone_interval` ago.
    MissingWalRecloneLater {
        missing: MissingWal,
        in_ms: Millis,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Reason::*;
        match self {
            DemoteWithoutLease { key_holder } => write!(
                f,
                "demoting: PostgreSQL runs as a primary but this member holds no unexpired leader lease (leader key: {})",
                key_holder.as_deref().unwrap_or("none")
            ),
            WaitingForJob(kind) => write!(f, "waiting for {kind:?} to finish"),
            AbortPrimaryJobWithoutLease(kind) => {
                write!(f, "stopping PostgreSQL at once: {kind:?} could make it a primary and the lease is gone")
            }
            Halted(why) => write!(f, "halted: {why}"),
            ForeignDataDirectory { local, cluster } => write!(
                f,
                "refusing data directory: its system identifier {local} is not the cluster's {cluster}; move it away or point data_dir elsewhere"
            ),
            LeaderLeaseStillValid { remaining_ms } => write!(
                f,
                "DCS unreachable; staying leader while the lease is certainly valid ({remaining_ms} ms left)"
            ),
            DcsUnreachable => write!(f, "DCS unreachable; no change"),
            FailsafeLeader { remaining_ms } => write!(
                f,
                "DCS unreachable; failsafe mode: every member acknowledged this leader, staying primary ({remaining_ms} ms left)"
            ),
            FailsafeRetakingLeaderKey => write!(
                f,
                "DCS reachable again without a leader key; failsafe leader: taking the leader key back"
            ),
            FailsafePromised { remaining_ms } => write!(
                f,
                "holding the leader key but promised a failsafe leader not to promote; waiting {remaining_ms} ms"
            ),
            ClaimingInitialize => write!(f, "cluster not initialized; racing to bootstrap it"),
            Bootstrapping => write!(f, "won the initialize race; bootstrapping a new cluster"),
            BootstrapFailed { error, attempt, max } if attempt < max => write!(
                f,
                "bootstrap failed ({error}); attempt {attempt} of {max}; giving the initialize race back"
            ),
            BootstrapFailed { error, attempt, .. } => write!(
                f,
                "bootstrap failed ({error}); attempt {attempt}, the last: this member no longer tries to bootstrap; fix the cause (see the errors above), then restart its agent"
            ),
            BootstrapGaveUp { failures } => write!(
                f,
                "cluster not initialized; this member's bootstrap failed {failures} times and it does not try again until its agent restarts (another member may bootstrap)"
            ),
            FinishingBootstrap { system_id } => {
                write!(f, "bootstrap done; publishing system identifier {system_id} and taking the leader key")
            }
            AdoptingDataDirectory { system_id } => {
                write!(f, "initializing the cluster from the existing data directory (system identifier {system_id})")
            }
            WaitingForBootstrap { by } => write!(f, "waiting for {by} to bootstrap the cluster"),
            LeaderKeyWithoutLease => write!(f, "the leader key names this member but its lease is not confirmed; waiting"),
            ReleasingKeyWithoutLease => write!(f, "the leader key names this member but its lease is not confirmed and PostgreSQL is not a primary: releasing the key so that another member can take over"),
            LeaderHealthy => write!(f, "no action: this member is the healthy leader with the lease"),
            RestartRequested => write!(f, "restart requested: stopping PostgreSQL; it is started again in its role"),
            ReinitializeStopping => write!(f, "reinitialize requested: stopping PostgreSQL, then moving the data directory aside"),
            Reinitializing => write!(f, "reinitialize: moving the data directory aside; it is cloned again from the leader"),
            StandbyLeaderFollowingRemote => write!(f, "no action: this member is the standby leader, following the remote primary of standby_cluster"),
            StandbyLeaderRepointing => write!(f, "standby leader: pointing the replica at the remote primary of standby_cluster"),
            StartingStandbyLeader => write!(f, "standby leader: starting PostgreSQL as a replica of the remote primary of standby_cluster"),
            StandbyLeaderHandingOver { to } => write!(f, "switchover in a standby cluster: giving the leader key to {to}, who will follow the remote primary"),
            StandbyClusterCopied { system_id } => write!(f, "standby cluster created from the remote primary (system identifier {system_id}): recording it in the DCS"),
            Promoting { timeline, lsn } => {
                write!(f, "holding the leader key: promoting (timeline {timeline}, position {lsn})")
            }
            RestartingPrimary { remaining_ms } => write!(
                f,
                "PostgreSQL of the leader is down; restarting it in place ({remaining_ms} ms before giving the key up)"
            ),
            GaveUpRestartingPrimary => write!(f, "could not restart the leader's PostgreSQL in time; releasing the leader key"),
            PrimaryStartFailed { error } => write!(
                f,
                "the leader's PostgreSQL failed to start in place ({error}); releasing the leader key for a replica to take over"
            ),
            ReleasingKeyWithoutPrimaryData => {
                write!(f, "holding the leader key without a primary to run; releasing it")
            }
            FollowingLeader { leader, upstream } if leader == upstream => {
                write!(f, "no action: replica streaming from the leader {leader}")
            }
            FollowingLeader { leader, upstream } => {
                write!(f, "no action: replica of {upstream} (leader {leader})")
            }
            Repointing { upstream } => write!(f, "re-pointing replication to {upstream}"),
            InstallingSlotCopies => write!(
                f,
                "restarting the replica to install copies of the leader's logical slots"
            ),
            NotStreaming { since_ms } => write!(
                f,
                "replica has not streamed for {since_ms} ms while the leader runs; stopping it to rewind"
            ),
            Rewinding { from } => write!(f, "data directory was a primary or diverged; rewinding from {from}"),
            RewindFailed(e) => write!(f, "pg_rewind failed ({e}); moving the data directory aside to re-clone"),
            RewindSourceUnreachable { from, error } => write!(
                f,
                "pg_rewind could not reach {from} ({error}); nothing was changed, rewinding again once {from} answers"
            ),
            DivergedWithoutRewind => write!(
                f,
                "data directory may have diverged and use_pg_rewind is off; moving it aside to re-clone"
            ),
            StartingReplica { upstream: Some(u) } => write!(f, "starting PostgreSQL as a replica of {u}"),
            StartingReplica { upstream: None } => write!(f, "starting PostgreSQL as a replica (no leader yet)"),
            Cloning { from } => write!(f, "no data directory; cloning from {from}"),
            CloneSourceNotRunning { leader } => write!(f, "waiting for the leader {leader} to run before cloning"),
            WaitingForLeaderToClone => write!(f, "no data directory and no leader to clone from; waiting"),
            RacingForLeader { lsn, lag, despite_lag: false } => {
                write!(f, "no leader: racing for the leader key (position {lsn}, lag {lag} bytes)")
            }
            RacingForLeader { lsn, lag, .. } => write!(
                f,
                "no leader for a full ttl and no better candidate: racing despite lag {lag} bytes (position {lsn})"
            ),
            NotRacing(c) => match c {
                Candidacy::NoFailoverTag => write!(f, "no leader; not racing: tagged nofailover"),
                Candidacy::PrimaryStillRunning { member } => {
                    write!(f, "no leader; not racing: {member} still runs PostgreSQL as a primary")
                }
                Candidacy::PeerAhead { member, peer_lsn, lsn } => {
                    write!(f, "no leader; not racing: {member} is ahead ({peer_lsn} > {lsn})")
                }
                Candidacy::PeerPreferred {
                    member,
                    priority,
                    mine,
                } => write!(
                    f,
                    "no leader; not racing: {member} is as advanced and has failover_priority {priority} > {mine}"
                ),
                Candidacy::TooLagged { lag, max, wait_ms } => write!(
                    f,
                    "no leader; not racing yet: lag {lag} bytes > maximum_lag_on_failover {max} (racing anyway in {wait_ms} ms if nobody better appears)"
                ),
                Candidacy::Eligible { .. } => write!(f, "no leader; eligible"),
                Candidacy::NotSynchronous(why) => write!(f, "no leader; not racing: {why}"),
                Candidacy::PeersUnsettled { members } => write!(
                    f,
                    "no leader; not racing yet: quorum mode and {} reported positions read before the leader key was known gone (asking again shortly)",
                    members.join(", ")
                ),
                Candidacy::FailsafePromised { remaining_ms } => write!(
                    f,
                    "no leader; not racing: promised a failsafe leader without the DCS not to compete ({remaining_ms} ms left)"
                ),
                Candidacy::NotInFailsafeTopology => write!(
                    f,
                    "no leader; not racing: failsafe mode and the failsafe key does not name this member"
                ),
                Candidacy::OldTimeline { mine, newest } => write!(
                    f,
                    "no leader; not racing: on timeline {mine}, older than the cluster's timeline {newest} (rewind or re-clone needed first)"
                ),
            },
            WaitingForPostgres => write!(f, "waiting for PostgreSQL to answer"),
            HandingOver { to } => write!(f, "switchover: checkpoint and clean stop, then handing the leader key to {to}"),
            HandingOverUnpaused { to, not_paused } => write!(
                f,
                "switchover: router(s) {} did not pause within switchover_drain_timeout; checkpoint and clean stop anyway, then handing the leader key to {to}",
                not_paused.join(", ")
            ),
            SwitchoverDraining { to, waiting_for, remaining_ms } => write!(
                f,
                "switchover to {to}: waiting for router(s) {} to pause their write traffic ({} ms left of switchover_drain_timeout)",
                waiting_for.join(", "),
                remaining_ms
            ),
            SwitchoverWaitingForFailsafeKey { to } => write!(f, "switchover to {to}: waiting for the failsafe key to name it (a member outside the failsafe topology never races)"),
            SwitchoverScheduled { in_ms } => write!(f, "leader; switchover scheduled in {} s", in_ms / 1000),
            SwitchoverRefused(why) => write!(f, "switchover refused and cancelled: {why}"),
            StandingAside { candidate } => write!(f, "no leader; standing aside for the requested candidate {candidate}"),
            SwitchoverCandidate => write!(f, "no leader and this member is the requested candidate: racing for the leader key"),
            FormerLeaderStandsAside => write!(f, "no leader; a switchover hands over from this member: not racing for the key back"),
            KeepingSynchronousData => write!(
                f,
                "the sync key names this member: keeping its data directory until the leader drops it from the key"
            ),
            ClaimingSyncKey => write!(f, "holding the leader key: emptying the sync key before promoting (synchronous mode)"),
            Paused => write!(f, "maintenance mode: no automatic action"),
            NotStreamingAfterRewind { leader } => write!(
                f,
                "replica does not stream from {leader} although pg_rewind ran since it last streamed (nothing to rewind, or it did not help), and nothing shows WAL it needs is gone; waiting without stopping it again (see its PostgreSQL log)"
            ),
            ForkedWhileStarting { leader } => write!(
                f,
                "replica cannot finish starting: its data forked off {leader}'s history before its recovery point (its PostgreSQL log says so); stopping it to rewind"
            ),
            RecloningForMissingWal { missing, from } => write!(
                f,
                "replica cannot stream: {missing}; stopping it to re-clone from {from} (the data directory is moved aside, not deleted)"
            ),
            MovingAsideForMissingWal => write!(
                f,
                "the WAL this replica needs is gone from its upstream: moving the data directory aside to re-clone"
            ),
            MissingWalWaitingForArchive(missing) => write!(
                f,
                "replica cannot stream: {missing}; restore_command is set: waiting for the archive to provide it (no re-clone)"
            ),
            MissingWalKeepingSynchronousData(missing) => write!(
                f,
                "replica cannot stream: {missing}; the sync key names this member: keeping its data directory until the leader drops it from the key"
            ),
            MissingWalAutoRecloneOff(missing) => write!(
                f,
                "replica cannot stream: {missing}; pgbaton.auto_reclone is off: re-clone it by hand (pgbaton ctl reinit, or POST /reinitialize)"
            ),
            MissingWalRecloneLater { missing, in_ms } => write!(
                f,
                "replica cannot stream: {missing}; it was re-cloned automatically less than pgbaton.reclone_interval ago: next automatic re-clone in about {} min",
                in_ms.div_ceil(60_000)
            ),
            WatchdogRequired { why, what } => write!(
                f,
                "{what}: watchdog.mode is required and the watchdog is not usable ({why})"
            ),
        }
    }
}
