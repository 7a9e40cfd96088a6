//! JSON merge patches (RFC 7386) on the dynamic configuration: what `PATCH /config` applies
//! and what `pgbaton ctl edit-config` builds from its arguments.

use serde_json::{Map, Value};

/// Apply a JSON merge patch to `target`: objects merge recursively, `null` deletes a key,
/// anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        for (key, value) in patch_map {
            if value.is_null() {
                map.remove(key);
            } else {
                let slot = map.entry(key.clone()).or_insert(Value::Null);
                merge_patch(slot, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_merges_objects_and_null_deletes() {
        let mut doc = json!({"ttl": 30, "loop_wait": 10, "pause": true,
            "postgresql": {"use_slots": true, "parameters": {"work_mem": "4MB", "a": 1}}});
        merge_patch(
            &mut doc,
            &json!({"ttl": 6, "pause": null, "new": [1],
                "postgresql": {"parameters": {"work_mem": "8MB", "a": null}}}),
        );
        assert_eq!(
            doc,
            json!({"ttl": 6, "loop_wait": 10, "new": [1],
                "postgresql": {"use_slots": true, "parameters": {"work_mem": "8MB"}}})
        );
        // A non-object patch replaces; an object over a scalar starts from an empty object.
        let mut x = json!({"a": 1});
        merge_patch(&mut x, &json!({"a": {"b": null, "c": 2}}));
        assert_eq!(x, json!({"a": {"c": 2}}));
        merge_patch(&mut x, &json!([1, 2]));
        assert_eq!(x, json!([1, 2]));
    }
}
