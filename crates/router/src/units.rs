//! Sizes (`16MB`, PostgreSQL's units) as written in the router's configuration file, and
//! durations as the router writes them back (`500ms`; `yaml.rs` reads them).

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

/// A duration as the configuration reads it back exactly (milliseconds precision).
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
}
