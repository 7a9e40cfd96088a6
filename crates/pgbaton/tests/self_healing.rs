//! Nothing needs a human when a replica falls behind. A replica's agent is paused (SIGSTOP)
//! and its PostgreSQL stopped; its member key expires; the leader writes WAL and checkpoints
//! with `wal_keep_size: 0` and a small `max_wal_size`, so WAL is recycled; then the agent
//! resumes. With the slot kept (`member_slots_ttl`, default 30 min) the replica streams again
//! through it; with `member_slots_ttl: 0` the slot is gone with the WAL, and the replica is
//! re-cloned by itself: its old data directory moved aside (not deleted), the reason logged;
//! with a WAL archive (`restore_command`) it is not re-cloned but catches up from the archive.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::config::Timing;
use common::{edit_member_yaml, procs, Cluster, UP};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The member YAML with WAL recycled as soon as nothing keeps it (no `wal_keep_size`, a
/// 32 MB `max_wal_size`), and `member_slots_ttl` when given.
fn small_wal(yaml: String, member_slots_ttl: Option<&str>) -> String {
    const KEEP: &str = "        wal_keep_size: 128MB\n";
    const ANCHOR: &str = "    maximum_lag_on_failover:";
    assert!(yaml.contains(KEEP) && yaml.contains(ANCHOR));
    let yaml = yaml.replacen(
        KEEP,
        "        wal_keep_size: 0\n        max_wal_size: 32MB\n        min_wal_size: 32MB\n",
        1,
    );
    match member_slots_ttl {
        Some(ttl) => yaml.replacen(ANCHOR, &format!("    member_slots_ttl: {ttl}\n{ANCHOR}"), 1),
        None => yaml,
    }
}

async fn two_members(member_slots_ttl: Option<&str>) -> Cluster {
    two_members_with(member_slots_ttl, false).await
}

/// With `archived`, every member archives into `<root>/archive` (`cp`, as the PostgreSQL
/// documentation's example) and restores from it (`restore_command`).
async fn two_members_with(member_slots_ttl: Option<&str>, archived: bool) -> Cluster {
    let mut cluster = Cluster::start_with(0, Timing::default()).await;
    let archive = cluster.root().join("archive");
    if archived {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&archive).expect("archive dir");
        std::fs::set_permissions(&archive, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let pg = nix::unistd::User::from_name("postgres")
            .expect("password database")
            .expect("a postgres user");
        nix::unistd::chown(&archive, Some(pg.uid), Some(pg.gid)).expect("chown");
    }
    for name in ["node1", "node2"] {
        cluster.add_member(name);
        edit_member_yaml(&cluster, name, |yaml| {
            let yaml = small_wal(yaml, member_slots_ttl);
            if !archived {
                return yaml;
            }
            const LOCAL: &str = "\n  parameters:\n";
            assert!(yaml.contains(LOCAL), "no local parameters in:\n{yaml}");
            let a = archive.display();
            yaml.replacen(
                LOCAL,
                &format!(
                    "{LOCAL}    archive_mode: \"on\"\n    archive_command: 'test ! -f {a}/%f && cp %p {a}/%f'\n    restore_command: 'cp {a}/%f %p'\n"
                ),
                1,
            )
        });
        cluster.start_agent(name);
    }
    cluster
}

/// The name of the oldest WAL segment in the leader's pg_wal.
async fn oldest_segment(cluster: &Cluster, leader: &str) -> String {
    cluster
        .query_one(
            leader,
            "SELECT min(name) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'",
        )
        .await
        .expect("pg_ls_waldir on the leader")
}

/// Write about 160 MB of WAL on the leader (10 rounds of 1 MB of rows and a segment switch),
/// then checkpoint so that what nothing keeps is recycled.
async fn write_wal_and_checkpoint(cluster: &Cluster, leader: &str) {
    let client = common::sql::connect(cluster.pg_port(leader), Duration::from_secs(5))
        .await
        .expect("connect to the leader");
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS filler (id int, pad text)")
        .await
        .expect("create filler");
    for _ in 0..10 {
        client
            .batch_execute(
                "INSERT INTO filler SELECT g, repeat('x', 1000) FROM generate_series(1, 1000) g;
                 TRUNCATE filler;
                 SELECT pg_switch_wal();",
            )
            .await
            .expect("write WAL");
    }
    for _ in 0..3 {
        client
            .batch_execute("SELECT pg_switch_wal(); CHECKPOINT;")
            .await
            .expect("checkpoint");
    }
}

/// The log and segment part (the last 16 hex digits) of the name of the 16 MB WAL segment
/// holding `lsn`.
fn segment_of(lsn: u64) -> String {
    format!("{:08X}{:08X}", lsn >> 32, (lsn & 0xFFFF_FFFF) >> 24)
}

/// Directories the member's data directory was moved aside to with `reason`.
fn moved_aside(member_dir: &Path, reason: &str) -> Vec<PathBuf> {
    let prefix = format!("data.{reason}.");
    std::fs::read_dir(member_dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Freeze `member`'s agent (SIGSTOP) and stop its PostgreSQL cleanly; returns the agent.
async fn freeze_and_stop(cluster: &Cluster, member: &str) -> Pid {
    let agent = Pid::from_raw(cluster.agent_pid(member));
    kill(agent, Signal::SIGSTOP).expect("SIGSTOP the replica's agent");
    let postmaster = procs::postmaster_pid(&cluster.data_dir(member)).expect("a postmaster");
    kill(Pid::from_raw(postmaster), Signal::SIGINT).expect("fast shutdown of the replica");
    cluster
        .wait_until("the replica's PostgreSQL stops", UP, || async {
            !procs::alive(postmaster)
        })
        .await;
    agent
}

struct Paused {
    leader: String,
    replica: String,
    agent: Pid,
    /// The WAL segment the replica was at when its PostgreSQL stopped.
    replica_segment: String,
}

/// The scenario up to the resume: the replica's agent frozen and its PostgreSQL stopped
/// cleanly, its member key expired, WAL written and checkpointed on the leader.
async fn pause_replica_and_write(cluster: &Cluster, slot_kept: bool) -> Paused {
    let leader = cluster.wait_until_all_streaming(UP).await;
    let replica = cluster
        .members()
        .into_iter()
        .find(|m| *m != leader)
        .expect("a replica");
    cluster
        .write(&leader, "heal", "before")
        .await
        .expect("write on the leader");
    cluster
        .wait_for_value(&replica, "heal", "before", Duration::from_secs(30))
        .await;

    let agent = freeze_and_stop(cluster, &replica).await;
    let replica_segment = cluster
        .query_one(&leader, "SELECT pg_walfile_name(pg_current_wal_lsn())")
        .await
        .expect("the leader's WAL file");

    let slot_sql =
        format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{replica}'");
    cluster
        .wait_until(
            "the replica's member key expires",
            Duration::from_secs(20),
            || async {
                cluster
                    .state()
                    .await
                    .is_ok_and(|s| !s.members.contains_key(&replica))
            },
        )
        .await;
    if slot_kept {
        // Two more leader cycles: the slot is still there.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let slots = cluster.query_one(&leader, &slot_sql).await.expect("slots");
        assert_eq!(slots, "1", "member_slots_ttl keeps the slot of {replica}");
    } else {
        cluster
            .wait_until(
                "the leader drops the slot (member_slots_ttl: 0)",
                Duration::from_secs(15),
                || async {
                    cluster
                        .query_one(&leader, &slot_sql)
                        .await
                        .is_ok_and(|n| n == "0")
                },
            )
            .await;
    }

    write_wal_and_checkpoint(cluster, &leader).await;
    let oldest = oldest_segment(cluster, &leader).await;
    // The leader publishes where its WAL starts (replicas compare their position with it).
    cluster
        .wait_until(
            "the leader publishes its oldest WAL in `status`",
            Duration::from_secs(10),
            || async {
                let published = cluster
                    .state()
                    .await
                    .ok()
                    .and_then(|s| s.status.and_then(|st| st.oldest_wal_lsn));
                published.is_some_and(|lsn| segment_of(lsn) == oldest[8..])
            },
        )
        .await;
    if slot_kept {
        assert!(
            oldest <= replica_segment,
            "the kept slot holds the WAL from {replica_segment} (oldest in pg_wal: {oldest})"
        );
    } else {
        assert!(
            oldest > replica_segment,
            "the WAL from {replica_segment} must be gone from the leader (oldest: {oldest})"
        );
    }
    cluster
        .write(&leader, "heal", "after")
        .await
        .expect("write on the leader");
    Paused {
        leader,
        replica,
        agent,
        replica_segment,
    }
}

/// Resume the replica's agent; how long until every member streams (at most `limit`) and
/// the replica has the row written after it stopped.
async fn resume_until_streaming(cluster: &Cluster, p: &Paused, limit: Duration) -> Duration {
    kill(p.agent, Signal::SIGCONT).expect("SIGCONT the replica's agent");
    let resumed = Instant::now();
    cluster
        .wait_until_streaming(&cluster.members(), limit)
        .await;
    let took = resumed.elapsed();
    cluster
        .wait_for_value(&p.replica, "heal", "after", Duration::from_secs(30))
        .await;
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_back_within_member_slots_ttl_streams_again_through_its_kept_slot() {
    let cluster = two_members(None).await;
    let p = pause_replica_and_write(&cluster, true).await;

    let took = resume_until_streaming(&cluster, &p, Duration::from_secs(60)).await;
    eprintln!(
        "{} streams again from {} {took:?} after its agent resumed (through its kept slot, from {})",
        p.replica, p.leader, p.replica_segment
    );
    assert!(
        moved_aside(&cluster.member_dir(&p.replica), "wal-missing").is_empty(),
        "no re-clone was needed"
    );
    assert!(!cluster
        .agent_log(&p.replica)
        .contains("replica cannot stream"));

    // Each slot's wal_status and safe_wal_size: in `ctl list -e` and in `/patroni`.
    let out = cluster.ctl(&["list", "-e"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("| WAL status | Safe WAL in MB |"), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with(&format!("| {} ", p.replica)) && l.contains("/"))
        .unwrap_or_else(|| panic!("no slot row for {} in\n{text}", p.replica));
    assert!(
        row.contains("reserved") || row.contains("extended"),
        "{row}"
    );
    let body = cluster.patroni(&p.leader).await.expect("GET /patroni");
    let slot = body["replication_slots"]
        .as_array()
        .and_then(|slots| slots.iter().find(|s| s["name"] == p.replica.as_str()))
        .unwrap_or_else(|| panic!("no slot {} in {body}", p.replica))
        .clone();
    assert!(slot["wal_status"].is_string(), "{slot}");
    assert!(slot.get("safe_wal_size").is_some(), "{slot}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_wal_is_gone_is_recloned_by_itself() {
    let cluster = two_members(Some("0")).await;
    let p = pause_replica_and_write(&cluster, false).await;

    let revision_at_resume = cluster.etcd_revision().await.expect("etcd revision");
    kill(p.agent, Signal::SIGCONT).expect("SIGCONT the replica's agent");
    let resumed = Instant::now();
    // Watch what the member document (what `ctl list` shows) says until it streams again.
    let mut states = Vec::<String>::new();
    let deadline = resumed + Duration::from_secs(180);
    loop {
        let state = cluster.state().await.ok();
        let doc = state.as_ref().and_then(|s| s.members.get(&p.replica));
        if let Some(doc) = doc {
            if states.last() != Some(&doc.state) {
                states.push(doc.state.clone());
            }
            let streaming =
                doc.state == "running" && doc.replication_state.as_deref() == Some("streaming");
            if streaming && !moved_aside(&cluster.member_dir(&p.replica), "wal-missing").is_empty()
            {
                break;
            }
        }
        if Instant::now() > deadline {
            cluster.fail(&format!(
                "{} not re-cloned and streaming within 180 s (states: {states:?})",
                p.replica
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = resumed.elapsed();
    cluster
        .wait_for_value(&p.replica, "heal", "after", Duration::from_secs(30))
        .await;
    eprintln!(
        "{} re-cloned and streaming {took:?} after its agent resumed (states seen: {states:?})",
        p.replica
    );

    // The old data directory was moved aside, not deleted.
    let aside = moved_aside(&cluster.member_dir(&p.replica), "wal-missing");
    assert_eq!(aside.len(), 1, "one re-clone: {aside:?}");
    assert!(
        aside[0].join("PG_VERSION").exists(),
        "the old data directory is kept whole at {}",
        aside[0].display()
    );
    // The agent says why, and `ctl list` showed it.
    let log = cluster.agent_log(&p.replica);
    assert!(
        log.contains("replica cannot stream: its upstream no longer has WAL segment")
            || log.contains("replica cannot stream: its position"),
        "the agent log gives the reason"
    );
    assert!(log.contains("re-clone"), "the agent log says it re-clones");
    // Every state word the member key held since the agent resumed (the polled `states`
    // above can miss one that lasted a few hundred milliseconds).
    let written = cluster
        .member_states_after(&p.replica, revision_at_resume)
        .await
        .expect("member key history");
    eprintln!(
        "{} member key states since it resumed: {written:?}",
        p.replica
    );
    assert!(
        written.iter().any(|s| s == "WAL missing"),
        "the member document said `WAL missing` ({written:?})"
    );
    assert!(
        !log.contains("pg_rewind: no rewind required"),
        "a rewind is no cure for missing WAL and is not tried"
    );
}

/// The same loss (slot dropped, WAL recycled on the leader) with a WAL archive: the replica
/// is not re-cloned; PostgreSQL fetches the missing segments with `restore_command`, then
/// streams again; the agent says it waits for the archive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_wal_is_gone_catches_up_from_the_archive() {
    let cluster = two_members_with(Some("0"), true).await;
    let p = pause_replica_and_write(&cluster, false).await;
    // The segments the replica needs are in the archive (the leader archived them before
    // recycling them).
    let archived = cluster.root().join("archive").join(&p.replica_segment);
    assert!(
        archived.exists(),
        "{} is not in the archive",
        archived.display()
    );

    let took = resume_until_streaming(&cluster, &p, Duration::from_secs(180)).await;
    eprintln!(
        "{} streams again {took:?} after its agent resumed (segments from {} restored from the archive)",
        p.replica, p.replica_segment
    );
    assert!(
        moved_aside(&cluster.member_dir(&p.replica), "wal-missing").is_empty(),
        "the replica was re-cloned although the archive has its WAL"
    );
    let pg_log = std::fs::read_to_string(cluster.member_dir(&p.replica).join("postgresql.log"))
        .unwrap_or_default();
    assert!(
        pg_log.contains(&format!(
            "restored log file \"{}\" from archive",
            p.replica_segment
        )),
        "PostgreSQL did not restore {} from the archive",
        p.replica_segment
    );
}

/// A crashed leader that comes back after its successor wrote past everything that kept WAL
/// for it: pg_rewind succeeds, but the rewound data directory needs WAL from the new
/// timeline's first segment to become consistent, and the new leader has removed it. Its
/// PostgreSQL then waits in recovery forever, never accepting connections ("requested WAL
/// segment ... has already been removed" in its log); the agent aborts that start and
/// re-clones it (found by the chaos suite's `replica-away`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewound_member_whose_new_timeline_wal_is_gone_is_recloned_instead_of_starting_forever() {
    let mut cluster = two_members(Some("0")).await;
    let old = cluster.wait_until_all_streaming(UP).await;
    let new = cluster
        .members()
        .into_iter()
        .find(|m| *m != old)
        .expect("a replica");
    cluster.write(&old, "heal", "before").await.expect("write");
    cluster
        .wait_for_value(&new, "heal", "before", Duration::from_secs(30))
        .await;

    // The replica stops (its agent frozen) and the leader writes what it will never see:
    // the old leader's WAL diverges from the new leader's.
    let agent = freeze_and_stop(&cluster, &new).await;
    cluster
        .write(&old, "heal", "diverged")
        .await
        .expect("write on the old leader");
    cluster.kill_node(&old);
    kill(agent, Signal::SIGCONT).expect("SIGCONT the replica's agent");
    cluster
        .wait_until(
            "the replica becomes the leader",
            Duration::from_secs(60),
            || async {
                cluster
                    .state()
                    .await
                    .is_ok_and(|s| s.leader.as_ref().is_some_and(|l| l.name == new))
                    && cluster.in_recovery(&new).await.is_ok_and(|r| !r)
            },
        )
        .await;
    let switch_segment = cluster
        .query_one(&new, "SELECT pg_walfile_name(pg_current_wal_lsn())")
        .await
        .expect("the new leader's WAL file");
    assert!(
        switch_segment.starts_with("00000002"),
        "a new timeline: {switch_segment}"
    );
    // The old leader's slot goes with its member key (member_slots_ttl: 0), then the new
    // timeline's first segments are written over and recycled.
    let slot_sql = format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{old}'");
    cluster
        .wait_until(
            "the old leader's slot is dropped",
            Duration::from_secs(20),
            || async {
                cluster
                    .query_one(&new, &slot_sql)
                    .await
                    .is_ok_and(|n| n == "0")
            },
        )
        .await;
    write_wal_and_checkpoint(&cluster, &new).await;
    let oldest = oldest_segment(&cluster, &new).await;
    assert!(
        oldest > switch_segment,
        "{switch_segment} must be gone from the new leader (oldest: {oldest})"
    );
    cluster.write(&new, "heal", "after").await.expect("write");

    cluster.start_agent(&old);
    let started = Instant::now();
    cluster
        .wait_until(
            "the old leader is re-cloned and streams",
            Duration::from_secs(180),
            || async {
                !moved_aside(&cluster.member_dir(&old), "wal-missing").is_empty()
                    && cluster.state().await.is_ok_and(|s| {
                        s.members.get(&old).is_some_and(|d| {
                            d.state == "running"
                                && d.replication_state.as_deref() == Some("streaming")
                        })
                    })
            },
        )
        .await;
    eprintln!(
        "{old} re-cloned and streaming {:?} after its agent started",
        started.elapsed()
    );
    cluster
        .wait_for_value(&old, "heal", "after", Duration::from_secs(30))
        .await;
    let values = cluster.values(&old, "heal").await.expect("rows");
    assert!(
        !values.iter().any(|v| v == "diverged"),
        "the diverged row is gone with the moved-aside data: {values:?}"
    );
    let log = cluster.agent_log(&old);
    assert!(log.contains("pg_rewind done"), "it was rewound first");
    assert!(
        log.contains("its upstream no longer has WAL segment"),
        "the agent log gives the reason"
    );
    let pg_log = std::fs::read_to_string(cluster.member_dir(&old).join("postgresql.log"))
        .unwrap_or_default();
    assert!(
        pg_log.contains("has already been removed"),
        "PostgreSQL asked for the removed segment"
    );
}
