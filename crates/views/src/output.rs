//! Prints rows of named values in one of the output formats, following patronictl's
//! `print_output`: a bordered table (pretty), a JSON or YAML list of objects, or TSV.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::pyjson::{rows_to_json, Row};
use crate::table::{Align, Table};
use crate::OutputFormat;

/// What to print, before choosing a format.
pub(crate) struct Rows {
    /// Column names and their alignment in the pretty table.
    pub columns: Vec<(&'static str, Align)>,
    /// One value per column; `""` is an empty cell.
    pub rows: Vec<Vec<Value>>,
    /// The table title of `list`: the first column (Cluster) then goes into the top border
    /// of the pretty table, and empty cells are left out of JSON and YAML objects.
    pub title: Option<String>,
}

impl Rows {
    /// The text to print, ending with a newline.
    pub fn render(&self, format: OutputFormat) -> String {
        match format {
            OutputFormat::Pretty => self.pretty(),
            OutputFormat::Tsv => self.tsv(),
            OutputFormat::Json => format!("{}\n", rows_to_json(&self.objects())),
            OutputFormat::Yaml => {
                let sorted: Vec<BTreeMap<String, Value>> = self
                    .objects()
                    .into_iter()
                    .map(|row| row.into_iter().collect())
                    .collect();
                yaml(&sorted)
            }
        }
    }

    fn objects(&self) -> Vec<Row> {
        self.rows
            .iter()
            .map(|row| {
                self.columns
                    .iter()
                    .zip(row)
                    .filter(|(_, value)| self.title.is_none() || !is_empty(value))
                    .map(|((name, _), value)| (name.to_string(), value.clone()))
                    .collect()
            })
            .collect()
    }

    fn pretty(&self) -> String {
        let skip = usize::from(self.title.is_some());
        let table = Table {
            title: self.title.clone(),
            columns: self
                .columns
                .iter()
                .skip(skip)
                .map(|(name, align)| (name.to_string(), *align))
                .collect(),
            rows: self
                .rows
                .iter()
                .map(|row| row.iter().skip(skip).map(|v| cell_text(v, false)).collect())
                .collect(),
        };
        table.render()
    }

    fn tsv(&self) -> String {
        let mut out = String::new();
        let header: Vec<&str> = self.columns.iter().map(|(name, _)| *name).collect();
        out.push_str(&header.join("\t"));
        out.push('\n');
        for row in &self.rows {
            let cells: Vec<String> = row.iter().map(|v| cell_text(v, true)).collect();
            out.push_str(&cells.join("\t"));
            out.push('\n');
        }
        out
    }
}

fn is_empty(value: &Value) -> bool {
    matches!(value, Value::String(s) if s.is_empty()) || value.is_null()
}

/// A value as a cell: strings as they are, numbers in decimal, and maps (tags) as YAML,
/// block style in the pretty table and flow style (one line) in TSV, like patronictl.
fn cell_text(value: &Value, one_line: bool) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "True" } else { "False" }.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Object(map) if one_line => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k}: {}", yaml(v).trim()))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        other => yaml(&sort_keys(other)).trim().to_string(),
    }
}

/// YAML as PyYAML's `safe_dump` writes it for these simple values: block style, keys sorted
/// (callers pass sorted maps). Serializing plain JSON values cannot fail; should it ever,
/// the JSON text is printed instead of nothing.
pub(crate) fn yaml<T: serde::Serialize>(value: &T) -> String {
    match serde_saphyr::to_string(value) {
        Ok(text) => text,
        Err(_) => serde_json::to_string(value)
            .map(|t| t + "\n")
            .unwrap_or_default(),
    }
}

/// The same value with every object's keys in sorted order (whatever map order serde_json
/// was built with).
pub(crate) fn sort_keys(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut sorted = serde_json::Map::new();
            for key in keys {
                sorted.insert(key.clone(), sort_keys(&map[key]));
            }
            Value::Object(sorted)
        }
        Value::Array(items) => Value::Array(items.iter().map(sort_keys).collect()),
        other => other.clone(),
    }
}
