//! Helpers of the logical replication tests: rows of a table `(id int PRIMARY KEY, v text)`
//! counted on a member, inserted on one, and a replica's copy of a permanent logical slot.

use std::time::Duration;

use super::Cluster;

/// A replica's copy of a logical slot waits for the subscriber to move the slot past the
/// replica's oldest WAL, then restarts the replica once.
pub const COPY: Duration = Duration::from_secs(90);

/// Rows of `table` on `member`: (count, distinct ids, max id).
pub async fn rows(cluster: &Cluster, member: &str, table: &str) -> Option<(i64, i64, i64)> {
    let line = cluster
        .query_one(
            member,
            &format!("SELECT count(*) || ' ' || count(DISTINCT id) || ' ' || coalesce(max(id), 0) FROM {table}"),
        )
        .await
        .ok()?;
    let mut it = line.split(' ').map(|n| n.parse::<i64>().unwrap_or(-1));
    Some((it.next()?, it.next()?, it.next()?))
}

/// Ids `from..=to` into `table` on `member`.
pub async fn insert(cluster: &Cluster, member: &str, table: &str, from: i64, to: i64) {
    cluster
        .query(
            member,
            &format!(
                "INSERT INTO {table} SELECT i, 'row ' || i FROM generate_series({from}, {to}) i"
            ),
        )
        .await
        .unwrap_or_else(|e| {
            cluster.fail(&format!(
                "insert {from}..{to} into {table} on {member}: {e}"
            ))
        });
}

/// `table` on `member` holds ids 1..=n, each once, within `within`, and nothing more
/// arrives in the two seconds after.
pub async fn wait_rows(
    cluster: &Cluster,
    member: &str,
    table: &str,
    n: i64,
    within: Duration,
    what: &str,
) {
    cluster
        .wait_until(what, within, || async {
            rows(cluster, member, table).await == Some((n, n, n))
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rows(cluster, member, table).await,
        Some((n, n, n)),
        "{table} on {member}: every row exactly once"
    );
}

/// `replica` holds a copy of `slot` at least at what the subscriber confirmed on `leader`.
pub async fn wait_for_slot_copy(cluster: &Cluster, leader: &str, replica: &str, slot: &str) {
    let confirmed = cluster
        .query_one(
            leader,
            &format!("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = '{slot}'"),
        )
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("confirmed_flush_lsn of {slot}: {e}")));
    cluster
        .wait_until(
            &format!("{replica} never held a copy of {slot} at {confirmed}"),
            COPY,
            || async {
                cluster
                    .query_one(
                        replica,
                        &format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}' AND confirmed_flush_lsn >= '{confirmed}'"),
                    )
                    .await
                    .is_ok_and(|n| n == "1")
            },
        )
        .await;
}

/// The other member of a two-member cluster.
pub fn other(name: &str) -> &'static str {
    if name == "node1" {
        "node2"
    } else {
        "node1"
    }
}
