//! One conformance suite for every `Dcs` implementation: each test body is written once,
//! generic over a `Backend`, and instantiated for the in-memory store (tokio's paused clock)
//! and for `EtcdDcs` against a real etcd started per test.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use pgbaton_dcs::{Dcs, DcsError, FailoverDoc, HistoryEntry, MemberDoc, StatusDoc, SyncDoc};
use serde_json::json;
use support::Backend;
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(2);

fn member_doc(name: &str) -> MemberDoc {
    MemberDoc {
        conn_url: format!("postgres://127.0.0.1:5432/postgres?{name}"),
        api_url: "http://127.0.0.1:8008/patroni".into(),
        state: "running".into(),
        role: "replica".into(),
        version: "0.1.0".into(),
        xlog_location: Some(100),
        timeline: Some(1),
        ..MemberDoc::default()
    }
}

async fn leader_race<B: Backend>() {
    let backend = B::start().await;
    let (a, b) = (backend.handle("a", TTL), backend.handle("b", TTL));
    let (won_a, won_b) = tokio::join!(a.acquire_leader(), b.acquire_leader());
    let (won_a, won_b) = (won_a.expect("a acquire"), won_b.expect("b acquire"));
    assert!(
        won_a ^ won_b,
        "exactly one member must win the race: a={won_a} b={won_b}"
    );
    let (winner, loser) = if won_a { (&a, &b) } else { (&b, &a) };
    let state = winner.load().await.expect("load");
    let leader = state.leader.expect("leader key present");
    assert_eq!(leader.name, winner.member_name());
    assert_eq!(
        leader.lease_id,
        winner.keepalive().await.expect("keepalive").lease_id,
        "leader key on the winner's lease"
    );
    assert!(
        !loser.acquire_leader().await.expect("second try"),
        "a held leader key cannot be taken"
    );
    assert!(
        !winner.acquire_leader().await.expect("re-acquire"),
        "acquire only succeeds when the key is absent"
    );
}

async fn release_only_by_owner<B: Backend>() {
    let backend = B::start().await;
    let (a, b) = (backend.handle("a", TTL), backend.handle("b", TTL));
    assert!(a.acquire_leader().await.expect("acquire"));
    assert!(
        !b.release_leader().await.expect("b release"),
        "b does not own the key"
    );
    assert_eq!(b.load().await.expect("load").leader_name(), Some("a"));
    assert!(a.release_leader().await.expect("a release"));
    assert_eq!(b.load().await.expect("load").leader, None);
    assert!(
        !a.release_leader().await.expect("release again"),
        "nothing left to release"
    );
    assert!(b.acquire_leader().await.expect("b acquire after release"));
}

async fn keys_vanish_when_the_lease_expires<B: Backend>() {
    let backend = B::start().await;
    let (a, b) = (backend.handle("a", TTL), backend.handle("b", TTL));
    a.touch_member(&member_doc("a")).await.expect("touch a");
    assert!(a.acquire_leader().await.expect("acquire"));
    b.touch_member(&member_doc("b")).await.expect("touch b");
    let a_ack = a.keepalive().await.expect("keepalive a");
    assert_eq!(a_ack.ttl, TTL);
    // b keeps renewing, a stops: a's member key and the leader key go, b's stays.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        b.keepalive().await.expect("keepalive b");
        let state = b.load().await.expect("load");
        let now = Instant::now();
        let a_gone = !state.members.contains_key("a") && state.leader.is_none();
        if a_gone {
            assert!(
                now >= a_ack.safe_until(),
                "a's keys vanished before sent_at + ttl: the LeaseAck promise is broken"
            );
            assert!(
                state.members.contains_key("b"),
                "b kept its lease alive, its key must stay"
            );
            break;
        }
        assert!(
            state.members.contains_key("a") == state.leader.is_some(),
            "member and leader key share one lease"
        );
        assert!(
            now < deadline,
            "a's keys did not vanish within 10 s of its last keepalive"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let again = a
        .keepalive()
        .await
        .expect("keepalive after expiry grants a fresh lease");
    assert_ne!(again.lease_id, a_ack.lease_id);
    assert!(a
        .acquire_leader()
        .await
        .expect("acquire with the fresh lease"));
    assert_eq!(
        b.load().await.expect("load").leader.map(|l| l.lease_id),
        Some(again.lease_id)
    );
}

async fn keepalive_keeps_keys<B: Backend>() {
    let backend = B::start().await;
    let a = backend.handle("a", TTL);
    a.touch_member(&member_doc("a")).await.expect("touch");
    assert!(a.acquire_leader().await.expect("acquire"));
    let first = a.keepalive().await.expect("keepalive");
    let until = Instant::now() + TTL * 2;
    while Instant::now() < until {
        let ack = a.keepalive().await.expect("keepalive");
        assert_eq!(
            ack.lease_id, first.lease_id,
            "a live lease is renewed, not replaced"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let state = a.load().await.expect("load");
    assert_eq!(state.leader_name(), Some("a"));
    assert!(state.members.contains_key("a"));
}

/// Reading how long a lease lives does not extend it (a demoted leader asks instead of
/// renewing; `read_lease_left` in the agent).
async fn lease_remaining_reads_without_extending<B: Backend>() {
    let backend = B::start().await;
    let a = backend.handle("a", TTL);
    a.touch_member(&member_doc("a")).await.expect("touch");
    assert!(a.acquire_leader().await.expect("acquire"));
    let lease_id = a.keepalive().await.expect("keepalive").lease_id;
    let left = a
        .lease_remaining(lease_id)
        .await
        .expect("read")
        .expect("the lease lives");
    assert!(
        left > Duration::ZERO && left <= TTL,
        "{left:?} left of a {TTL:?} lease"
    );
    let until = Instant::now() + TTL + Duration::from_secs(8);
    let gone = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if a.lease_remaining(lease_id).await.expect("read").is_none() {
            break true;
        }
        if Instant::now() > until {
            break false;
        }
    };
    assert!(gone, "reading the lease's time to live kept it alive");
    // etcd revokes an expired lease (and deletes its keys) a moment after it reports it gone.
    let until = Instant::now() + Duration::from_secs(5);
    while a.load().await.expect("load").leader_name().is_some() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let state = a.load().await.expect("load");
    assert_eq!(state.leader_name(), None, "the key went with the lease");
    assert_eq!(
        a.lease_remaining(lease_id + 1_000_003).await.expect("read"),
        None,
        "an unknown lease lives no time"
    );
}

async fn adopt_leader_lease_after_restart<B: Backend>() {
    let backend = B::start().await;
    let old = backend.handle("a", TTL);
    old.touch_member(&member_doc("a")).await.expect("touch");
    assert!(old.acquire_leader().await.expect("acquire"));
    let lease_id = old.keepalive().await.expect("keepalive").lease_id;
    drop(old);
    let other = backend.handle("b", TTL);
    assert_eq!(
        other.adopt_leader_lease().await.expect("adopt by b"),
        None,
        "only the named leader adopts"
    );
    let restarted = backend.handle("a", TTL);
    let ack = restarted
        .adopt_leader_lease()
        .await
        .expect("adopt")
        .expect("our leader key is adopted");
    assert_eq!(ack.lease_id, lease_id);
    assert_eq!(ack.ttl, TTL);
    // The adopted lease is ours now: keep it alive past the TTL and the key stays.
    let until = Instant::now() + TTL + Duration::from_secs(1);
    while Instant::now() < until {
        assert_eq!(
            restarted.keepalive().await.expect("keepalive").lease_id,
            lease_id
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let state = restarted.load().await.expect("load");
    assert_eq!(
        state.leader.as_ref().map(|l| (l.name.as_str(), l.lease_id)),
        Some(("a", lease_id))
    );
    assert!(
        state.members.contains_key("a"),
        "the member key shares the adopted lease"
    );
    assert!(restarted.release_leader().await.expect("release"));
    assert_eq!(
        restarted
            .adopt_leader_lease()
            .await
            .expect("adopt without a key"),
        None
    );
}

async fn claim_initialize_race<B: Backend>() {
    let backend = B::start().await;
    let (a, b) = (backend.handle("a", TTL), backend.handle("b", TTL));
    let (ra, rb) = tokio::join!(a.claim_initialize("sys-a"), b.claim_initialize("sys-b"));
    let (ra, rb) = (ra.expect("a claim"), rb.expect("b claim"));
    assert!(ra ^ rb, "exactly one claim wins: a={ra} b={rb}");
    let expected = if ra { "sys-a" } else { "sys-b" };
    assert_eq!(
        a.load().await.expect("load").initialize.as_deref(),
        Some(expected)
    );
}

async fn initialize_cas<B: Backend>() {
    let backend = B::start().await;
    let a = backend.handle("a", TTL);
    assert!(
        a.claim_initialize("").await.expect("claim"),
        "the winner claims with an empty value while initdb runs"
    );
    assert!(!a.claim_initialize("").await.expect("claim again"));
    assert!(!a
        .set_initialize("wrong", "123")
        .await
        .expect("set with a wrong expectation"));
    assert!(a.set_initialize("", "123").await.expect("set"));
    assert_eq!(
        a.load().await.expect("load").initialize.as_deref(),
        Some("123")
    );
    assert!(!a
        .cancel_initialize("")
        .await
        .expect("cancel with a wrong expectation"));
    assert!(a.cancel_initialize("123").await.expect("cancel"));
    assert_eq!(a.load().await.expect("load").initialize, None);
    assert!(!a
        .set_initialize("123", "456")
        .await
        .expect("set on an absent key"));
    assert!(a
        .claim_initialize("789")
        .await
        .expect("the race is open again"));
}

async fn config_cas<B: Backend>() {
    let backend = B::start().await;
    let a = backend.handle("a", TTL);
    let v1 = json!({"ttl": 30, "loop_wait": 10});
    let v2 = json!({"ttl": 20, "postgresql": {"use_slots": true}});
    assert!(a.set_config(&v1, None).await.expect("create"));
    assert!(!a.set_config(&v2, None).await.expect("create when present"));
    let c1 = a.load().await.expect("load").config.expect("config");
    assert_eq!(c1.value, v1);
    assert!(!a
        .set_config(&v2, Some(c1.mod_revision + 100))
        .await
        .expect("stale revision"));
    assert!(a
        .set_config(&v2, Some(c1.mod_revision))
        .await
        .expect("matching revision"));
    let c2 = a.load().await.expect("load").config.expect("config");
    assert_eq!(c2.value, v2);
    assert!(c2.mod_revision > c1.mod_revision);
    assert!(!a
        .set_config(&v1, Some(c1.mod_revision))
        .await
        .expect("old revision"));
}

async fn documents_round_trip<B: Backend>() {
    let backend = B::start().await;
    let (a, b) = (backend.handle("a", TTL), backend.handle("b", TTL));
    let history = vec![
        HistoryEntry {
            timeline: 1,
            lsn: 100,
            reason: "no recovery target specified".into(),
            timestamp: Some("2026-11-26T14:50:25+00:00".into()),
            new_leader: Some("b".into()),
        },
        HistoryEntry {
            timeline: 2,
            lsn: 200,
            reason: "switchover".into(),
            timestamp: None,
            new_leader: None,
        },
    ];
    // The history, like the failsafe topology below, is written by the leader key's holder
    // only: a former leader's late write cannot drop its successor's entry.
    assert!(
        !a.set_history(&history).await.expect("history"),
        "written without the leader key"
    );
    assert!(a.acquire_leader().await.expect("a acquires"));
    assert!(a.set_history(&history).await.expect("history"));
    assert!(!b.set_history(&history[..1]).await.expect("stale history"));
    let status = StatusDoc {
        optime: Some(12345),
        slots: BTreeMap::from([("b".to_string(), 12000)]),
        ..StatusDoc::default()
    };
    assert!(a.set_status(&status).await.expect("status"));
    // The status too: a former leader's late write cannot leave its position (possibly
    // ahead of what its successor had) as the reference of the next lag check.
    assert!(!b.set_status(&status).await.expect("status without the key"));
    let sync = SyncDoc {
        leader: Some("a".into()),
        sync_standby: Some("b".into()),
        ..SyncDoc::default()
    };
    assert!(a.set_sync(&sync, None).await.expect("sync create"));
    assert!(!a
        .set_sync(&sync, None)
        .await
        .expect("sync create when present"));
    let failover = FailoverDoc {
        leader: Some("a".into()),
        member: Some("b".into()),
        scheduled_at: None,
        ..FailoverDoc::default()
    };
    assert!(a.set_failover(&failover, None).await.expect("failover"));
    let mut doc_a = member_doc("a");
    doc_a.role = "master".into();
    doc_a.tags.insert("nofailover".into(), json!(true));
    a.touch_member(&doc_a).await.expect("touch a");
    b.touch_member(&member_doc("b")).await.expect("touch b");

    let state = b.load().await.expect("load");
    assert_eq!(state.history, history);
    assert_eq!(state.status, Some(status));
    let stored_sync = state.sync.expect("sync");
    assert_eq!(stored_sync.value, sync);
    assert_eq!(state.failover.as_ref().map(|f| &f.value), Some(&failover));
    assert_eq!(state.members.get("a"), Some(&doc_a));
    assert_eq!(state.members.get("b"), Some(&member_doc("b")));
    assert!(state.revision >= stored_sync.mod_revision);

    let sync2 = SyncDoc {
        leader: Some("a".into()),
        sync_standby: None,
        ..SyncDoc::default()
    };
    assert!(a
        .set_sync(&sync2, Some(stored_sync.mod_revision))
        .await
        .expect("sync cas"));
    assert!(!a
        .set_sync(&sync, Some(stored_sync.mod_revision))
        .await
        .expect("sync stale cas"));
    let failover_rev = state.failover.expect("failover").mod_revision;
    assert!(!a
        .set_failover(&failover, Some(failover_rev + 1))
        .await
        .expect("failover stale cas"));
    a.delete_failover().await.expect("delete failover");
    a.delete_member("b").await.expect("delete member");
    let state = a.load().await.expect("load");
    assert_eq!(state.sync.map(|s| s.value), Some(sync2));
    assert_eq!(state.failover, None);
    assert!(!state.members.contains_key("b"));
    assert!(state.members.contains_key("a"));

    // The failsafe topology (Patroni's `{"member": "api_url"}`), written by the leader key's
    // holder only: a late write of a former leader leaves the new one's in place.
    let topology = BTreeMap::from([
        ("a".to_string(), "http://127.0.0.1:8008/patroni".to_string()),
        ("b".to_string(), "http://127.0.0.1:8009/patroni".to_string()),
    ]);
    assert!(
        !b.set_failsafe(&topology).await.expect("failsafe"),
        "written without the leader key"
    );
    assert_eq!(a.load().await.expect("load").failsafe, None);
    assert!(a.set_failsafe(&topology).await.expect("failsafe"));
    let stale = BTreeMap::from([("b".to_string(), String::new())]);
    assert!(!b.set_failsafe(&stale).await.expect("stale failsafe"));
    assert_eq!(a.load().await.expect("load").failsafe, Some(topology));
}

/// Wait for the next notification; false on timeout.
async fn notified(rx: &mut tokio::sync::watch::Receiver<u64>, within: Duration) -> bool {
    matches!(tokio::time::timeout(within, rx.changed()).await, Ok(Ok(())))
}

/// Until the subscription is live (a change is seen), keep making changes.
async fn wait_until_watching<D: Dcs>(dcs: &D, rx: &mut tokio::sync::watch::Receiver<u64>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let doc = member_doc(dcs.member_name());
    loop {
        dcs.touch_member(&doc).await.expect("touch member");
        if notified(rx, Duration::from_millis(200)).await {
            rx.borrow_and_update();
            return;
        }
        assert!(
            Instant::now() < deadline,
            "subscription saw no change within 10 s"
        );
    }
}

async fn subscribe_sees_a_release<B: Backend>() {
    let backend = B::start().await;
    let (a, b) = (backend.handle("a", TTL), backend.handle("b", TTL));
    assert!(b.acquire_leader().await.expect("acquire"));
    let mut rx = a.subscribe();
    wait_until_watching(&a, &mut rx).await;
    // Drain notifications of our own writes before the change under test.
    while notified(&mut rx, Duration::from_millis(100)).await {}
    assert!(b.release_leader().await.expect("release"));
    assert!(
        notified(&mut rx, Duration::from_secs(1)).await,
        "no notification within 1 s of a leader release"
    );
    assert_eq!(a.load().await.expect("load").leader, None);
}

async fn unreachable_then_recovers<B: Backend>() {
    let mut backend = B::start().await;
    let a = backend.handle("a", TTL);
    a.load().await.expect("load while reachable");
    let mut rx = a.subscribe();
    wait_until_watching(&a, &mut rx).await;
    backend.cut(&a);
    let started = Instant::now();
    let error = a
        .load()
        .await
        .expect_err("load must fail while the DCS is cut off");
    let elapsed = started.elapsed();
    assert!(
        elapsed <= backend.request_timeout() + Duration::from_secs(1),
        "load took {elapsed:?}"
    );
    assert!(
        matches!(error, DcsError::Unreachable { .. }),
        "expected Unreachable, got {error:?}"
    );
    assert!(
        error.to_string().contains(&backend.endpoint_label()),
        "the error names the endpoint: {error}"
    );
    let error = a
        .keepalive()
        .await
        .expect_err("keepalive must fail while the DCS is cut off");
    assert!(error.is_unreachable(), "{error:?}");
    backend.heal(&a);
    let deadline = Instant::now() + Duration::from_secs(15);
    while let Err(e) = a.load().await {
        assert!(
            Instant::now() < deadline,
            "load did not recover within 15 s: {e}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The watch reconnects by itself.
    wait_until_watching(&a, &mut rx).await;
    a.keepalive().await.expect("keepalive after recovery");
}

macro_rules! conformance {
    ($module:ident, $backend:ty, $($test_attr:tt)*) => {
        mod $module {
            use super::*;
            $($test_attr)* async fn leader_race() { super::leader_race::<$backend>().await }
            $($test_attr)* async fn release_only_by_owner() { super::release_only_by_owner::<$backend>().await }
            $($test_attr)* async fn keys_vanish_when_the_lease_expires() { super::keys_vanish_when_the_lease_expires::<$backend>().await }
            $($test_attr)* async fn keepalive_keeps_keys() { super::keepalive_keeps_keys::<$backend>().await }
            $($test_attr)* async fn lease_remaining_reads_without_extending() { super::lease_remaining_reads_without_extending::<$backend>().await }
            $($test_attr)* async fn adopt_leader_lease_after_restart() { super::adopt_leader_lease_after_restart::<$backend>().await }
            $($test_attr)* async fn claim_initialize_race() { super::claim_initialize_race::<$backend>().await }
            $($test_attr)* async fn initialize_cas() { super::initialize_cas::<$backend>().await }
            $($test_attr)* async fn config_cas() { super::config_cas::<$backend>().await }
            $($test_attr)* async fn documents_round_trip() { super::documents_round_trip::<$backend>().await }
            $($test_attr)* async fn subscribe_sees_a_release() { super::subscribe_sees_a_release::<$backend>().await }
            $($test_attr)* async fn unreachable_then_recovers() { super::unreachable_then_recovers::<$backend>().await }
        }
    };
}

conformance!(memory, support::Memory, #[tokio::test(start_paused = true)]);
conformance!(etcd, support::Etcd, #[tokio::test(flavor = "multi_thread", worker_threads = 2)]);
