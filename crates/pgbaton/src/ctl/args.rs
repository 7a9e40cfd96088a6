//! The command line of `pgbaton ctl`: global options and the verbs (patronictl's names).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use pgbaton_views::OutputFormat;

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
        /// The cluster name, as patronictl takes it (checked against the scope).
        cluster: Option<String>,
        #[arg(long, short = 'f', default_value = "pretty")]
        format: OutputFormat,
        /// Show optional columns (pending restart, tags) even when empty.
        #[arg(long, short = 'e')]
        extended: bool,
        /// Receive and replay LSNs with their lag in MB (Patroni 4.1's columns) and the lag
        /// in seconds, instead of "Lag in MB".
        #[arg(long)]
        positions: bool,
    },
    /// Members as a replication tree.
    Topology {
        /// The cluster name, as patronictl takes it (checked against the scope).
        cluster: Option<String>,
    },
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
        /// The cluster name, as patronictl takes it (checked against the scope).
        cluster: Option<String>,
        #[arg(long, short = 'f', default_value = "pretty")]
        format: OutputFormat,
    },
    /// The dynamic configuration stored in the DCS.
    ShowConfig {
        /// The cluster name, as patronictl takes it (checked against the scope).
        cluster: Option<String>,
    },
    /// Print a haproxy.cfg (write port to the leader, read port to replicas) for this cluster.
    HaproxyConfig {
        /// The address HAProxy's frontends bind (`*`: every interface).
        #[arg(long, default_value = "*")]
        bind: String,
        #[arg(long, default_value_t = 5432)]
        write_port: u16,
        #[arg(long, default_value_t = 5433)]
        read_port: u16,
        /// HAProxy's statistics page (`/stats`).
        #[arg(long, default_value_t = 7000)]
        stats_port: u16,
    },
    /// Planned handover of the leader role to a replica (now or at a scheduled time).
    Switchover {
        /// The cluster name, as patronictl takes it (checked against the scope).
        cluster: Option<String>,
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
    /// Cancel what is scheduled: `flush switchover`, or `flush restart [MEMBERS]`
    /// (patronictl's order, `flush CLUSTER [MEMBERS] restart|switchover`, works too).
    Flush {
        /// `switchover` or `restart`, and for `restart` the members (default: all).
        #[arg(required = true)]
        words: Vec<String>,
        #[arg(long)]
        force: bool,
    },
    /// Promote a replica (when the cluster has no healthy leader, or to hand over at once).
    Failover {
        /// The cluster name, as patronictl takes it (checked against the scope).
        cluster: Option<String>,
        #[arg(long)]
        candidate: Option<String>,
        #[arg(long)]
        force: bool,
    },
    /// Restart PostgreSQL on members (in place, keeping their roles).
    Restart {
        /// Members to restart (default: all); patronictl's leading cluster name is accepted.
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
        /// Members (default: all); patronictl's leading cluster name is accepted.
        members: Vec<String>,
        #[arg(long)]
        force: bool,
    },
    /// Re-clone a replica from the leader (its data directory is moved aside, not deleted).
    Reinit {
        /// The member (patronictl's `reinit CLUSTER MEMBER` works too).
        #[arg(required = true, num_args = 1..=2)]
        member: Vec<String>,
        #[arg(long)]
        force: bool,
    },
    /// Take a pgBackRest backup: the leader's agent runs it, reading the files from a standby
    /// when the repository's configuration lists standbys (pgN-path/pgN-host), else from the
    /// leader. Waits for the end unless --no-wait.
    Backup {
        /// The cluster name, as patronictl takes it (checked against the scope).
        cluster: Option<String>,
        /// full, diff or incr (pgBackRest takes a full backup when the repository has none).
        #[arg(long = "type", value_parser = ["full", "diff", "incr"], default_value = "incr")]
        kind: String,
        /// standby or leader (default: a standby when the configuration lists one).
        #[arg(long, value_parser = ["standby", "leader"])]
        from: Option<String>,
        /// Return once the backup has started.
        #[arg(long)]
        no_wait: bool,
    },
    /// Maintenance mode: the agents take no automatic action.
    Pause {
        /// The cluster name, as patronictl takes it (checked against the scope).
        cluster: Option<String>,
    },
    /// Leave maintenance mode.
    Resume {
        /// The cluster name, as patronictl takes it (checked against the scope).
        cluster: Option<String>,
    },
    /// Declared publications and subscriptions (`logical:`) as the leader keeps them: state,
    /// lag, error counts and last errors; `logical check`: what would break replication,
    /// each with the SQL that fixes it (exit status 1 when something is found).
    Logical {
        /// `check` for the checks.
        #[arg(value_parser = ["check"])]
        what: Option<String>,
        #[arg(long, short = 'f', default_value = "pretty")]
        format: OutputFormat,
    },
    /// Move this cluster's clients online to another cluster of the same DCS namespace:
    /// the other cluster subscribes to every table of DATABASE (a declared publication,
    /// permanent slot and subscription, `logical:`), catches up, then this cluster's
    /// routers hold write transactions at their boundaries, the last changes and the
    /// sequences' values are copied, and the routers send every client to the other
    /// cluster. Connects to both leaders as --user with the password in PGPASSWORD.
    Move {
        /// The cluster (scope) the clients move to.
        #[arg(long)]
        to: String,
        /// The database whose tables move (repeat for several).
        #[arg(long = "database", short = 'd', default_value = "postgres")]
        databases: Vec<String>,
        /// The superuser both leaders are connected to as (password: PGPASSWORD).
        #[arg(long, short = 'U', default_value = "postgres")]
        user: String,
        /// Create the tables the other cluster lacks (pg_dump --schema-only into it).
        #[arg(long)]
        copy_schema: bool,
        /// How long the other cluster may take to copy the tables and catch up, seconds.
        #[arg(long, default_value_t = 600)]
        catch_up_timeout: u64,
        /// Send the clients back to this cluster (deletes the move; nothing is copied back).
        #[arg(long, conflicts_with_all = ["copy_schema"])]
        back: bool,
        #[arg(long)]
        force: bool,
    },
    /// Change the dynamic configuration: -s key=value / -p param=value, or $EDITOR.
    /// Removing a declared publication or subscription (`logical:`) drops it only with
    /// --force (without, it says what would be dropped and changes nothing).
    EditConfig {
        /// The cluster name, as patronictl takes it (checked against the scope).
        cluster: Option<String>,
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FlushTarget {
    Switchover,
    Restart,
}

/// `flush`'s words in either order: `restart|switchover [MEMBERS]` or patronictl's
/// `[MEMBERS] restart|switchover` (the cluster name already taken off).
pub(super) fn flush_words(words: &[String]) -> anyhow::Result<(FlushTarget, Vec<String>)> {
    let target = |w: &str| match w {
        "restart" => Some(FlushTarget::Restart),
        "switchover" => Some(FlushTarget::Switchover),
        _ => None,
    };
    if let Some((first, rest)) = words.split_first() {
        if let Some(t) = target(first) {
            return Ok((t, rest.to_vec()));
        }
    }
    if let Some((last, rest)) = words.split_last() {
        if let Some(t) = target(last) {
            return Ok((t, rest.to_vec()));
        }
    }
    anyhow::bail!(
        "flush what? say `flush restart [MEMBERS]` or `flush switchover` (got {})",
        words.join(" ")
    )
}

impl CtlCommand {
    /// Takes patronictl's cluster name off the command: the `cluster` argument of the verbs
    /// that have one, or the first of the member names of `restart`, `reload`, `reinit` and
    /// `flush` when it is the configured scope (or when no scope is configured: patronictl
    /// requires it there). Returns it, for the caller to check against the scope.
    pub(super) fn take_cluster_name(&mut self, configured: Option<&str>) -> Option<String> {
        let from_names = |names: &mut Vec<String>| -> Option<String> {
            let first = names.first()?;
            let is_cluster = match configured {
                Some(scope) => first == scope,
                None => names.len() > 1 || !matches!(first.as_str(), "restart" | "switchover"),
            };
            is_cluster.then(|| names.remove(0))
        };
        match self {
            CtlCommand::List { cluster, .. }
            | CtlCommand::Topology { cluster }
            | CtlCommand::History { cluster, .. }
            | CtlCommand::ShowConfig { cluster }
            | CtlCommand::Switchover { cluster, .. }
            | CtlCommand::Failover { cluster, .. }
            | CtlCommand::Pause { cluster }
            | CtlCommand::Resume { cluster }
            | CtlCommand::Backup { cluster, .. }
            | CtlCommand::EditConfig { cluster, .. } => cluster.take(),
            CtlCommand::Restart { members, .. } | CtlCommand::Reload { members, .. } => {
                from_names(members)
            }
            CtlCommand::Reinit { member, .. } => {
                if member.len() == 2 {
                    Some(member.remove(0))
                } else {
                    None
                }
            }
            CtlCommand::Flush { words, .. } => {
                if words.len() > 1 {
                    from_names(words)
                } else {
                    None
                }
            }
            CtlCommand::RouterStatus { .. }
            | CtlCommand::HaproxyConfig { .. }
            | CtlCommand::Logical { .. }
            | CtlCommand::Move { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    fn restart(members: &[&str]) -> CtlCommand {
        CtlCommand::Restart {
            members: names(members),
            all: false,
            pending: false,
            scheduled: None,
            force: true,
        }
    }

    #[test]
    fn patronictl_restart_takes_the_cluster_name_first() {
        let mut cmd = restart(&["pg-cluster", "node1"]);
        assert_eq!(
            cmd.take_cluster_name(Some("pg-cluster")).as_deref(),
            Some("pg-cluster")
        );
        let CtlCommand::Restart { members, .. } = cmd else {
            unreachable!()
        };
        assert_eq!(members, names(&["node1"]));
    }

    #[test]
    fn restart_without_the_cluster_name_keeps_the_members() {
        let mut cmd = restart(&["node1", "node2"]);
        assert_eq!(cmd.take_cluster_name(Some("pg-cluster")), None);
        let CtlCommand::Restart { members, .. } = cmd else {
            unreachable!()
        };
        assert_eq!(members, names(&["node1", "node2"]));
    }

    #[test]
    fn without_a_configured_scope_the_first_name_is_the_cluster() {
        let mut cmd = restart(&["pg-cluster"]);
        assert_eq!(cmd.take_cluster_name(None).as_deref(), Some("pg-cluster"));
    }

    #[test]
    fn flush_accepts_both_orders() {
        let (t, m) = flush_words(&names(&["restart", "node1"])).expect("ours");
        assert_eq!((t, m), (FlushTarget::Restart, names(&["node1"])));
        let (t, m) = flush_words(&names(&["node1", "restart"])).expect("patronictl's");
        assert_eq!((t, m), (FlushTarget::Restart, names(&["node1"])));
        let (t, m) = flush_words(&names(&["switchover"])).expect("switchover");
        assert_eq!((t, m), (FlushTarget::Switchover, vec![]));
        let err = flush_words(&names(&["node1"])).unwrap_err().to_string();
        assert!(err.contains("flush restart"), "{err}");
    }

    #[test]
    fn patronictl_flush_takes_the_cluster_name_first() {
        let mut cmd = CtlCommand::Flush {
            words: names(&["pg-cluster", "switchover"]),
            force: true,
        };
        assert_eq!(
            cmd.take_cluster_name(Some("pg-cluster")).as_deref(),
            Some("pg-cluster")
        );
        let CtlCommand::Flush { words, .. } = cmd else {
            unreachable!()
        };
        assert_eq!(words, names(&["switchover"]));
    }
}
