//! `pgbaton ctl router-status`: the router's `/status` document as a table for people —
//! one row per place traffic can go (the write listener's leader, the read listener's
//! replicas, readable or lagging, and the leader when it takes reads as the fallback), with
//! the member's address, its active connections, its state and lag, under a header naming
//! the current leader and whether a handover is in progress; with pooling, a second table of
//! the pools (PgBouncer's SHOW POOLS figures). Works on the JSON alone, so it can print what
//! a remote router answered.

use serde_json::Value;

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Active connections of `member` in `role` (`write` or `read`).
fn connections(status: &Value, member: &str, role: &str) -> u64 {
    status["active_connections"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter(|c| c["member"] == member && c["role"] == role)
                .filter_map(|c| c["connections"].as_u64())
                .sum()
        })
        .unwrap_or(0)
}

/// `16.0 MB`, `512 B`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `0 B, replay 0 ms (rest)`.
fn lag(replica: &Value) -> String {
    let bytes = replica["lag_bytes"]
        .as_u64()
        .map_or("unknown".to_string(), size);
    let delay = match replica["replay_delay_ms"].as_u64() {
        Some(ms) => format!(", replay {ms} ms"),
        None => String::new(),
    };
    let source = replica["lag_source"]
        .as_str()
        .map_or(String::new(), |s| format!(" ({s})"));
    format!("{bytes}{delay}{source}")
}

fn address(member: &Value) -> String {
    match (member["host"].as_str(), member["port"].as_u64()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        _ => "-".to_string(),
    }
}

fn listener_address(status: &Value, name: &str) -> String {
    status["listeners"]
        .as_array()
        .and_then(|list| list.iter().find(|l| l["name"] == name))
        .and_then(|l| text(&l["address"]))
        .unwrap_or_else(|| "-".to_string())
}

/// Render `/status` as a header and an aligned table.
pub fn render_status_table(status: &Value) -> String {
    let scope = text(&status["scope"]).unwrap_or_else(|| "?".into());
    let leader = &status["leader"];
    let leader_name = leader["name"].as_str();
    let handover = &status["handover"];
    let mut out = format!("Cluster: {scope}\n");
    match leader_name {
        Some(name) => out.push_str(&format!("Leader: {name} ({})\n", address(leader))),
        None => out.push_str("Leader: none\n"),
    }
    let in_progress = handover["in_progress"].as_bool().unwrap_or(false);
    let mut why = Vec::new();
    if handover["no_leader"].as_bool().unwrap_or(false) {
        why.push("no leader".to_string());
    }
    if handover["failover_pending"].as_bool().unwrap_or(false) {
        why.push("switchover/failover requested".to_string());
    }
    let waiting = handover["waiting_connections"].as_u64().unwrap_or(0);
    if waiting > 0 {
        why.push(format!("{waiting} connection(s) waiting for a leader"));
    }
    out.push_str(&match (in_progress, why.is_empty()) {
        (false, _) => "Handover in progress: no\n".to_string(),
        (true, true) => "Handover in progress: yes\n".to_string(),
        (true, false) => format!("Handover in progress: yes ({})\n", why.join(", ")),
    });
    let mut bounds = Vec::new();
    if let Some(max) = status["max_lag_bytes"].as_u64().filter(|m| *m != u64::MAX) {
        bounds.push(format!("max lag {}", size(max)));
    }
    if let Some(ms) = status["max_replay_delay_ms"].as_u64() {
        bounds.push(format!("max replay delay {ms} ms"));
    }
    if let Some(source) = status["lag_source"].as_str() {
        bounds.push(format!("lag from {source}"));
    }
    if !bounds.is_empty() {
        out.push_str(&format!("Reads: {}\n", bounds.join(", ")));
    }
    if let Some(forwarding) = status["forwarding"].as_str() {
        out.push_str(&format!("Forwarding: {forwarding}\n"));
    }
    out.push('\n');

    let write_at = listener_address(status, "write");
    let read_at = listener_address(status, "read");
    let mut rows: Vec<[String; 7]> = vec![[
        "LISTENER".into(),
        "ADDRESS".into(),
        "ROLE".into(),
        "MEMBER".into(),
        "BACKEND".into(),
        "CONNS".into(),
        "STATE / LAG".into(),
    ]];
    match leader_name {
        Some(name) => rows.push([
            "write".into(),
            write_at.clone(),
            "leader".into(),
            name.into(),
            address(leader),
            connections(status, name, "write").to_string(),
            "leader".into(),
        ]),
        None => rows.push([
            "write".into(),
            write_at.clone(),
            "leader".into(),
            "-".into(),
            "-".into(),
            "0".into(),
            "no leader: new writes wait".into(),
        ]),
    }
    for (list, state) in [("replicas", "readable"), ("lagging", "lagging, no reads")] {
        for replica in status[list].as_array().into_iter().flatten() {
            let name = replica["name"].as_str().unwrap_or("?");
            rows.push([
                "read".into(),
                read_at.clone(),
                "replica".into(),
                name.into(),
                address(replica),
                connections(status, name, "read").to_string(),
                format!("{state}, {}", lag(replica)),
            ]);
        }
    }
    if let Some(name) = leader_name {
        let reads = connections(status, name, "read");
        let fallback = status["read_fallback"].as_str() != Some("refuse");
        let no_replica = status["replicas"].as_array().is_none_or(|l| l.is_empty());
        if reads > 0 || (fallback && no_replica) {
            rows.push([
                "read".into(),
                read_at.clone(),
                "leader".into(),
                name.into(),
                address(leader),
                reads.to_string(),
                "fallback (no replica within the bounds)".into(),
            ]);
        }
    }
    table(&mut out, &rows);
    if let Some(pools) = status["pools"].as_array().filter(|p| !p.is_empty()) {
        out.push('\n');
        let paused: Vec<String> = status["paused"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                p.as_str().map(|p| {
                    if p == "*" {
                        "all".to_string()
                    } else {
                        p.to_string()
                    }
                })
            })
            .collect();
        out.push_str(&match paused.is_empty() {
            true => "Pools:\n".to_string(),
            false => format!("Pools (paused: {}):\n", paused.join(", ")),
        });
        let mut rows: Vec<Vec<String>> = vec![[
            "DATABASE",
            "USER",
            "TARGET",
            "MODE",
            "SIZE",
            "CL_ACTIVE",
            "CL_WAITING",
            "CL_IDLE",
            "SV_ACTIVE",
            "SV_IDLE",
            "MAXWAIT",
            "XACTS",
            "QUERIES",
        ]
        .iter()
        .map(|h| h.to_string())
        .collect()];
        for pool in pools {
            let n = |key: &str| pool[key].as_u64().unwrap_or(0).to_string();
            let wait = pool["maxwait"].as_u64().unwrap_or(0) as f64
                + pool["maxwait_us"].as_u64().unwrap_or(0) as f64 / 1e6;
            rows.push(vec![
                text(&pool["database"]).unwrap_or_default(),
                text(&pool["user"]).unwrap_or_default(),
                text(&pool["target"]).unwrap_or_default(),
                text(&pool["pool_mode"]).unwrap_or_default(),
                n("pool_size"),
                n("cl_active"),
                n("cl_waiting"),
                n("cl_idle"),
                n("sv_active"),
                n("sv_idle"),
                format!("{wait:.1}s"),
                n("total_xact_count"),
                n("total_query_count"),
            ]);
        }
        table(&mut out, &rows);
    }
    out
}

/// Rows as aligned columns.
fn table<R: AsRef<[String]>>(out: &mut String, rows: &[R]) {
    let columns = rows.first().map(|r| r.as_ref().len()).unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .map(|r| r.as_ref().get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .as_ref()
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "scope": "demo",
            "listeners": [
                {"name": "write", "address": "127.0.0.1:5000", "role": "write"},
                {"name": "read", "address": "127.0.0.1:5001", "role": "read"}
            ],
            "leader": {"name": "node1", "host": "127.0.0.1", "port": 5432},
            "replicas": [{"name": "node2", "host": "127.0.0.1", "port": 5433,
                          "lag_bytes": 0, "replay_delay_ms": 0, "lag_source": "rest"}],
            "lagging": [{"name": "node3", "host": "127.0.0.1", "port": 5434,
                         "lag_bytes": 31457280, "replay_delay_ms": 12000, "lag_source": "rest"}],
            "max_lag_bytes": 16777216,
            "max_replay_delay_ms": 10000,
            "lag_source": "rest",
            "forwarding": "kernel",
            "read_fallback": "leader",
            "handover": {"in_progress": false, "no_leader": false,
                         "failover_pending": false, "waiting_connections": 0},
            "active_connections": [
                {"member": "node1", "role": "write", "connections": 3},
                {"member": "node2", "role": "read", "connections": 2}
            ]
        })
    }

    #[test]
    fn a_table_of_where_traffic_goes() {
        let table = render_status_table(&sample());
        let expected = "\
Cluster: demo
Leader: node1 (127.0.0.1:5432)
Handover in progress: no
Reads: max lag 16.0 MB, max replay delay 10000 ms, lag from rest
Forwarding: kernel

LISTENER  ADDRESS         ROLE     MEMBER  BACKEND         CONNS  STATE / LAG
write     127.0.0.1:5000  leader   node1   127.0.0.1:5432  3      leader
read      127.0.0.1:5001  replica  node2   127.0.0.1:5433  2      readable, 0 B, replay 0 ms (rest)
read      127.0.0.1:5001  replica  node3   127.0.0.1:5434  0      lagging, no reads, 30.0 MB, replay 12000 ms (rest)
";
        assert_eq!(table, expected, "\n{table}");
    }

    #[test]
    fn a_handover_and_the_read_fallback_show() {
        let mut status = sample();
        status["leader"] = Value::Null;
        status["replicas"] = json!([]);
        status["handover"] = json!({"in_progress": true, "no_leader": true,
                                    "failover_pending": true, "waiting_connections": 4});
        let table = render_status_table(&status);
        assert!(table.contains("Leader: none"), "{table}");
        assert!(
            table.contains("Handover in progress: yes (no leader, switchover/failover requested, 4 connection(s) waiting for a leader)"),
            "{table}"
        );
        assert!(table.contains("no leader: new writes wait"), "{table}");
        // With a leader again but no replica: reads go to the leader.
        status["leader"] = json!({"name": "node1", "host": "127.0.0.1", "port": 5432});
        let table = render_status_table(&status);
        assert!(
            table.contains(
                "read      127.0.0.1:5001  leader   node1   127.0.0.1:5432  0      fallback"
            ),
            "{table}"
        );
        // Pools, when the router pools.
        status["pools"] = json!([{"database": "app", "user": "alice", "target": "write",
            "pool_mode": "transaction", "pool_size": 20, "cl_active": 3, "cl_waiting": 1,
            "cl_idle": 996, "sv_active": 3, "sv_idle": 17, "maxwait": 1, "maxwait_us": 500000,
            "total_xact_count": 1234, "total_query_count": 2345}]);
        status["paused"] = json!(["app"]);
        let table = render_status_table(&status);
        assert!(
            table.contains("Pools (paused: app):\nDATABASE  USER   TARGET  MODE"),
            "{table}"
        );
        assert!(
            table.contains("app       alice  write   transaction  20    3          1           996      3          17       1.5s     1234   2345"),
            "{table}"
        );
        // Garbage in: still a table, no panic.
        let table = render_status_table(&json!({"unexpected": true}));
        assert!(table.contains("Leader: none"), "{table}");
    }
}
