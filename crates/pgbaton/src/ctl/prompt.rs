//! Asking the operator to confirm, and patronictl's timestamp prefix.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context};

/// Ask `question` on a terminal; without one, refuse unless --force.
pub(super) fn confirm(question: &str, force: bool, what: &str) -> anyhow::Result<()> {
    if force {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!("refusing to {what} without confirmation: stdin is not a terminal; add --force");
    }
    print!("{question} [y/N]: ");
    std::io::stdout().flush().ok();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the answer")?;
    if matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        bail!("aborted: nothing was changed")
    }
}

pub(super) fn timestamp() -> String {
    chrono::Local::now()
        .format("%Y-%m-%d %H:%M:%S%.6f")
        .to_string()
}
