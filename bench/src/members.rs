//! The member table as `pgbaton ctl list -f json` prints it (patronictl's JSON), and the
//! test for "the cluster is whole again": one running leader, every other member streaming.

use serde::Deserialize;

/// One row of `ctl list -f json` (the columns the bench needs).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct MemberRow {
    #[serde(rename = "Member")]
    pub member: String,
    #[serde(rename = "Role")]
    pub role: String,
    #[serde(rename = "State")]
    pub state: String,
    /// The member's timeline, when it publishes one.
    #[serde(rename = "TL", default, deserialize_with = "lenient_u64")]
    pub tl: Option<u64>,
}

/// A number, or None for anything else (an empty string, null).
fn lenient_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read `pgbaton ctl list -f json` output ({source}): {output:?}")]
pub struct ParseError {
    output: String,
    source: serde_json::Error,
}

pub fn parse(json: &str) -> Result<Vec<MemberRow>, ParseError> {
    serde_json::from_str(json).map_err(|source| ParseError {
        output: json.chars().take(300).collect(),
        source,
    })
}

/// The leader's name when the cluster is whole (`expected` members, one running leader,
/// every other member a streaming replica); otherwise a sentence saying what is missing.
pub fn whole(rows: &[MemberRow], expected: usize) -> Result<String, String> {
    let leaders: Vec<&MemberRow> = rows.iter().filter(|r| r.role == "Leader").collect();
    let [leader] = leaders.as_slice() else {
        return Err(format!("{} leaders", leaders.len()));
    };
    if leader.state != "running" {
        return Err(format!("leader {} is {}", leader.member, leader.state));
    }
    if rows.len() != expected {
        return Err(format!("{} of {expected} members registered", rows.len()));
    }
    let behind: Vec<String> = rows
        .iter()
        .filter(|r| r.role != "Leader" && r.state != "streaming")
        .map(|r| format!("{} {} {}", r.member, r.role, r.state))
        .collect();
    if !behind.is_empty() {
        return Err(format!("not streaming: {}", behind.join(", ")));
    }
    Ok(leader.member.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHOLE: &str = r#"[{"Cluster": "local", "Member": "node1", "Host": "127.0.0.1:17011", "Role": "Replica", "State": "streaming", "TL": 2, "Lag in MB": 0}, {"Cluster": "local", "Member": "node2", "Host": "127.0.0.1:17012", "Role": "Leader", "State": "running", "TL": 2}, {"Cluster": "local", "Member": "node3", "Host": "127.0.0.1:17013", "Role": "Replica", "State": "streaming", "TL": 2, "Lag in MB": 0}]"#;

    #[test]
    fn parses_patronictl_json() {
        let rows = parse(WHOLE).expect("valid json");
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].member, "node2");
        assert_eq!(rows[1].role, "Leader");
        assert_eq!(rows[1].tl, Some(2));
    }

    #[test]
    fn a_missing_or_empty_timeline_is_none() {
        let rows = parse(
            r#"[{"Member": "node1", "Role": "Replica", "State": "stopped", "TL": ""}, {"Member": "node2", "Role": "Leader", "State": "running"}]"#,
        )
        .expect("valid json");
        assert_eq!(rows[0].tl, None);
        assert_eq!(rows[1].tl, None);
    }

    #[test]
    fn whole_cluster_names_its_leader() {
        let rows = parse(WHOLE).expect("valid json");
        assert_eq!(whole(&rows, 3), Ok("node2".to_string()));
    }

    #[test]
    fn missing_or_lagging_members_are_not_whole() {
        let rows = parse(WHOLE).expect("valid json");
        assert_eq!(
            whole(&rows[..2], 3),
            Err("2 of 3 members registered".into())
        );
        let mut starting = rows.clone();
        starting[0].state = "starting".into();
        assert!(whole(&starting, 3)
            .unwrap_err()
            .contains("node1 Replica starting"));
        let mut leaderless = rows.clone();
        leaderless[1].role = "Replica".into();
        assert_eq!(whole(&leaderless, 3), Err("0 leaders".into()));
    }

    #[test]
    fn garbage_is_an_error_that_shows_the_output() {
        let err = parse("error: no cluster").unwrap_err();
        assert!(err.to_string().contains("no cluster"));
    }
}
