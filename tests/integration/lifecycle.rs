//! Supervision and lifecycle with real processes: kill -9 a real Chromium, SIGTERM and
//! SIGKILL a real daemon binary, boot restores, locks, limits.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use crate::support::daemon;
use crate::support::harness::{
    browsers_on, spawn_app, uuid_like, TestApp, ADMIN_TOKEN, SERVICE_TOKEN,
};
use crate::support::standin::{StandIn, StandInOptions};
use serde_json::Value;

const LAUNCH: Duration = Duration::from_secs(30);
const QUICK: Duration = Duration::from_secs(5);

fn opts() -> StandInOptions {
    StandInOptions {
        rotation: Duration::from_secs(20),
        rotations: 6,
        ..Default::default()
    }
}

async fn actor(t: &TestApp, user: &str, slot: u16) -> Value {
    let r = t.get("/actors", ADMIN_TOKEN).await;
    let all: HashMap<String, Value> = r.json["actors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["key"].as_str().unwrap().to_owned(), a.clone()))
        .collect();
    all[&format!("{user}:{slot}")].clone()
}

/// Starts `user:slot`, scans its QR with `phone`, waits until connected.
async fn link(t: &TestApp, user: &str, slot: u16, phone: &str) {
    assert_eq!(
        t.post(&format!("/api/start/{user}/{slot}"), SERVICE_TOKEN)
            .await
            .status,
        202
    );
    let s = t
        .wait_json(
            &format!("/api/status/{user}/{slot}"),
            SERVICE_TOKEN,
            LAUNCH,
            "qr",
            |s| s["state"] == "qr",
        )
        .await;
    t.standin
        .scan(s["qr"]["payload"].as_str().unwrap(), phone)
        .await
        .unwrap();
    t.wait_json(
        &format!("/api/status/{user}/{slot}"),
        SERVICE_TOKEN,
        QUICK,
        "connected",
        |s| s["isConnected"] == true,
    )
    .await;
}

fn kill9(pid: u64) {
    // SAFETY: plain syscall on a pid the test just read from /actors.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

#[actix_web::test]
async fn a_crashed_browser_comes_back_connected_and_other_users_never_notice() {
    let t = spawn_app(opts(), &["--restart-backoff-ms", "300"]).await;
    let (a, b) = (uuid_like(0x51), uuid_like(0x52));
    link(&t, &a, 1, "4915100000051").await;
    link(&t, &b, 1, "4915100000052").await;
    let b_before = actor(&t, &b, 1).await;
    let row_b = t
        .store()
        .load_session(&crate::support::harness::key(&b, 1))
        .await
        .unwrap();
    // The stand-in keeps the login in IndexedDB, which commits promptly; give it a moment anyway.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let issued = t.standin.issued_payloads().len();

    let mut times = Vec::new();
    for round in 1..=3u64 {
        let pid = actor(&t, &a, 1).await["browserPid"].as_u64().unwrap();
        let killed = Instant::now();
        kill9(pid);
        let s = t
            .wait_json(
                &format!("/api/status/{a}/1"),
                SERVICE_TOKEN,
                QUICK,
                "restarting",
                |s| s["state"] == "restarting" || s["restarts"].as_u64() == Some(round),
            )
            .await;
        assert_eq!(s["restarts"].as_u64(), Some(round));
        assert!(
            s["lastError"]
                .as_str()
                .unwrap()
                .contains("exited unexpectedly"),
            "{s}"
        );
        let back = t
            .wait_json(
                &format!("/api/status/{a}/1"),
                SERVICE_TOKEN,
                LAUNCH,
                "connected again",
                |s| s["isConnected"] == true,
            )
            .await;
        times.push(killed.elapsed());
        assert_eq!(back["connectedNumber"], "4915100000051");
        let now = actor(&t, &a, 1).await;
        assert_ne!(now["browserPid"].as_u64(), Some(pid), "a new browser");
        assert_eq!(now["restarts"].as_u64(), Some(round));
    }
    eprintln!("crash-to-connected: {times:?}");
    assert_eq!(
        t.standin.issued_payloads().len(),
        issued,
        "no new QR was needed"
    );

    // B never noticed: same browser, same state, same row.
    let b_after = actor(&t, &b, 1).await;
    assert_eq!(b_after["browserPid"], b_before["browserPid"]);
    assert_eq!(b_after["state"], "connected");
    assert_eq!(b_after["restarts"], 0);
    let row_b_after = t
        .store()
        .load_session(&crate::support::harness::key(&b, 1))
        .await
        .unwrap();
    assert_eq!(row_b_after, row_b);

    for u in [&a, &b] {
        t.post(&format!("/api/stop/{u}/1"), SERVICE_TOKEN).await;
    }
    t.assert_no_browsers_left().await;
}

#[actix_web::test]
async fn too_many_crashes_fail_the_session_until_an_explicit_start() {
    let t = spawn_app(
        opts(),
        &["--restart-backoff-ms", "100", "--max-crashes", "2"],
    )
    .await;
    let a = uuid_like(0x53);
    assert_eq!(
        t.post(&format!("/api/start/{a}/1"), SERVICE_TOKEN)
            .await
            .status,
        202
    );
    for round in 1..=3u64 {
        t.wait_json(
            &format!("/api/status/{a}/1"),
            SERVICE_TOKEN,
            LAUNCH,
            "qr",
            |s| s["state"] == "qr",
        )
        .await;
        let pid = actor(&t, &a, 1).await["browserPid"].as_u64().unwrap();
        kill9(pid);
        t.wait_json(
            &format!("/api/status/{a}/1"),
            SERVICE_TOKEN,
            QUICK,
            "counted",
            |s| s["restarts"].as_u64() == Some(round),
        )
        .await;
    }
    let failed = t
        .wait_json(
            &format!("/api/status/{a}/1"),
            SERVICE_TOKEN,
            QUICK,
            "failed",
            |s| s["state"] == "failed",
        )
        .await;
    assert!(
        failed["lastError"]
            .as_str()
            .unwrap()
            .starts_with("gave up after 3 crashes"),
        "{failed}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        browsers_on(&t.sessions_dir().join(format!("{a}-slot1"))).is_empty(),
        "no more automatic restarts"
    );
    assert_eq!(actor(&t, &a, 1).await["state"], "failed");

    // An explicit start is a fresh chance.
    assert_eq!(
        t.post(&format!("/api/start/{a}/1"), SERVICE_TOKEN)
            .await
            .status,
        202
    );
    let s = t
        .wait_json(
            &format!("/api/status/{a}/1"),
            SERVICE_TOKEN,
            LAUNCH,
            "qr",
            |s| s["state"] == "qr",
        )
        .await;
    assert_eq!(s["lastError"], Value::Null);
    t.post(&format!("/api/stop/{a}/1"), SERVICE_TOKEN).await;
    t.assert_no_browsers_left().await;
}

#[actix_web::test]
async fn limits_max_sessions_start_rate_and_qr_timeout() {
    let t = spawn_app(
        opts(),
        &[
            "--max-sessions",
            "2",
            "--start-burst",
            "3",
            "--starts-per-minute",
            "1",
            "--qr-timeout-secs",
            "2",
        ],
    )
    .await;
    let (a, b) = (uuid_like(0x54), uuid_like(0x55));
    assert_eq!(
        t.post(&format!("/api/start/{a}/1"), SERVICE_TOKEN)
            .await
            .status,
        202
    );
    assert_eq!(
        t.post(&format!("/api/start/{a}/2"), SERVICE_TOKEN)
            .await
            .status,
        202
    );
    let over = t.post(&format!("/api/start/{b}/1"), SERVICE_TOKEN).await;
    assert_eq!(
        (over.status, over.json["error"].as_str()),
        (429, Some("too_many_sessions"))
    );
    assert!(over.headers.contains_key("retry-after"));
    assert!(
        !t.sessions_dir().join(format!("{b}-slot1")).exists(),
        "refused: nothing created"
    );
    // A start of a running session is not a new browser: allowed at the limit.
    assert_eq!(
        t.post(&format!("/api/start/{a}/1"), SERVICE_TOKEN)
            .await
            .status,
        202
    );

    // Unscanned QR codes time out: browser closed, stopped, lastError qr_timeout.
    for slot in [1, 2] {
        let s = t
            .wait_json(
                &format!("/api/status/{a}/{slot}"),
                SERVICE_TOKEN,
                LAUNCH,
                "qr timeout",
                |s| s["state"] == "stopped",
            )
            .await;
        assert_eq!(s["lastError"], "qr_timeout");
    }
    t.assert_no_browsers_left().await;

    // The per-user bucket (burst 3, 1 per minute): a has used 2 launches, one more is allowed.
    assert_eq!(
        t.post(&format!("/api/start/{a}/3"), SERVICE_TOKEN)
            .await
            .status,
        202
    );
    let limited = t.post(&format!("/api/start/{a}/4"), SERVICE_TOKEN).await;
    assert_eq!(
        (limited.status, limited.json["error"].as_str()),
        (429, Some("rate_limited"))
    );
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Another user has their own bucket.
    assert_eq!(
        t.post(&format!("/api/start/{b}/1"), SERVICE_TOKEN)
            .await
            .status,
        202
    );
    for (u, s) in [(&a, 3), (&b, 1)] {
        t.post(&format!("/api/stop/{u}/{s}"), SERVICE_TOKEN).await;
    }
    t.assert_no_browsers_left().await;
}

#[actix_web::test]
async fn stale_chromium_locks_are_cleared_only_when_their_owner_is_provably_gone() {
    let t = spawn_app(opts(), &[]).await;
    let host = wa_supervisor::procfs::hostname();
    let (a, b) = (uuid_like(0x56), uuid_like(0x57));
    let (pa, pb) = (
        t.sessions_dir().join(format!("{a}-slot1")),
        t.sessions_dir().join(format!("{b}-slot1")),
    );
    for dir in [&pa, &pb] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("SingletonCookie-target"), "x").unwrap();
    }
    // A dead pid on this host (pid_max is far below this) and a live-looking lock of another host.
    std::os::unix::fs::symlink(format!("{}-4194300", host.trim()), pa.join("SingletonLock"))
        .unwrap();
    std::os::unix::fs::symlink("some-other-host-123", pb.join("SingletonLock")).unwrap();

    assert_eq!(
        t.post(&format!("/api/start/{a}/1"), SERVICE_TOKEN)
            .await
            .status,
        202
    );
    t.wait_json(
        &format!("/api/status/{a}/1"),
        SERVICE_TOKEN,
        LAUNCH,
        "qr",
        |s| s["state"] == "qr",
    )
    .await;
    // Removed as stale; `chromium` takes its own lock, the shell keeps none
    // (docs/browser-engines.md): either way the stale one is gone.
    if let Ok(lock) = std::fs::read_link(pa.join("SingletonLock")) {
        assert!(
            !lock.to_str().unwrap().ends_with("-4194300"),
            "the stale lock was replaced by the live browser's"
        );
    }

    assert_eq!(
        t.post(&format!("/api/start/{b}/1"), SERVICE_TOKEN)
            .await
            .status,
        202
    );
    let s = t
        .wait_json(
            &format!("/api/status/{b}/1"),
            SERVICE_TOKEN,
            QUICK,
            "failed",
            |s| s["state"] == "failed",
        )
        .await;
    assert!(
        s["lastError"].as_str().unwrap().contains("some-other-host"),
        "{s}"
    );
    assert_eq!(
        std::fs::read_link(pb.join("SingletonLock"))
            .unwrap()
            .to_str(),
        Some("some-other-host-123")
    );
    assert!(browsers_on(&pb).is_empty());
    t.post(&format!("/api/stop/{a}/1"), SERVICE_TOKEN).await;
    t.assert_no_browsers_left().await;
}

#[actix_web::test]
async fn sigterm_closes_every_browser_keeps_intent_and_the_next_boot_restores_without_a_scan() {
    let standin = StandIn::start(opts()).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut d = daemon::start(tmp.path(), &standin.url(), &["--launch-concurrency", "2"]).await;
    let users: Vec<String> = (0..5).map(|i| uuid_like(0x60 + i)).collect();
    // 10 sessions: 5 users × 2 slots, all linked.
    for (i, u) in users.iter().enumerate() {
        for slot in 1..=2u16 {
            d.link(&standin, u, slot, &format!("49151000006{i}{slot}"))
                .await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let issued = standin.issued_payloads().len();

    d.signal(libc::SIGTERM);
    let (code, took) = d.wait_exit(Duration::from_secs(30)).await;
    eprintln!("shutdown of 10 sessions: {took:?}");
    assert_eq!(code, Some(0), "{}", d.log_text());
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(
        crate::support::harness::pids_on_root(&d.sessions()).is_empty(),
        "no browser outlives the daemon"
    );
    // Each profile was closed cleanly: Chromium removed its own lock.
    for u in &users {
        assert!(!d
            .sessions()
            .join(format!("{u}-slot1/SingletonLock"))
            .exists());
    }

    // Rows: not connected, numbers and intent kept.
    let store = wa_supervisor::store::Store::open(
        &wa_supervisor::store::DatabaseUrl::Sqlite(tmp.path().join("data/wa-supervisor.db")),
        10,
    )
    .unwrap();
    let rows = store.list_sessions(None).await.unwrap();
    assert_eq!(rows.len(), 10);
    for r in &rows {
        assert!(!r.is_connected, "{r:?}");
        assert!(r.connected_number.is_some(), "{r:?}");
        assert_eq!(r.intent, wa_supervisor::domain::Intent::Running);
        assert_eq!(r.state, wa_supervisor::domain::SessionState::Stopped);
    }
    drop(store);

    // Boot again: all 10 come back connected without a scan, at most 2 launching at once.
    let started = Instant::now();
    let d2 = daemon::start(tmp.path(), &standin.url(), &["--launch-concurrency", "2"]).await;
    let mut most_in_flight = 0;
    loop {
        let (_, info) = d2.call("GET", "/actors", ADMIN_TOKEN).await;
        most_in_flight = most_in_flight.max(info["launchesInFlight"].as_u64().unwrap_or(0));
        let connected = info["actors"].as_array().map_or(0, |a| {
            a.iter().filter(|x| x["state"] == "connected").count()
        });
        if connected == 10 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "restore took too long\n{}",
            d2.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "restore of 10 sessions at concurrency 2: {:?}",
        started.elapsed()
    );
    assert!(most_in_flight <= 2, "{most_in_flight} launches at once");
    assert_eq!(
        standin.issued_payloads().len(),
        issued,
        "restored without a new QR"
    );
    let s = d2
        .wait_state(&users[0], 1, QUICK, |s| s["isConnected"] == true)
        .await;
    assert_eq!(s["connectedNumber"], "4915100000601");
    drop(d2); // kill_on_drop: SIGKILL; browsers follow by the parent-death signal
}

#[actix_web::test]
async fn sigkill_leaves_no_browser_and_the_next_boot_reaps_strays_and_refuses_a_second_daemon() {
    let standin = StandIn::start(opts()).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut d = daemon::start(tmp.path(), &standin.url(), &[]).await;
    let (a, b) = (uuid_like(0x70), uuid_like(0x71));
    d.link(&standin, &a, 1, "4915100000070").await;
    let (status, _) = d
        .call("POST", &format!("/api/start/{b}/1"), SERVICE_TOKEN)
        .await;
    assert_eq!(status, 202);
    d.wait_state(&b, 1, LAUNCH, |s| s["state"] == "qr").await;

    // A second daemon on the same SESSIONS_DIR is refused with code 2 and a clear message.
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_wa-supervisor"))
        .args(["--bind-addr", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("data2"))
        .arg("--sessions-dir")
        .arg(d.sessions())
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(2));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("another wa-supervisor already runs on SESSIONS_DIR"),
        "{err}"
    );
    assert!(err.contains(&format!("pid {}", d.pid())), "{err}");

    assert!(!crate::support::harness::pids_on_root(&d.sessions()).is_empty());
    d.signal(libc::SIGKILL);
    d.wait_exit(QUICK).await;
    let gone = Instant::now();
    while !crate::support::harness::pids_on_root(&d.sessions()).is_empty() {
        assert!(
            gone.elapsed() < Duration::from_secs(5),
            "browsers outlived a SIGKILLed daemon"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "browsers gone {:?} after the daemon's SIGKILL",
        gone.elapsed()
    );

    // A stray Chromium on one of our profiles (e.g. started by hand) is killed at boot.
    let stray_profile = d.sessions().join(format!("{a}-slot1"));
    let mut stray = std::process::Command::new("/usr/lib/chromium/chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
        ])
        .arg(format!("--user-data-dir={}", stray_profile.display()))
        .arg("about:blank")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let since = Instant::now();
    while browsers_on(&stray_profile).is_empty() {
        assert!(since.elapsed() < QUICK);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let d2 = daemon::start(tmp.path(), &standin.url(), &[]).await;
    assert!(
        stray.try_wait().unwrap().is_some() || {
            std::thread::sleep(Duration::from_millis(200));
            stray.try_wait().unwrap().is_some()
        },
        "the stray browser was killed at boot"
    );
    assert!(
        d2.log_text().contains("left running on a profile"),
        "{}",
        d2.log_text()
    );
    // A was connected when the daemon died: restored, connected without a scan.
    let s = d2
        .wait_state(&a, 1, LAUNCH, |s| s["isConnected"] == true)
        .await;
    assert_eq!(s["connectedNumber"], "4915100000070");
    drop(d2);
}

#[actix_web::test]
async fn legacy_profiles_are_imported_idempotently_and_restored_without_a_scan() {
    let standin = StandIn::start(opts()).await;
    let tmp = tempfile::tempdir().unwrap();
    let user = uuid_like(0x80);
    // A profile linked by "the old backend": linked once through a daemon whose database is then
    // thrown away, so only the folder remains, as after the PM2 era.
    let mut d = daemon::start(tmp.path(), &standin.url(), &[]).await;
    d.link(&standin, &user, 1, "4915100000080").await;
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(30)).await.0, Some(0));
    std::fs::remove_file(tmp.path().join("data/wa-supervisor.db")).unwrap();
    let sessions = tmp.path().join("sessions");
    std::fs::write(sessions.join("notes.txt"), "not a profile").unwrap();
    std::fs::create_dir(sessions.join("bad name")).unwrap();
    std::fs::create_dir(sessions.join(format!("{user}-slot11"))).unwrap();
    let issued = standin.issued_payloads().len();

    let import = |dry: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wa-supervisor"));
        cmd.arg("--data-dir")
            .arg(tmp.path().join("data"))
            .arg("--sessions-dir")
            .arg(&sessions)
            .arg("import-sessions");
        if dry {
            cmd.arg("--dry-run");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let dry = import(true);
    assert!(dry.contains(&format!("would adopt {user}:1")), "{dry}");
    assert!(dry.contains("skipped notes.txt: not a folder"), "{dry}");
    assert!(dry.contains("skipped bad name: name is not"), "{dry}");
    assert!(
        dry.contains(&format!("skipped {user}-slot11: slot 11 is out of range")),
        "{dry}"
    );
    assert!(
        dry.contains("1 would adopt, 0 already present, 3 skipped (dry run: nothing written)"),
        "{dry}"
    );
    let real = import(false);
    assert!(
        real.contains("1 adopted, 0 already present, 3 skipped"),
        "{real}"
    );
    let again = import(false);
    assert!(
        again.contains("0 adopted, 1 already present, 3 skipped"),
        "{again}"
    );

    // The next boot restores the adopted profile: connected, no new QR.
    let d2 = daemon::start(tmp.path(), &standin.url(), &[]).await;
    let s = d2
        .wait_state(&user, 1, LAUNCH, |s| s["isConnected"] == true)
        .await;
    assert_eq!(s["connectedNumber"], "4915100000080");
    assert_eq!(standin.issued_payloads().len(), issued);
    assert!(
        sessions.join("bad name").is_dir(),
        "skipped folders are left alone"
    );
    drop(d2);
}

#[actix_web::test]
async fn simultaneous_starts_never_exceed_max_sessions() {
    let t = spawn_app(opts(), &["--max-sessions", "2"]).await;
    let users: Vec<String> = (0..5).map(|i| uuid_like(0x90 + i)).collect();
    let paths: Vec<String> = users.iter().map(|u| format!("/api/start/{u}/1")).collect();
    let replies =
        futures_util::future::join_all(paths.iter().map(|p| t.post(p, SERVICE_TOKEN))).await;
    let accepted = replies.iter().filter(|r| r.status == 202).count();
    let refused = replies
        .iter()
        .filter(|r| r.status == 429 && r.json["error"] == "too_many_sessions")
        .count();
    assert_eq!((accepted, refused), (2, 3), "{replies:?}");
    for u in &users {
        t.post(&format!("/api/stop/{u}/1"), SERVICE_TOKEN).await;
    }
    t.assert_no_browsers_left().await;
}
