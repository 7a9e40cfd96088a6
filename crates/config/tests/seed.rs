//! The patroni.yml of the seed guide (section 7.3) must be accepted exactly as it is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pgbaton_config::{load_file, Credentials, InitdbOption, SyncMode, Tags, UserSpec};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed-patroni.yml")
}

#[test]
fn seed_patroni_yml_parses_with_every_value_kept() {
    let loaded = load_file(&fixture()).expect("the seed's patroni.yml is valid");
    // Its only warning: the REST API's write endpoints are open to the network.
    let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        warnings,
        ["restapi.authentication: the REST API listens on 0.0.0.0:8008 without authentication: anyone who reaches it can switch over, restart, reinitialize or reconfigure the cluster; set restapi.authentication (username, password)"],
        "the seed's file loads with one warning"
    );
    let c = loaded.value;

    assert_eq!(c.scope, "pg-cluster");
    assert_eq!(c.name, "node1");
    assert_eq!(c.namespace, "/service/");
    assert_eq!(c.source, fixture().display().to_string());

    assert_eq!(c.restapi.listen, "0.0.0.0:8008");
    assert_eq!(c.restapi.connect_address, "192.168.1.11:8008");
    assert_eq!(c.restapi.authentication, None);

    assert_eq!(
        c.dcs.hosts,
        [
            "192.168.1.21:2379",
            "192.168.1.22:2379",
            "192.168.1.23:2379"
        ]
    );
    assert_eq!(
        (c.dcs.username.as_deref(), c.dcs.password.as_deref()),
        (None, None)
    );

    let dcs = &c.bootstrap.dcs;
    assert_eq!(dcs.ttl, 30.0);
    assert_eq!(dcs.loop_wait, 10.0);
    assert_eq!(dcs.retry_timeout, 10.0);
    assert_eq!(dcs.maximum_lag_on_failover, 1_048_576);
    assert!(dcs.use_pg_rewind);
    assert!(dcs.use_slots);
    assert_eq!(dcs.synchronous_mode, SyncMode::Off);
    assert!(!dcs.pause);
    assert!(dcs.extra.is_empty(), "{:?}", dcs.extra);
    let expected_parameters: BTreeMap<String, String> = [
        ("wal_level", "replica"),
        ("hot_standby", "on"),
        ("max_connections", "200"),
        ("max_wal_senders", "10"),
        ("max_replication_slots", "10"),
        ("wal_keep_size", "1GB"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(dcs.parameters, expected_parameters);

    let args: Vec<String> = c
        .bootstrap
        .initdb
        .iter()
        .map(InitdbOption::to_arg)
        .collect();
    assert_eq!(args, ["--encoding=UTF8", "--data-checksums"]);
    assert_eq!(
        c.bootstrap.pg_hba,
        [
            "host replication replicator 192.168.1.0/24 scram-sha-256",
            "host all all 192.168.1.0/24 scram-sha-256"
        ]
    );
    let users: BTreeMap<String, UserSpec> = BTreeMap::from([
        (
            "admin".to_string(),
            UserSpec {
                password: Some("admin_password".into()),
                options: vec!["createrole".into(), "createdb".into()],
            },
        ),
        (
            "replicator".to_string(),
            UserSpec {
                password: Some("repl_password".into()),
                options: vec!["replication".into()],
            },
        ),
    ]);
    assert_eq!(c.bootstrap.users, users);

    let pg = &c.postgresql;
    assert_eq!((pg.listen_host.as_str(), pg.port), ("0.0.0.0", 5432));
    assert_eq!(
        (pg.connect_host.as_str(), pg.connect_port),
        ("192.168.1.11", 5432)
    );
    assert_eq!(pg.data_dir, Path::new("/var/lib/pgsql/16/data"));
    assert_eq!(pg.bin_dir, Path::new("/usr/pgsql-16/bin"));
    assert_eq!(pg.pgpass.as_deref(), Some(Path::new("/tmp/pgpass")));
    assert_eq!(
        pg.superuser,
        Credentials {
            username: "postgres".into(),
            password: Some("postgres_password".into())
        }
    );
    assert_eq!(
        pg.replication,
        Credentials {
            username: "replicator".into(),
            password: Some("repl_password".into())
        }
    );
    assert_eq!(pg.rewind, None);
    let local: Vec<(&str, &str)> = pg
        .parameters
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        local,
        [
            ("effective_cache_size", "12GB"),
            ("shared_buffers", "4GB"),
            ("unix_socket_directories", "/var/run/postgresql"),
            ("work_mem", "64MB"),
        ]
    );
    assert!(pg.pg_hba.is_empty());
    assert!(pg.basebackup.is_empty());
    assert!(!pg.use_unix_socket);

    assert_eq!(c.tags, Tags::default(), "all four tags are false");
    assert!(
        c.tags.to_json_map().is_empty(),
        "false tags are not published"
    );

    assert_eq!(c.pgbaton.demote_margin, 0.5);
    assert_eq!(c.pgbaton.primary_restart_timeout, 10.0);
    assert_eq!(c.pgbaton.run_as, "postgres");
    assert_eq!(c.pgbaton.log_dir, None);
}

#[test]
fn seed_bootstrap_dcs_is_stored_in_patronis_shape() {
    let c = load_file(&fixture())
        .expect("the seed's patroni.yml is valid")
        .value;
    let json = c.bootstrap.dcs.to_dcs_json();
    assert_eq!(json["ttl"], serde_json::json!(30));
    assert_eq!(json["loop_wait"], serde_json::json!(10));
    assert_eq!(json["postgresql"]["parameters"]["max_connections"], "200");
    assert_eq!(json["postgresql"]["use_pg_rewind"], true);
}
