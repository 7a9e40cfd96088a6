//! The DCS `config` key: Patroni's JSON in, Patroni's JSON out.

use pgbaton_config::{DynamicConfig, SyncMode};
use serde_json::json;

fn observed() -> serde_json::Value {
    json!({"ttl":30,"loop_wait":10,"retry_timeout":10,"maximum_lag_on_failover":1048576,
           "postgresql":{"use_pg_rewind":true,"use_slots":true,
                         "parameters":{"wal_level":"replica","hot_standby":"on"}}})
}

#[test]
fn patronis_observed_config_round_trips() {
    let loaded = DynamicConfig::from_dcs_json(&observed(), &DynamicConfig::defaults())
        .expect("Patroni's config is valid");
    assert_eq!(loaded.warnings, vec![]);
    let c = loaded.value;
    assert_eq!((c.ttl, c.loop_wait, c.retry_timeout), (30.0, 10.0, 10.0));
    assert_eq!(c.maximum_lag_on_failover, 1_048_576);
    assert!(c.use_pg_rewind && c.use_slots);
    assert_eq!(c.parameters["wal_level"], "replica");
    assert_eq!(c.parameters["hot_standby"], "on");
    // Keys absent from the document take the fallback's values.
    assert_eq!(c.primary_start_timeout, 300.0);
    assert_eq!(c.synchronous_mode, SyncMode::Off);

    let written = c.to_dcs_json();
    // Everything Patroni wrote is written back the same way (integers stay integers).
    for key in [
        "ttl",
        "loop_wait",
        "retry_timeout",
        "maximum_lag_on_failover",
    ] {
        assert_eq!(written[key], observed()[key], "{key}");
        assert!(written[key].is_u64(), "{key} must print as an integer");
    }
    assert_eq!(written["postgresql"], observed()["postgresql"]);
    assert_eq!(written["synchronous_mode"], json!(false));
    assert_eq!(written.get("pause"), None, "pause is only written when set");

    let again = DynamicConfig::from_dcs_json(&written, &DynamicConfig::fast_profile())
        .expect("our own JSON is valid")
        .value;
    assert_eq!(again, c);
}

#[test]
fn unknown_and_unused_keys_survive_a_round_trip() {
    let doc = json!({"ttl": 2.5, "loop_wait": 0.5, "retry_timeout": 0.5,
        "synchronous_mode": "quorum", "pause": true, "check_timeline": true,
        "standby_cluster": {"host": "127.0.0.9"}, "future_key": [1, 2],
        "postgresql": {"pg_hba": ["local all all trust"], "parameters": {"max_connections": 100}},
        "slots": {"cdc": {"type": "logical", "database": "app", "plugin": "pgoutput"}}});
    let loaded = DynamicConfig::from_dcs_json(&doc, &DynamicConfig::defaults()).expect("valid");
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        ["future_key: unknown key (kept verbatim in the DCS config, not used by pgbaton)",]
    );
    let c = loaded.value;
    assert_eq!(c.synchronous_mode, SyncMode::Quorum);
    assert!(c.pause);
    assert_eq!(c.parameters["max_connections"], "100");
    let written = c.to_dcs_json();
    assert_eq!(written["ttl"], json!(2.5));
    assert_eq!(written["synchronous_mode"], json!("quorum"));
    assert_eq!(written["pause"], json!(true));
    assert_eq!(written["future_key"], json!([1, 2]));
    assert_eq!(written["check_timeline"], json!(true));
    assert_eq!(
        written["standby_cluster"],
        json!({"host": "127.0.0.9", "port": 5432})
    );
    assert_eq!(
        written["postgresql"]["pg_hba"],
        json!(["local all all trust"])
    );
    assert_eq!(written["slots"], doc["slots"]);
    let again = DynamicConfig::from_dcs_json(&written, &DynamicConfig::defaults())
        .expect("valid")
        .value;
    assert_eq!(again, c);
}

#[test]
fn legacy_names_and_absent_pause() {
    let fallback = DynamicConfig {
        pause: true,
        ..DynamicConfig::defaults()
    };
    let c = DynamicConfig::from_dcs_json(&json!({"master_start_timeout": 60}), &fallback)
        .expect("valid")
        .value;
    assert_eq!(c.primary_start_timeout, 60.0);
    assert!(!c.pause, "a config without pause is not paused");
    assert_eq!(c.ttl, 4.0);
}

#[test]
fn invalid_dcs_documents_are_refused_with_the_key() {
    let err = |v: serde_json::Value| {
        DynamicConfig::from_dcs_json(&v, &DynamicConfig::defaults())
            .expect_err("invalid")
            .to_string()
    };
    assert_eq!(
        err(json!({"ttl": 1})),
        "DCS config: ttl: must be at least 2 seconds (etcd's minimum lease), got 1"
    );
    assert_eq!(
        err(json!({"postgresql": {"parameters": {"x": [1]}}})),
        "DCS config: postgresql.parameters.x: expected a parameter value (string, number or boolean), got a list"
    );
    assert_eq!(
        err(json!([])),
        "DCS config: (top level): expected a mapping, got a list"
    );
}

#[test]
fn member_slots_ttl_takes_seconds_or_patronis_units_and_is_written_when_not_the_default() {
    let load = |v: serde_json::Value| {
        DynamicConfig::from_dcs_json(
            &json!({ "member_slots_ttl": v }),
            &DynamicConfig::defaults(),
        )
    };
    assert_eq!(
        load(json!("30min")).expect("valid").value.member_slots_ttl,
        1800.0
    );
    assert_eq!(load(json!(0)).expect("valid").value.member_slots_ttl, 0.0);
    let hour = load(json!("1h")).expect("valid").value;
    assert_eq!(hour.member_slots_ttl, 3600.0);
    assert!(
        hour.extra.is_empty(),
        "used, not kept verbatim: {:?}",
        hour.extra
    );
    assert_eq!(hour.to_dcs_json()["member_slots_ttl"], json!(3600));
    let err = load(json!(-5)).expect_err("negative");
    assert_eq!(
        err.to_string(),
        "DCS config: member_slots_ttl: must be 0 or more seconds, got -5"
    );
    assert_eq!(
        DynamicConfig::defaults()
            .to_dcs_json()
            .get("member_slots_ttl"),
        None,
        "the default is not written"
    );
}

#[test]
fn switchover_drain_timeout_takes_seconds_and_is_written_when_not_the_default() {
    let load = |v: serde_json::Value| {
        DynamicConfig::from_dcs_json(
            &json!({ "switchover_drain_timeout": v }),
            &DynamicConfig::defaults(),
        )
    };
    assert_eq!(DynamicConfig::defaults().switchover_drain_timeout, 5.0);
    let ten = load(json!(10)).expect("valid").value;
    assert_eq!(ten.switchover_drain_timeout, 10.0);
    assert!(ten.extra.is_empty(), "used, not kept verbatim");
    assert_eq!(ten.to_dcs_json()["switchover_drain_timeout"], json!(10));
    assert_eq!(
        load(json!("2s"))
            .expect("valid")
            .value
            .switchover_drain_timeout,
        2.0
    );
    assert_eq!(
        load(json!(-1)).expect_err("negative").to_string(),
        "DCS config: switchover_drain_timeout: must be 0 to 3600 seconds, got -1"
    );
    assert_eq!(
        DynamicConfig::defaults()
            .to_dcs_json()
            .get("switchover_drain_timeout"),
        None,
        "the default is not written"
    );
}

#[test]
fn standby_cluster_is_read_written_and_removed() {
    let doc = json!({"standby_cluster": {"host": "10.0.0.5", "port": "5433",
        "primary_slot_name": "dr_site", "restore_command": "cp /arch/%f %p",
        "recovery_min_apply_delay": 60000, "create_replica_methods": ["basebackup"]}});
    let c = DynamicConfig::from_dcs_json(&doc, &DynamicConfig::defaults())
        .expect("valid")
        .value;
    let standby = c.standby_cluster.clone().expect("a standby cluster");
    assert_eq!(standby.host.as_deref(), Some("10.0.0.5"));
    assert_eq!(standby.port, 5433);
    assert_eq!(standby.primary_slot_name.as_deref(), Some("dr_site"));
    assert_eq!(standby.recovery_min_apply_delay.as_deref(), Some("60000ms"));
    let written = c.to_dcs_json();
    assert_eq!(written["standby_cluster"]["port"], json!(5433));
    let again = DynamicConfig::from_dcs_json(&written, &DynamicConfig::defaults())
        .expect("our own JSON is valid")
        .value;
    assert_eq!(again, c);
    // The section removed from the DCS (edit-config): a normal cluster, whatever the fallback.
    let removed = DynamicConfig::from_dcs_json(&json!({"ttl": 4}), &c)
        .expect("valid")
        .value;
    assert_eq!(removed.standby_cluster, None);
}

#[test]
fn standby_cluster_without_a_source_is_refused_with_what_to_set() {
    for doc in [
        json!({"standby_cluster": {"port": 5432}}),
        json!({"standby_cluster": {"host": "h", "port": 70000}}),
        json!({"standby_cluster": {"host": "h", "primary_slot_name": "Bad-Name"}}),
    ] {
        let err = DynamicConfig::from_dcs_json(&doc, &DynamicConfig::defaults())
            .expect_err("invalid")
            .to_string();
        assert!(err.contains("standby_cluster"), "{err}");
    }
    let err = DynamicConfig::from_dcs_json(
        &json!({"standby_cluster": {"port": 5432}}),
        &DynamicConfig::defaults(),
    )
    .expect_err("invalid")
    .to_string();
    assert!(
        err.contains("needs host (and port)") && err.contains("restore_command"),
        "{err}"
    );
}
