//! Configuration edits: `-s`/`-p` arguments, YAML round trip and the
//! unified diff edit-config shows.

use pgbaton_views::diff::unified_diff;
use pgbaton_views::edit::{from_yaml, parse_scalar, patch_from_args, to_yaml, EditError};
use serde_json::json;

#[test]
fn set_values_parse_as_yaml_scalars() {
    assert_eq!(parse_scalar("10"), json!(10));
    assert_eq!(parse_scalar("2.5"), json!(2.5));
    assert_eq!(parse_scalar("true"), json!(true));
    assert_eq!(parse_scalar("null"), json!(null));
    assert_eq!(parse_scalar(""), json!(null));
    assert_eq!(parse_scalar("abc"), json!("abc"));
    assert_eq!(parse_scalar("8MB"), json!("8MB"));
    assert_eq!(parse_scalar("quorum"), json!("quorum"));
}

#[test]
fn set_and_pg_arguments_build_a_merge_patch() {
    let patch = patch_from_args(
        &[
            "ttl=10".into(),
            "synchronous_mode=true".into(),
            "postgresql.use_slots=false".into(),
            "pause=null".into(),
        ],
        &[
            "work_mem=8MB".into(),
            "auto_explain.log_min_duration=100".into(),
        ],
    )
    .expect("valid arguments");
    assert_eq!(
        patch,
        json!({"ttl": 10, "synchronous_mode": true, "pause": null,
            "postgresql": {"use_slots": false, "parameters": {
                "work_mem": "8MB", "auto_explain.log_min_duration": 100}}})
    );
    assert!(matches!(
        patch_from_args(&["ttl".into()], &[]),
        Err(EditError::NotKeyValue { .. })
    ));
    assert!(patch_from_args(&["a..b=1".into()], &[]).is_err());
    assert!(patch_from_args(&[], &["=1".into()]).is_err());
}

#[test]
fn yaml_round_trips_and_rejects_non_mappings() {
    let doc = json!({"ttl": 30, "postgresql": {"parameters": {"work_mem": "4MB"}}, "pause": true});
    let text = to_yaml(&doc);
    assert!(text.contains("ttl: 30"), "{text}");
    assert_eq!(from_yaml(&text).expect("our own YAML"), doc);
    assert_eq!(from_yaml("").expect("empty"), json!({}));
    assert!(matches!(
        from_yaml("- 1\n- 2\n"),
        Err(EditError::NotMapping { .. })
    ));
    assert!(matches!(from_yaml("a: [1\n"), Err(EditError::Yaml { .. })));
}

#[test]
fn unified_diff_shows_changed_lines_with_context() {
    let old = "a: 1\nb: 2\nc: 3\nd: 4\ne: 5\nf: 6\ng: 7\nh: 8\ni: 9\nk: 0\nl: 0\n";
    let new = "a: 1\nb: 2\nc: 3\nd: 40\ne: 5\nf: 6\ng: 7\nh: 8\ni: 9\nk: 0\nl: 0\nj: 10\n";
    let diff = unified_diff(old, new, "before", "after");
    assert_eq!(
        diff,
        "--- before\n+++ after\n\
         @@ -1,7 +1,7 @@\n a: 1\n b: 2\n c: 3\n-d: 4\n+d: 40\n e: 5\n f: 6\n g: 7\n\
         @@ -9,3 +9,4 @@\n i: 9\n k: 0\n l: 0\n+j: 10\n"
    );
    assert_eq!(unified_diff(old, old, "x", "y"), "");
    assert_eq!(
        unified_diff("", "x: 1\n", "before", "after"),
        "--- before\n+++ after\n@@ -0,0 +1,1 @@\n+x: 1\n"
    );
}
