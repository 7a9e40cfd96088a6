//! PostgreSQL's synchronous replication as the simulated PostgreSQL needs it: which standbys are connected
//! to a primary (pg_stat_replication), which of them PostgreSQL waits for under a given
//! `synchronous_standby_names`, and up to which position commits may be released.
//!
//! PostgreSQL's rules kept here: only standbys in state `streaming` are candidates; `FIRST n`
//! waits for the first `n` connected candidates in list order (and for nothing less: with
//! fewer than `n` connected, commits wait); `ANY n` waits for any `n` of the named
//! candidates; `*` is `FIRST 1 (*)`: one connected standby, PostgreSQL picks which; an empty
//! setting is asynchronous. The released position is recomputed from the current flush
//! positions each time, so a commit waiting on a standby that disconnects is released as
//! soon as the standbys PostgreSQL now waits for have flushed it.

use pgbaton_core::{Lsn, SyncStandbyNames};

/// One standby connected to a primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Conn<'a> {
    /// Member index of the standby.
    pub m: usize,
    pub name: &'a str,
    /// The WAL receiver streams (got WAL in the last tick); otherwise it is catching up.
    pub streaming: bool,
    /// The standby's flush position.
    pub flush: Lsn,
}

/// The connections PostgreSQL waits for (its `sync_state` is `sync` or `quorum`).
pub(crate) fn synchronous(ssn: Option<&SyncStandbyNames>, conns: &[Conn<'_>]) -> Vec<bool> {
    let chosen = waited_for(ssn, conns);
    (0..conns.len()).map(|i| chosen.contains(&i)).collect()
}

/// Commits ending at or before this position may be acknowledged (`None`: none may).
pub(crate) fn release_upto(ssn: Option<&SyncStandbyNames>, conns: &[Conn<'_>]) -> Option<Lsn> {
    let Some(names) = ssn else {
        return Some(Lsn::MAX);
    };
    let needed = match names {
        SyncStandbyNames::First { count, .. } | SyncStandbyNames::Any { count, .. } => {
            *count as usize
        }
        SyncStandbyNames::Wildcard => 1,
    };
    if needed == 0 {
        // PostgreSQL refuses a count of 0; the model treats it as asynchronous.
        return Some(Lsn::MAX);
    }
    let mut flushes: Vec<Lsn> = waited_for(ssn, conns)
        .iter()
        .map(|i| conns[*i].flush)
        .collect();
    if flushes.len() < needed {
        return None;
    }
    // FIRST: the slowest of the chosen; ANY: the needed-th fastest of the named.
    flushes.sort_unstable_by(|a, b| b.cmp(a));
    Some(flushes[needed - 1])
}

/// Indexes (into `conns`) of the standbys commits wait for.
fn waited_for(ssn: Option<&SyncStandbyNames>, conns: &[Conn<'_>]) -> Vec<usize> {
    let candidate = |i: &usize| conns[*i].streaming;
    match ssn {
        None => Vec::new(),
        Some(SyncStandbyNames::First { count, members }) => {
            let mut by_priority: Vec<(usize, usize)> = (0..conns.len())
                .filter(candidate)
                .filter_map(|i| {
                    members
                        .iter()
                        .position(|m| m == conns[i].name)
                        .map(|p| (p, i))
                })
                .collect();
            by_priority.sort_unstable();
            by_priority
                .into_iter()
                .take(*count as usize)
                .map(|(_, i)| i)
                .collect()
        }
        Some(SyncStandbyNames::Any { members, .. }) => (0..conns.len())
            .filter(candidate)
            .filter(|i| members.iter().any(|m| m == conns[*i].name))
            .collect(),
        Some(SyncStandbyNames::Wildcard) => (0..conns.len()).filter(candidate).take(1).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(name: &str, streaming: bool, flush: Lsn) -> Conn<'_> {
        Conn {
            m: 0,
            name,
            streaming,
            flush,
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn asynchronous_releases_everything_and_waits_for_nobody() {
        let conns = [conn("b", true, 10)];
        assert_eq!(release_upto(None, &conns), Some(Lsn::MAX));
        assert_eq!(synchronous(None, &conns), vec![false]);
    }

    #[test]
    fn first_waits_for_the_first_connected_in_list_order() {
        let ssn = SyncStandbyNames::First {
            count: 1,
            members: names(&["c", "b"]),
        };
        let conns = [conn("b", true, 100), conn("c", true, 50)];
        assert_eq!(release_upto(Some(&ssn), &conns), Some(50));
        assert_eq!(synchronous(Some(&ssn), &conns), vec![false, true]);
        // c catching up (not streaming): b is the synchronous one now.
        let conns = [conn("b", true, 100), conn("c", false, 50)];
        assert_eq!(release_upto(Some(&ssn), &conns), Some(100));
        // Nobody named connected: commits wait.
        assert_eq!(release_upto(Some(&ssn), &[conn("d", true, 100)]), None);
        // FIRST 2 with one connected: commits wait.
        let two = SyncStandbyNames::First {
            count: 2,
            members: names(&["b", "c"]),
        };
        assert_eq!(release_upto(Some(&two), &[conn("b", true, 100)]), None);
        let conns = [conn("b", true, 100), conn("c", true, 70)];
        assert_eq!(release_upto(Some(&two), &conns), Some(70));
    }

    #[test]
    fn any_waits_for_the_count_fastest_named() {
        let ssn = SyncStandbyNames::Any {
            count: 2,
            members: names(&["b", "c", "d"]),
        };
        let conns = [
            conn("b", true, 100),
            conn("c", true, 70),
            conn("d", true, 90),
            conn("e", true, 500),
        ];
        assert_eq!(release_upto(Some(&ssn), &conns), Some(90));
        assert_eq!(
            synchronous(Some(&ssn), &conns),
            vec![true, true, true, false]
        );
        assert_eq!(
            release_upto(Some(&ssn), &[conn("b", true, 100), conn("e", true, 500)]),
            None
        );
    }

    #[test]
    fn wildcard_waits_for_one_connected_standby() {
        let ssn = SyncStandbyNames::Wildcard;
        assert_eq!(release_upto(Some(&ssn), &[]), None);
        assert_eq!(release_upto(Some(&ssn), &[conn("x", false, 5)]), None);
        let conns = [conn("x", true, 5), conn("y", true, 9)];
        assert_eq!(release_upto(Some(&ssn), &conns), Some(5));
        assert_eq!(synchronous(Some(&ssn), &conns), vec![true, false]);
    }
}
