//! Several hosts under failure (issue 24; docs/several-hosts.md): real daemon processes on one
//! fresh PostgreSQL database, on the stand-in page, each hole a careful read found in a test.

use std::time::{Duration, Instant};

use crate::support::cluster::{
    eventually, lease, link, snapshot_epoch, Node, PgDatabase, TTL_SECS,
};
use crate::support::harness::ADMIN_TOKEN;
use crate::support::standin::{StandIn, StandInOptions};

/// Waits until `user:slot` is connected on `node` (by its lease and its status there).
async fn connected_on(db: &PgDatabase, node: &Node, user: &str, limit: Duration) {
    eventually(
        limit,
        &format!("{user}:1 connected on {}", node.name),
        || async {
            let (owner, _) = lease(db, user, 1).await?;
            let (status, s) = node.call("GET", &format!("/api/status/{user}/1")).await;
            (owner == node.name && status == 200 && s["isConnected"] == true).then_some(())
        },
    )
    .await
}

/// Item 1: a second process started with a live node's `NODE_ID` (its own folder and URL)
/// refuses to start — exit 2, one line naming the `NODE_ID` — and the session stays where it
/// ran, under the same lease, one browser. The node itself, killed and started again, is no
/// twin: its predecessor stopped beating, so it joins and takes its session back at once
/// (before the old lease expires), without a scan.
#[tokio::test]
async fn a_second_process_with_a_live_node_s_id_is_refused_and_the_node_restarted_is_not() {
    let db = PgDatabase::create().await;
    let standin = StandIn::start(StandInOptions::default()).await;
    let mut n1 = Node::start(&standin, &db, "n1", false).await;
    let user = "twin-user";
    link(&standin, &db, &n1, user, 1, "4915100024011").await;
    let held = lease(&db, user, 1).await.unwrap();
    let links = standin.links();

    let tmp = tempfile::tempdir().unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), n1.twin(&db, tmp.path()).output())
        .await
        .expect("the twin started instead of refusing")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("NODE_ID n1 is in use") && !last.contains("ERROR"),
        "{stderr}"
    );
    assert_eq!(lease(&db, user, 1).await.unwrap(), held, "the lease stayed");
    assert_eq!(n1.browsers().len(), 1);
    assert!(standin.max_live_instances() <= 1);

    n1.kill().await;
    let killed = Instant::now();
    n1.restart(&standin, &db).await;
    connected_on(&db, &n1, user, Duration::from_secs(TTL_SECS * 2 + 30)).await;
    eprintln!(
        "n1 killed and started again: {user}:1 connected on it after {} ms",
        killed.elapsed().as_millis()
    );
    assert_eq!(standin.links(), links, "no new scan");
    assert!(lease(&db, user, 1).await.unwrap().1 > held.1);
}

/// Item 2: a browser that came up on a QR page holds no login, so a stop, shutdown or drain
/// does not snapshot it. Linked on `a`, `a` killed before the link's snapshot; `b` takes the
/// session over and shows a QR code (no snapshot to restore); `a` comes back and `b` is
/// drained: `a` takes the session back on its own profile, connected without a scan. (An
/// unlinked snapshot of `b`'s, as the newest epoch, used to overwrite `a`'s valid login.)
#[tokio::test]
async fn a_profile_that_never_connected_is_not_snapshotted_over_a_newer_login() {
    let db = PgDatabase::create().await;
    let standin = StandIn::start(StandInOptions::default()).await;
    let mut a = Node::start(&standin, &db, "a", false).await;
    let b = Node::start(&standin, &db, "b", false).await;
    let user = "stale-user";
    let (status, body) = a.call("POST", &format!("/api/start/{user}/1")).await;
    assert!(status == 200 || status == 202, "{status} {body}");
    eventually(Duration::from_secs(40), "linked on a", || async {
        let (_, s) = a.call("GET", &format!("/api/status/{user}/1")).await;
        if s["isConnected"] == true {
            return Some(());
        }
        if let Some(payload) = s["qr"]["payload"].as_str() {
            let _ = standin.scan(payload, "4915100024021").await;
        }
        None
    })
    .await;
    a.kill().await;
    assert_eq!(
        snapshot_epoch(&db, user, 1).await,
        None,
        "killed before the snapshot"
    );
    let links = standin.links();

    eventually(
        Duration::from_secs(TTL_SECS * 2 + 30),
        "a QR code on b",
        || async {
            let (owner, _) = lease(&db, user, 1).await?;
            let (_, s) = b.call("GET", &format!("/api/status/{user}/1")).await;
            (owner == "b" && s["state"] == "qr").then_some(())
        },
    )
    .await;
    a.restart(&standin, &db).await;
    eventually(Duration::from_secs(20), "a alive", || async {
        let (_, body) = b.daemon.call("GET", "/admin/nodes", ADMIN_TOKEN).await;
        let nodes = body["nodes"].as_array()?.clone();
        nodes
            .iter()
            .any(|n| n["node"] == "a" && n["alive"] == true)
            .then_some(())
    })
    .await;
    let (status, body) = b
        .daemon
        .call("POST", "/admin/nodes/b/drain", ADMIN_TOKEN)
        .await;
    assert_eq!(status, 200, "{body}");
    connected_on(&db, &a, user, Duration::from_secs(40)).await;
    assert_eq!(
        standin.links(),
        links,
        "a new scan: the unlinked profile came back"
    );
    assert_eq!(
        snapshot_epoch(&db, user, 1).await,
        None,
        "b's QR page was snapshotted"
    );
}
