//! The member configuration pgbaton writes for its own clusters: one Patroni-style YAML
//! template used by `pgbaton local up`, the integration tests, the chaos suite (members on
//! network-namespace hosts) and the benchmarks (the Patroni anchor runs the same shape with
//! the seed guide's values). `MemberYaml::loopback` gives `local up`'s values; the fields say
//! what each caller changes.

use std::fmt::Write;
use std::path::PathBuf;

/// `synchronous_mode` in `bootstrap.dcs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    Off,
    On,
    Quorum,
}

/// Archiving into a pgBackRest repository (`local up --archive`): WAL archived by whichever
/// member leads, replicas restored from the newest backup (falling back to pg_basebackup),
/// missing WAL fetched from the archive, and the `pgbackrest:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveYaml {
    /// pgbackrest.conf (`--config`).
    pub config: PathBuf,
    pub stanza: String,
}

/// One member's YAML. Paths: the data directory is `member_dir/data`, the password file
/// `member_dir/pgpass`, the agent's log directory `member_dir`.
#[derive(Debug, Clone)]
pub struct MemberYaml {
    /// A comment written as the first line (without `# `), if any.
    pub header: Option<String>,
    pub scope: String,
    pub name: String,
    /// The address PostgreSQL and the REST API listen on and publish.
    pub host: String,
    pub postgres_port: u16,
    pub api_port: u16,
    /// etcd client endpoints, `host:port`.
    pub etcd_hosts: Vec<String>,
    pub member_dir: PathBuf,
    /// `bootstrap.dcs` timings in seconds; `None` leaves the key out (pgbaton's default).
    pub ttl: Option<f64>,
    pub loop_wait: Option<f64>,
    pub retry_timeout: Option<f64>,
    pub synchronous: Synchronous,
    pub synchronous_strict: bool,
    /// `synchronous_node_count`; `None` leaves the key out (1).
    pub synchronous_node_count: Option<u32>,
    /// `failsafe_mode` in `bootstrap.dcs`.
    pub failsafe_mode: bool,
    /// The network in `bootstrap.pg_hba` for clients and replication (CIDR).
    pub network: String,
    /// `bootstrap.pg_hba` lines before the two generated ones.
    pub hba_first: Vec<String>,
    /// Create the role `app` (password `app`, createdb) at bootstrap.
    pub app_user: bool,
    pub superuser: (String, String),
    pub replication: (String, String),
    /// `bootstrap.dcs.postgresql.parameters`, in order.
    pub dcs_parameters: Vec<(String, String)>,
    /// `postgresql.parameters`, in order (`unix_socket_directories` is added from `socket_dir`).
    pub parameters: Vec<(String, String)>,
    /// `unix_socket_directories` (`member_dir/sock` in the tests; PostgreSQL's default when
    /// `None`).
    pub socket_dir: Option<PathBuf>,
    /// The `pgbaton:` section (`log_dir`); off for Patroni.
    pub pgbaton_section: bool,
    /// More keys of the `pgbaton:` section, after `log_dir` (e.g. `auto_reclone: true`).
    pub pgbaton_keys: Vec<(String, String)>,
    /// More tags, after `nofailover` and `noloadbalance` (e.g. `clonefrom: false`).
    pub extra_tags: Vec<(String, String)>,
    /// WAL archive and backups with pgBackRest; `None`: no archive.
    pub archive: Option<ArchiveYaml>,
    /// `bootstrap.dcs.standby_cluster`: a standby cluster of the primary at this host and
    /// port; `None`: a normal cluster.
    pub standby_of: Option<(String, u16)>,
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl MemberYaml {
    /// `local up`'s member `name` on loopback: pgbaton's default timings, asynchronous, the
    /// `app` role, PostgreSQL's default socket directory.
    pub fn loopback(
        scope: &str,
        name: &str,
        member_dir: impl Into<PathBuf>,
        postgres_port: u16,
        api_port: u16,
        etcd_port: u16,
    ) -> MemberYaml {
        MemberYaml {
            header: None,
            scope: scope.to_string(),
            name: name.to_string(),
            host: "127.0.0.1".into(),
            postgres_port,
            api_port,
            etcd_hosts: vec![format!("127.0.0.1:{etcd_port}")],
            member_dir: member_dir.into(),
            ttl: None,
            loop_wait: None,
            retry_timeout: None,
            synchronous: Synchronous::Off,
            synchronous_strict: false,
            synchronous_node_count: None,
            failsafe_mode: false,
            network: "127.0.0.1/32".into(),
            hba_first: Vec::new(),
            app_user: true,
            superuser: ("postgres".into(), "postgres".into()),
            replication: ("replicator".into(), "replicator".into()),
            dcs_parameters: pairs(&[
                ("wal_level", "replica"),
                ("hot_standby", "\"on\""),
                ("max_connections", "100"),
                ("max_wal_senders", "10"),
                ("max_replication_slots", "10"),
                ("wal_keep_size", "128MB"),
                ("wal_log_hints", "\"on\""),
            ]),
            parameters: pairs(&[("shared_buffers", "32MB")]),
            socket_dir: None,
            pgbaton_section: true,
            pgbaton_keys: Vec::new(),
            extra_tags: Vec::new(),
            archive: None,
            standby_of: None,
        }
    }

    /// Set one `bootstrap.dcs.postgresql.parameters` value (replaced in place, or added).
    pub fn dcs_parameter(&mut self, key: &str, value: &str) -> &mut Self {
        set(&mut self.dcs_parameters, key, value);
        self
    }

    /// Set one `postgresql.parameters` value (replaced in place, or added).
    pub fn parameter(&mut self, key: &str, value: &str) -> &mut Self {
        set(&mut self.parameters, key, value);
        self
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let w = &mut out;
        if let Some(header) = &self.header {
            let _ = writeln!(w, "# {header}");
        }
        let _ = writeln!(w, "scope: {}", self.scope);
        let _ = writeln!(w, "namespace: /service/");
        let _ = writeln!(w, "name: {}\n", self.name);
        let _ = writeln!(w, "restapi:");
        let _ = writeln!(w, "  listen: {}:{}", self.host, self.api_port);
        let _ = writeln!(w, "  connect_address: {}:{}\n", self.host, self.api_port);
        let _ = writeln!(w, "etcd3:\n  hosts:");
        for host in &self.etcd_hosts {
            let _ = writeln!(w, "    - {host}");
        }
        let _ = writeln!(w, "\nbootstrap:\n  dcs:");
        for (key, value) in [
            ("ttl", self.ttl),
            ("loop_wait", self.loop_wait),
            ("retry_timeout", self.retry_timeout),
        ] {
            if let Some(v) = value {
                let _ = writeln!(w, "    {key}: {v}");
            }
        }
        match self.synchronous {
            Synchronous::Off => {}
            Synchronous::On => {
                let _ = writeln!(w, "    synchronous_mode: true");
            }
            Synchronous::Quorum => {
                let _ = writeln!(w, "    synchronous_mode: quorum");
            }
        }
        if self.synchronous_strict {
            let _ = writeln!(w, "    synchronous_mode_strict: true");
        }
        if let Some(count) = self.synchronous_node_count {
            let _ = writeln!(w, "    synchronous_node_count: {count}");
        }
        if self.failsafe_mode {
            let _ = writeln!(w, "    failsafe_mode: true");
        }
        let _ = writeln!(w, "    maximum_lag_on_failover: 1048576");
        if let Some((host, port)) = &self.standby_of {
            let _ = writeln!(
                w,
                "    # A standby cluster: its leader replicates the primary at {host}:{port};\n    # remove this section (pgbaton ctl edit-config) to promote it.\n    standby_cluster:\n      host: {host}\n      port: {port}"
            );
        }
        let _ = writeln!(
            w,
            "    postgresql:\n      use_pg_rewind: true\n      use_slots: true"
        );
        let _ = writeln!(w, "      parameters:");
        for (key, value) in &self.dcs_parameters {
            let _ = writeln!(w, "        {key}: {value}");
        }
        let _ = writeln!(w, "  initdb:\n    - encoding: UTF8\n    - data-checksums");
        let _ = writeln!(w, "  pg_hba:");
        for line in &self.hba_first {
            let _ = writeln!(w, "    - {line}");
        }
        let (repl_user, repl_password) = &self.replication;
        let _ = writeln!(
            w,
            "    - host replication {repl_user} {} scram-sha-256",
            self.network
        );
        let _ = writeln!(w, "    - host all all {} scram-sha-256", self.network);
        if self.app_user {
            let _ = writeln!(
                w,
                "  users:\n    app:\n      password: app\n      options:\n        - createdb"
            );
        }
        let dir = self.member_dir.display();
        let _ = writeln!(w, "\npostgresql:");
        let _ = writeln!(w, "  listen: {}:{}", self.host, self.postgres_port);
        let _ = writeln!(w, "  connect_address: {}:{}", self.host, self.postgres_port);
        let _ = writeln!(w, "  data_dir: {dir}/data");
        let _ = writeln!(w, "  bin_dir: /usr/lib/postgresql/15/bin");
        let _ = writeln!(
            w,
            "  # Each member on this host has its own password file (postgresql.pgpass)."
        );
        let _ = writeln!(w, "  pgpass: {dir}/pgpass");
        let (su_user, su_password) = &self.superuser;
        let _ = writeln!(w, "  authentication:");
        let _ = writeln!(
            w,
            "    superuser:\n      username: {su_user}\n      password: {su_password}"
        );
        let _ = writeln!(
            w,
            "    replication:\n      username: {repl_user}\n      password: {repl_password}"
        );
        if let Some(archive) = &self.archive {
            let options = format!(
                "--config={} --stanza={} --pg1-path={dir}/data",
                archive.config.display(),
                archive.stanza
            );
            let _ = writeln!(
                w,
                "  # A new replica is restored from the newest backup, else cloned by pg_basebackup."
            );
            let _ = writeln!(w, "  create_replica_methods: [pgbackrest, basebackup]");
            let _ = writeln!(w, "  pgbackrest:");
            let _ = writeln!(w, "    command: pgbackrest {options} --delta restore");
            let _ = writeln!(
                w,
                "    keep_data: true\n    no_params: true\n    type: standby"
            );
        }
        let _ = writeln!(w, "  parameters:");
        for (key, value) in &self.parameters {
            let _ = writeln!(w, "    {key}: {value}");
        }
        if let Some(socket) = &self.socket_dir {
            let _ = writeln!(w, "    unix_socket_directories: '{}'", socket.display());
        }
        if let Some(archive) = &self.archive {
            let options = format!(
                "--config={} --stanza={} --pg1-path={dir}/data",
                archive.config.display(),
                archive.stanza
            );
            let _ = writeln!(w, "    archive_mode: \"on\"");
            let _ = writeln!(
                w,
                "    archive_command: 'pgbackrest {options} archive-push %p'"
            );
            let _ = writeln!(
                w,
                "    restore_command: 'pgbackrest {options} archive-get %f \"%p\"'"
            );
        }
        let _ = writeln!(w, "\ntags:\n  nofailover: false\n  noloadbalance: false");
        for (key, value) in &self.extra_tags {
            let _ = writeln!(w, "  {key}: {value}");
        }
        if self.pgbaton_section {
            let _ = writeln!(w, "\npgbaton:\n  log_dir: {dir}");
            for (key, value) in &self.pgbaton_keys {
                let _ = writeln!(w, "  {key}: {value}");
            }
        }
        if let Some(archive) = &self.archive {
            let _ = writeln!(
                w,
                "\n# The repository the leader checks (stanza-create, check) and backs up to.\npgbackrest:\n  stanza: {}\n  config: {}",
                archive.stanza,
                archive.config.display()
            );
        }
        out
    }
}

fn set(list: &mut Vec<(String, String)>, key: &str, value: &str) {
    match list.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value.to_string(),
        None => list.push((key.to_string(), value.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_member_declares_its_remote_primary_in_bootstrap_dcs() {
        let mut m = MemberYaml::loopback("dr", "node1", "/tmp/x/node1", 5433, 8009, 2379);
        m.standby_of = Some(("127.0.0.1".into(), 15402));
        let c = crate::parse_str(&m.render(), "<template>")
            .expect("valid")
            .value;
        let standby = c.bootstrap.dcs.standby_cluster.expect("standby_cluster");
        assert_eq!(standby.host.as_deref(), Some("127.0.0.1"));
        assert_eq!(standby.port, 15402);
    }

    #[test]
    fn the_loopback_member_is_a_valid_configuration_with_its_values() {
        let mut m = MemberYaml::loopback("demo", "node2", "/tmp/x/node2", 5433, 8009, 2379);
        m.ttl = Some(4.0);
        m.synchronous = Synchronous::Quorum;
        m.socket_dir = Some("/tmp/x/node2/sock".into());
        m.parameter("shared_buffers", "64MB");
        let yaml = m.render();
        let c = crate::parse_str(&yaml, "<template>").expect("valid").value;
        assert_eq!(c.name, "node2");
        assert_eq!(c.scope, "demo");
        assert_eq!(c.restapi.listen, "127.0.0.1:8009");
        assert_eq!(c.postgresql.port, 5433);
        assert_eq!(c.dcs.hosts, ["127.0.0.1:2379"]);
        assert_eq!(c.bootstrap.dcs.ttl, 4.0);
        assert_eq!(c.bootstrap.dcs.synchronous_mode, crate::SyncMode::Quorum);
        assert_eq!(
            c.postgresql
                .parameters
                .get("shared_buffers")
                .map(String::as_str),
            Some("64MB")
        );
        assert_eq!(
            c.postgresql
                .parameters
                .get("unix_socket_directories")
                .map(String::as_str),
            Some("/tmp/x/node2/sock")
        );
        assert!(c.bootstrap.users.contains_key("app"));
        assert_eq!(
            c.postgresql.data_dir,
            std::path::Path::new("/tmp/x/node2/data")
        );
    }

    #[test]
    fn an_archiving_member_archives_restores_and_names_the_repository() {
        let mut m = MemberYaml::loopback("demo", "node2", "/tmp/x/node2", 5433, 8009, 2379);
        m.archive = Some(ArchiveYaml {
            config: "/tmp/x/pgbackrest/pgbackrest.conf".into(),
            stanza: "demo".into(),
        });
        let yaml = m.render();
        let c = crate::parse_str(&yaml, "<template>").expect("valid").value;
        let options =
            "--config=/tmp/x/pgbackrest/pgbackrest.conf --stanza=demo --pg1-path=/tmp/x/node2/data";
        let param = |k: &str| c.postgresql.parameters.get(k).cloned().unwrap_or_default();
        assert_eq!(param("archive_mode"), "on");
        assert_eq!(
            param("archive_command"),
            format!("pgbackrest {options} archive-push %p")
        );
        assert_eq!(
            param("restore_command"),
            format!("pgbackrest {options} archive-get %f \"%p\"")
        );
        let methods: Vec<&str> = c
            .postgresql
            .create_replica_methods
            .iter()
            .map(|m| m.name())
            .collect();
        assert_eq!(methods, ["pgbackrest", "basebackup"]);
        match &c.postgresql.create_replica_methods[0] {
            crate::ReplicaMethod::Command(m) => {
                assert_eq!(m.command, format!("pgbackrest {options} --delta restore"));
                assert!(m.keep_data && m.no_params);
            }
            other => panic!("not a command method: {other:?}"),
        }
        let repo = c.pgbackrest.expect("a pgbackrest: section");
        assert_eq!(repo.stanza, "demo");
        assert_eq!(
            repo.config.as_deref(),
            Some(std::path::Path::new("/tmp/x/pgbackrest/pgbackrest.conf"))
        );
    }
}
