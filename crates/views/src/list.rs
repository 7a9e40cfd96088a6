//! `list`, `topology` and `show-config`: the member table as patronictl 3.0 prints it, the
//! same table as a replication tree, and the dynamic configuration as YAML.

use std::collections::{BTreeMap, BTreeSet};

use pgbaton_dcs::ClusterState;
use serde_json::Value;

use crate::members::{member_views, MemberView};
use crate::output::{sort_keys, yaml, Rows};
use crate::table::Align;
use crate::OutputFormat;

/// What `list` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListOptions {
    pub format: OutputFormat,
    /// `-e`: always show the optional columns (Pending restart, Scheduled restart, Tags).
    pub extended: bool,
    /// `--positions` at this Unix time (ms): Patroni 4.1's Receive LSN / Receive Lag /
    /// Replay LSN / Replay Lag columns (lags in MB) and the lag in seconds, instead of
    /// patronictl 3.0's "Lag in MB".
    pub positions_at: Option<u64>,
}

/// patronictl 3.0's `list`: the member table, members sorted by name, then the footer lines
/// (maintenance mode, scheduled switchover) in the pretty format. The text ends with a newline.
pub fn render_list(state: &ClusterState, scope: &str, opts: &ListOptions) -> String {
    let members = member_views(state);
    let order: Vec<(usize, String)> = members
        .iter()
        .enumerate()
        .map(|(i, m)| (i, m.name.to_string()))
        .collect();
    let mut out = member_rows(
        state,
        scope,
        &members,
        &order,
        opts.extended,
        opts.positions_at,
    )
    .render(opts.format);
    if opts.format == OutputFormat::Pretty {
        if opts.extended {
            if let Some(slots) = slot_rows(state) {
                out.push_str(&slots.render(OutputFormat::Pretty));
            }
            out.push_str(&repository_lines(state));
        }
        out.push_str(&footer(state));
    }
    out
}

/// `list -e`: the leader's replication slots from the `status` key — each slot's position
/// and the WAL it keeps on the leader (leader position − slot position), in MB; with a
/// leader that publishes them, PostgreSQL's `wal_status` of each physical slot (`lost`: it
/// was invalidated) and its `safe_wal_size` in MB (empty when unlimited).
fn slot_rows(state: &ClusterState) -> Option<Rows> {
    let status = state.status.as_ref()?;
    if status.slots.is_empty() {
        return None;
    }
    let with_wal = !status.slots_wal.is_empty();
    let optime = state.leader_optime();
    let rows = status
        .slots
        .iter()
        .map(|(name, &pos)| {
            let retained = optime
                .map(|o| {
                    Value::from(((o.saturating_sub(pos)) as f64 / 1024.0 / 1024.0).round() as u64)
                })
                .unwrap_or_else(|| Value::from("unknown"));
            let mut row = vec![
                Value::from(name.as_str()),
                Value::from(pgbaton_core::pg_text::format_lsn(pos)),
                retained,
            ];
            if with_wal {
                let wal = status.slots_wal.get(name);
                row.push(Value::from(
                    wal.and_then(|w| w.wal_status.clone()).unwrap_or_default(),
                ));
                row.push(
                    wal.and_then(|w| w.safe_wal_size)
                        .map(|b| Value::from((b as f64 / 1024.0 / 1024.0).round() as i64))
                        .unwrap_or_else(|| Value::from("")),
                );
            }
            row
        })
        .collect();
    let mut columns = vec![
        ("Slot", Align::Left),
        ("Position", Align::Right),
        ("Retained WAL in MB", Align::Right),
    ];
    if with_wal {
        columns.push(("WAL status", Align::Left));
        columns.push(("Safe WAL in MB", Align::Right));
    }
    Some(Rows {
        columns,
        rows,
        title: None,
    })
}

/// `list -e`: the leader's pgBackRest repository (its `pgbackrest` object in the member key):
/// the stanza check, the newest backup and a backup the leader runs or that failed.
fn repository_lines(state: &ClusterState) -> String {
    let Some(repo) = state
        .leader_member()
        .and_then(|m| m.extra.get("pgbackrest"))
    else {
        return String::new();
    };
    let text = |v: &Value| v.as_str().unwrap_or("?").to_string();
    let mut out = format!(
        "pgBackRest stanza {}: check {}",
        text(&repo["stanza"]),
        text(&repo["check"])
    );
    if let Some(error) = repo["error"].as_str() {
        out.push_str(&format!(" ({error})"));
    }
    out.push('\n');
    let last = &repo["last_backup"];
    out.push_str(&match last["label"].as_str() {
        Some(label) => format!(
            "Last backup: {label} ({}, finished {}, {:.1} MiB)\n",
            text(&last["type"]),
            text(&last["finished"]),
            last["size"].as_u64().unwrap_or(0) as f64 / 1024.0 / 1024.0
        ),
        None => "Last backup: none yet (pgbaton ctl backup takes one)\n".to_string(),
    });
    let run = &repo["backup"];
    match run["state"].as_str() {
        Some("running") => out.push_str(&format!(
            "Backup running: {} from the {} since {}\n",
            text(&run["type"]),
            text(&run["from"]),
            text(&run["started"])
        )),
        Some("failed") => out.push_str(&format!(
            "Last backup attempt failed at {}: {}\n",
            text(&run["finished"]),
            text(&run["error"])
        )),
        _ => {}
    }
    out
}

/// patronictl's `topology`: the pretty member table with every replica indented under its
/// upstream (`+ node2` under the leader; cascading replicas under the member named in their
/// `replicatefrom` tag).
pub fn render_topology(state: &ClusterState, scope: &str) -> String {
    let members = member_views(state);
    let order = topology_order(&members);
    let mut out =
        member_rows(state, scope, &members, &order, false, None).render(OutputFormat::Pretty);
    out.push_str(&footer(state));
    out
}

/// `show-config`: the dynamic configuration from the DCS as YAML with sorted keys, or `{}`
/// when the cluster has none yet.
pub fn render_config(state: &ClusterState) -> String {
    match &state.config {
        Some(config) => yaml(&sort_keys(&config.value)),
        None => "{}\n".to_string(),
    }
}

/// Builds the rows; `order` lists (index into `members`, name to show).
fn member_rows(
    state: &ClusterState,
    scope: &str,
    members: &[MemberView<'_>],
    order: &[(usize, String)],
    extended: bool,
    positions_at: Option<u64>,
) -> Rows {
    let mut columns = vec![
        ("Cluster", Align::Left),
        ("Member", Align::Left),
        ("Host", Align::Left),
        ("Role", Align::Left),
        ("State", Align::Left),
        ("TL", Align::Right),
    ];
    match positions_at {
        None => columns.push(("Lag in MB", Align::Right)),
        Some(_) => columns.extend([
            ("Receive LSN", Align::Left),
            ("Receive Lag", Align::Right),
            ("Replay LSN", Align::Left),
            ("Replay Lag", Align::Right),
            ("Lag (s)", Align::Right),
        ]),
    }
    let pending = extended || members.iter().any(|m| m.doc.pending_restart == Some(true));
    let scheduled = extended || members.iter().any(|m| scheduled_restart(m).is_some());
    let tags = extended || members.iter().any(|m| !m.doc.tags.is_empty());
    for (shown, name) in [
        (pending, "Pending restart"),
        (scheduled, "Scheduled restart"),
        (tags, "Tags"),
    ] {
        if shown {
            columns.push((name, Align::Left));
        }
    }

    let rows = order
        .iter()
        .map(|(index, shown_name)| {
            let m = &members[*index];
            let mut row = vec![
                Value::from(scope),
                Value::from(shown_name.as_str()),
                Value::from(m.host.as_str()),
                Value::from(m.role_title()),
                Value::from(m.state.as_str()),
                m.doc
                    .timeline
                    .map(Value::from)
                    .unwrap_or_else(|| Value::from("")),
            ];
            match positions_at {
                None => row.push(m.lag_in_mb()),
                Some(now) => row.extend(crate::members::position_cells(m, state, now)),
            }
            if pending {
                row.push(Value::from(if m.doc.pending_restart == Some(true) {
                    "*"
                } else {
                    ""
                }));
            }
            if scheduled {
                row.push(Value::from(scheduled_restart(m).unwrap_or_default()));
            }
            if tags {
                row.push(if m.doc.tags.is_empty() {
                    Value::from("")
                } else {
                    Value::Object(m.doc.tags.clone().into_iter().collect())
                });
            }
            row
        })
        .collect();

    let initialize = match state.initialize.as_deref() {
        None => "uninitialized",
        Some("") => "initializing",
        Some(sysid) => sysid,
    };
    Rows {
        columns,
        rows,
        title: Some(format!(" Cluster: {scope} ({initialize}) ")),
    }
}

/// `schedule` of a pending scheduled restart kept in the member document, as patronictl
/// shows it.
fn scheduled_restart(m: &MemberView<'_>) -> Option<String> {
    let restart = m.doc.extra.get("scheduled_restart")?;
    let mut text = restart.get("schedule")?.as_str()?.to_string();
    if let Some(version) = restart.get("postgres_version") {
        let version = version
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| version.to_string());
        text.push_str(&format!(" if version < {version}"));
    }
    Some(text)
}

/// The lines patronictl prints under the table, each starting with a space.
fn footer(state: &ClusterState) -> String {
    let mut lines = Vec::new();
    let paused = state
        .config
        .as_ref()
        .and_then(|c| c.value.get("pause"))
        .is_some_and(truthy);
    if paused {
        lines.push("Maintenance mode: on".to_string());
    }
    if let Some(failover) = &state.failover {
        if let Some(at) = &failover.value.scheduled_at {
            let mut info = format!("Switchover scheduled at: {at}");
            for (label, value) in [
                ("from", &failover.value.leader),
                ("to", &failover.value.member),
            ] {
                if let Some(value) = value {
                    info.push_str(&format!("\n{label:>24}: {value}"));
                }
            }
            lines.push(info);
        }
    }
    lines.iter().map(|line| format!(" {line}\n")).collect()
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::String(s) => matches!(s.to_ascii_lowercase().as_str(), "true" | "on" | "yes" | "1"),
        _ => false,
    }
}

/// The members in tree order with the names to show: the leader first, then every member
/// under its upstream, depth-first by name. Members whose upstream chain never reaches the
/// leader (a `replicatefrom` loop) are shown under the leader rather than dropped.
fn topology_order(members: &[MemberView<'_>]) -> Vec<(usize, String)> {
    let leader = members.iter().position(|m| m.role == "leader");
    let replicas: BTreeSet<&str> = members
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != leader)
        .map(|(_, m)| m.name)
        .collect();
    let mut children: BTreeMap<Option<usize>, Vec<usize>> = BTreeMap::new();
    for (i, m) in members.iter().enumerate() {
        if Some(i) == leader {
            continue;
        }
        let upstream = m.doc.tags.get("replicatefrom").and_then(Value::as_str);
        let parent = match upstream {
            Some(up) if up != m.name && replicas.contains(up) => {
                members.iter().position(|o| o.name == up)
            }
            _ => leader,
        };
        children.entry(parent).or_default().push(i);
    }

    let mut order = Vec::new();
    let mut seen = vec![false; members.len()];
    let base_depth = match leader {
        Some(index) => {
            order.push((index, members[index].name.to_string()));
            seen[index] = true;
            1
        }
        None => 0,
    };
    walk(
        members, &children, leader, base_depth, &mut seen, &mut order,
    );
    for i in 0..members.len() {
        if !seen[i] {
            seen[i] = true;
            order.push((i, shown_name(members[i].name, base_depth)));
            walk(
                members,
                &children,
                Some(i),
                base_depth + 1,
                &mut seen,
                &mut order,
            );
        }
    }
    order
}

fn walk(
    members: &[MemberView<'_>],
    children: &BTreeMap<Option<usize>, Vec<usize>>,
    parent: Option<usize>,
    depth: usize,
    seen: &mut [bool],
    order: &mut Vec<(usize, String)>,
) {
    for &child in children.get(&parent).map(Vec::as_slice).unwrap_or(&[]) {
        if seen[child] {
            continue;
        }
        seen[child] = true;
        order.push((child, shown_name(members[child].name, depth)));
        walk(members, children, Some(child), depth + 1, seen, order);
    }
}

/// patronictl's indentation: `+ name` one level under the leader, one more space per level.
fn shown_name(name: &str, depth: usize) -> String {
    if depth == 0 {
        name.to_string()
    } else {
        format!("{}+ {name}", " ".repeat(depth - 1))
    }
}
