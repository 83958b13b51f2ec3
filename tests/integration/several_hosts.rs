//! Several hosts under failure (issue 24; docs/several-hosts.md): real daemon processes on one
//! fresh PostgreSQL database, on the stand-in page, each hole a careful read found in a test.

use std::time::{Duration, Instant};

use crate::support::cluster::{
    eventually, lease, link, snapshot_epoch, Node, NodeOptions, PgDatabase, TTL_SECS,
};
use crate::support::harness::ADMIN_TOKEN;
use crate::support::receiver::Receiver;
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

/// Starts `user`:1 through `via` and scans its QR code for `phone` until it is connected (not
/// waiting for the link's snapshot).
async fn scan_on(standin: &StandIn, via: &Node, user: &str, phone: &str) {
    let (status, body) = via.call("POST", &format!("/api/start/{user}/1")).await;
    assert!(status == 200 || status == 202, "{status} {body}");
    eventually(
        Duration::from_secs(40),
        &format!("{user}:1 linked"),
        || async {
            let (_, s) = via.call("GET", &format!("/api/status/{user}/1")).await;
            if s["isConnected"] == true {
                return Some(());
            }
            if let Some(payload) = s["qr"]["payload"].as_str() {
                let _ = standin.scan(payload, phone).await;
            }
            None
        },
    )
    .await;
}

/// Settings of a node with the WPP stand-in as WA-JS (installed in `dir`): sends and the
/// bridge's events work.
fn with_wpp(dir: &std::path::Path) -> NodeOptions {
    let (wpp, sha) = crate::support::wpp::install(dir);
    NodeOptions {
        lease_ttl_secs: TTL_SECS,
        wa_js: Some((wpp.to_str().unwrap().to_owned(), sha)),
        ..Default::default()
    }
}

/// Nodes `a` and `b` with the WPP stand-in as WA-JS, on a fresh database. (Fields drop in
/// order: the nodes before the database.)
struct Pair {
    a: Node,
    b: Node,
    standin: StandIn,
    db: PgDatabase,
    _wpp: tempfile::TempDir,
}

impl Pair {
    async fn start() -> Pair {
        let db = PgDatabase::create().await;
        let standin = StandIn::start(StandInOptions::default()).await;
        let wpp = tempfile::tempdir().unwrap();
        let opts = with_wpp(wpp.path());
        let a = Node::start_with(&standin, &db, "a", &opts).await;
        let b = Node::start_with(&standin, &db, "b", &opts).await;
        Pair {
            a,
            b,
            standin,
            db,
            _wpp: wpp,
        }
    }
}

/// [`scan_on`], then waits until WA-JS drives the session.
async fn link_wa_js(standin: &StandIn, via: &Node, user: &str, phone: &str) {
    scan_on(standin, via, user, phone).await;
    via.daemon
        .wait_state(user, 1, Duration::from_secs(30), |s| s["bridge"] == "wa-js")
        .await;
}

/// POST `path` on `node` with a JSON body and the service token; the status and body.
async fn post_json(node: &Node, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let res = reqwest::Client::new()
        .post(node.daemon.url(path))
        .bearer_auth(crate::support::harness::SERVICE_TOKEN)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or_default())
}

/// Item 6: a node that does not run the session passes on what the owner takes — a 1.5 MiB
/// document (base64 in the body) used to be refused there, at 256 KiB, while the owner takes
/// MEDIA_MAX_BYTES — and a percent-encoded user segment is routed like the plain one (the
/// router matches the decoded path; the forwarder used to parse the raw one and keep it).
#[tokio::test]
async fn a_non_owner_node_passes_on_large_sends_and_encoded_paths_like_the_owner_takes_them() {
    use base64::Engine;
    let pair = Pair::start().await;
    let Pair {
        a, b, standin, db, ..
    } = &pair;
    let user = "fwd-user";
    link_wa_js(standin, a, user, "4915100024031").await;
    assert_eq!(lease(db, user, 1).await.unwrap().0, "a");
    let to = "4915199990241";

    let mut pdf = b"%PDF-1.4\n".to_vec();
    pdf.extend((0..3 * 512 * 1024).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let data = base64::engine::general_purpose::STANDARD.encode(&pdf);
    let (status, sent) = post_json(
        b,
        &format!("/api/messages/{user}/1"),
        &serde_json::json!({"type": "document", "to": to, "media": {"data": data, "filename": "big.pdf"}}),
    )
    .await;
    assert_eq!(status, 201, "{sent}");
    let doc = eventually(Duration::from_secs(20), "the document sent", || async {
        standin.sent().into_iter().find(|m| m.kind == "document")
    })
    .await;
    assert_eq!(doc.media_bytes(standin).unwrap(), pdf);

    let (status, sent) = post_json(
        b,
        "/api/messages/%66wd-user/%31",
        &serde_json::json!({"type": "text", "to": to, "text": "encoded"}),
    )
    .await;
    assert_eq!(status, 201, "{sent}");
    assert!(standin.sent().iter().any(|m| m.body == "encoded"));
    assert_eq!(lease(db, user, 1).await.unwrap().0, "a", "it stayed on a");
}

/// Item 6: a drain with no other live node would only stop every session: refused with 409
/// `no_other_node`, nothing changed. A session that failed for good (its intent `stopped`)
/// gives its lease back: it used to keep it, and the node's capacity, forever.
#[tokio::test]
async fn a_lone_node_refuses_a_drain_and_a_failed_session_gives_its_lease_back() {
    let db = PgDatabase::create().await;
    let standin = StandIn::start(StandInOptions::default()).await;
    let opts = NodeOptions {
        lease_ttl_secs: TTL_SECS,
        env: vec![
            ("MAX_CRASHES", "0".to_owned()),
            ("RESTART_BACKOFF_MS", "1".to_owned()),
        ],
        ..NodeOptions::default()
    };
    let n1 = Node::start_with(&standin, &db, "n1", &opts).await;
    let user = "lone-user";
    let (status, _) = n1.call("POST", &format!("/api/start/{user}/1")).await;
    assert_eq!(status, 202);
    n1.daemon
        .wait_state(user, 1, Duration::from_secs(30), |s| s["state"] == "qr")
        .await;

    let (status, body) = n1
        .daemon
        .call("POST", "/admin/nodes/n1/drain", ADMIN_TOKEN)
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("no_other_node")),
        "{body}"
    );
    let (_, nodes) = n1.daemon.call("GET", "/admin/nodes", ADMIN_TOKEN).await;
    assert_eq!(nodes["nodes"][0]["draining"], false, "{nodes}");
    assert_eq!(n1.browsers().len(), 1, "the session still runs");

    let pid = n1.browsers()[0];
    // SAFETY: plain syscall on the browser under test.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    n1.daemon
        .wait_state(user, 1, Duration::from_secs(20), |s| s["state"] == "failed")
        .await;
    eventually(Duration::from_secs(10), "the lease given back", || async {
        lease(&db, user, 1).await.is_none().then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(TTL_SECS + 5),
        "no lease counted",
        || async {
            let (_, nodes) = n1.daemon.call("GET", "/admin/nodes", ADMIN_TOKEN).await;
            (nodes["nodes"][0]["leases"] == 0).then_some(())
        },
    )
    .await;
}

/// Item 6: a stream opened on a node that does not run the session gets the session's events
/// in order, every one: each NOTIFY used to be relayed by a task of its own, so a burst could
/// overtake itself.
#[tokio::test]
async fn another_node_s_stream_sees_a_burst_of_events_whole_and_in_order() {
    let pair = Pair::start().await;
    let Pair { a, b, standin, .. } = &pair;
    let (user, phone) = ("burst-user", "4915100024051");
    link_wa_js(standin, a, user, phone).await;

    let (status, ticket) = b.call("POST", &format!("/api/events/{user}/ticket")).await;
    assert_eq!(status, 200, "{ticket}");
    let url = b.daemon.url(ticket["url"].as_str().unwrap());
    let mut stream = reqwest::Client::new().get(url).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    const N: usize = 80;
    for i in 0..N {
        standin
            .incoming(phone, "4915199990251", &format!("burst {i:03}"))
            .unwrap();
    }
    let mut text = String::new();
    let frames = |text: &str| -> Vec<(i64, String)> {
        text.split("\n\n")
            .filter(|f| f.starts_with("event: message\n"))
            .filter_map(|f| {
                let id = f
                    .lines()
                    .find_map(|l| l.strip_prefix("id: "))?
                    .parse()
                    .ok()?;
                let data: serde_json::Value =
                    serde_json::from_str(f.lines().find_map(|l| l.strip_prefix("data: "))?).ok()?;
                Some((id, data["body"].as_str()?.to_owned()))
            })
            .collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while frames(&text).len() < N {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .unwrap_or_else(|_| panic!("{} of {N} messages on b", frames(&text).len()));
        text.push_str(std::str::from_utf8(&chunk.unwrap().unwrap()).unwrap());
    }
    let got = frames(&text);
    let bodies: Vec<String> = got.iter().map(|(_, b)| b.clone()).collect();
    let sent: Vec<String> = (0..N).map(|i| format!("burst {i:03}")).collect();
    assert_eq!(bodies, sent, "in the order they came");
    assert!(
        got.windows(2).all(|w| w[0].0 < w[1].0),
        "cursors in order: {got:?}"
    );
}

/// Item 5: settings that differ between nodes (a rolling change). Service deliveries are owed
/// while the receiver is down; the node that wrote them (with `WEBHOOK_URL`) is killed and one
/// without it takes the session over. That node used to claim the owed deliveries and mark them
/// failed for good; it leaves them to a node that can deliver them: once the first is back,
/// every message reaches the service webhook and none failed.
#[tokio::test]
async fn a_node_without_the_service_webhook_leaves_its_deliveries_to_one_that_has_it() {
    let receiver = Receiver::start().await;
    let db = PgDatabase::create().await;
    let standin = StandIn::start(StandInOptions::default()).await;
    let tmp = tempfile::tempdir().unwrap();
    let without = with_wpp(tmp.path());
    let mut with = without.clone();
    with.env = service_webhook(&receiver);
    with.env
        .push(("WEBHOOK_RETRY_SCHEDULE", vec!["500ms"; 60].join(",")));
    let mut a = Node::start_with(&standin, &db, "a", &with).await;
    let b = Node::start_with(&standin, &db, "b", &without).await;
    let (user, phone) = ("mixed-user", "4915100024061");
    link(&standin, &db, &a, user, 1, phone).await;
    a.daemon
        .wait_state(user, 1, Duration::from_secs(30), |s| s["bridge"] == "wa-js")
        .await;
    receiver.always(Some(503));
    const N: usize = 20;
    for i in 0..N {
        standin
            .incoming(phone, "4915199990261", &format!("mixed {i:03}"))
            .unwrap();
    }
    eventually(
        Duration::from_secs(20),
        "every message recorded",
        || async {
            let (_, page) = a
                .call("GET", &format!("/api/messages/{user}/1?limit=500"))
                .await;
            let n = page["events"]
                .as_array()?
                .iter()
                .filter(|e| e["type"] == "message")
                .count();
            (n == N).then_some(())
        },
    )
    .await;
    a.kill().await;
    connected_on(&db, &b, user, Duration::from_secs(TTL_SECS * 2 + 30)).await;
    // b runs the session now, and its dispatcher wakes for the session's events.
    standin
        .incoming(phone, "4915199990261", "after the takeover")
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        failed_deliveries(&db).await,
        0,
        "b gave up what it cannot deliver"
    );
    receiver.always(None);
    a.restart(&standin, &db).await;
    receiver
        .wait(Duration::from_secs(30), "every message delivered", |got| {
            let delivered: std::collections::BTreeSet<&str> = got
                .iter()
                .filter(|r| r.status == 200)
                .filter_map(|r| r.body.find("mixed ").map(|at| &r.body[at..at + 9]))
                .collect();
            delivered.len() == N
        })
        .await;
    assert_eq!(failed_deliveries(&db).await, 0);
}

/// The settings of a service webhook to `receiver`.
fn service_webhook(receiver: &Receiver) -> Vec<(&'static str, String)> {
    vec![
        ("WEBHOOK_URL", receiver.url("/service")),
        (
            "WEBHOOK_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned(),
        ),
        ("WEBHOOK_ALLOW_HTTP", "true".to_owned()),
    ]
}

/// Deliveries given up, straight from the database.
async fn failed_deliveries(db: &PgDatabase) -> i64 {
    use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl};
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let url = db.url();
    tokio::task::spawn_blocking(move || {
        let mut conn = PgConnection::establish(&url).unwrap();
        diesel::sql_query("SELECT count(*) AS n FROM deliveries WHERE status = 'failed'")
            .get_result::<Count>(&mut conn)
            .unwrap()
            .n
    })
    .await
    .unwrap()
}

/// Item 3: a logout is final on every node. Linked on `a` and drained to `b` (`a` keeps its
/// profile from that run), stopped on `b`, then logged out with no browser running (and no
/// WA-JS on these nodes to wake one for): the answer says WhatsApp was not told (the phone
/// removes the device), and a later start placed on `a`
/// shows a QR code — `a`'s old profile used to come back `connected` with the old login, since
/// the logout only deleted the snapshot and `b`'s folder.
#[tokio::test]
async fn a_logout_is_honoured_by_a_node_that_kept_an_older_profile() {
    let db = PgDatabase::create().await;
    let standin = StandIn::start(StandInOptions::default()).await;
    let mut a = Node::start(&standin, &db, "a", false).await;
    let b = Node::start(&standin, &db, "b", false).await;
    let user = "logout-user";
    link(&standin, &db, &a, user, 1, "4915100024071").await;
    let (status, body) = a
        .daemon
        .call("POST", "/admin/nodes/a/drain", ADMIN_TOKEN)
        .await;
    assert_eq!(status, 200, "{body}");
    connected_on(&db, &b, user, Duration::from_secs(40)).await;
    let (status, body) = b.call("POST", &format!("/api/stop/{user}/1")).await;
    assert_eq!(status, 200, "{body}");

    let (status, out) = b.call("POST", &format!("/api/logout/{user}/1")).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["state"], "stopped");
    assert_eq!(out["unlinkedOnWhatsApp"], false, "{out}");
    assert!(out["connectedNumber"].is_null(), "{out}");

    // a, started again (it takes sessions again; its folder is kept), is asked to start it.
    a.kill().await;
    a.restart(&standin, &db).await;
    let (status, body) = a.call("POST", &format!("/api/start/{user}/1")).await;
    assert!(status == 200 || status == 202, "{status} {body}");
    eventually(Duration::from_secs(40), "a QR code on a", || async {
        let (owner, _) = lease(&db, user, 1).await?;
        let (_, s) = a.call("GET", &format!("/api/status/{user}/1")).await;
        assert_ne!(s["isConnected"], true, "the old login came back: {s}");
        (owner == "a" && s["state"] == "qr").then_some(())
    })
    .await;
}

/// libfaketime (Debian's `faketime`, installed by scripts/test.sh): a process under it sees
/// this host's clock moved; its monotonic clock is left alone.
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Item 6: delivery leases run on the database's clock. A node whose clock runs five minutes
/// ahead used to see every other node's delivery lease as expired, and delivered again what
/// another node was still delivering (a slow receiver got each event twice).
#[tokio::test]
async fn a_node_whose_clock_runs_ahead_does_not_deliver_what_another_is_delivering() {
    assert!(
        std::path::Path::new(FAKETIME).exists(),
        "{FAKETIME} is missing: apt-get install faketime (scripts/test.sh does)"
    );
    let receiver = Receiver::start().await;
    let db = PgDatabase::create().await;
    let standin = StandIn::start(StandInOptions::default()).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut on_time = with_wpp(tmp.path());
    on_time.env = service_webhook(&receiver);
    let mut ahead = on_time.clone();
    ahead.env.extend([
        ("LD_PRELOAD", FAKETIME.to_owned()),
        ("FAKETIME", "+5m".to_owned()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
    ]);
    let a = Node::start_with(&standin, &db, "a", &on_time).await;
    let _b = Node::start_with(&standin, &db, "b", &ahead).await;
    let (user, phone) = ("clock-user", "4915100024081");
    link_wa_js(&standin, &a, user, phone).await;
    assert_eq!(lease(&db, user, 1).await.unwrap().0, "a");
    receiver.slow(Some(Duration::from_secs(3)));
    const N: usize = 3;
    for i in 0..N {
        standin
            .incoming(phone, "4915199990281", &format!("clock {i:03}"))
            .unwrap();
    }
    receiver
        .wait(Duration::from_secs(40), "every message delivered", |got| {
            got.iter()
                .filter(|r| r.status == 200 && r.body.contains("clock 00"))
                .count()
                >= N
        })
        .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let got = receiver.received();
    let mut ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
    let all = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), all, "an event was delivered twice");
}

/// A user's deletion (docs/operations.md), taken by the node that does not run the user's
/// session: that node asks the other, which unlinks the session on WhatsApp's side where its
/// browser runs and forgets its folder; then the shared rows go. Both nodes answer 404 for the
/// session afterwards; another user's session runs on.
#[tokio::test]
async fn deleting_a_user_on_one_node_unlinks_and_forgets_them_on_every_node() {
    let pair = Pair::start().await;
    let Pair {
        a, b, standin, db, ..
    } = &pair;
    let (user, other) = ("leaving-user", "staying-user");
    link_wa_js(standin, a, user, "4915100025001").await;
    link_wa_js(standin, b, other, "4915100025002").await;
    assert_eq!(lease(db, user, 1).await.unwrap().0, "a");
    assert!(a.daemon.sessions().join(format!("{user}-slot1")).exists());

    let (status, d) = b
        .daemon
        .call("DELETE", &format!("/admin/users/{user}"), ADMIN_TOKEN)
        .await;
    assert_eq!(status, 200, "{d}\n{}", crate::support::cluster::logs(&[]));
    assert_eq!(d["nodes"][0]["node"], "a", "{d}");
    assert_eq!(d["nodes"][0]["outcome"], "ok", "{d}");
    assert_eq!(d["sessions"][0]["unlinkedOnWhatsApp"], true, "{d}");
    assert_eq!(d["sessions"][0]["number"], "4915100025001", "{d}");
    assert_eq!(d["removed"]["rows"], 1, "{d}");
    assert_eq!(standin.self_logouts().len(), 1);
    for node in [a, b] {
        let (status, _) = node.call("GET", &format!("/api/status/{user}/1")).await;
        assert_eq!(status, 404, "{}", node.name);
        assert!(!node
            .daemon
            .sessions()
            .join(format!("{user}-slot1"))
            .exists());
    }
    assert!(
        a.browsers().len() <= 1,
        "only the other user's browser runs on a"
    );
    let (status, s) = a.call("GET", &format!("/api/status/{other}/1")).await;
    assert_eq!(
        (status, s["isConnected"].as_bool()),
        (200, Some(true)),
        "{s}"
    );
    assert_eq!(
        snapshot_epoch(db, user, 1).await,
        None,
        "no login snapshot is left"
    );
    let (status, again) = a
        .daemon
        .call("DELETE", &format!("/admin/users/{user}"), ADMIN_TOKEN)
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["sessions"].as_array().unwrap().len(), 0, "{again}");
}

/// A backup taken through one node of a cluster (docs/operations.md): the session that node runs
/// is copied from its closed browser, the one the other node runs comes from its newest stored
/// snapshot (taken from a closed browser at the link); the file restores on a single node with
/// SQLite, both sessions connected without a scan.
#[tokio::test]
async fn a_backup_through_one_node_holds_every_node_s_sessions() {
    let pair = Pair::start().await;
    let Pair {
        a, b, standin, db, ..
    } = &pair;
    let users = ["backed-up-1", "backed-up-2"];
    link(standin, db, a, users[0], 1, "4915100025101").await;
    link(standin, db, b, users[1], 1, "4915100025102").await;
    let owners: Vec<String> = futures_util::future::join_all(users.map(|u| lease(db, u, 1)))
        .await
        .into_iter()
        .map(|l| l.unwrap().0)
        .collect();
    assert!(
        owners.iter().any(|o| o == "a") && owners.iter().any(|o| o == "b"),
        "one session on each node: {owners:?}"
    );
    let links = standin.links();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("cluster.backup");
    let run = |args: Vec<String>| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_wa-supervisor"))
            .arg("--data-dir")
            .arg(tmp.path().join("data"))
            .arg("--sessions-dir")
            .arg(tmp.path().join("sessions"))
            .args(["--admin-token", ADMIN_TOKEN])
            .args(["--api-token", crate::support::harness::SERVICE_TOKEN])
            .env_remove("DATABASE_URL")
            .args(args)
            .output()
    };
    let out = run(vec![
        "--bind-addr".into(),
        format!("127.0.0.1:{}", b.daemon.port),
        "backup".into(),
        "--out".into(),
        file.to_str().unwrap().into(),
    ])
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let manifest: wa_supervisor::ops::backup::Manifest =
        serde_json::from_value(crate::support::manifest_of(&file)).unwrap();
    assert_eq!(manifest.backend, "postgres");
    for (user, owner) in users.iter().zip(&owners) {
        let s = manifest
            .sessions
            .iter()
            .find(|s| s.user_id == *user)
            .unwrap();
        let want = if owner == "b" {
            "closed_browser"
        } else {
            "stored_snapshot"
        };
        assert_eq!(
            s.login_from.as_deref(),
            Some(want),
            "{user} on {owner}: {s:?}"
        );
        assert!(s.login.is_some(), "{s:?}");
    }

    // Both nodes stop; the file restores on one node of its own.
    for node in [a, b] {
        node.daemon.signal(libc::SIGTERM);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let out = run(vec![
        "--bind-addr".into(),
        "127.0.0.1:1".into(),
        "restore".into(),
        "--from".into(),
        file.to_str().unwrap().into(),
    ])
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let wpp = crate::support::wpp::install(tmp.path());
    let single = crate::support::daemon::start_with(
        tmp.path(),
        &standin.url(),
        &[],
        &[
            ("WA_JS_PATH", wpp.0.to_str().unwrap()),
            ("WA_JS_SHA256", wpp.1.as_str()),
        ],
        None,
    )
    .await;
    for user in users {
        single
            .wait_state(user, 1, Duration::from_secs(30), |s| {
                s["isConnected"] == true
            })
            .await;
    }
    assert_eq!(standin.links(), links, "no scan");
}
