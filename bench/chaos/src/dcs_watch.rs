//! The DCS watcher: every 200 ms, from the client host, one etcd read of everything under
//! `/service/chaos/` — the `leader` key, the `sync` key, every member's key (role, state,
//! tags, WAL position) and the leader's published position (`status`). The samples are the
//! liveness checker's view of who holds the leader key and who could be promoted; the most
//! recent one also tells the fault schedule who leads now.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client as Etcd, ConnectOptions, GetOptions};
use tokio::task::JoinHandle;

use crate::config::SCOPE;
use crate::history::Clock;
use crate::json::Json;

const PERIOD: Duration = Duration::from_millis(200);
const CALL: Duration = Duration::from_millis(1000);

/// A member's key, as far as the liveness rule needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberState {
    pub name: String,
    /// `master`/`primary` for the leader, `replica` otherwise.
    pub role: String,
    /// `running`, `starting`, `stopped`, ...
    pub state: String,
    /// Tagged `nofailover` (or `failover_priority: 0`): never promoted.
    pub never_promote: bool,
    /// `xlog_location`: a replica's received/replayed position, a primary's write position.
    pub xlog: Option<u64>,
    /// `replication_state: streaming` (a replica's WAL receiver streams).
    pub streaming: bool,
}

impl MemberState {
    /// A replica that is up: what may be promoted.
    pub fn running_replica(&self) -> bool {
        self.state == "running" && !matches!(self.role.as_str(), "master" | "primary" | "leader")
    }
}

/// Everything one read of the scope returned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DcsView {
    /// The member the leader key names (None: no leader key).
    pub leader: Option<String>,
    /// The members the `sync` key names as synchronous standbys (None: no `sync` key).
    pub sync: Option<Vec<String>>,
    /// The leader that wrote the `sync` key (it holds everything it acknowledged).
    pub sync_leader: Option<String>,
    pub members: Vec<MemberState>,
    /// The leader's last published WAL position (`status.optime`, or `optime/leader`).
    pub optime: Option<u64>,
}

impl DcsView {
    pub fn member(&self, name: &str) -> Option<&MemberState> {
        self.members.iter().find(|m| m.name == name)
    }

    /// In synchronous mode, whether `name` may be promoted automatically: the `sync` key
    /// names it as a synchronous standby, or it is the leader that wrote the key.
    pub fn sync_eligible(&self, name: &str) -> bool {
        self.sync_leader.as_deref() == Some(name)
            || self
                .sync
                .as_ref()
                .is_some_and(|s| s.iter().any(|n| n == name))
    }

    /// The leader key names a running member, every other one of `names` is a running,
    /// streaming replica and, in synchronous mode, the leader's `sync` key names a standby:
    /// what a staged fault starts from.
    pub fn settled(&self, names: &[String], synchronous: bool) -> bool {
        let Some(leader) = self.leader.as_deref() else {
            return false;
        };
        if synchronous
            && (self.sync_leader.as_deref() != Some(leader)
                || self.sync.as_ref().is_none_or(Vec::is_empty))
        {
            return false;
        }
        names.iter().all(|n| match self.member(n) {
            Some(m) if n == leader => m.state == "running",
            Some(m) => m.running_replica() && m.streaming,
            None => false,
        })
    }
}

/// One read: when it was answered, and what it said (None: etcd did not answer).
#[derive(Debug, Clone, PartialEq)]
pub struct DcsSample {
    pub at: f64,
    pub view: Option<DcsView>,
}

fn prefix() -> String {
    format!("/service/{SCOPE}/")
}

/// Build a view from the (key, value) pairs under the scope's prefix.
pub fn parse_view(kvs: &[(String, String)]) -> DcsView {
    let prefix = prefix();
    let mut view = DcsView::default();
    let mut optime_key: Option<u64> = None;
    for (key, value) in kvs {
        let Some(rest) = key.strip_prefix(&prefix) else {
            continue;
        };
        match rest {
            "leader" => view.leader = Some(value.trim().to_string()).filter(|s| !s.is_empty()),
            "sync" => {
                let doc = Json::parse(value);
                view.sync_leader = doc
                    .as_ref()
                    .and_then(|d| d.get("leader"))
                    .and_then(Json::as_str)
                    .map(str::to_string);
                let standbys = doc
                    .as_ref()
                    .and_then(|d| d.get("sync_standby"))
                    .and_then(Json::as_str)
                    .unwrap_or("");
                view.sync = Some(
                    standbys
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect(),
                );
            }
            "status" => {
                view.optime = Json::parse(value)
                    .and_then(|d| d.get("optime").and_then(Json::as_f64))
                    .map(|n| n as u64);
            }
            "optime/leader" => optime_key = value.trim().parse().ok(),
            _ => {
                if let Some(name) = rest.strip_prefix("members/") {
                    if let Some(doc) = Json::parse(value) {
                        view.members.push(member_state(name, &doc));
                    }
                }
            }
        }
    }
    if view.optime.is_none() {
        view.optime = optime_key;
    }
    view.members.sort_by(|a, b| a.name.cmp(&b.name));
    view
}

fn member_state(name: &str, doc: &Json) -> MemberState {
    let text = |k: &str| doc.get(k).and_then(Json::as_str).unwrap_or("").to_string();
    let tag = |k: &str| doc.get("tags").and_then(|t| t.get(k));
    let zero_priority = match tag("failover_priority") {
        Some(Json::Number(n)) => *n == 0.0,
        Some(Json::String(s)) => s.trim() == "0",
        _ => false,
    };
    MemberState {
        name: name.to_string(),
        role: text("role"),
        state: text("state"),
        never_promote: tag("nofailover").is_some_and(Json::truthy) || zero_priority,
        xlog: doc
            .get("xlog_location")
            .and_then(Json::as_f64)
            .map(|n| n as u64),
        streaming: doc.get("replication_state").and_then(Json::as_str) == Some("streaming"),
    }
}

pub struct DcsWatch {
    task: JoinHandle<()>,
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<DcsSample>>>,
    latest: Arc<Mutex<Option<(f64, DcsView)>>>,
}

impl DcsWatch {
    pub fn start(endpoints: Vec<String>, clock: Clock) -> DcsWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let latest = Arc::new(Mutex::new(None));
        let task = {
            let (stop, samples, latest) = (stop.clone(), samples.clone(), latest.clone());
            tokio::spawn(async move {
                let origin = Instant::now();
                let mut client: Option<Etcd> = None;
                let mut next_ep = 0usize;
                let mut round: u32 = 0;
                while !stop.load(Ordering::SeqCst) {
                    tokio::time::sleep_until((origin + PERIOD * round).into()).await;
                    let view = tokio::time::timeout(
                        CALL,
                        read_scope(&mut client, &endpoints, &mut next_ep),
                    )
                    .await
                    .ok()
                    .flatten();
                    if view.is_none() {
                        client = None;
                    }
                    let at = clock.now();
                    if let Some(v) = &view {
                        if let Ok(mut l) = latest.lock() {
                            *l = Some((at, v.clone()));
                        }
                    }
                    if let Ok(mut s) = samples.lock() {
                        s.push(DcsSample { at, view });
                    }
                    let next = (origin.elapsed().as_millis() / PERIOD.as_millis()) as u32 + 1;
                    round = next.max(round + 1);
                }
            })
        };
        DcsWatch {
            task,
            stop,
            samples,
            latest,
        }
    }

    /// The latest view etcd gave, if it is at most `max_age` seconds old at `now`.
    pub fn latest(&self, now: f64, max_age: f64) -> Option<DcsView> {
        let l = self.latest.lock().ok()?;
        l.as_ref()
            .filter(|(at, _)| now - at <= max_age)
            .map(|(_, v)| v.clone())
    }

    pub async fn stop(self) -> Vec<DcsSample> {
        self.stop.store(true, Ordering::SeqCst);
        let _ = tokio::time::timeout(Duration::from_secs(3), self.task).await;
        let samples = self.samples.lock().map(|s| s.clone()).unwrap_or_default();
        samples
    }
}

/// One read of the scope on the kept connection (made to the next endpoint when missing).
async fn read_scope(
    client: &mut Option<Etcd>,
    endpoints: &[String],
    next_ep: &mut usize,
) -> Option<DcsView> {
    if client.is_none() {
        let ep = endpoints.get(*next_ep % endpoints.len().max(1))?;
        *next_ep += 1;
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(700))
            .with_timeout(CALL);
        *client = Etcd::connect([ep.as_str()], Some(opts)).await.ok();
    }
    let c = client.as_mut()?;
    let r = c
        .get(prefix(), Some(GetOptions::new().with_prefix()))
        .await
        .ok()?;
    let kvs: Vec<(String, String)> = r
        .kvs()
        .iter()
        .filter_map(|kv| {
            Some((
                kv.key_str().ok()?.to_string(),
                kv.value_str().ok()?.to_string(),
            ))
        })
        .collect();
    Some(parse_view(&kvs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> (String, String) {
        (format!("/service/chaos/{k}"), v.to_string())
    }

    #[test]
    fn the_scope_becomes_a_view() {
        let view = parse_view(&[
            kv("leader", "n2"),
            kv("sync", r#"{"leader":"n2","sync_standby":"n3, n1"}"#),
            kv("status", r#"{"optime":1234,"slots":{}}"#),
            kv(
                "members/n3",
                r#"{"state":"running","role":"replica","xlog_location":1200,"replication_state":"streaming","tags":{"nofailover":false}}"#,
            ),
            kv(
                "members/n1",
                r#"{"state":"starting","role":"replica","tags":{"failover_priority":0}}"#,
            ),
            kv("members/n2", r#"{"state":"running","role":"master"}"#),
            kv("config", "{}"),
            ("/service/other/leader".to_string(), "x".to_string()),
        ]);
        assert_eq!(view.leader.as_deref(), Some("n2"));
        assert_eq!(view.sync, Some(vec!["n3".to_string(), "n1".to_string()]));
        assert_eq!(view.sync_leader.as_deref(), Some("n2"));
        assert!(view.sync_eligible("n1") && view.sync_eligible("n2"));
        assert_eq!(view.optime, Some(1234));
        let names: Vec<&str> = view.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["n1", "n2", "n3"]);
        assert!(view.member("n3").unwrap().running_replica());
        assert!(!view.member("n3").unwrap().never_promote);
        assert!(!view.member("n1").unwrap().running_replica());
        assert!(view.member("n1").unwrap().never_promote);
        assert!(!view.member("n2").unwrap().running_replica());
        assert_eq!(view.member("n3").unwrap().xlog, Some(1200));
        assert!(view.member("n3").unwrap().streaming);
        assert!(!view.member("n2").unwrap().streaming);
    }

    #[test]
    fn a_cluster_is_settled_when_every_replica_streams() {
        let names: Vec<String> = ["n1", "n2"].iter().map(|n| n.to_string()).collect();
        let leader = r#"{"state":"running","role":"master"}"#;
        let replica = r#"{"state":"running","role":"replica","replication_state":"streaming"}"#;
        let view = parse_view(&[
            kv("leader", "n1"),
            kv("members/n1", leader),
            kv("members/n2", replica),
        ]);
        assert!(view.settled(&names, false));
        // Synchronous mode: the leader's sync key must name a standby.
        assert!(!view.settled(&names, true));
        let mut named = view.clone();
        named.sync_leader = Some("n1".into());
        named.sync = Some(vec![]);
        assert!(!named.settled(&names, true));
        named.sync = Some(vec!["n2".into()]);
        assert!(named.settled(&names, true));
        let waiting = r#"{"state":"running","role":"replica"}"#;
        let view = parse_view(&[
            kv("leader", "n1"),
            kv("members/n1", leader),
            kv("members/n2", waiting),
        ]);
        assert!(!view.settled(&names, false));
        let view = parse_view(&[kv("members/n1", leader), kv("members/n2", replica)]);
        assert!(!view.settled(&names, false));
    }

    #[test]
    fn missing_keys_stay_unknown() {
        let view = parse_view(&[
            kv("optime/leader", "99"),
            kv("sync", r#"{"leader":"n1","sync_standby":null}"#),
        ]);
        assert_eq!(view.leader, None);
        assert_eq!(view.sync, Some(vec![]));
        assert!(view.sync_eligible("n1") && !view.sync_eligible("n2"));
        assert_eq!(view.optime, Some(99));
        assert_eq!(parse_view(&[]).sync, None);
    }
}
