//! Whole-output tests of `render_history` and `render_config`.

use pgbaton_testkit::states::*;
use pgbaton_views::{render_config, render_history, OutputFormat};
use serde_json::json;

#[test]
fn history_pretty_table_right_aligns_numbers() {
    let want = "\
+----+----------+------------------------------+----------------------------------+------------+
| TL |      LSN | Reason                       | Timestamp                        | New Leader |
+----+----------+------------------------------+----------------------------------+------------+
|  1 | 67271592 | no recovery target specified | 2026-11-26T14:50:25.970867+00:00 | node2      |
|  2 | 67404312 | no recovery target specified |                                  |            |
+----+----------+------------------------------+----------------------------------+------------+
";
    assert_eq!(
        render_history(&with_history(healthy()), OutputFormat::Pretty),
        want
    );
}

#[test]
fn history_machine_formats_keep_every_key() {
    let state = with_history(healthy());
    let json = render_history(&state, OutputFormat::Json);
    assert_eq!(
        json,
        concat!(
            r#"[{"TL": 1, "LSN": 67271592, "Reason": "no recovery target specified", "Timestamp": "2026-11-26T14:50:25.970867+00:00", "New Leader": "node2"}, "#,
            r#"{"TL": 2, "LSN": 67404312, "Reason": "no recovery target specified", "Timestamp": "", "New Leader": ""}]"#,
            "\n"
        )
    );
    let tsv = render_history(&state, OutputFormat::Tsv);
    assert_eq!(
        tsv,
        "TL\tLSN\tReason\tTimestamp\tNew Leader\n\
         1\t67271592\tno recovery target specified\t2026-11-26T14:50:25.970867+00:00\tnode2\n\
         2\t67404312\tno recovery target specified\t\t\n"
    );
    let yaml = render_history(&state, OutputFormat::Yaml);
    assert!(yaml.starts_with("- LSN: 67271592\n  New Leader: node2\n  Reason: no recovery target specified\n  TL: 1\n"), "{yaml}");
}

#[test]
fn empty_history_is_an_empty_table_or_list() {
    assert_eq!(render_history(&healthy(), OutputFormat::Json), "[]\n");
    assert!(render_history(&healthy(), OutputFormat::Pretty).starts_with("+----+-----+--------+"));
}

#[test]
fn config_is_yaml_with_sorted_keys_or_empty_map() {
    let state = with_config(
        healthy(),
        json!({"ttl": 30, "loop_wait": 10, "postgresql": {"use_slots": true, "parameters": {"wal_level": "replica", "hot_standby": "on"}}}),
    );
    let want = "\
loop_wait: 10
postgresql:
  parameters:
    hot_standby: \"on\"
    wal_level: replica
  use_slots: true
ttl: 30
";
    assert_eq!(render_config(&state), want);
    assert_eq!(render_config(&healthy()), "{}\n");
}
