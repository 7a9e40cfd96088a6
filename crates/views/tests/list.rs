//! Whole-output tests of `render_list` and `render_topology` against patronictl 3.0's layout.

use pgbaton_testkit::states::*;
use pgbaton_views::{render_list, render_topology, ListOptions, OutputFormat};
use serde_json::{json, Value};

fn list(state: &pgbaton_dcs::ClusterState, format: OutputFormat) -> String {
    render_list(
        state,
        "anchor",
        &ListOptions {
            format,
            extended: false,
            positions_at: None,
        },
    )
}

#[test]
fn healthy_cluster_matches_patronictl_table() {
    let want = "\
+ Cluster: anchor (7712492421097396467) --------+----+-----------+
| Member | Host           | Role    | State     | TL | Lag in MB |
+--------+----------------+---------+-----------+----+-----------+
| node1  | 127.0.0.1:5441 | Leader  | running   |  3 |           |
| node2  | 127.0.0.1:5442 | Replica | streaming |  3 |         0 |
| node3  | 127.0.0.1:5443 | Replica | running   |  3 |         3 |
+--------+----------------+---------+-----------+----+-----------+
";
    assert_eq!(list(&healthy(), OutputFormat::Pretty), want);
}

#[test]
fn sync_standby_pause_and_scheduled_switchover_show_in_role_and_footer() {
    let mut state = with_config(with_sync(healthy(), "node2"), json!({"pause": true}));
    state.failover = Some(pgbaton_dcs::Versioned {
        value: pgbaton_dcs::FailoverDoc {
            leader: Some("node1".into()),
            member: Some("node2".into()),
            scheduled_at: Some("2026-11-27T10:00:00+00:00".into()),
            ..Default::default()
        },
        mod_revision: 9,
    });
    let want = "\
+ Cluster: anchor (7712492421097396467) -+-----------+----+-----------+
| Member | Host           | Role         | State     | TL | Lag in MB |
+--------+----------------+--------------+-----------+----+-----------+
| node1  | 127.0.0.1:5441 | Leader       | running   |  3 |           |
| node2  | 127.0.0.1:5442 | Sync Standby | streaming |  3 |         0 |
| node3  | 127.0.0.1:5443 | Replica      | running   |  3 |         3 |
+--------+----------------+--------------+-----------+----+-----------+
 Maintenance mode: on
 Switchover scheduled at: 2026-11-27T10:00:00+00:00
                    from: node1
                      to: node2
";
    assert_eq!(list(&state, OutputFormat::Pretty), want);
}

#[test]
fn stopped_member_with_unknown_lag_and_pending_restart_column() {
    let mut state = healthy();
    let node3 = state.members.get_mut("node3").unwrap();
    node3.state = "stopped".into();
    node3.xlog_location = None;
    node3.timeline = None;
    state.members.get_mut("node2").unwrap().pending_restart = Some(true);
    let want = "\
+ Cluster: anchor (7712492421097396467) --------+----+-----------+-----------------+
| Member | Host           | Role    | State     | TL | Lag in MB | Pending restart |
+--------+----------------+---------+-----------+----+-----------+-----------------+
| node1  | 127.0.0.1:5441 | Leader  | running   |  3 |           |                 |
| node2  | 127.0.0.1:5442 | Replica | streaming |  3 |         0 | *               |
| node3  | 127.0.0.1:5443 | Replica | stopped   |    |   unknown |                 |
+--------+----------------+---------+-----------+----+-----------+-----------------+
";
    assert_eq!(list(&state, OutputFormat::Pretty), want);
}

#[test]
fn leaderless_cluster_has_no_leader_row_and_keeps_status_optime() {
    let mut state = healthy();
    state.leader = None;
    state.members.get_mut("node1").unwrap().state = "stopped".into();
    let want = "\
+ Cluster: anchor (7712492421097396467) --------+----+-----------+
| Member | Host           | Role    | State     | TL | Lag in MB |
+--------+----------------+---------+-----------+----+-----------+
| node1  | 127.0.0.1:5441 | Replica | stopped   |  3 |         0 |
| node2  | 127.0.0.1:5442 | Replica | streaming |  3 |         0 |
| node3  | 127.0.0.1:5443 | Replica | running   |  3 |         3 |
+--------+----------------+---------+-----------+----+-----------+
";
    assert_eq!(list(&state, OutputFormat::Pretty), want);
}

#[test]
fn uninitialized_cluster_and_bare_hosts_on_port_5432() {
    let mut state = pgbaton_dcs::ClusterState::default();
    let mut doc = member(5432, "replica", "starting", None);
    doc.conn_url = "postgres://10.0.0.1:5432/postgres".into();
    doc.timeline = None;
    state.members.insert("a".into(), doc);
    let want = "\
+ Cluster: anchor (uninitialized) -------+----+-----------+
| Member | Host     | Role    | State    | TL | Lag in MB |
+--------+----------+---------+----------+----+-----------+
| a      | 10.0.0.1 | Replica | starting |    |   unknown |
+--------+----------+---------+----------+----+-----------+
";
    // The title runs over the column joints it covers, as in patronictl.
    assert_eq!(list(&state, OutputFormat::Pretty), want);
}

#[test]
fn tags_column_shows_yaml_and_rules_every_multi_line_row() {
    let mut state = healthy();
    let node3 = state.members.get_mut("node3").unwrap();
    node3.tags.insert("nofailover".into(), Value::Bool(true));
    node3
        .tags
        .insert("replicatefrom".into(), Value::from("node2"));
    let want = "\
+ Cluster: anchor (7712492421097396467) --------+----+-----------+----------------------+
| Member | Host           | Role    | State     | TL | Lag in MB | Tags                 |
+--------+----------------+---------+-----------+----+-----------+----------------------+
| node1  | 127.0.0.1:5441 | Leader  | running   |  3 |           |                      |
+--------+----------------+---------+-----------+----+-----------+----------------------+
| node2  | 127.0.0.1:5442 | Replica | streaming |  3 |         0 |                      |
+--------+----------------+---------+-----------+----+-----------+----------------------+
| node3  | 127.0.0.1:5443 | Replica | running   |  3 |         3 | nofailover: true     |
|        |                |         |           |    |           | replicatefrom: node2 |
+--------+----------------+---------+-----------+----+-----------+----------------------+
";
    assert_eq!(list(&state, OutputFormat::Pretty), want);
}

#[test]
fn json_output_is_patronictl_list_of_objects_without_leader_lag() {
    let want = concat!(
        r#"[{"Cluster": "anchor", "Member": "node1", "Host": "127.0.0.1:5441", "Role": "Leader", "State": "running", "TL": 3}, "#,
        r#"{"Cluster": "anchor", "Member": "node2", "Host": "127.0.0.1:5442", "Role": "Replica", "State": "streaming", "TL": 3, "Lag in MB": 0}, "#,
        r#"{"Cluster": "anchor", "Member": "node3", "Host": "127.0.0.1:5443", "Role": "Replica", "State": "running", "TL": 3, "Lag in MB": 3}]"#,
        "\n"
    );
    let got = list(&healthy(), OutputFormat::Json);
    assert_eq!(got, want);
    let parsed: Value = serde_json::from_str(&got).unwrap();
    assert!(parsed[0].get("Lag in MB").is_none());
}

#[test]
fn yaml_output_has_sorted_keys() {
    let want = "\
- Cluster: anchor
  Host: 127.0.0.1:5441
  Member: node1
  Role: Leader
  State: running
  TL: 3
- Cluster: anchor
  Host: 127.0.0.1:5442
  Lag in MB: 0
  Member: node2
  Role: Replica
  State: streaming
  TL: 3
- Cluster: anchor
  Host: 127.0.0.1:5443
  Lag in MB: 3
  Member: node3
  Role: Replica
  State: running
  TL: 3
";
    assert_eq!(list(&healthy(), OutputFormat::Yaml), want);
}

#[test]
fn tsv_output_keeps_cluster_column_and_empty_cells() {
    let want = "\
Cluster\tMember\tHost\tRole\tState\tTL\tLag in MB
anchor\tnode1\t127.0.0.1:5441\tLeader\trunning\t3\t
anchor\tnode2\t127.0.0.1:5442\tReplica\tstreaming\t3\t0
anchor\tnode3\t127.0.0.1:5443\tReplica\trunning\t3\t3
";
    assert_eq!(list(&healthy(), OutputFormat::Tsv), want);
}

#[test]
fn extended_adds_optional_columns_and_tsv_tags_are_one_line() {
    let mut state = healthy();
    state
        .members
        .get_mut("node2")
        .unwrap()
        .tags
        .insert("nosync".into(), Value::Bool(true));
    let got = render_list(
        &state,
        "anchor",
        &ListOptions {
            format: OutputFormat::Tsv,
            extended: true,
            positions_at: None,
        },
    );
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines[0], "Cluster\tMember\tHost\tRole\tState\tTL\tLag in MB\tPending restart\tScheduled restart\tTags");
    assert_eq!(
        lines[2],
        "anchor\tnode2\t127.0.0.1:5442\tReplica\tstreaming\t3\t0\t\t\t{nosync: true}"
    );
}

#[test]
fn topology_indents_replicas_under_their_upstream() {
    let mut state = healthy();
    state
        .members
        .get_mut("node2")
        .unwrap()
        .tags
        .insert("replicatefrom".into(), Value::from("node3"));
    let want = "\
+ Cluster: anchor (7712492421097396467) ----------+----+-----------+----------------------+
| Member   | Host           | Role    | State     | TL | Lag in MB | Tags                 |
+----------+----------------+---------+-----------+----+-----------+----------------------+
| node1    | 127.0.0.1:5441 | Leader  | running   |  3 |           |                      |
| + node3  | 127.0.0.1:5443 | Replica | running   |  3 |         3 |                      |
|  + node2 | 127.0.0.1:5442 | Replica | streaming |  3 |         0 | replicatefrom: node3 |
+----------+----------------+---------+-----------+----+-----------+----------------------+
";
    assert_eq!(render_topology(&state, "anchor"), want);
}

#[test]
fn topology_of_a_plain_cluster_puts_every_replica_one_level_under_the_leader() {
    let got = render_topology(&healthy(), "anchor");
    let names: Vec<&str> = got
        .lines()
        .skip(3)
        .take(3)
        .map(|l| l.split(" | ").next().unwrap())
        .collect();
    assert_eq!(names, vec!["| node1  ", "| + node2", "| + node3"]);
}

#[test]
fn extended_list_shows_the_leaders_slots_and_the_wal_they_keep() {
    let mut state = healthy();
    let optime = state
        .leader_optime()
        .expect("the fixture has a leader position");
    state.status = Some(pgbaton_dcs::StatusDoc {
        optime: Some(optime),
        slots: [
            ("node2".to_string(), optime),
            ("archive".to_string(), optime - 64 * 1024 * 1024),
        ]
        .into_iter()
        .collect(),
        ..Default::default()
    });
    let text = render_list(
        &state,
        "anchor",
        &ListOptions {
            format: OutputFormat::Pretty,
            extended: true,
            positions_at: None,
        },
    );
    let slots = &text[text.find("| Slot").expect("a slot table")..];
    let row = |slot: &str| {
        slots
            .lines()
            .find(|l| l.starts_with(&format!("| {slot} ")))
            .unwrap_or_else(|| panic!("no row for slot {slot} in:\n{text}"))
            .to_string()
    };
    assert!(text.contains("Retained WAL in MB"), "{text}");
    assert!(
        row("archive")
            .trim_end()
            .ends_with("|                 64 |"),
        "{}",
        row("archive")
    );
    assert!(
        row("node2").trim_end().ends_with("|                  0 |"),
        "{}",
        row("node2")
    );
    // Without -e the member table stays patronictl's.
    assert!(!list(&state, OutputFormat::Pretty).contains("Retained WAL"));
}

#[test]
fn quorum_mode_shows_quorum_standbys() {
    let state = with_config(
        with_sync(healthy(), "node2,node3"),
        json!({"synchronous_mode": "quorum"}),
    );
    let text = list(&state, OutputFormat::Pretty);
    assert_eq!(text.matches("Quorum Standby").count(), 2, "{text}");
    assert!(!text.contains("Sync Standby"), "{text}");
}

#[test]
fn positions_show_receive_and_replay_lsns_their_lag_and_the_lag_in_seconds() {
    let mut state = healthy();
    // node2 has everything; node3 received all but replayed 3 MB less, its last replayed
    // transaction 42 s before "now".
    let node2 = state.members.get_mut("node2").expect("node2");
    node2.receive_lsn = Some(OPTIME);
    node2.replay_lsn = Some(OPTIME);
    let node3 = state.members.get_mut("node3").expect("node3");
    node3.receive_lsn = Some(OPTIME);
    node3.replay_lsn = Some(OPTIME - 3 * 1024 * 1024);
    node3.extra.insert(
        "replay_timestamp".into(),
        json!("2026-11-26 14:51:02.232496+00"),
    );
    let now = 1_795_704_662_232 + 42_000;
    let text = render_list(
        &state,
        "anchor",
        &ListOptions {
            format: OutputFormat::Tsv,
            extended: false,
            positions_at: Some(now),
        },
    );
    let lsn = |x: u64| format!("{:X}/{:X}", x >> 32, x & 0xFFFF_FFFF);
    let want = format!(
        "Cluster\tMember\tHost\tRole\tState\tTL\tReceive LSN\tReceive Lag\tReplay LSN\tReplay Lag\tLag (s)\n\
         anchor\tnode1\t127.0.0.1:5441\tLeader\trunning\t3\t\t\t\t\t\n\
         anchor\tnode2\t127.0.0.1:5442\tReplica\tstreaming\t3\t{o}\t0\t{o}\t0\t0\n\
         anchor\tnode3\t127.0.0.1:5443\tReplica\trunning\t3\t{o}\t0\t{r}\t3\t42\n",
        o = lsn(OPTIME),
        r = lsn(OPTIME - 3 * 1024 * 1024),
    );
    assert_eq!(text, want);
}

#[test]
fn extended_list_shows_each_slots_wal_status_and_safe_wal_size() {
    let mut state = healthy();
    let optime = state
        .leader_optime()
        .expect("the fixture has a leader position");
    let wal = |status: &str, safe: Option<i64>| pgbaton_dcs::SlotWal {
        wal_status: Some(status.to_string()),
        safe_wal_size: safe,
    };
    state.status = Some(pgbaton_dcs::StatusDoc {
        optime: Some(optime),
        slots: [
            ("node2".to_string(), optime),
            ("node3".to_string(), optime - 64 * 1024 * 1024),
        ]
        .into_iter()
        .collect(),
        slots_wal: [
            ("node2".to_string(), wal("reserved", Some(32 * 1024 * 1024))),
            ("node3".to_string(), wal("lost", None)),
        ]
        .into_iter()
        .collect(),
        ..Default::default()
    });
    let text = render_list(
        &state,
        "anchor",
        &ListOptions {
            format: OutputFormat::Pretty,
            extended: true,
            positions_at: None,
        },
    );
    let slots = &text[text.find("| Slot").expect("a slot table")..];
    let row = |slot: &str| {
        slots
            .lines()
            .find(|l| l.starts_with(&format!("| {slot} ")))
            .unwrap_or_else(|| panic!("no row for slot {slot} in:\n{text}"))
            .split('|')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect::<Vec<_>>()
    };
    assert!(text.contains("| WAL status | Safe WAL in MB |"), "{text}");
    assert_eq!(
        row("node2")[3..],
        ["reserved".to_string(), "32".to_string()]
    );
    assert_eq!(row("node3")[3..], ["lost".to_string()]);
}

fn extended(state: &pgbaton_dcs::ClusterState) -> String {
    render_list(
        state,
        "anchor",
        &ListOptions {
            format: OutputFormat::Pretty,
            extended: true,
            positions_at: None,
        },
    )
}

#[test]
fn extended_list_shows_the_repository_the_last_backup_and_a_failed_attempt() {
    let mut state = healthy();
    let leader = state.members.get_mut("node1").expect("node1");
    leader.extra.insert(
        "pgbackrest".into(),
        json!({"stanza": "main", "check": "ok", "error": null,
               "last_backup": {"label": "20261204-222651F", "type": "full",
                               "finished": "2026-12-04T22:26:57Z", "size": 22992569,
                               "repository_size": 3043462},
               "backup": {"state": "failed", "type": "incr", "from": "standby",
                          "started": "2026-12-04T23:00:00Z", "finished": "2026-12-04T23:00:01Z",
                          "error": "pgbackrest backup (stanza main) failed (exit status: 56)"}}),
    );
    let text = extended(&state);
    assert!(
        text.contains("pgBackRest stanza main: check ok\n")
            && text.contains(
                "Last backup: 20261204-222651F (full, finished 2026-12-04T22:26:57Z, 21.9 MiB)\n"
            )
            && text.contains("Last backup attempt failed at 2026-12-04T23:00:01Z: pgbackrest backup (stanza main) failed (exit status: 56)\n"),
        "{text}"
    );
    // Without pgbackrest: nothing; without -e: nothing either.
    assert!(!extended(&healthy()).contains("pgBackRest"));
    assert!(!list(&state, OutputFormat::Pretty).contains("pgBackRest"));
}

#[test]
fn extended_list_says_when_the_repository_has_no_backup_yet() {
    let mut state = healthy();
    let leader = state.members.get_mut("node1").expect("node1");
    leader.extra.insert(
        "pgbackrest".into(),
        json!({"stanza": "main", "check": "failed", "error": "stanza-create failed",
               "backup": {"state": "running", "type": "full", "from": "leader",
                          "started": "2026-12-04T23:00:00Z", "finished": null, "error": null}}),
    );
    let text = extended(&state);
    assert!(
        text.contains("pgBackRest stanza main: check failed (stanza-create failed)\n")
            && text.contains("Last backup: none yet (pgbaton ctl backup takes one)\n")
            && text.contains("Backup running: full from the leader since 2026-12-04T23:00:00Z\n"),
        "{text}"
    );
}

#[test]
fn a_standby_clusters_leader_is_the_standby_leader() {
    let mut state = healthy();
    state.members.get_mut("node1").expect("node1").role = "standby_leader".into();
    let text = list(&state, OutputFormat::Pretty);
    assert!(
        text.contains("| node1  | 127.0.0.1:5441 | Standby Leader |"),
        "{text}"
    );
    // Just after it took the key, before it published its role: the config says standby.
    let mut state = with_config(healthy(), json!({"standby_cluster": {"host": "10.0.0.5"}}));
    state.members.get_mut("node1").expect("node1").role = "replica".into();
    let text = list(&state, OutputFormat::Pretty);
    assert!(text.contains("Standby Leader"), "{text}");
    let mut normal = healthy();
    normal.members.get_mut("node1").expect("node1").role = "replica".into();
    assert!(!list(&normal, OutputFormat::Pretty).contains("Standby Leader"));
}
