//! The command line of `pgbaton ctl`: global options and the verbs (patronictl's names).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use pgbaton_ctl::OutputFormat;

#[derive(Args)]
pub struct CtlArgs {
    /// Read the DCS address, namespace and scope from an agent configuration file.
    #[arg(long, short = 'c', env = "PGBATON_CONFIG", global = true)]
    pub(super) config: Option<PathBuf>,
    /// etcd address(es), host:port[,host:port] (instead of --config).
    #[arg(long, global = true)]
    pub(super) dcs: Option<String>,
    /// The cluster name (Patroni's scope).
    #[arg(long, global = true)]
    pub(super) scope: Option<String>,
    #[arg(long, global = true)]
    pub(super) namespace: Option<String>,
    /// REST API user for write operations (default: restapi.authentication of --config).
    #[arg(long, env = "PGBATON_API_USERNAME", global = true)]
    pub(super) username: Option<String>,
    /// REST API password for write operations.
    #[arg(long, env = "PGBATON_API_PASSWORD", global = true)]
    pub(super) password: Option<String>,
    /// CA bundle to verify members' https REST APIs (default: ctl.cacert / restapi.cafile of
    /// --config, else the system's roots).
    #[arg(long, global = true)]
    pub(super) cacert: Option<String>,
    /// Do not verify the certificates of https REST APIs (patronictl's -k).
    #[arg(long, short = 'k', global = true)]
    pub(super) insecure: bool,
    #[command(subcommand)]
    pub(super) command: CtlCommand,
}

#[derive(Subcommand)]
pub(super) enum CtlCommand {
    /// The member table (Member, Host, Role, State, TL, Lag in MB).
    List {
        #[arg(long, short = 'f', default_value = "pretty")]
        format: OutputFormat,
        /// Show optional columns (pending restart, tags) even when empty.
        #[arg(long, short = 'e')]
        extended: bool,
    },
    /// Members as a replication tree.
    Topology,
    /// Where a pgbaton router sends traffic now (its `/status`): leader, replicas, lag,
    /// connections, handover in progress.
    RouterStatus {
        /// The router's API address (`api.listen` in its config; `local up`: base port + 4).
        #[arg(long, default_value = "127.0.0.1:15404")]
        router: String,
        #[arg(long, short = 'f', default_value = "pretty")]
        format: OutputFormat,
    },
    /// The failover history (timeline switches).
    History {
        #[arg(long, short = 'f', default_value = "pretty")]
        format: OutputFormat,
    },
    /// The dynamic configuration stored in the DCS.
    ShowConfig,
    /// Print a haproxy.cfg (write port to the leader, read port to replicas) for this cluster.
    HaproxyConfig {
        #[arg(long, default_value_t = 5432)]
        write_port: u16,
        #[arg(long, default_value_t = 5433)]
        read_port: u16,
    },
    /// Planned handover of the leader role to a replica (now or at a scheduled time).
    Switchover {
        /// The current leader (checked).
        #[arg(long, alias = "primary", alias = "master")]
        leader: Option<String>,
        /// The member to hand over to (default: the healthiest replica).
        #[arg(long)]
        candidate: Option<String>,
        /// When: ISO 8601 time (e.g. 2026-11-26T15:00:00+00:00) or `now`.
        #[arg(long)]
        scheduled: Option<String>,
        /// Cancel the pending (scheduled) switchover instead.
        #[arg(long, conflicts_with_all = ["candidate", "scheduled"])]
        cancel: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        force: bool,
    },
    /// Cancel what is scheduled: `flush switchover`, or `flush restart [MEMBERS]`.
    Flush {
        /// `switchover` or `restart`.
        what: FlushTarget,
        /// For `restart`: the members (default: all).
        members: Vec<String>,
        #[arg(long)]
        force: bool,
    },
    /// Promote a replica (when the cluster has no healthy leader, or to hand over at once).
    Failover {
        #[arg(long)]
        candidate: Option<String>,
        #[arg(long)]
        force: bool,
    },
    /// Restart PostgreSQL on members (in place, keeping their roles).
    Restart {
        /// Members to restart (default: all).
        members: Vec<String>,
        /// Restart every member.
        #[arg(long)]
        all: bool,
        /// Only members with a restart pending.
        #[arg(long)]
        pending: bool,
        /// When: ISO 8601 time (e.g. 2026-11-26T03:00:00+00:00); the conditions (--pending)
        /// are checked then. Cancel with `flush restart`.
        #[arg(long)]
        scheduled: Option<String>,
        #[arg(long)]
        force: bool,
    },
    /// Reload PostgreSQL's configuration on members (default: all).
    Reload {
        members: Vec<String>,
        #[arg(long)]
        force: bool,
    },
    /// Re-clone a replica from the leader (its data directory is moved aside, not deleted).
    Reinit {
        member: String,
        #[arg(long)]
        force: bool,
    },
    /// Maintenance mode: the agents take no automatic action.
    Pause,
    /// Leave maintenance mode.
    Resume,
    /// Change the dynamic configuration: -s key=value / -p param=value, or $EDITOR.
    EditConfig {
        /// key=value (dotted keys reach into sections: postgresql.use_slots=false; null deletes).
        #[arg(short = 's', long = "set")]
        set: Vec<String>,
        /// PostgreSQL parameter=value (under postgresql.parameters).
        #[arg(short = 'p', long = "pg")]
        pg: Vec<String>,
        #[arg(long)]
        force: bool,
    },
}

/// What `flush` cancels.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(super) enum FlushTarget {
    Switchover,
    Restart,
}
