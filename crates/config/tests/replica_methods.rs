//! `postgresql.create_replica_methods` and the methods' sections, as Patroni users write them.

use pgbaton_config::{parse_str, CommandMethod, ReplicaMethod};

const FILE: &str = "/etc/pgbaton.yml";

fn file(postgresql: &str) -> String {
    format!("scope: demo\nname: m1\npostgresql:\n  data_dir: /d\n{postgresql}")
}

#[test]
fn methods_are_read_in_order_with_their_sections() {
    let loaded = parse_str(
        &file(
            "  create_replica_methods: [pgbackrest, basebackup]\n  pgbackrest:\n    command: /usr/bin/pgbackrest --stanza=main --delta restore\n    keep_data: true\n    no_params: true\n    process-max: 2\n    archive-check: false\n  basebackup:\n    max-rate: 100M\n",
        ),
        FILE,
    )
    .expect("the file must load");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let pg = &loaded.value.postgresql;
    assert_eq!(
        pg.create_replica_methods,
        vec![
            ReplicaMethod::Command(CommandMethod {
                name: "pgbackrest".into(),
                command: "/usr/bin/pgbackrest --stanza=main --delta restore".into(),
                keep_data: true,
                no_params: true,
                params: vec![
                    ("archive-check".into(), "false".into()),
                    ("process-max".into(), "2".into()),
                ],
            }),
            ReplicaMethod::Basebackup,
        ]
    );
    assert_eq!(pg.basebackup, vec!["--max-rate=100M".to_string()]);
}

#[test]
fn without_the_key_pg_basebackup_alone_and_defaults_of_a_section() {
    let loaded = parse_str(&file(""), FILE).expect("loads");
    assert!(loaded.value.postgresql.create_replica_methods.is_empty());
    let loaded = parse_str(
        &file("  create_replica_methods: [wal_e]\n  wal_e:\n    command: /bin/restore-it\n"),
        FILE,
    )
    .expect("loads");
    let ReplicaMethod::Command(m) = &loaded.value.postgresql.create_replica_methods[0] else {
        panic!("a command method");
    };
    assert!(!m.keep_data && !m.no_params && m.params.is_empty());
}

fn error_of(postgresql: &str) -> String {
    parse_str(&file(postgresql), FILE)
        .expect_err("the file must be refused")
        .to_string()
}

#[test]
fn bad_methods_are_refused_naming_the_key() {
    assert_eq!(
        error_of("  create_replica_methods: [pgbackrest, basebackup]\n"),
        "/etc/pgbaton.yml: postgresql.create_replica_methods[0]: method \"pgbackrest\" has no section postgresql.pgbackrest: add one with its command (e.g. `pgbackrest: {command: ..., keep_data: true, no_params: true}`), or use basebackup"
    );
    assert_eq!(
        error_of("  create_replica_methods: [pgbackrest]\n  pgbackrest:\n    keep_data: true\n"),
        "/etc/pgbaton.yml: postgresql.pgbackrest.command: required key is missing (the command that creates the replica's data directory, e.g. `pgbackrest --stanza=main --delta restore`; method \"pgbackrest\" of create_replica_methods)"
    );
    assert_eq!(
        error_of("  create_replica_methods: [x]\n  x:\n    command: \"restore 'unclosed\"\n"),
        "/etc/pgbaton.yml: postgresql.x.command: cannot split \"restore 'unclosed\" into words (an unclosed quote?); write it as a shell would"
    );
    assert_eq!(
        error_of("  create_replica_methods: [basebackup, basebackup]\n"),
        "/etc/pgbaton.yml: postgresql.create_replica_methods[1]: \"basebackup\" is listed twice; name each method once, in the order to try them"
    );
    assert_eq!(
        error_of("  create_replica_methods: pgbackrest\n"),
        "/etc/pgbaton.yml: postgresql.create_replica_methods: expected a list, got \"pgbackrest\""
    );
    assert_eq!(
        error_of("  create_replica_methods: [x]\n  x:\n    command: c\n    opts: [1]\n"),
        "/etc/pgbaton.yml: postgresql.x.opts: expected a value for --opts= (string, number or boolean), got a list"
    );
}

#[test]
fn no_leader_is_accepted_with_a_warning() {
    let loaded = parse_str(
        &file("  create_replica_methods: [x]\n  x:\n    command: c\n    no_leader: true\n"),
        FILE,
    )
    .expect("loads");
    let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        warnings,
        vec!["postgresql.x.no_leader: not supported yet: replica methods run only while a leader is running; ignored".to_string()]
    );
    let ReplicaMethod::Command(m) = &loaded.value.postgresql.create_replica_methods[0] else {
        panic!("a command method");
    };
    assert!(m.params.is_empty(), "{:?}", m.params);
}

#[test]
fn the_pgbackrest_section_names_stanza_and_configuration_file() {
    let loaded = parse_str(
        &format!(
            "{}pgbackrest:\n  stanza: main\n  config: /etc/pgbackrest/main.conf\n",
            file("")
        ),
        FILE,
    )
    .expect("loads");
    assert_eq!(
        loaded.value.pgbackrest,
        Some(pgbaton_config::PgBackRestConfig {
            stanza: "main".into(),
            config: Some("/etc/pgbackrest/main.conf".into()),
            command: "pgbackrest".into(),
        })
    );
    assert_eq!(
        parse_str(&file(""), FILE).expect("loads").value.pgbackrest,
        None
    );
    assert_eq!(
        parse_str(&format!("{}pgbackrest:\n  config: /x\n", file("")), FILE)
            .expect_err("no stanza")
            .to_string(),
        "/etc/pgbaton.yml: pgbackrest.stanza: required key is missing (the pgBackRest stanza of this cluster, as its configuration file names it)"
    );
}

#[test]
fn a_custom_bootstrap_method_with_its_recovery_target() {
    let text = format!(
        "{}bootstrap:\n  method: pitr\n  pitr:\n    command: pgbackrest --stanza=main restore\n    no_params: true\n    recovery_conf:\n      restore_command: pgbackrest --stanza=main archive-get %f \"%p\"\n      recovery_target_time: '2026-12-04 20:00:00+00'\n      recovery_target_action: promote\n",
        file("")
    );
    let loaded = parse_str(&text, FILE).expect("loads");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let m = loaded.value.bootstrap.method.expect("a method");
    assert_eq!(m.name, "pitr");
    assert_eq!(m.command, "pgbackrest --stanza=main restore");
    assert!(m.no_params && !m.keep_existing_recovery_conf && m.params.is_empty());
    assert_eq!(
        m.recovery_conf
            .get("recovery_target_time")
            .map(String::as_str),
        Some("2026-12-04 20:00:00+00")
    );
    let initdb =
        parse_str(&format!("{}bootstrap:\n  method: initdb\n", file("")), FILE).expect("loads");
    assert_eq!(initdb.value.bootstrap.method, None);
    assert_eq!(
        parse_str(&format!("{}bootstrap:\n  method: pitr\n", file("")), FILE)
            .expect_err("no section")
            .to_string(),
        "/etc/pgbaton.yml: bootstrap.method: method \"pitr\" has no section bootstrap.pitr: add one with its command (e.g. `pitr: {command: ..., recovery_conf: {...}}`), or use initdb"
    );
    assert_eq!(
        parse_str(
            &format!("{}bootstrap:\n  method: pitr\n  pitr:\n    no_params: true\n", file("")),
            FILE
        )
        .expect_err("no command")
        .to_string(),
        "/etc/pgbaton.yml: bootstrap.pitr.command: required key is missing (the command that creates the new cluster's data directory, e.g. `pgbackrest --stanza=main restore`; bootstrap.method is \"pitr\")"
    );
}
