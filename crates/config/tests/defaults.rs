//! Where the file is silent, pgbaton's defaults apply; where it speaks, it gets exactly what
//! it asked for.

use std::path::Path;

use pgbaton_config::{
    load_file, parse_str, ConfigError, Credentials, DynamicConfig, PgbatonConfig, SyncMode, Tags,
};

const MINIMAL: &str = "scope: demo\nname: m1\npostgresql:\n  data_dir: /var/lib/pgbaton/m1\n";

#[test]
fn minimal_file_gets_every_default() {
    let loaded = parse_str(MINIMAL, "<string>").expect("minimal file is valid");
    assert_eq!(loaded.warnings, vec![]);
    let c = loaded.value;
    assert_eq!((c.scope.as_str(), c.name.as_str()), ("demo", "m1"));
    assert_eq!(c.namespace, "/service/");
    assert_eq!(c.source, "<string>");
    assert_eq!(c.restapi.listen, "127.0.0.1:8008");
    assert_eq!(c.restapi.connect_address, "127.0.0.1:8008");
    assert_eq!(c.dcs.hosts, ["127.0.0.1:2379"]);
    assert_eq!(c.bootstrap.dcs, DynamicConfig::defaults());
    assert!(c.bootstrap.initdb.is_empty() && c.bootstrap.pg_hba.is_empty());
    assert!(c.bootstrap.users.is_empty());

    let pg = &c.postgresql;
    assert_eq!((pg.listen_host.as_str(), pg.port), ("127.0.0.1", 5432));
    assert_eq!(
        (pg.connect_host.as_str(), pg.connect_port),
        ("127.0.0.1", 5432)
    );
    assert_eq!(pg.data_dir, Path::new("/var/lib/pgbaton/m1"));
    assert_eq!(pg.bin_dir, Path::new("/usr/lib/postgresql/15/bin"));
    assert_eq!(
        pg.superuser,
        Credentials {
            username: "postgres".into(),
            password: None
        }
    );
    assert_eq!(
        pg.replication,
        Credentials {
            username: "replicator".into(),
            password: None
        }
    );
    assert_eq!(c.tags, Tags::default());
    assert_eq!(c.pgbaton, PgbatonConfig::default());
}

#[test]
fn documented_default_values() {
    let d = DynamicConfig::defaults();
    assert_eq!((d.ttl, d.loop_wait, d.retry_timeout), (4.0, 1.0, 1.5));
    assert_eq!(d.maximum_lag_on_failover, 1_048_576);
    assert_eq!(d.primary_start_timeout, 300.0);
    assert_eq!(d.synchronous_node_count, 1);
    assert_eq!(d.synchronous_mode, SyncMode::Off);
    assert!(d.use_slots && d.use_pg_rewind && !d.failsafe_mode && !d.pause);
    assert_eq!(d.member_slots_ttl, 1800.0, "Patroni 4's 30 min");
    let p = PgbatonConfig::default();
    assert_eq!((p.demote_margin, p.primary_restart_timeout), (0.5, 10.0));
    assert_eq!(p.run_as, "postgres");
    assert!(p.auto_reclone);
    assert_eq!(p.reclone_interval, 600.0);
}

#[test]
fn explicit_values_win_and_fast_values_are_accepted() {
    let text = r#"
scope: demo
name: m1
namespace: pgb
restapi:
  listen: 127.0.0.1:8101
  connect_address: 127.0.0.2:8101
  authentication: {username: admin, password: 1234}
etcd3:
  hosts: "127.0.0.1:2379, http://127.0.0.2:2380,etcd3"
  username: root
  password: secret
bootstrap:
  dcs:
    ttl: 2.5
    loop_wait: 0.5
    retry_timeout: 0.5
    synchronous_mode: quorum
    synchronous_node_count: 2
    failsafe_mode: true
    slots:
      cdc: {type: logical, database: app, plugin: pgoutput}
      keep: {type: physical}
postgresql:
  listen: 127.0.0.1,127.0.0.3:5433
  data_dir: /d
  authentication:
    rewind: {username: rewinder, password: r}
  parameters: {fsync: false, random_page_cost: 1.1}
  basebackup:
    - max-rate: 100M
    - checkpoint: fast
  use_unix_socket: true
tags:
  nofailover: true
  replicatefrom: m0
  failover_priority: 3
  nostream: false
  dc: east
pgbaton:
  demote_margin: 0.25
  primary_restart_timeout: 3
  run_as: pg
  log_dir: /var/log/pgbaton
  auto_reclone: false
  reclone_interval: 120
"#;
    let loaded = parse_str(text, "t.yml").expect("valid file");
    assert_eq!(loaded.warnings, vec![]);
    let c = loaded.value;
    assert_eq!(c.namespace, "/pgb/");
    assert_eq!(c.restapi.connect_address, "127.0.0.2:8101");
    assert_eq!(
        c.restapi.authentication,
        Some(Credentials {
            username: "admin".into(),
            password: Some("1234".into())
        })
    );
    assert_eq!(
        c.dcs.hosts,
        ["127.0.0.1:2379", "127.0.0.2:2380", "etcd3:2379"]
    );
    assert_eq!(c.dcs.username.as_deref(), Some("root"));
    let d = &c.bootstrap.dcs;
    assert_eq!((d.ttl, d.loop_wait, d.retry_timeout), (2.5, 0.5, 0.5));
    assert_eq!(d.synchronous_mode, SyncMode::Quorum);
    assert_eq!(d.synchronous_node_count, 2);
    assert!(d.failsafe_mode);
    assert_eq!(d.slots["cdc"].plugin.as_deref(), Some("pgoutput"));
    assert_eq!(d.slots["keep"].slot_type, "physical");
    let pg = &c.postgresql;
    assert_eq!(
        (pg.listen_host.as_str(), pg.port),
        ("127.0.0.1,127.0.0.3", 5433)
    );
    assert_eq!(
        (pg.connect_host.as_str(), pg.connect_port),
        ("127.0.0.1", 5433)
    );
    assert_eq!(
        pg.rewind.as_ref().map(|r| r.username.as_str()),
        Some("rewinder")
    );
    assert_eq!(pg.parameters["fsync"], "off");
    assert_eq!(pg.parameters["random_page_cost"], "1.1");
    assert_eq!(pg.basebackup, ["--max-rate=100M", "--checkpoint=fast"]);
    assert!(pg.use_unix_socket);
    let tags = serde_json::to_value(c.tags.to_json_map()).expect("tags serialize");
    assert_eq!(
        tags,
        serde_json::json!({"nofailover": true, "replicatefrom": "m0", "failover_priority": 3, "dc": "east"})
    );
    assert_eq!(c.pgbaton.demote_margin, 0.25);
    assert_eq!(c.pgbaton.primary_restart_timeout, 3.0);
    assert_eq!(c.pgbaton.run_as, "pg");
    assert_eq!(
        c.pgbaton.log_dir.as_deref(),
        Some(Path::new("/var/log/pgbaton"))
    );
    assert!(!c.pgbaton.auto_reclone);
    assert_eq!(c.pgbaton.reclone_interval, 120.0);
}

#[test]
fn etcd_over_https_with_client_certificates_and_a_user() {
    let text = format!(
        "{MINIMAL}etcd3:\n  protocol: https\n  hosts: 10.0.0.1:2379,10.0.0.2:2379\n  cacert: /etc/pgbaton/ca.crt\n  cert: /etc/pgbaton/client.crt\n  key: /etc/pgbaton/client.key\n  username: pgbaton\n  password: s3cret\n"
    );
    let loaded = parse_str(&text, "t.yml").expect("valid file");
    assert_eq!(loaded.warnings, vec![]);
    let d = loaded.value.dcs;
    assert!(d.https);
    assert_eq!(d.hosts, ["10.0.0.1:2379", "10.0.0.2:2379"]);
    assert_eq!(d.cacert.as_deref(), Some("/etc/pgbaton/ca.crt"));
    assert_eq!(d.cert.as_deref(), Some("/etc/pgbaton/client.crt"));
    assert_eq!(d.key.as_deref(), Some("/etc/pgbaton/client.key"));
    assert_eq!(d.username.as_deref(), Some("pgbaton"));
    assert_eq!(d.password.as_deref(), Some("s3cret"));
    // https:// endpoints ask for TLS as protocol: https does.
    let text = format!("{MINIMAL}etcd3:\n  hosts: [\"https://127.0.0.1:2379\"]\n");
    let d = parse_str(&text, "t.yml").expect("valid").value.dcs;
    assert!(d.https);
    assert_eq!(d.hosts, ["127.0.0.1:2379"]);
}

#[test]
fn a_user_set_synchronous_standby_names_under_synchronous_mode_is_named() {
    let text = format!(
        "{MINIMAL}  parameters:\n    synchronous_standby_names: 'node2'\nbootstrap:\n  dcs:\n    synchronous_mode: true\n"
    );
    let loaded = parse_str(&text, "t.yml").expect("valid file");
    let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        warnings,
        ["postgresql.parameters.synchronous_standby_names: \"node2\" is overwritten: under synchronous_mode the leader sets synchronous_standby_names itself from the healthy members (the DCS sync key); remove it, or turn synchronous_mode off to manage it by hand"]
    );
}

#[test]
fn patroni_environment_variables_override_the_file() {
    let vars = [
        ("PATRONI_NAME", "from-env"),
        ("PATRONI_RESTAPI_USERNAME", "admin"),
        ("PATRONI_RESTAPI_PASSWORD", "pw"),
        ("PATRONI_ETCD3_HOSTS", "127.0.0.9:2379,127.0.0.10:2379"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let c = pgbaton_config::parse_str_with_env(MINIMAL, "t.yml", vars)
        .expect("valid")
        .value;
    assert_eq!(c.name, "from-env");
    assert_eq!(
        c.restapi.authentication.map(|a| (a.username, a.password)),
        Some(("admin".to_string(), Some("pw".to_string())))
    );
    assert_eq!(c.dcs.hosts, ["127.0.0.9:2379", "127.0.0.10:2379"]);
}

#[test]
fn etcd_v2_section_name_and_single_host_are_accepted() {
    let text = format!("{MINIMAL}etcd:\n  host: 127.0.0.5:2379\n");
    let c = parse_str(&text, "t.yml").expect("valid file").value;
    assert_eq!(c.dcs.hosts, ["127.0.0.5:2379"]);
}

#[test]
fn load_file_reads_a_real_file_and_names_a_missing_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("pgbaton.yml");
    std::fs::write(&path, MINIMAL).expect("write config");
    let c = load_file(&path).expect("valid file").value;
    assert_eq!(c.source, path.display().to_string());

    let missing = dir.path().join("nope.yml");
    let err = load_file(&missing).expect_err("missing file");
    assert!(matches!(err, ConfigError::Read { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "{}: cannot read the configuration file: No such file or directory (os error 2) (check the path and its permissions)",
            missing.display()
        )
    );
}
