//! Several hosts (docs/several-hosts.md): three real daemon processes on one fresh PostgreSQL
//! database, each with its own port, folder and `NODE_ID`, on the stand-in page. The stand-in
//! counts new links (scans) and the live page instances of each device (a device is a profile's
//! login: two live instances of one would be two browsers linked for one session).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::cluster::{
    cluster, connected_elsewhere, eventually, lease, link, logs, median, snapshot_epoch, Node,
    PgDatabase, TTL_SECS,
};
use crate::support::harness::ADMIN_TOKEN;
use crate::support::standin::{StandIn, StandInOptions};

#[tokio::test]
async fn a_killed_node_s_sessions_come_back_connected_on_the_others_from_their_snapshots() {
    let db = PgDatabase::create().await;
    let standin = StandIn::start(StandInOptions::default()).await;
    let mut nodes = cluster(&standin, &db, &[]).await;
    let users = ["kim", "lee", "max"];
    for (i, user) in users.iter().enumerate() {
        link(&standin, &db, &nodes[0], user, 1, &format!("4915100000{i}")).await;
    }
    let links = standin.links();
    standin.reset_max_live_instances();

    let mut takeovers = Vec::new();
    // Twice: kill -9 the node that holds the most, then start a fresh one in its place.
    for round in 0..2 {
        let mut held = std::collections::HashMap::<String, usize>::new();
        for user in users {
            *held
                .entry(lease(&db, user, 1).await.unwrap().0)
                .or_default() += 1;
        }
        let victim = held.into_iter().max_by_key(|(_, n)| *n).unwrap().0;
        let at = nodes.iter().position(|n| n.name == victim).unwrap();
        let mut dead = nodes.remove(at);
        let moving: Vec<&str> = {
            let mut v = Vec::new();
            for user in users {
                if lease(&db, user, 1).await.unwrap().0 == victim {
                    v.push(user);
                }
            }
            v
        };
        let killed = Instant::now();
        dead.daemon.signal(libc::SIGKILL);
        dead.daemon.wait_exit(Duration::from_secs(5)).await;
        for user in &moving {
            let (to, took) = connected_elsewhere(
                &db,
                &nodes[0],
                user,
                1,
                &victim,
                killed,
                Duration::from_secs(TTL_SECS * 2 + 40),
            )
            .await;
            eprintln!(
                "round {round}: {user}:1 {victim} -> {to} in {} ms",
                took.as_millis()
            );
            takeovers.push(took);
        }
        let name = format!("n{}", 4 + round);
        nodes.push(Node::start(&standin, &db, &name, false).await);
    }
    eprintln!(
        "takeover after kill -9 (TTL {TTL_SECS} s): median {} ms over {} sessions",
        median(takeovers.clone()).as_millis(),
        takeovers.len()
    );
    // No new scan: every login came back from its snapshot; never two live browsers per login.
    assert_eq!(standin.links(), links, "a takeover needed a new scan");
    assert!(
        standin.max_live_instances() <= 1,
        "two browsers ran one login at once"
    );
    for t in &takeovers {
        assert!(*t < Duration::from_secs(TTL_SECS + 30), "{t:?}");
    }
}

#[tokio::test]
async fn a_node_cut_off_from_postgres_kills_its_browsers_before_another_node_launches_them() {
    let db = PgDatabase::create().await;
    let standin = StandIn::start(StandInOptions::default()).await;
    let nodes = cluster(&standin, &db, &["n1", "n2", "n3"]).await;
    let users = ["ana", "bea", "cem"];
    for (i, user) in users.iter().enumerate() {
        link(&standin, &db, &nodes[0], user, 1, &format!("4917700000{i}")).await;
    }
    // Cut off the node that runs "ana" (placement spreads the others).
    let victim = lease(&db, "ana", 1).await.unwrap().0;
    let cut = nodes.iter().find(|n| n.name == victim).unwrap();
    let other = nodes.iter().find(|n| n.name != victim).unwrap();
    let mut moving = Vec::new();
    for user in users {
        if lease(&db, user, 1).await.unwrap().0 == victim {
            moving.push(user);
        }
    }
    let links = standin.links();
    standin.reset_max_live_instances();
    assert!(!cut.browsers().is_empty());

    let t0 = Instant::now();
    cut.proxy.as_ref().unwrap().cut();
    // Until the other nodes hold its sessions: when its browsers were all gone, and when the
    // first of its leases was taken by another node.
    let mut gone_at = None;
    let mut taken_at = None;
    let deadline = t0 + Duration::from_secs(TTL_SECS * 2 + 40);
    loop {
        if gone_at.is_none() && cut.browsers().is_empty() {
            gone_at = Some(t0.elapsed());
        }
        let mut taken = 0;
        for user in &moving {
            if lease(&db, user, 1).await.is_some_and(|(n, _)| n != victim) {
                taken += 1;
            }
        }
        if taken > 0 && taken_at.is_none() {
            taken_at = Some(t0.elapsed());
        }
        if taken == moving.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not taken over\n{}",
            logs(&nodes)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gone = gone_at.unwrap_or_else(|| panic!("{victim} kept its browsers\n{}", logs(&nodes)));
    let taken = taken_at.unwrap();
    eprintln!(
        "cut off: {victim}'s browsers gone after {} ms; first lease taken after {} ms ({} sessions)",
        gone.as_millis(),
        taken.as_millis(),
        moving.len()
    );
    assert!(
        gone < taken,
        "{victim}'s browsers outlived its leases: gone {gone:?}, taken {taken:?}"
    );
    for user in &moving {
        connected_elsewhere(&db, other, user, 1, &victim, t0, Duration::from_secs(40)).await;
    }
    // Back on the network, the node does not fight for them.
    cut.proxy.as_ref().unwrap().heal();
    tokio::time::sleep(Duration::from_secs(TTL_SECS)).await;
    assert!(
        cut.browsers().is_empty(),
        "{victim} launched again after healing"
    );
    for user in &moving {
        assert_ne!(lease(&db, user, 1).await.unwrap().0, victim);
    }
    assert_eq!(standin.links(), links, "a takeover needed a new scan");
    assert!(
        standin.max_live_instances() <= 1,
        "two browsers ran one login at once"
    );
}

#[tokio::test]
async fn draining_a_node_moves_each_session_without_a_new_scan_and_the_node_keeps_answering() {
    let db = PgDatabase::create().await;
    let standin = StandIn::start(StandInOptions::default()).await;
    let nodes = cluster(&standin, &db, &[]).await;
    let users = ["dan", "eve"];
    for (i, user) in users.iter().enumerate() {
        link(&standin, &db, &nodes[0], user, 1, &format!("4916000000{i}")).await;
    }
    let holder = lease(&db, "dan", 1).await.unwrap().0;
    let links = standin.links();
    standin.reset_max_live_instances();

    // Asked of another node: passed on to the node being drained.
    let other = nodes.iter().find(|n| n.name != holder).unwrap();
    let (status, report) = other
        .daemon
        .call("POST", &format!("/admin/nodes/{holder}/drain"), ADMIN_TOKEN)
        .await;
    assert_eq!(status, 200, "{report}");
    let moved = report["moved"].as_array().unwrap();
    assert!(!moved.is_empty(), "{report}");
    for m in moved {
        assert!(m["error"].is_null() && m["to"].is_string(), "{report}");
        assert_ne!(m["to"], holder.as_str());
        eprintln!(
            "drain: {}:{} -> {} in {} ms",
            m["userId"], m["slot"], m["to"], m["ms"]
        );
    }
    // The drained node holds nothing, takes nothing, and still answers for every session.
    let drained = nodes.iter().find(|n| n.name == holder).unwrap();
    for user in users {
        assert_ne!(lease(&db, user, 1).await.unwrap().0, holder);
        let (status, s) = drained.call("GET", &format!("/api/status/{user}/1")).await;
        assert_eq!(
            (status, &s["isConnected"]),
            (200, &Value::Bool(true)),
            "{s}"
        );
        let (status, e) = drained.call("GET", &format!("/api/qr/{user}/1")).await;
        assert_eq!(status, 409, "a linked session shows no QR code: {e}");
    }
    assert!(drained.browsers().is_empty());
    assert_eq!(standin.links(), links, "a move needed a new scan");
    assert!(
        standin.max_live_instances() <= 1,
        "two browsers ran one login at once"
    );

    // The audit trail says where each moved session ran, under which epoch.
    for m in moved {
        let user = m["userId"].as_str().unwrap();
        let claims = audit(&db, user, "lease_claimed").await;
        let released = audit(&db, user, "lease_released").await;
        let to = m["to"].as_str().unwrap();
        assert!(
            claims
                .iter()
                .any(|d| d.starts_with(&format!("{holder} epoch "))),
            "{claims:?}"
        );
        assert!(
            claims
                .iter()
                .any(|d| d.starts_with(&format!("{to} epoch "))),
            "{claims:?}"
        );
        assert!(
            released
                .iter()
                .any(|d| d.starts_with(&format!("{holder} epoch "))),
            "{released:?}"
        );
    }

    // Stopped, dan's session runs nowhere; a logout through another node still forgets its
    // login everywhere (the snapshot) and clears the number in the row.
    let (status, s) = drained.call("POST", "/api/stop/dan/1").await;
    assert_eq!(status, 200, "{s}");
    assert!(snapshot_epoch(&db, "dan", 1).await.is_some());
    assert!(lease(&db, "dan", 1).await.is_none(), "released on stop");
    let far = nodes.iter().find(|n| n.name != holder).unwrap();
    let (status, s) = far.call("POST", "/api/logout/dan/1").await;
    assert_eq!(status, 200, "{s}");
    assert!(s["connectedNumber"].is_null(), "{s}");
    assert!(
        snapshot_epoch(&db, "dan", 1).await.is_none(),
        "the login outlived the logout"
    );
    for node in &nodes {
        let (status, s) = node.call("GET", "/api/status/dan").await;
        assert_eq!(status, 200);
        assert!(
            s["sessions"][0]["connectedNumber"].is_null(),
            "{}: {s}",
            node.name
        );
    }
}

#[tokio::test]
async fn two_users_and_concurrent_starts_spread_over_three_nodes_never_cross() {
    let db = PgDatabase::create().await;
    let standin = StandIn::start(StandInOptions::default()).await;
    let nodes = cluster(&standin, &db, &[]).await;
    // The platform's old bug: one user asking for a QR code disconnected another user's bot.
    link(&standin, &db, &nodes[0], "alice", 1, "4915111111111").await;
    for node in &nodes {
        let (status, body) = node.call("POST", "/api/start/bob/1").await;
        assert!(status == 200 || status == 202, "{status} {body}");
        let (status, s) = node.call("GET", "/api/status/alice/1").await;
        assert_eq!(
            (status, &s["isConnected"]),
            (200, &Value::Bool(true)),
            "{s}"
        );
    }
    let bob = eventually(Duration::from_secs(30), "bob's QR code", || async {
        let (status, qr) = nodes[2].call("GET", "/api/qr/bob/1?format=json").await;
        (status == 200).then_some(qr)
    })
    .await;
    assert!(bob["payload"].is_string());
    for node in &nodes {
        let (status, _) = node.call("GET", "/api/qr/alice/1").await;
        assert_eq!(status, 409, "alice is linked: no QR code");
        let (status, list) = node.call("GET", "/api/status/alice").await;
        assert_eq!(status, 200);
        let sessions = list["sessions"].as_array().unwrap();
        assert_eq!(sessions.len(), 1, "only alice's own sessions: {list}");
        assert_eq!(sessions[0]["isConnected"], true, "{list}\n{}", logs(&nodes));
    }

    // Twelve concurrent starts of one session, four through each node: one lease, one browser.
    let devices = standin.device_count();
    let starts = (0..12).map(|i| {
        let node = &nodes[i % 3];
        async move { node.call("POST", "/api/start/carol/2").await }
    });
    for (status, body) in futures_util::future::join_all(starts).await {
        assert!(status == 200 || status == 202, "{status} {body}");
    }
    let owner = eventually(Duration::from_secs(30), "carol's QR code", || async {
        let (status, _) = nodes[1].call("GET", "/api/qr/carol/2?format=json").await;
        if status != 200 {
            return None;
        }
        lease(&db, "carol", 2).await
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        standin.device_count(),
        devices + 1,
        "one browser for carol:2"
    );
    let running: usize = nodes
        .iter()
        .map(|n| {
            n.browsers()
                .iter()
                .filter(|pid| cmdline_has(**pid, "carol"))
                .count()
                .min(1)
        })
        .sum();
    assert_eq!(running, 1, "carol:2 runs on exactly one node ({})", owner.0);
    assert!(standin.max_live_instances() <= 1);

    // A user's stream works on any node: alice's events, written by the node that runs her
    // session, reach a stream opened on another node (NOTIFY), here for a stop sent to a third.
    let alice_on = lease(&db, "alice", 1).await.unwrap().0;
    let mut others = nodes.iter().filter(|n| n.name != alice_on);
    let (watch, ask) = (others.next().unwrap(), others.next().unwrap());
    let (status, ticket) = watch.call("POST", "/api/events/alice/ticket").await;
    assert_eq!(status, 200, "{ticket}");
    let url = watch.daemon.url(ticket["url"].as_str().unwrap());
    let mut stream = reqwest::Client::new().get(url).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    let (status, stopped) = ask.call("POST", "/api/stop/alice/1").await;
    assert_eq!(status, 200, "{stopped}");
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !text.contains("\"state\":\"stopped\"") {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .unwrap_or_else(|_| panic!("no stopped event on {}: {text}", watch.name));
        text.push_str(std::str::from_utf8(&chunk.unwrap().unwrap()).unwrap());
    }
    assert!(!text.contains("carol") && !text.contains("bob"), "{text}");
}

/// Whether process `pid`'s command line mentions `needle` (a profile path names its user).
fn cmdline_has(pid: u32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(needle))
        .unwrap_or(false)
}

/// A daemon started without `CLUSTER_TOKEN` on a database that live nodes use would run their
/// sessions a second time: it refuses to start, and says how to join. It refuses with exit code 2
/// every time: the process used to crash on exit (SIGSEGV in OpenSSL's clean-up while a pool
/// thread opened a TLS connection) about one run in six, so the refusal runs 20 times.
#[tokio::test]
async fn a_daemon_outside_the_cluster_refuses_the_cluster_s_database() {
    let db = PgDatabase::create().await;
    let standin = StandIn::start(StandInOptions::default()).await;
    let _node = Node::start(&standin, &db, "n1", false).await;
    let url = db.url();
    eventually(Duration::from_secs(10), "n1's heartbeat", || async {
        has_heartbeat(&url).await.then_some(())
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    for run in 1..=20 {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_wa-supervisor"))
            .current_dir(tmp.path())
            .env("BIND_ADDR", "127.0.0.1:0")
            .env("DATABASE_URL", &url)
            .env_remove("CLUSTER_TOKEN")
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(20), out)
            .await
            .expect("the daemon started instead of refusing")
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "run {run}: {:?}\n{stderr}",
            out.status
        );
        assert!(
            stderr.contains("n1") && stderr.contains("CLUSTER_TOKEN"),
            "{stderr}"
        );
    }
}

/// Whether a node has written its heartbeat to `url`'s database.
async fn has_heartbeat(url: &str) -> bool {
    use diesel::{Connection, PgConnection, RunQueryDsl};
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut conn = PgConnection::establish(&url).unwrap();
        diesel::sql_query("SELECT node FROM cluster_nodes")
            .execute(&mut conn)
            .unwrap()
            > 0
    })
    .await
    .unwrap()
}

/// The details of `user`:1's audit events of `kind`, oldest first.
async fn audit(db: &PgDatabase, user: &str, kind: &str) -> Vec<String> {
    use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl};
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        detail: Option<String>,
    }
    let url = db.url();
    let sql = format!(
        "SELECT detail FROM session_events WHERE \"userId\" = '{user}' AND slot = 1 AND kind = '{kind}' ORDER BY id"
    );
    tokio::task::spawn_blocking(move || {
        let mut conn = PgConnection::establish(&url).unwrap();
        let rows: Vec<Row> = diesel::sql_query(sql).load(&mut conn).unwrap();
        rows.into_iter().filter_map(|r| r.detail).collect()
    })
    .await
    .unwrap()
}

/// In cluster mode a media is stored where every node reaches it (PostgreSQL): received by the
/// node that runs the session, fetched through another node's link byte for byte, and no file is
/// left on the node that downloaded it.
#[tokio::test]
async fn a_media_received_on_one_node_is_served_by_another_from_postgres() {
    let db = PgDatabase::create().await;
    let standin = StandIn::start(StandInOptions::default()).await;
    let tmp = tempfile::tempdir().unwrap();
    let (wpp, sha) = crate::support::wpp::install(tmp.path());
    let opts = crate::support::cluster::NodeOptions {
        lease_ttl_secs: TTL_SECS,
        wa_js: Some((wpp.to_str().unwrap().to_owned(), sha)),
        ..Default::default()
    };
    let a = Node::start_with(&standin, &db, "m1", &opts).await;
    link(&standin, &db, &a, "alice", 1, "4915111111123").await;
    let b = Node::start_with(&standin, &db, "m2", &opts).await;
    let photo: Vec<u8> = (0..1_500_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let id = standin
        .incoming_media(
            "4915111111123",
            "4915199990777",
            "image",
            photo.clone(),
            "image/jpeg",
            None,
            None,
        )
        .unwrap();
    let m = eventually(Duration::from_secs(30), "the photo recorded", || async {
        let (_, page) = b.call("GET", "/api/messages/alice/1?limit=500").await;
        page["events"]
            .as_array()?
            .iter()
            .find(|e| e["data"]["id"] == id.as_str())
            .cloned()
    })
    .await;
    let media = &m["data"]["media"];
    let expected = wa_supervisor::browser::wajs::sha256_hex(&photo);
    assert_eq!(media["sha256"], expected.as_str(), "{m}");
    let url = media["url"].as_str().unwrap();
    assert!(
        url.starts_with(&b.daemon.url("/api/media/alice/1/")),
        "minted by the node that listed it: {url}"
    );
    let got = reqwest::get(url).await.unwrap();
    assert_eq!(got.status(), 200);
    let got = got.bytes().await.unwrap();
    assert_eq!(wa_supervisor::browser::wajs::sha256_hex(&got), expected);
    let files: Vec<_> = walk(&a.daemon.dir.join("data/media"));
    assert!(
        files.is_empty(),
        "no file on the node that downloaded it: {files:?}\n{}",
        logs(&[a, b])
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}
