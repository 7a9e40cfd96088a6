//! Resident memory of a process, from `/proc/<pid>/status` (VmRSS and its peak, VmHWM).

use serde::Serialize;

/// Memory figures of one process, in kilobytes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Memory {
    pub rss_kb: u64,
    pub peak_kb: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("reading /proc/{pid}/status: {source} (did the process exit?)")]
    Read { pid: i32, source: std::io::Error },
    #[error("/proc/{pid}/status has no {field} line")]
    Missing { pid: i32, field: &'static str },
}

/// Parse the VmRSS and VmHWM lines of a `/proc/<pid>/status` text.
pub fn parse_status(pid: i32, status: &str) -> Result<Memory, MemoryError> {
    let field = |name: &'static str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .ok_or(MemoryError::Missing { pid, field: name })
    };
    Ok(Memory {
        rss_kb: field("VmRSS:")?,
        peak_kb: field("VmHWM:")?,
    })
}

pub fn read(pid: i32) -> Result<Memory, MemoryError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|source| MemoryError::Read { pid, source })?;
    parse_status(pid, &status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rss_and_peak() {
        let status = "Name:\tpgbaton\nVmHWM:\t   12000 kB\nVmRSS:\t    9876 kB\nThreads:\t4\n";
        assert_eq!(
            parse_status(1, status).expect("valid"),
            Memory {
                rss_kb: 9876,
                peak_kb: 12000
            }
        );
    }

    #[test]
    fn missing_line_is_named() {
        let err = parse_status(7, "Name:\tx\nVmHWM:\t1 kB\n").unwrap_err();
        assert!(err.to_string().contains("VmRSS"), "{err}");
    }

    #[test]
    fn reads_our_own_process() {
        let me = read(std::process::id() as i32).expect("own status");
        assert!(me.rss_kb > 0 && me.peak_kb >= me.rss_kb);
    }
}
