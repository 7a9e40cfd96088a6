//! Small pure helpers: WAL positions in PostgreSQL's "X/Y" text form, and the slot name
//! Patroni derives from a member name.

pub use pgbaton_core::pg_text::{format_lsn, parse_lsn};

/// The slot name PostgreSQL accepts for a member name, exactly as Patroni 3.0 computes it
/// (`slot_name_from_member_name`): lowercase; `-` and `.` become `_`; any other character
/// outside `[a-z0-9_]` becomes `u` + its code point as (at least) 4 decimal digits; cut to 63
/// characters. Matching Patroni keeps slots stable when a cluster migrates.
pub fn slot_name_for(member: &str) -> String {
    let mut out = String::with_capacity(member.len());
    for c in member.to_lowercase().chars() {
        match c {
            'a'..='z' | '0'..='9' | '_' => out.push(c),
            '-' | '.' => out.push('_'),
            other => out.push_str(&format!("u{:04}", u32::from(other))),
        }
    }
    out.truncate(63);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips() {
        assert_eq!(parse_lsn("0/3000060"), Some(0x3000060));
        assert_eq!(parse_lsn("1A/FF"), Some((0x1A << 32) | 0xFF));
        assert_eq!(format_lsn(0x3000060), "0/3000060");
        assert_eq!(format_lsn((0x1A << 32) | 0xFF), "1A/FF");
        for lsn in [0, 1, u64::MAX, 0x1_0000_0000] {
            assert_eq!(parse_lsn(&format_lsn(lsn)), Some(lsn));
        }
    }

    #[test]
    fn lsn_rejects_garbage() {
        for bad in ["", "0", "/1", "1/", "x/1", "123456789/0", "0/1/2"] {
            assert_eq!(parse_lsn(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn slot_names_follow_patroni() {
        assert_eq!(slot_name_for("node1"), "node1");
        assert_eq!(slot_name_for("Node-1.dc"), "node_1_dc");
        assert_eq!(slot_name_for("a b"), "au0032b");
        assert_eq!(slot_name_for("é"), "u0233");
        assert_eq!(slot_name_for(&"x".repeat(80)).len(), 63);
    }
}
