//! The hardening review's findings, each with a test that fails on the code before the fix:
//! DevTools off TCP, secrets out of Chromium, fairness between tenants, metrics labels, files
//! and links, the crash path, orphan matching, failed sessions at boot, stale QR codes, boot
//! order, unreachable pages, readiness.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::time::{Duration, Instant};

use crate::support::daemon;
use crate::support::harness::{
    browsers_on, key, spawn_app, uuid_like, wait_until, TestApp, ADMIN_TOKEN, SERVICE_TOKEN,
};
use crate::support::standin::{StandIn, StandInOptions};
use serde_json::Value;
use wa_supervisor::browser::process::browser_trees;
use wa_supervisor::domain::{Intent, SessionState};
use wa_supervisor::procfs;

const LAUNCH: Duration = Duration::from_secs(30);
const QUICK: Duration = Duration::from_secs(5);

fn slow() -> StandInOptions {
    StandInOptions {
        rotation: Duration::from_secs(20),
        rotations: 6,
        ..Default::default()
    }
}

async fn stop_all(t: &TestApp, keys: &[(&str, u16)]) {
    for (user, slot) in keys {
        t.stop(user, *slot).await;
    }
    t.assert_no_browsers_left().await;
}

/// Every process of the browsers on profiles under `root`.
fn browser_tree_pids(root: &std::path::Path) -> Vec<u32> {
    browser_trees(root)
        .into_iter()
        .flat_map(|t| t.pids)
        .collect()
}

/// Listening TCP sockets held by any process of the browsers under `root`.
fn listening_sockets_in_browser_trees(root: &std::path::Path) -> Vec<(u32, u64)> {
    let listening = procfs::listening_tcp_inodes();
    browser_tree_pids(root)
        .into_iter()
        .flat_map(|pid| {
            procfs::socket_inodes(pid)
                .into_iter()
                .filter(|i| listening.contains(i))
                .map(move |i| (pid, i))
                .collect::<Vec<_>>()
        })
        .collect()
}

// ---- 1. DevTools off TCP ---------------------------------------------------------------------

#[actix_web::test]
async fn no_process_of_a_browser_tree_listens_on_tcp() {
    let t = spawn_app(slow(), &[]).await;
    let (a, b) = (uuid_like(0x901), uuid_like(0x902));
    assert_eq!(t.start(&a, 1).await, 202);
    assert_eq!(t.start(&b, 1).await, 202);
    t.wait_state(&a, 1, "qr", LAUNCH).await;
    t.wait_state(&b, 1, "qr", LAUNCH).await;

    let root = t.sessions_dir();
    let tree = browser_tree_pids(&root);
    assert!(tree.len() >= 4, "two browser trees: {tree:?}");
    let listening = listening_sockets_in_browser_trees(&root);
    eprintln!(
        "browser tree processes: {}, listening TCP sockets among them: {}",
        tree.len(),
        listening.len()
    );
    assert!(
        listening.is_empty(),
        "listening sockets (pid, inode): {listening:?}"
    );
    // The browsers speak DevTools over a pipe, never a port.
    for pid in browsers_on(&root.join(format!("{a}-slot1"))) {
        let args = procfs::cmdline(pid);
        assert!(args.iter().any(|a| a == b"--remote-debugging-pipe"));
        assert!(!args
            .iter()
            .any(|a| a.starts_with(b"--remote-debugging-port")));
    }
    stop_all(&t, &[(&a, 1), (&b, 1)]).await;
}

// ---- 2. No daemon secret in Chromium's environment --------------------------------------------

#[actix_web::test]
async fn no_daemon_secret_reaches_a_browser_or_renderer() {
    let standin = StandIn::start(slow()).await;
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db-secret-marker-5f1d.db");
    let d = daemon::start_with(
        tmp.path(),
        &standin.url(),
        &[],
        &[
            ("API_TOKEN", SERVICE_TOKEN),
            ("ADMIN_TOKEN", ADMIN_TOKEN),
            ("DATABASE_URL", db.to_str().unwrap()),
            ("SOME_OTHER_SECRET", "canary-2c9e77"),
            ("LC_ALL", "C.UTF-8"),
        ],
        None,
    )
    .await;
    let user = uuid_like(0x903);
    assert_eq!(
        d.call("POST", &format!("/api/start/{user}/1"), SERVICE_TOKEN)
            .await
            .0,
        202
    );
    d.wait_state(&user, 1, LAUNCH, |s| s["state"] == "qr").await;

    let tree = browser_tree_pids(&d.sessions());
    assert!(tree.len() >= 3, "{tree:?}");
    let secrets = [
        SERVICE_TOKEN,
        ADMIN_TOKEN,
        "db-secret-marker-5f1d",
        "canary-2c9e77",
    ];
    let (mut checked, mut with_path) = (0, 0);
    for pid in &tree {
        let env = procfs::environ(*pid);
        if env.is_empty() {
            continue; // gone meanwhile
        }
        checked += 1;
        let text = String::from_utf8_lossy(&env.join(&b"\n"[..])).into_owned();
        for secret in secrets {
            assert!(
                !text.contains(secret),
                "pid {pid} has {secret} in its environment"
            );
        }
        // (Helpers that set their process title overwrite this area with their arguments.)
        with_path += usize::from(text.contains("PATH="));
    }
    assert!(checked >= 3, "environments read: {checked}");
    assert!(with_path >= 1, "the allow-list passes what Chromium needs");
    // The daemon itself does hold them (the test would prove nothing otherwise).
    let own = String::from_utf8_lossy(&procfs::environ(d.pid() as u32).concat()).into_owned();
    assert!(
        own.contains("canary-2c9e77") && own.contains(SERVICE_TOKEN),
        "daemon env: {own}"
    );
    d.call("POST", &format!("/api/stop/{user}/1"), SERVICE_TOKEN)
        .await;
}

// ---- 3. Fairness between tenants ---------------------------------------------------------------

#[actix_web::test]
async fn a_user_at_every_limit_leaves_other_users_untouched() {
    let t = spawn_app(slow(), &["--max-pending-per-user", "2"]).await;
    let (a, b) = (uuid_like(0x904), uuid_like(0x905));

    // Browsers not linked yet: two, then 429 with Retry-After, for A only.
    assert_eq!(t.start(&a, 1).await, 202);
    assert_eq!(t.start(&a, 2).await, 202);
    let refused = t.post(&format!("/api/start/{a}/3"), SERVICE_TOKEN).await;
    assert_eq!(refused.status, 429, "{refused:?}");
    assert_eq!(refused.json["error"], "too_many_pending");
    assert!(refused.headers.contains_key("retry-after"));
    assert_eq!(
        t.get(&format!("/api/status/{a}/3"), SERVICE_TOKEN)
            .await
            .status,
        404,
        "no side effect"
    );
    assert_eq!(t.start(&b, 1).await, 202, "B is not limited by A");

    // A linked session does not count: link slot 1, and slot 3 may start.
    let s = t.wait_state(&a, 1, "qr", LAUNCH).await;
    t.standin
        .scan(s["qr"]["payload"].as_str().unwrap(), "4915100000904")
        .await
        .unwrap();
    t.wait_state(&a, 1, "connected", QUICK).await;
    assert_eq!(t.start(&a, 3).await, 202);

    // SSE tickets: A's limit is A's alone.
    let max_tickets = wa_supervisor::auth::MAX_OPEN_TICKETS_PER_USER;
    let mut tickets = Vec::new();
    for _ in 0..max_tickets {
        let r = t
            .post(&format!("/api/events/{a}/ticket"), SERVICE_TOKEN)
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        tickets.push(r.json["url"].as_str().unwrap().to_owned());
    }
    let r = t
        .post(&format!("/api/events/{a}/ticket"), SERVICE_TOKEN)
        .await;
    assert_eq!(r.status, 429, "{r:?}");
    assert!(r.headers.contains_key("retry-after"));
    let b_ticket = t
        .post(&format!("/api/events/{b}/ticket"), SERVICE_TOKEN)
        .await;
    assert_eq!(b_ticket.status, 200, "B's ticket: {b_ticket:?}");

    // Streams: A holds as many as allowed (redeeming its tickets), one more is refused; B's opens.
    let max_streams = wa_supervisor::http::routes::events::MAX_STREAMS_PER_USER;
    let client = reqwest::Client::new();
    let mut open = Vec::new();
    for url in tickets.iter().take(max_streams) {
        let res = client.get(t.url(url)).send().await.unwrap();
        assert_eq!(res.status(), 200);
        open.push(res);
    }
    let extra = client
        .get(t.url(&format!("/api/events/{a}")))
        .bearer_auth(SERVICE_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(extra.status(), 429);
    let mut b_stream = client
        .get(t.url(b_ticket.json["url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(b_stream.status(), 200, "B's stream");
    let first = tokio::time::timeout(QUICK, b_stream.chunk())
        .await
        .expect("B's snapshot")
        .unwrap()
        .unwrap();
    assert!(std::str::from_utf8(&first).unwrap().contains(&b));
    drop(open);
    stop_all(&t, &[(&a, 1), (&a, 2), (&a, 3), (&b, 1)]).await;
}

// ---- 4. Metrics labels -----------------------------------------------------------------------

#[actix_web::test]
async fn made_up_methods_and_paths_do_not_add_metric_series() {
    let t = spawn_app(slow(), &[]).await;
    let text = |t: &TestApp| {
        let url = t.url("/metrics");
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    // Warm up the label sets a normal request adds.
    t.raw_call("BREW", "/healthz", None).await;
    t.raw_call("GET", "/no/such/path", None).await;
    let before = text(&t).await.lines().count();
    for i in 0..300 {
        t.raw_call(&format!("M{i:03}X"), "/healthz", None).await;
        t.raw_call("GET", &format!("/made/up/{i}"), None).await;
    }
    let after = text(&t).await;
    let growth = after.lines().count() - before;
    eprintln!(
        "/metrics lines: {before} before, {} after 300 made-up methods and paths",
        after.lines().count()
    );
    assert!(growth <= 1, "grew by {growth} lines:\n{after}");
    assert!(after.contains("method=\"other\""));
    assert!(after.contains("route=\"unmatched\""));
}

// ---- 5. Configuration, files and links -------------------------------------------------------

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[actix_web::test]
async fn under_umask_022_folders_are_0700_and_database_files_0600() {
    let standin = StandIn::start(slow()).await;
    let tmp = tempfile::tempdir().unwrap();
    // Without API_TOKEN/ADMIN_TOKEN flags the credentials file is generated too.
    let d = daemon::start_with(tmp.path(), &standin.url(), &[], &[], Some(0o022)).await;
    let user = uuid_like(0x906);
    assert_eq!(
        d.call("POST", &format!("/api/start/{user}/1"), SERVICE_TOKEN)
            .await
            .0,
        202
    );
    d.wait_state(&user, 1, LAUNCH, |s| s["state"] == "qr").await;
    let data = tmp.path().join("data");
    let sessions = d.sessions();
    assert_eq!(mode(&data), 0o700, "DATA_DIR");
    assert_eq!(mode(&sessions), 0o700, "SESSIONS_DIR");
    assert_eq!(
        mode(&sessions.join(format!("{user}-slot1"))),
        0o700,
        "profile"
    );
    let db = data.join("wa-supervisor.db");
    assert_eq!(mode(&db), 0o600, "database");
    for side in ["wa-supervisor.db-wal", "wa-supervisor.db-shm"] {
        if data.join(side).exists() {
            assert_eq!(mode(&data.join(side)), 0o600, "{side}");
        }
    }
    d.call("POST", &format!("/api/stop/{user}/1"), SERVICE_TOKEN)
        .await;
}

#[actix_web::test]
async fn symlinks_inside_sessions_dir_are_refused_never_followed() {
    let standin = StandIn::start(slow()).await;
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("keep"), "precious").unwrap();
    let bait = tmp.path().join("bait-file");
    std::fs::write(&bait, "untouched").unwrap();
    let sessions = tmp.path().join("sessions");
    std::fs::create_dir_all(&sessions).unwrap();
    let (a, b, c) = (uuid_like(0x907), uuid_like(0x908), uuid_like(0x909));
    // A profile folder that is a link to elsewhere; a profile whose lock file is a link.
    std::os::unix::fs::symlink(&outside, sessions.join(format!("{a}-slot1"))).unwrap();
    std::fs::create_dir_all(sessions.join(format!("{b}-slot1"))).unwrap();
    std::os::unix::fs::symlink(
        &bait,
        sessions.join(format!("{b}-slot1/.wa-supervisor.lock")),
    )
    .unwrap();
    // import-sessions skips the link.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wa-supervisor"))
        .args(["--data-dir", tmp.path().join("data").to_str().unwrap()])
        .args([
            "--sessions-dir",
            sessions.to_str().unwrap(),
            "import-sessions",
        ])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("symbolic link"), "{report}");

    let d = daemon::start(tmp.path(), &standin.url(), &[]).await;
    for user in [&a, &b] {
        assert_eq!(
            d.call("POST", &format!("/api/start/{user}/1"), SERVICE_TOKEN)
                .await
                .0,
            202
        );
        let s = d
            .wait_state(user, 1, QUICK, |s| s["state"] == "failed")
            .await;
        assert!(
            s["lastError"].as_str().unwrap().contains("symbolic link"),
            "{s}"
        );
    }
    assert!(browsers_on(&outside).is_empty());
    assert_eq!(std::fs::read_to_string(&bait).unwrap(), "untouched");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        1,
        "nothing written through the link"
    );

    // Logout of a session whose profile became a link: refused, nothing deleted, and the log
    // says so (never "profile deleted").
    assert_eq!(
        d.call("POST", &format!("/api/start/{c}/1"), SERVICE_TOKEN)
            .await
            .0,
        202
    );
    d.wait_state(&c, 1, LAUNCH, |s| s["state"] == "qr").await;
    d.call("POST", &format!("/api/stop/{c}/1"), SERVICE_TOKEN)
        .await;
    let profile = sessions.join(format!("{c}-slot1"));
    std::fs::remove_dir_all(&profile).unwrap();
    std::os::unix::fs::symlink(&outside, &profile).unwrap();
    let (status, body) = d
        .call("POST", &format!("/api/logout/{c}/1"), SERVICE_TOKEN)
        .await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(
        std::fs::read_to_string(outside.join("keep")).unwrap(),
        "precious"
    );
    assert!(profile.exists(), "the link itself is left for the operator");
    wait_until(QUICK, || d.log_text().contains("profile NOT deleted"))
        .await
        .unwrap();
    assert!(
        !d.log_text().contains(&format!("{c}:1 profile deleted")),
        "{}",
        d.log_text()
    );
}

#[actix_web::test]
async fn cors_origins_with_spaces_work() {
    let t = spawn_app(
        slow(),
        &["--cors-origins", "http://a.example, http://b.example"],
    )
    .await;
    for origin in ["http://a.example", "http://b.example"] {
        let res = reqwest::Client::new()
            .request(reqwest::Method::OPTIONS, t.url("/api/status/someone"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "GET")
            .header("Access-Control-Request-Headers", "authorization")
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.headers()
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap().to_owned()),
            Some(origin.to_owned()),
            "{origin}"
        );
    }
    // The daemon is still serving after boot.
    assert_eq!(t.call("GET", "/healthz", None).await.status, 200);
}

// ---- 7. The crash path -----------------------------------------------------------------------

#[actix_web::test]
async fn a_crashed_browsers_whole_group_is_gone_before_the_relaunch() {
    let t = spawn_app(slow(), &["--restart-backoff-ms", "1"]).await;
    let user = uuid_like(0x90a);
    assert_eq!(t.start(&user, 1).await, 202);
    t.wait_state(&user, 1, "qr", LAUNCH).await;
    let profile = t.sessions_dir().join(format!("{user}-slot1"));
    let main = browsers_on(&profile)[0];
    // A member of the browser's group that will not leave on its own (Chromium's helpers usually
    // follow their browser within milliseconds, which hides the race): only a kill of the whole
    // group removes it. It is our child, so the group is not orphaned when the browser dies.
    let straggler = std::process::Command::new("sleep")
        .arg("600")
        .process_group(main as i32)
        .spawn()
        .unwrap();
    let straggler_pid = straggler.id();
    let (exited_tx, exited_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut straggler = straggler;
        let _ = exited_tx.send(straggler.wait().map(|s| s.signal()));
    });
    assert_eq!(procfs::pgrp(straggler_pid), Some(main));
    // SAFETY: plain syscall on the browser under test.
    unsafe { libc::kill(main as i32, libc::SIGKILL) };
    let back = t
        .wait_json(
            &format!("/api/status/{user}/1"),
            SERVICE_TOKEN,
            LAUNCH,
            "qr again",
            |s| s["state"] == "qr" && s["restarts"] == 1,
        )
        .await;
    assert_eq!(back["restarts"], 1);
    let ended = exited_rx.try_recv();
    assert!(
        matches!(ended, Ok(Ok(Some(libc::SIGKILL)))),
        "the crashed browser's group was killed before the relaunch: {ended:?}"
    );
    assert_ne!(browsers_on(&profile), vec![main]);
    stop_all(&t, &[(&user, 1)]).await;
}

// ---- 8. Orphan reaping by whole path components -----------------------------------------------

#[tokio::test]
async fn boot_reaping_spares_browsers_of_a_sibling_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let ours = tmp.path().join("sessions");
    let sibling = tmp.path().join("sessions-staging/u-slot1");
    std::fs::create_dir_all(&ours).unwrap();
    // A shell that stays itself (a lone `sleep` would be exec'd and lose the argument).
    let script = "while :; do sleep 1; done";
    let mut other = std::process::Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(format!("--user-data-dir={}", sibling.display()))
        .spawn()
        .unwrap();
    let mut mine = std::process::Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(format!(
            "--user-data-dir={}",
            ours.join("u-slot1").display()
        ))
        .spawn()
        .unwrap();
    // Both have exec'd (their command lines are theirs, not ours) before the boot reaping runs.
    let pids = [other.id(), mine.id()];
    wait_until(QUICK, || {
        pids.iter().all(|p| {
            procfs::cmdline(*p)
                .iter()
                .any(|a| a.starts_with(b"--user-data-dir="))
        })
    })
    .await
    .unwrap();
    let killed = wa_supervisor::browser::process::reap_orphans(&ours).await;
    assert_eq!(killed, 1);
    assert!(
        other.try_wait().unwrap().is_none(),
        "the sibling's process lives"
    );
    assert!(mine.wait().is_ok());
    other.kill().unwrap();
    other.wait().unwrap();
}

// ---- 9. failed means intent stopped ------------------------------------------------------------

#[actix_web::test]
async fn a_failed_session_is_not_restored_at_the_next_boot() {
    let t = spawn_app(slow(), &["--restart-backoff-ms", "1", "--max-crashes", "0"]).await;
    let user = uuid_like(0x90b);
    assert_eq!(t.start(&user, 1).await, 202);
    t.wait_state(&user, 1, "qr", LAUNCH).await;
    let profile = t.sessions_dir().join(format!("{user}-slot1"));
    // SAFETY: plain syscall on the browser under test.
    unsafe { libc::kill(browsers_on(&profile)[0] as i32, libc::SIGKILL) };
    t.wait_state(&user, 1, "failed", QUICK).await;
    let store = t.store().clone();
    let k = key(&user, 1);
    let row = async {
        loop {
            let row = store.load_session(&k).await.unwrap().unwrap();
            if row.state == SessionState::Failed {
                return row;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let row = tokio::time::timeout(QUICK, row).await.unwrap();
    assert_eq!(
        row.intent,
        Intent::Stopped,
        "failed means intent stopped: {row:?}"
    );
    t.assert_no_browsers_left().await;
}

// ---- 10. A QR code that expired is withdrawn at once -------------------------------------------

#[actix_web::test]
async fn an_expired_qr_is_withdrawn_from_status_and_events() {
    let t = spawn_app(
        StandInOptions {
            rotation: Duration::from_millis(1500),
            rotations: 1,
            ..Default::default()
        },
        &[],
    )
    .await;
    let user = uuid_like(0x90c);
    let ticket = t
        .post(&format!("/api/events/{user}/ticket"), SERVICE_TOKEN)
        .await;
    let mut stream = reqwest::Client::new()
        .get(t.url(ticket.json["url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(t.start(&user, 1).await, 202);
    // Collect events until a second, different payload shows up.
    let mut text = String::new();
    let mut payloads: Vec<Option<String>> = Vec::new();
    let deadline = tokio::time::Instant::now() + LAUNCH;
    while payloads
        .iter()
        .flatten()
        .collect::<std::collections::HashSet<_>>()
        .len()
        < 2
    {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .expect("events in time")
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        payloads = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str::<Value>(d).unwrap())
            .filter(|e| e["state"] == "qr" || e["qr"].is_null())
            .map(|e| e["qr"]["payload"].as_str().map(str::to_owned))
            .collect();
    }
    let first = payloads.iter().position(Option::is_some).unwrap();
    let second = payloads
        .iter()
        .rposition(|p| p.is_some() && *p != payloads[first])
        .unwrap();
    assert!(
        payloads[first + 1..second].iter().any(Option::is_none),
        "between the expired code and the next one, an event withdrew it: {text}"
    );
    let withdrawn: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter(|e| e["qr"].is_null() && e["state"] == "starting")
        .collect();
    assert!(!withdrawn.is_empty(), "{text}");
    stop_all(&t, &[(&user, 1)]).await;
}

// ---- 11. Boot order and the session cap at restore ----------------------------------------------

#[actix_web::test]
async fn boot_restores_up_to_max_sessions_and_counts_them() {
    let standin = StandIn::start(slow()).await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let users: Vec<String> = (0..3).map(|i| uuid_like(0x910 + i)).collect();
    {
        let store = wa_supervisor::store::Store::open(
            &wa_supervisor::store::DatabaseUrl::Sqlite(data.join("wa-supervisor.db")),
            10,
        )
        .unwrap();
        for user in &users {
            let now = wa_supervisor::store::now_ms();
            store
                .save_session(
                    wa_supervisor::store::SessionRow {
                        key: key(user, 1),
                        state: SessionState::Stopped,
                        intent: Intent::Running,
                        is_connected: false,
                        connected_number: None,
                        restarts: 0,
                        last_error: None,
                        created_ms: now,
                        updated_ms: now,
                    },
                    None,
                )
                .await
                .unwrap();
        }
    }
    let d = daemon::start(tmp.path(), &standin.url(), &["--max-sessions", "2"]).await;
    // A start right after boot already meets the restored sessions in the count.
    let (status, body) = d
        .call(
            "POST",
            &format!("/api/start/{}/1", uuid_like(0x913)),
            SERVICE_TOKEN,
        )
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "too_many_sessions");
    let mut sorted = users.clone();
    sorted.sort();
    for user in &sorted[..2] {
        d.wait_state(user, 1, LAUNCH, |s| s["state"] == "qr").await;
    }
    let left = d
        .wait_state(&sorted[2], 1, QUICK, |s| s["state"] == "stopped")
        .await;
    assert!(
        left["lastError"]
            .as_str()
            .unwrap_or_default()
            .contains("MAX_SESSIONS"),
        "the session not restored says why: {left}"
    );
    for user in &sorted[..2] {
        d.call("POST", &format!("/api/stop/{user}/1"), SERVICE_TOKEN)
            .await;
    }
}

// ---- 13. An unreachable page is reported within seconds -----------------------------------------

#[actix_web::test]
async fn an_unreachable_page_is_reported_with_its_network_error_and_retried() {
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{closed}/");
    let t = spawn_app(
        slow(),
        &["--whatsapp-url", &url, "--restart-backoff-ms", "200"],
    )
    .await;
    let user = uuid_like(0x914);
    let started = Instant::now();
    assert_eq!(t.start(&user, 1).await, 202);
    let s = t
        .wait_json(
            &format!("/api/status/{user}/1"),
            SERVICE_TOKEN,
            Duration::from_secs(15),
            "the network error",
            |s| {
                s["lastError"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("cannot load"))
            },
        )
        .await;
    assert_eq!(
        s["lastError"],
        format!("cannot load {url}: net::ERR_CONNECTION_REFUSED"),
        "{s}"
    );
    eprintln!("network error reported after {:?}", started.elapsed());
    // Retried with the crash backoff.
    t.wait_json(
        &format!("/api/status/{user}/1"),
        SERVICE_TOKEN,
        Duration::from_secs(15),
        "retries",
        |s| s["restarts"].as_u64() >= Some(2),
    )
    .await;
    stop_all(&t, &[(&user, 1)]).await;
}

// ---- 14. Readiness checks Chromium live ----------------------------------------------------------

#[actix_web::test]
async fn readiness_notices_chromium_going_away() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("chromium");
    std::fs::write(&fake, "#!/bin/sh\nexit 1\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let t = spawn_app(slow(), &["--chromium-path", fake.to_str().unwrap()]).await;
    let r = t.call("GET", "/readyz", None).await;
    assert_eq!(
        (r.status, &r.json["chromium"]),
        (200, &Value::from("ok")),
        "{r:?}"
    );
    std::fs::remove_file(&fake).unwrap();
    let r = t.call("GET", "/readyz", None).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.json["chromium"], "not found");
    assert_eq!(r.json["database"], "ok");
}

// ---- 15. The SSRF guard is not bypassed by a proxy from the environment ------------------------

/// A proxy named in the daemon's environment (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`) on an
/// allowed address: a user's webhook to a private address is still refused, and the proxy never
/// sees a connection (through it, the guard would have judged the proxy instead of the target).
#[actix_web::test]
async fn a_proxy_in_the_environment_does_not_carry_user_webhooks_past_the_guard() {
    // On 127.0.0.2: the only address per-user webhooks may reach here.
    let proxy = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let connections = connections.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = proxy.accept().await {
                connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(sock);
            }
        });
    }
    let standin = StandIn::start(slow()).await;
    let tmp = tempfile::tempdir().unwrap();
    let envs = [
        ("HTTPS_PROXY", proxy_url.as_str()),
        ("HTTP_PROXY", proxy_url.as_str()),
        ("ALL_PROXY", proxy_url.as_str()),
        ("https_proxy", proxy_url.as_str()),
        ("http_proxy", proxy_url.as_str()),
    ];
    let d = daemon::start_with(
        tmp.path(),
        &standin.url(),
        &[
            "--webhook-allow-http",
            "--webhook-allow-networks",
            "127.0.0.2/32",
            "--webhook-retry-schedule",
            "300ms,300ms",
        ],
        &envs,
        None,
    )
    .await;
    let user = uuid_like(0x915);
    let put = d
        .client
        .put(d.url(&format!("/api/webhooks/{user}")))
        .bearer_auth(SERVICE_TOKEN)
        .json(&serde_json::json!({"url": "http://localhost:9/hook"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let (status, _) = d
        .call("POST", &format!("/api/start/{user}/1"), SERVICE_TOKEN)
        .await;
    assert_eq!(status, 202);
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let (_, list) = d
            .call(
                "GET",
                &format!("/api/webhooks/{user}/deliveries"),
                SERVICE_TOKEN,
            )
            .await;
        let errors: Vec<String> = list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["lastError"].as_str().map(str::to_owned))
            .collect();
        if let Some(e) = errors.into_iter().next() {
            break e;
        }
        assert!(Instant::now() < deadline, "no delivery attempt: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(refused.contains("not a public address"), "{refused}");
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing went through the proxy"
    );
    d.call("POST", &format!("/api/stop/{user}/1"), SERVICE_TOKEN)
        .await;
}
