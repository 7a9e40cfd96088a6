//! What a benchmark needs from a cluster under test, whichever HA tool runs it: pgbaton's
//! `local up` cluster or a Patroni cluster behind HAProxy. The scenarios (node crash,
//! postmaster crash, planned switchover) are written once against this trait.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::cluster::LocalCluster;
use crate::members::MemberRow;
use crate::profile::Profile;
use crate::scenario::RunError;
use crate::writer::Endpoint;

/// Which HA tool manages the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum System {
    #[default]
    Pgbaton,
    /// pgbaton with the client writing through its router's write address (`local up`
    /// runs one), as applications do.
    #[value(name = "pgbaton-router")]
    #[serde(rename = "pgbaton-router")]
    PgbatonRouter,
    Patroni,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Pgbaton => "pgbaton",
            System::PgbatonRouter => "pgbaton-router",
            System::Patroni => "patroni",
        }
    }
}

/// A running cluster the scenarios can measure.
#[allow(async_fn_in_trait)]
pub trait Target {
    fn system(&self) -> System;
    fn profile(&self) -> Profile;
    /// Member names, node1..nodeN.
    fn members(&self) -> Vec<String>;
    /// How long to wait for the cluster to be whole again after a run.
    fn whole_limit(&self) -> Duration;
    /// Wait until there is one running leader and every other member streams from it;
    /// returns the leader's name.
    async fn wait_whole(&self, limit: Duration) -> Result<String, RunError>;
    /// Where the client writes while `leader` leads (the members directly, or a proxy).
    fn write_endpoints(&self, leader: &str) -> Vec<Endpoint>;
    /// One member's PostgreSQL.
    fn member_endpoint(&self, member: &str) -> Endpoint;
    /// The pid of the member's HA agent (pgbaton agent or Patroni's python process).
    fn agent_pid(&self, member: &str) -> Result<i32, RunError>;
    /// The pid of the member's postmaster.
    fn postmaster_pid(&self, member: &str) -> Result<i32, RunError>;
    /// After a node crash: bring the member's agent back (pgbaton's supervisor does it by
    /// itself after its restart delay; Patroni has none here, so the bench restarts it).
    async fn revive(&self, member: &str) -> Result<(), RunError>;
    /// A planned switchover from `leader` to `candidate` (None: the tool picks) with the
    /// tool's CLI; returns its output once the CLI says the switchover happened.
    async fn switchover(&self, leader: &str, candidate: Option<&str>) -> Result<String, RunError>;
    /// The member table (`ctl list` / `patronictl list`).
    async fn list(&self) -> Result<Vec<MemberRow>, RunError>;
    /// The member's agent log and the text that shows a pg_rewind ran in it.
    fn agent_log(&self, member: &str) -> (PathBuf, &'static str);
}

impl Target for LocalCluster {
    fn system(&self) -> System {
        if self.spec.via_router {
            System::PgbatonRouter
        } else {
            System::Pgbaton
        }
    }

    fn profile(&self) -> Profile {
        self.spec.profile
    }

    fn members(&self) -> Vec<String> {
        self.member_names()
    }

    fn whole_limit(&self) -> Duration {
        Duration::from_secs_f64(self.spec.restart_delay + 180.0)
    }

    async fn wait_whole(&self, limit: Duration) -> Result<String, RunError> {
        Ok(LocalCluster::wait_whole(self, limit).await?)
    }

    fn write_endpoints(&self, leader: &str) -> Vec<Endpoint> {
        if self.spec.via_router {
            vec![self.router_write_endpoint()]
        } else {
            self.endpoints_from(leader)
        }
    }

    fn member_endpoint(&self, member: &str) -> Endpoint {
        let k: u16 = member
            .trim_start_matches("node")
            .parse()
            .unwrap_or_default();
        Endpoint {
            member: member.to_string(),
            port: self.spec.base_port + 10 + k,
        }
    }

    fn agent_pid(&self, member: &str) -> Result<i32, RunError> {
        Ok(LocalCluster::agent_pid(self, member)?)
    }

    fn postmaster_pid(&self, member: &str) -> Result<i32, RunError> {
        Ok(LocalCluster::postmaster_pid(self, member)?)
    }

    async fn revive(&self, _member: &str) -> Result<(), RunError> {
        Ok(())
    }

    async fn switchover(&self, leader: &str, candidate: Option<&str>) -> Result<String, RunError> {
        Ok(LocalCluster::switchover(self, leader, candidate).await?)
    }

    async fn list(&self) -> Result<Vec<MemberRow>, RunError> {
        Ok(LocalCluster::list(self).await?)
    }

    fn agent_log(&self, member: &str) -> (PathBuf, &'static str) {
        (self.member_dir(member).join("agent.log"), "outcome=Rewound")
    }
}
