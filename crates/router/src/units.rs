//! Sizes (`16MB`, PostgreSQL's units) and durations (`500ms`, `5s`) as written in the
//! router's configuration file.

use std::time::Duration;

/// `1048576`, `16MB`, `512kB`, `1GB` (1024-based, case-insensitive, optional `B`).
pub(crate) fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size: write bytes or e.g. 16MB"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        "t" | "tb" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit `{other}`: use B, kB, MB, GB or TB"
            ))
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// `5` / `2.5` (seconds), `500ms`, `5s`, `1min`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: f64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: write seconds or e.g. 500ms"))?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "min" => number * 60.0,
        other => return Err(format!("unknown duration unit `{other}`: use ms, s or min")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("`{text}` is out of range"))
}

/// A duration as `parse_duration` reads it back exactly (milliseconds precision).
pub(crate) fn format_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("1048576"), Ok(1048576));
        assert_eq!(parse_bytes("16MB"), Ok(16 << 20));
        assert_eq!(parse_bytes("512kB"), Ok(512 << 10));
        assert_eq!(parse_bytes("1 GB"), Ok(1 << 30));
        assert!(parse_bytes("16XB").is_err());
        assert!(parse_bytes("MB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("1min"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("5 parsecs").is_err());
        let d = Duration::from_millis(1234);
        assert_eq!(parse_duration(&format_duration(d)), Ok(d));
    }
}
