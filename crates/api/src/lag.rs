//! Replication lag: parsing the `?lag=` bound Patroni accepts (`1048576`, `16kB`, `10MB`,
//! `1GB`, ...) and measuring how far this member is behind the cluster's leader.

use crate::status::NodeStatus;

/// A `?lag=` value that is not a byte count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid lag {given:?}: give a number of bytes, optionally with a unit B, kB, MB, GB or TB (e.g. 16MB)")]
pub struct LagParseError {
    pub given: String,
}

/// Parses a byte count with an optional PostgreSQL-style memory unit (1024-based).
pub fn parse_lag(text: &str) -> Result<u64, LagParseError> {
    let err = || LagParseError {
        given: text.to_string(),
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let number: u64 = digits.parse().map_err(|_| err())?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1 << 10,
        "mb" => 1 << 20,
        "gb" => 1 << 30,
        "tb" => 1 << 40,
        _ => return Err(err()),
    };
    number.checked_mul(factor).ok_or_else(err)
}

/// This member's lag behind the leader in bytes: the cluster's leader optime minus the
/// larger of what this member received and replayed. `None` when either side is unknown
/// (and always on a primary, which has no upstream).
pub fn own_lag(status: &NodeStatus) -> Option<u64> {
    let leader = status.cluster.as_ref()?.leader_optime()?;
    let mine = status.received_location.max(status.replayed_location)?;
    Some(leader.saturating_sub(mine))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bytes_and_units() {
        assert_eq!(parse_lag("1048576"), Ok(1_048_576));
        assert_eq!(parse_lag("16kB"), Ok(16 * 1024));
        assert_eq!(parse_lag("10MB"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_lag("1GB"), Ok(1 << 30));
        assert_eq!(parse_lag("0"), Ok(0));
        assert!(parse_lag("ten").is_err());
        assert!(parse_lag("10XB").is_err());
        assert!(parse_lag("").is_err());
        assert!(parse_lag("99999999999TB").is_err());
    }
}
