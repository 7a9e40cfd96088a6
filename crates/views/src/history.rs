//! `history`: the timeline switches recorded in the DCS `history` key, as patronictl prints
//! them (TL, LSN, Reason, Timestamp, New Leader).

use pgbaton_dcs::ClusterState;
use serde_json::Value;

use crate::output::Rows;
use crate::table::Align;
use crate::OutputFormat;

/// The history in the given format; missing timestamps or leaders are empty cells (and
/// empty strings in JSON/YAML, as patronictl writes them). The text ends with a newline.
pub fn render_history(state: &ClusterState, format: OutputFormat) -> String {
    let columns = vec![
        ("TL", Align::Right),
        ("LSN", Align::Right),
        ("Reason", Align::Left),
        ("Timestamp", Align::Left),
        ("New Leader", Align::Left),
    ];
    let rows = state
        .history
        .iter()
        .map(|entry| {
            vec![
                Value::from(entry.timeline),
                Value::from(entry.lsn),
                Value::from(entry.reason.as_str()),
                Value::from(entry.timestamp.clone().unwrap_or_default()),
                Value::from(entry.new_leader.clone().unwrap_or_default()),
            ]
        })
        .collect();
    Rows {
        columns,
        rows,
        title: None,
    }
    .render(format)
}
