//! JSON written the way Python's `json.dumps` writes it (what patronictl prints with
//! `-f json`): `", "` and `": "` separators, non-ASCII escaped as `\uXXXX`, and object keys
//! in the order given, so scripts that compared patronictl's output keep working.

use std::io;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::ser::{CharEscape, Formatter};
use serde_json::Value;

/// One output row: column names with their values, in column order.
pub(crate) type Row = Vec<(String, Value)>;

struct OrderedRow<'a>(&'a Row);

impl Serialize for OrderedRow<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        for ch in fragment.chars() {
            if ch.is_ascii() {
                let mut buf = [0u8; 1];
                w.write_all(ch.encode_utf8(&mut buf).as_bytes())?;
            } else {
                let mut units = [0u16; 2];
                for unit in ch.encode_utf16(&mut units) {
                    write!(w, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        escape: CharEscape,
    ) -> io::Result<()> {
        // serde_json's escapes match Python's except for the other control characters,
        // which both write as \u00XX.
        serde_json::ser::CompactFormatter.write_char_escape(w, escape)
    }
}

/// The rows as a Python-style JSON list of objects (no trailing newline).
pub(crate) fn rows_to_json(rows: &[Row]) -> String {
    let ordered: Vec<OrderedRow<'_>> = rows.iter().map(OrderedRow).collect();
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    // Serializing JSON values into memory cannot fail: no I/O and no non-string keys.
    if ordered.serialize(&mut serializer).is_err() {
        return "[]".to_string();
    }
    String::from_utf8(out).unwrap_or_else(|_| "[]".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_like_python_json_dumps() {
        let rows = vec![vec![
            ("Member".to_string(), json!("nöde")),
            ("TL".to_string(), json!(3)),
            ("Tags".to_string(), json!({"a": [1, true]})),
        ]];
        assert_eq!(
            rows_to_json(&rows),
            r#"[{"Member": "n\u00f6de", "TL": 3, "Tags": {"a": [1, true]}}]"#
        );
    }
}
