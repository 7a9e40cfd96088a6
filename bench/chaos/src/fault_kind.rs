//! The kinds of fault the harness injects, their command-line names, and the parsing of the
//! `--faults` list (which also refuses faults the topology cannot carry out).

use std::fmt;

use crate::error::ChaosError;

/// One kind of fault. Each is injected at a random moment and healed after a random time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// SIGKILL of a member's postmaster group; its agent is expected to restart it.
    KillPostgres,
    /// SIGKILL of a member's agent (PostgreSQL keeps running); the agent is started again.
    KillAgent,
    /// SIGKILL of every process on a member host; the agent is started again later.
    KillNode,
    /// SIGSTOP of a member's agent or PostgreSQL for 2-3 x ttl, then SIGCONT.
    Pause,
    /// A member host cut from every other host, both ways.
    Partition,
    /// The leader's host cut from the etcd hosts only.
    LeaderEtcd,
    /// The leader's host cut from the other members only.
    LeaderReplicas,
    /// One etcd member cut from the other etcd members (needs three).
    EtcdSplit,
    /// SIGKILL of an etcd member, restarted later.
    EtcdKill,
    /// Delay on the leader-to-etcd or the replica-to-leader path (userspace TCP proxy).
    Delay,
    /// Packet loss emulated on the same paths: retransmission stalls and dropped connections.
    Loss,
    /// A planned switchover through the leader's REST API (`POST /switchover`), with a named
    /// candidate half of the time and without one (`{"leader": ...}` only) the other half.
    Switchover,
    /// A switchover, then 1-5 s after the new leader appears its host is lost (SIGKILL of
    /// every process on it); its agent is started again later.
    SwitchoverThenKill,
    /// The leader's host is lost; about 10 s after a new leader appears, that one's host is
    /// lost too; both are started again later.
    FailoverTwice,
    /// A replica's host is lost (SIGKILL of every process on it) and, while it is away, the
    /// leader writes and checkpoints about 250 MB of WAL, more than `wal_keep_size` and the
    /// slot's `max_slot_wal_keep_size` keep: back, the replica must heal itself (re-clone).
    ReplicaAway,
}

impl FaultKind {
    pub const ALL: [FaultKind; 15] = [
        FaultKind::KillPostgres,
        FaultKind::KillAgent,
        FaultKind::KillNode,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::LeaderEtcd,
        FaultKind::LeaderReplicas,
        FaultKind::EtcdSplit,
        FaultKind::EtcdKill,
        FaultKind::Delay,
        FaultKind::Loss,
        FaultKind::Switchover,
        FaultKind::SwitchoverThenKill,
        FaultKind::FailoverTwice,
        FaultKind::ReplicaAway,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillPostgres => "kill-postgres",
            FaultKind::KillAgent => "kill-agent",
            FaultKind::KillNode => "kill-node",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::LeaderEtcd => "leader-etcd",
            FaultKind::LeaderReplicas => "leader-replicas",
            FaultKind::EtcdSplit => "etcd-split",
            FaultKind::EtcdKill => "etcd-kill",
            FaultKind::Delay => "delay",
            FaultKind::Loss => "loss",
            FaultKind::Switchover => "switchover",
            FaultKind::SwitchoverThenKill => "switchover-then-kill",
            FaultKind::FailoverTwice => "failover-twice",
            FaultKind::ReplicaAway => "replica-away",
        }
    }

    /// Faults carried out in steps (a switchover, kills that wait for a new leader): they
    /// hold every member host until their last step is done.
    pub fn staged(self) -> bool {
        matches!(
            self,
            FaultKind::Switchover | FaultKind::SwitchoverThenKill | FaultKind::FailoverTwice
        )
    }

    /// Parse `--faults`: `all` (every fault the topology allows) or a comma list of names.
    pub fn parse_list(list: &str, etcd_members: u8) -> Result<Vec<FaultKind>, ChaosError> {
        let list = list.trim();
        if list.is_empty() || list == "all" {
            return Ok(FaultKind::ALL
                .into_iter()
                .filter(|k| *k != FaultKind::EtcdSplit || etcd_members >= 3)
                .collect());
        }
        let mut out = Vec::new();
        for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let kind = FaultKind::ALL
                .into_iter()
                .find(|k| k.name() == word)
                .ok_or_else(|| {
                    let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                    ChaosError::Usage(format!(
                        "unknown fault {word:?} in --faults; known: all, {}",
                        names.join(", ")
                    ))
                })?;
            if kind == FaultKind::EtcdSplit && etcd_members < 3 {
                return Err(ChaosError::Usage(
                    "etcd-split needs three etcd members: add --etcd 3 or leave etcd-split out"
                        .into(),
                ));
            }
            if !out.contains(&kind) {
                out.push(kind);
            }
        }
        if out.is_empty() {
            return Err(ChaosError::Usage("--faults names no fault".into()));
        }
        Ok(out)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_leaves_out_etcd_split_with_one_etcd_member() {
        let one = FaultKind::parse_list("all", 1).unwrap();
        assert!(!one.contains(&FaultKind::EtcdSplit));
        assert!(one.contains(&FaultKind::ReplicaAway));
        assert_eq!(one.len(), FaultKind::ALL.len() - 1);
        let three = FaultKind::parse_list("all", 3).unwrap();
        assert_eq!(three.len(), FaultKind::ALL.len());
        let named = FaultKind::parse_list("replica-away", 1).unwrap();
        assert_eq!(named, vec![FaultKind::ReplicaAway]);
    }

    #[test]
    fn a_list_is_parsed_in_order_without_duplicates() {
        let got = FaultKind::parse_list("partition, kill-node,partition", 1).unwrap();
        assert_eq!(got, vec![FaultKind::Partition, FaultKind::KillNode]);
    }

    #[test]
    fn unknown_names_and_impossible_faults_are_refused_with_the_fix() {
        let e = FaultKind::parse_list("kill-everything", 1).unwrap_err();
        assert!(e.to_string().contains("known: all, kill-postgres"), "{e}");
        let e = FaultKind::parse_list("etcd-split", 1).unwrap_err();
        assert!(e.to_string().contains("--etcd 3"), "{e}");
    }

    #[test]
    fn every_name_round_trips() {
        for k in FaultKind::ALL {
            assert_eq!(FaultKind::parse_list(k.name(), 3).unwrap(), vec![k]);
        }
    }
}
