//! Bad files fail with the file, the key path and the reason; odd ones load with warnings.

use pgbaton_config::{parse_str, ConfigError, ConfigWarning};

const FILE: &str = "/etc/pgbaton.yml";
const MINIMAL: &str = "scope: demo\nname: m1\npostgresql:\n  data_dir: /d\n";

fn error_of(text: &str) -> String {
    parse_str(text, FILE)
        .expect_err("the file must be refused")
        .to_string()
}

fn warnings_of(text: &str) -> Vec<String> {
    parse_str(text, FILE)
        .expect("the file must load")
        .warnings
        .iter()
        .map(ConfigWarning::to_string)
        .collect()
}

fn with_dcs(lines: &str) -> String {
    format!("{MINIMAL}bootstrap:\n  dcs:\n{lines}")
}

#[test]
fn malformed_yaml_names_line_and_column() {
    let err = parse_str(
        "scope: demo\nname: m1\npostgresql:\n    data_dir: [/d\n",
        FILE,
    )
    .expect_err("unclosed bracket");
    assert!(
        matches!(
            err,
            ConfigError::Yaml {
                line: 4,
                column: 15,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "/etc/pgbaton.yml: line 4 column 15: invalid YAML: unclosed bracket '['"
    );
    assert_eq!(
        error_of("scope: demo\nname: a: b\n"),
        "/etc/pgbaton.yml: line 2 column 8: invalid YAML: mapping values are not allowed in this context"
    );
}

#[test]
fn missing_required_keys() {
    assert_eq!(
        error_of("scope: demo\npostgresql:\n  data_dir: /d\n"),
        "/etc/pgbaton.yml: name: required key is missing (this member's unique name in the cluster)"
    );
    assert_eq!(
        error_of("name: m1\npostgresql:\n  data_dir: /d\n"),
        "/etc/pgbaton.yml: scope: required key is missing (the cluster name shared by all members)"
    );
    assert_eq!(
        error_of("scope: demo\nname: m1\n"),
        "/etc/pgbaton.yml: postgresql.data_dir: required key is missing (the PostgreSQL data directory this member manages)"
    );
    assert_eq!(
        error_of(""),
        "/etc/pgbaton.yml: (top level): the configuration is empty; it needs at least scope, name and postgresql.data_dir"
    );
}

#[test]
fn bad_timing_values() {
    assert_eq!(
        error_of(&with_dcs("    ttl: abc\n")),
        "/etc/pgbaton.yml: bootstrap.dcs.ttl: expected a number of seconds, got \"abc\""
    );
    assert_eq!(
        error_of(&with_dcs("    ttl: 1\n")),
        "/etc/pgbaton.yml: bootstrap.dcs.ttl: must be at least 2 seconds (etcd's minimum lease), got 1"
    );
    assert_eq!(
        error_of(&with_dcs("    loop_wait: 0\n")),
        "/etc/pgbaton.yml: bootstrap.dcs.loop_wait: must be more than 0 seconds, got 0"
    );
    assert_eq!(
        error_of(&with_dcs("    retry_timeout: -1.5\n")),
        "/etc/pgbaton.yml: bootstrap.dcs.retry_timeout: must be more than 0 seconds, got -1.5"
    );
    assert_eq!(
        error_of(&with_dcs("    maximum_lag_on_failover: -1\n")),
        "/etc/pgbaton.yml: bootstrap.dcs.maximum_lag_on_failover: must be 0 or more bytes, got -1"
    );
    assert_eq!(
        error_of(&with_dcs("    synchronous_node_count: 0\n")),
        "/etc/pgbaton.yml: bootstrap.dcs.synchronous_node_count: must be at least 1, got 0"
    );
}

#[test]
fn loose_timing_is_only_a_warning() {
    assert_eq!(
        warnings_of(&with_dcs("    ttl: 20\n    loop_wait: 10\n    retry_timeout: 10\n")),
        ["bootstrap.dcs: loop_wait (10) + 2 x retry_timeout (10) is more than ttl (20): a leader may lose its lease during a short DCS hiccup; raise ttl or lower loop_wait/retry_timeout"]
    );
}

#[test]
fn unknown_keys_are_warned_with_a_suggestion() {
    assert_eq!(
        warnings_of(&with_dcs("    loop_wiat: 5\n")),
        ["bootstrap.dcs.loop_wiat: unknown key (kept verbatim in the DCS config, not used by pgbaton); did you mean \"loop_wait\"?"]
    );
    assert_eq!(
        warnings_of(&format!("{MINIMAL}  bin_dri: /x\nfoo: 1\n")),
        [
            "postgresql.bin_dri: unknown key (ignored); did you mean \"bin_dir\"?",
            "foo: unknown key (ignored)",
        ]
    );
}

#[test]
fn unsupported_options_are_warned_not_dropped_silently() {
    let text = format!(
        "{MINIMAL}  callbacks: {{on_start: /bin/true}}\nwatchdog:\n  mode: automatic\nbootstrap:\n  post_init: /x.sh\n"
    );
    assert_eq!(
        warnings_of(&text),
        [
            "bootstrap.post_init: bootstrap scripts are not supported yet; ignored",
            "postgresql.callbacks: callback scripts are not supported yet; ignored",
        ]
    );
}

#[test]
fn wildcard_connect_address_is_refused() {
    assert_eq!(
        error_of(&format!("{MINIMAL}  listen: 127.0.0.1:5432\n  connect_address: 0.0.0.0:5432\n")),
        "/etc/pgbaton.yml: postgresql.connect_address: 0.0.0.0 is an address to listen on, not one others can connect to; set this member's reachable address, e.g. 192.168.1.11:5432"
    );
    assert_eq!(
        error_of(&format!("{MINIMAL}restapi:\n  listen: 0.0.0.0:8008\n")),
        "/etc/pgbaton.yml: restapi.connect_address: required key is missing (restapi.listen is 0.0.0.0:8008, which others cannot connect to; set this member's reachable host:port)"
    );
    assert_eq!(
        error_of(&format!("{MINIMAL}  listen: 0.0.0.0:5432\n")),
        "/etc/pgbaton.yml: postgresql.connect_address: required key is missing (postgresql.listen is 0.0.0.0, which other members cannot connect to; set this member's reachable host:port)"
    );
}

#[test]
fn etcd_tls_and_credentials_mistakes_are_named() {
    assert_eq!(
        error_of(&format!(
            "{MINIMAL}etcd3:\n  protocol: https\n  hosts: [127.0.0.1:2379]\n  cert: /etc/pgbaton/client.crt\n"
        )),
        "/etc/pgbaton.yml: etcd3.key: cert and key go together: set both (the client certificate and its private key) or neither"
    );
    assert_eq!(
        error_of(&format!(
            "{MINIMAL}etcd3:\n  hosts: [\"https://127.0.0.1:2379\", \"http://127.0.0.2:2379\"]\n"
        )),
        "/etc/pgbaton.yml: etcd3.hosts: mixes http:// and https:// endpoints: etcd is reached one way; use the same scheme for every endpoint"
    );
    assert_eq!(
        error_of(&format!("{MINIMAL}etcd3:\n  protocol: gopher\n")),
        "/etc/pgbaton.yml: etcd3.protocol: expected \"http\" or \"https\", got \"gopher\""
    );
    assert_eq!(
        error_of(&format!("{MINIMAL}etcd3:\n  password: secret\n")),
        "/etc/pgbaton.yml: etcd3.password: a password without a username: set username too (etcd's user)"
    );
    assert_eq!(
        error_of(&format!("{MINIMAL}consul:\n  host: 127.0.0.1:8500\n")),
        "/etc/pgbaton.yml: consul: consul is not supported: pgbaton keeps cluster state in etcd; configure an etcd3 section with the etcd endpoints"
    );
}

#[test]
fn wrong_shapes_name_the_path() {
    assert_eq!(
        error_of(&format!("{MINIMAL}restapi:\n  - listen: 127.0.0.1:8008\n")),
        "/etc/pgbaton.yml: restapi: expected a mapping, got a list"
    );
    assert_eq!(
        error_of(&format!("{MINIMAL}bootstrap:\n  pg_hba:\n    - host all all 127.0.0.1/32 trust\n    - {{a: 1}}\n")),
        "/etc/pgbaton.yml: bootstrap.pg_hba[1]: expected a string, got a mapping"
    );
    assert_eq!(
        error_of(&format!("{MINIMAL}  parameters: [a, b]\n")),
        "/etc/pgbaton.yml: postgresql.parameters: expected a mapping, got a list"
    );
    assert_eq!(
        error_of(&format!("{MINIMAL}tags:\n  nofailover: maybe\n")),
        "/etc/pgbaton.yml: tags.nofailover: expected true or false, got \"maybe\""
    );
    assert_eq!(
        error_of("- scope\n- name\n"),
        "/etc/pgbaton.yml: (top level): expected a mapping, got a list"
    );
}

#[test]
fn ports_out_of_range() {
    assert_eq!(
        error_of(&format!("{MINIMAL}  listen: 127.0.0.1:70000\n")),
        "/etc/pgbaton.yml: postgresql.listen: port 70000 is out of range (1-65535)"
    );
    assert_eq!(
        error_of(&format!("{MINIMAL}restapi:\n  listen: 127.0.0.1:0\n")),
        "/etc/pgbaton.yml: restapi.listen: port 0 is out of range (1-65535)"
    );
}

#[test]
fn logical_slots_need_database_and_plugin() {
    assert_eq!(
        error_of(&with_dcs("    slots:\n      cdc: {type: logical, database: app}\n")),
        "/etc/pgbaton.yml: bootstrap.dcs.slots.cdc.plugin: required key is missing (a logical slot needs a database and an output plugin)"
    );
    assert_eq!(
        error_of(&with_dcs("    slots:\n      Bad-Name: {type: physical}\n")),
        "/etc/pgbaton.yml: bootstrap.dcs.slots.Bad-Name: invalid slot name: use 1 to 63 lower-case letters, digits and underscores"
    );
}

#[test]
fn replication_and_rewind_tls_settings_are_taken_and_checked() {
    let auth = "  authentication:\n    replication:\n      username: repl\n      sslmode: verify-full\n      sslrootcert: /etc/ssl/certs\n      channel_binding: require\n    rewind:\n      username: rw\n      sslmode: require\n";
    let cfg = parse_str(&format!("{MINIMAL}{auth}"), FILE).expect("the file must load");
    assert_eq!(
        cfg.value.postgresql.replication_tls,
        [
            ("sslmode".to_string(), "verify-full".to_string()),
            ("sslrootcert".to_string(), "/etc/ssl/certs".to_string()),
            ("channel_binding".to_string(), "require".to_string()),
        ]
    );
    assert_eq!(
        cfg.value.postgresql.rewind_tls,
        [("sslmode".to_string(), "require".to_string())]
    );
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    assert_eq!(
        error_of(&format!(
            "{MINIMAL}  authentication:\n    replication:\n      sslmode: verify_full\n"
        )),
        "/etc/pgbaton.yml: postgresql.authentication.replication.sslmode: verify_full is not a sslmode libpq knows; use one of disable, allow, prefer, require, verify-ca, verify-full"
    );
    assert_eq!(
        warnings_of(&format!(
            "{MINIMAL}  authentication:\n    replication:\n      sslrootcert: /nonexistent/ca.crt\n"
        )),
        [
            "postgresql.authentication.replication.sslrootcert: /nonexistent/ca.crt does not exist here; libpq will refuse to connect until it does (it is read as the user PostgreSQL runs as)",
        ]
    );
    // Without a rewind role pg_rewind connects as the superuser, with its settings.
    let cfg = parse_str(
        &format!("{MINIMAL}  authentication:\n    superuser:\n      sslmode: verify-ca\n"),
        FILE,
    )
    .expect("the file must load");
    assert_eq!(
        cfg.value.postgresql.rewind_tls,
        [("sslmode".to_string(), "verify-ca".to_string())]
    );
}
