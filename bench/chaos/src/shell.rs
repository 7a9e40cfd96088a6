//! Running the system tools the harness drives (`ip`, `nft`): a command with its arguments
//! and optional stdin, its failure turned into a [`ChaosError`] that quotes stderr.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::error::{ChaosError, Result};

/// Run `program args...`, feeding `stdin` when given; error unless it exits 0.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let command = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ChaosError::Spawn {
            command: command.clone(),
            source,
        })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|source| ChaosError::Spawn {
                command: command.clone(),
                source,
            })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| ChaosError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(ChaosError::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip args...`.
pub fn ip(args: &[&str]) -> Result<String> {
    run("ip", args, None)
}

/// `ip netns exec <ns> nft -f -` with `ruleset` on stdin.
pub fn nft_apply(ns: &str, ruleset: &str) -> Result<()> {
    run(
        "ip",
        &["netns", "exec", ns, "nft", "-f", "-"],
        Some(ruleset),
    )
    .map(|_| ())
}

/// `ip netns exec <ns> nft delete table ip <table>`.
pub fn nft_delete(ns: &str, table: &str) -> Result<()> {
    run(
        "ip",
        &["netns", "exec", ns, "nft", "delete", "table", "ip", table],
        None,
    )
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_command_reports_its_stderr() {
        let e = run("sh", &["-c", "echo nope >&2; exit 3"], None).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("nope") && text.contains("sh -c"), "{text}");
    }

    #[test]
    fn stdin_is_fed_and_stdout_returned() {
        assert_eq!(run("cat", &[], Some("hello")).unwrap(), "hello");
    }

    #[test]
    fn a_missing_program_says_what_to_install() {
        let e = run("/nonexistent/tool", &[], None).unwrap_err().to_string();
        assert!(e.contains("apt-get install"), "{e}");
    }
}
