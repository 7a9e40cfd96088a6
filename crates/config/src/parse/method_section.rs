//! What the sections of command methods share (`create_replica_methods` entries and a custom
//! `bootstrap.method`): the command, split as a shell would, and the section's other keys,
//! passed to the command as `--key=value`.

use crate::walk::{self, Ctx, Result, Section};

/// The section's `command`; `missing` says what the command is for when it is absent.
pub(super) fn command(ctx: &Ctx, m: &mut Section, missing: String) -> Result<String> {
    let command = m
        .string(ctx, "command")?
        .ok_or_else(|| ctx.invalid(&m.at("command"), missing))?;
    if shlex::split(&command).is_none_or(|words| words.is_empty()) {
        return Err(ctx.invalid(
            &m.at("command"),
            format!("cannot split {command:?} into words (an unclosed quote?); write it as a shell would"),
        ));
    }
    Ok(command)
}

/// Every key of the section not read yet, as `--key=value` parameters (strings, numbers and
/// booleans only).
pub(super) fn extra_params(ctx: &Ctx, m: &Section) -> Result<Vec<(String, String)>> {
    let mut params = Vec::new();
    for (key, value) in m.raw() {
        if m.is_asked(key) {
            continue;
        }
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            other => {
                return Err(ctx.invalid(
                    &m.at(key),
                    format!(
                        "expected a value for --{key}= (string, number or boolean), got {}",
                        walk::describe(other)
                    ),
                ))
            }
        };
        params.push((key.clone(), text));
    }
    Ok(params)
}
