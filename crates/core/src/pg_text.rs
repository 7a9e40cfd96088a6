//! PostgreSQL's text forms of values pgbaton reads and shows: WAL positions (`0/3000060`) and
//! `timestamptz` (`2026-11-26 14:51:02.232496+00`), as the members publish them and as
//! `pg_stat_replication` and `pg_postmaster_start_time()` print them.

/// An LSN the way PostgreSQL prints it: `0/3000060`.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// PostgreSQL's `X/Y` LSN text (hex, each half at most 32 bits).
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (high, low) = s.trim().split_once('/')?;
    if high.is_empty() || low.is_empty() || high.len() > 8 || low.len() > 8 {
        return None;
    }
    let high = u32::from_str_radix(high, 16).ok()?;
    let low = u32::from_str_radix(low, 16).ok()?;
    Some((u64::from(high) << 32) | u64::from(low))
}

/// A `timestamptz` as text (`2026-11-26 14:51:02.232496+00`, `+00:00`, ISO 8601 with `T`,
/// RFC 3339) in microseconds since the Unix epoch.
pub fn timestamp_micros(text: &str) -> Option<i64> {
    let text = text.trim();
    let spaced = text.replacen('T', " ", 1);
    chrono::DateTime::parse_from_str(&spaced, "%Y-%m-%d %H:%M:%S%.f%#z")
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(text))
        .ok()
        .map(|t| t.timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_round_trip_in_postgres_text() {
        assert_eq!(format_lsn(0x3000060), "0/3000060");
        assert_eq!(format_lsn((1 << 32) | 0xAB), "1/AB");
        assert_eq!(parse_lsn("1/AB"), Some((1 << 32) | 0xAB));
        assert_eq!(parse_lsn("0/"), None);
        assert_eq!(parse_lsn("123456789/0"), None);
    }

    #[test]
    fn timestamps_in_every_form_postgres_and_patroni_write() {
        let want = Some(1_795_704_662_232_496);
        assert_eq!(timestamp_micros("2026-11-26 14:51:02.232496+00"), want);
        assert_eq!(timestamp_micros("2026-11-26 14:51:02.232496+00:00"), want);
        assert_eq!(timestamp_micros("2026-11-26T14:51:02.232496+00:00"), want);
        assert_eq!(timestamp_micros("2026-11-26 15:51:02.232496+01"), want);
        assert_eq!(timestamp_micros("yesterday"), None);
    }
}
