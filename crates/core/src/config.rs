//! The part of the configuration the HA core decides with, in milliseconds and bytes.

/// Timing and policy of the HA loop. Built by the agent from the Patroni-style
/// configuration (local file + the DCS `config` key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaConfig {
    /// This member's name (`name` in the config file).
    pub name: String,
    /// Leader lease length (`ttl`).
    pub ttl_ms: u64,
    /// Time between two HA cycles when nothing happens (`loop_wait`).
    pub loop_wait_ms: u64,
    /// Longest a DCS or PostgreSQL request may take before it counts as failed (`retry_timeout`).
    pub retry_timeout_ms: u64,
    /// A replica further behind than this may not be promoted automatically
    /// (`maximum_lag_on_failover`), see [`crate::evaluate_candidacy`] for the exact rule.
    pub maximum_lag_on_failover: u64,
    /// Rewind an old primary with pg_rewind instead of re-cloning it (`use_pg_rewind`).
    pub use_pg_rewind: bool,
    /// The leader keeps a physical replication slot per member (`use_slots`).
    pub use_slots: bool,
    /// Tag `nofailover`: never promote this member automatically.
    pub nofailover: bool,
    /// Tag `failover_priority`: among replicas at the same position, the higher races
    /// (0 is mapped to `nofailover` by the adapter; the default is 1).
    pub failover_priority: u32,
    /// The leader stops accepting writes this long before its lease could expire in etcd;
    /// it must cover the time an immediate stop of PostgreSQL takes.
    pub demote_margin_ms: u64,
    /// How long a leader whose PostgreSQL died tries to restart it in place before it
    /// gives the leader key up (`pgbaton.primary_restart_timeout`).
    pub primary_restart_timeout_ms: u64,
    /// A replica that does not stream from the leader for this long is rewound (or re-cloned):
    /// its WAL has most likely diverged from the leader's timeline.
    pub not_streaming_timeout_ms: u64,
    /// Leader: keep the physical slot of a member this long after its member key disappeared
    /// (Patroni 4's `member_slots_ttl`; 0 drops it as soon as the key is gone).
    pub member_slots_ttl_ms: u64,
    /// A replica whose upstream no longer has the WAL it needs is re-cloned automatically
    /// (its data directory moved aside first) (`pgbaton.auto_reclone`).
    pub auto_reclone: bool,
    /// At most one automatic re-clone per this interval (`pgbaton.reclone_interval`).
    pub reclone_interval_ms: u64,
    /// `restore_command` is set: missing WAL may come from the archive, so a replica waits for
    /// it instead of being re-cloned.
    pub archive_recovery: bool,
    /// Maintenance mode (`pause`): no automatic actions on PostgreSQL.
    pub paused: bool,
    /// Synchronous replication (`synchronous_mode`, `synchronous_mode_strict`,
    /// `synchronous_node_count`).
    pub synchronous: SyncConfig,
    /// DCS failsafe mode (`failsafe_mode`, Patroni 3): a leader that cannot reach the DCS
    /// keeps its primary while every member of the failsafe topology acknowledges it
    /// (`POST /failsafe`), see [`crate::failsafe`].
    pub failsafe_mode: bool,
    /// How long a leader with a switchover due waits for the routers registered under
    /// `routers/` to pause their write traffic before it stops PostgreSQL anyway
    /// (`switchover_drain_timeout`, default 5 s).
    pub switchover_drain_timeout_ms: u64,
    /// The dynamic configuration declares publications or subscriptions (`logical:`), or
    /// names some to drop: the leader keeps them as declared (`PgAction::ApplyLogical`).
    pub logical_declared: bool,
    /// The cluster is a standby of a remote primary (`standby_cluster`): the member holding
    /// the leader key stays a replica following the remote primary (the standby leader), the
    /// others follow it. Synchronous and failsafe mode do not apply (the adapter turns them
    /// off). Removing it promotes the standby leader.
    pub standby_cluster: bool,
}

/// How the leader manages synchronous replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncConfig {
    pub mode: SyncMode,
    /// Never let commits complete without a synchronous standby.
    pub strict: bool,
    /// Synchronous standbys wanted.
    pub count: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    Off,
    /// `FIRST n (...)`.
    On,
    /// `ANY n (...)`.
    Quorum,
}

impl SyncConfig {
    pub fn off() -> Self {
        SyncConfig {
            mode: SyncMode::Off,
            strict: false,
            count: 1,
        }
    }

    pub fn enabled(&self) -> bool {
        self.mode != SyncMode::Off
    }
}

impl HaConfig {
    /// pgbaton's defaults (ttl 4 s, loop_wait 1 s, retry_timeout 1.5 s), for tests.
    pub fn with_defaults(name: &str) -> Self {
        HaConfig {
            name: name.to_string(),
            ttl_ms: 4_000,
            loop_wait_ms: 1_000,
            retry_timeout_ms: 1_500,
            maximum_lag_on_failover: 1_048_576,
            use_pg_rewind: true,
            use_slots: true,
            nofailover: false,
            failover_priority: 1,
            demote_margin_ms: 500,
            primary_restart_timeout_ms: 10_000,
            not_streaming_timeout_ms: 8_000,
            member_slots_ttl_ms: 1_800_000,
            auto_reclone: true,
            reclone_interval_ms: 600_000,
            archive_recovery: false,
            paused: false,
            synchronous: SyncConfig::off(),
            failsafe_mode: false,
            switchover_drain_timeout_ms: 5_000,
            logical_declared: false,
            standby_cluster: false,
        }
    }

    /// How often the leader renews its lease: every loop, and at least three times per ttl.
    pub fn renew_interval_ms(&self) -> u64 {
        self.loop_wait_ms.min(self.ttl_ms / 3).max(1)
    }
}
