//! The browser engine (docs/browser-engines.md): the shell by default and `chromium` on request,
//! each named with its version wherever operators look; what a page sees of each; WhatsApp's
//! refusal reported within seconds; one profile for both engines; the memory bulkhead; and a
//! short set on `chromium` (QR, link, send, crash, restart without a scan) so both stay working.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::daemon;
use crate::support::harness::{
    eventually, spawn_app, uuid_like, TestApp, ADMIN_TOKEN, LAUNCH, SERVICE_TOKEN,
};
use crate::support::standin::{Refuse, StandIn, StandInOptions, REFUSAL};
use crate::support::wpp;

const QUICK: Duration = Duration::from_secs(10);

fn opts() -> StandInOptions {
    StandInOptions {
        rotation: Duration::from_secs(60),
        ..Default::default()
    }
}

/// `<binary> --version`'s number, as the daemon reads it.
fn version_of(binary: &str) -> String {
    let out = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned()
}

/// The browser pid of `user`'s slot 1, from `/actors`.
async fn browser_pid(t: &TestApp, user: &str) -> Option<u64> {
    actor(t, user).await["browserPid"].as_u64()
}

async fn actor(t: &TestApp, user: &str) -> Value {
    let r = t.get("/actors", ADMIN_TOKEN).await;
    r.json["actors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["userId"] == user)
        .cloned()
        .unwrap_or(Value::Null)
}

#[actix_web::test]
async fn the_shell_is_the_default_and_readyz_actors_and_metrics_name_it_and_the_wa_js_version() {
    let t = spawn_app(opts(), &[]).await;
    let version = version_of("/usr/lib/chromium/chromium-headless-shell");
    let want = json!({
        "engine": "shell",
        "path": "/usr/lib/chromium/chromium-headless-shell",
        "version": version,
    });
    let ready = t.call("GET", "/readyz", None).await;
    assert_eq!(
        (ready.status, &ready.json["browser"]),
        (200, &want),
        "{ready:?}"
    );
    // The stand-in WPP has no version banner: unknown until a page reports `WPP.version`.
    assert_eq!(ready.json["waJs"]["version"], "unknown");
    let actors = t.get("/actors", ADMIN_TOKEN).await;
    assert_eq!(actors.json["browser"], want);
    let text = t.text("/metrics", ADMIN_TOKEN).await;
    let line = format!("wa_browser_info{{engine=\"shell\",version=\"{version}\"}} 1");
    assert!(text.contains(&line), "{text}");

    let user = uuid_like(0x2001);
    assert_eq!(t.start(&user, 1).await, 202);
    t.wait_state(&user, 1, "qr", LAUNCH).await;
    let ready = t
        .wait_json(
            "/readyz",
            SERVICE_TOKEN,
            QUICK,
            "the page's WA-JS version",
            |r| r["waJs"]["version"] == wpp::VERSION,
        )
        .await;
    assert_eq!(ready["waJs"]["sha256"].as_str().map(str::len), Some(64));
    assert_eq!(actor(&t, &user).await["waJsVersion"], wpp::VERSION);
    t.stop(&user, 1).await;
    t.assert_no_browsers_left().await;
}

/// What WhatsApp Web's JavaScript sees of each engine, as the stand-in page reports it
/// (docs/browser-engines.md has the table). Neither says it is headless anywhere, neither
/// looks automated, both run service workers and WebAssembly; the rest differs as documented.
#[actix_web::test]
async fn what_the_page_sees_of_each_engine() {
    for (engine, chrome, notification, plugins) in [
        ("shell", "undefined", "denied", 0),
        ("chromium", "object", "default", 5),
    ] {
        let t = spawn_app(opts(), &["--browser", engine]).await;
        let user = uuid_like(0x2010);
        assert_eq!(t.start(&user, 1).await, 202);
        t.wait_state(&user, 1, "qr", LAUNCH).await;
        let caps = eventually(LAUNCH, "the page's report", || async {
            t.standin.capabilities().into_iter().next()
        })
        .await;
        let major = version_of("/usr/lib/chromium/chromium")
            .split('.')
            .next()
            .unwrap()
            .to_owned();
        let ua = caps["ua"].as_str().unwrap();
        assert!(!ua.contains("Headless"), "{engine}: {ua}");
        assert!(
            ua.contains(&format!(" Chrome/{major}.0.0.0 ")),
            "{engine}: {ua}"
        );
        assert_eq!(
            caps["brands"],
            json!([]),
            "{engine}: no client hint names HeadlessChrome"
        );
        assert_eq!(caps["webdriver"], false, "{engine}");
        assert_eq!(
            (&caps["hidden"], &caps["visibility"]),
            (&json!(false), &json!("visible")),
            "{engine}"
        );
        // Registered within seconds: chromiumoxide's worker attach used to leave it paused in
        // half the page loads (docs/browser-engines.md).
        assert_eq!(caps["serviceWorker"], true, "{engine}: {caps}");
        assert_eq!(caps["wasm"], true, "{engine}: {caps}");
        assert_eq!(caps["sharedWorker"], "function", "{engine}");
        assert_eq!(caps["webSocket"], "function", "{engine}");
        assert_eq!(caps["chrome"], chrome, "{engine}: window.chrome");
        assert_eq!(caps["notification"], notification, "{engine}");
        assert_eq!(caps["plugins"], plugins, "{engine}");
        assert_eq!(t.standin.refusals(), 0, "{engine}: the site took it");
        t.stop(&user, 1).await;
        t.assert_no_browsers_left().await;
    }
}

/// The stand-in refuses a browser that says it is headless (so every test above proves the
/// daemon's page does not): the shell left to itself gets the refusal page.
#[actix_web::test]
async fn the_stand_in_refuses_a_shell_that_says_it_is_headless() {
    let standin = StandIn::start(opts()).await;
    let profile = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new("/usr/lib/chromium/chromium-headless-shell")
        .args([
            "--no-sandbox",
            "--disable-gpu",
            &format!("--user-data-dir={}", profile.path().display()),
            "--dump-dom",
            &standin.url(),
        ])
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains(REFUSAL), "{dom}");
    assert_eq!(standin.refusals(), 1);
}

/// WhatsApp's "works with Google Chrome" page: reported within seconds, naming the engine and
/// the switch; no crash loop, no browser left; the intent is kept for the next boot.
#[actix_web::test]
async fn a_refused_browser_is_reported_within_seconds_naming_the_engine() {
    let t = spawn_app(
        StandInOptions {
            refuse: Refuse::Always,
            ..opts()
        },
        &[],
    )
    .await;
    let user = uuid_like(0x2020);
    let started = Instant::now();
    assert_eq!(t.start(&user, 1).await, 202);
    let s = t
        .wait_json(
            &format!("/api/status/{user}/1"),
            SERVICE_TOKEN,
            QUICK,
            "unsupported_browser",
            |s| {
                s["lastError"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("unsupported_browser: "))
            },
        )
        .await;
    eprintln!("refusal reported after {:?}", started.elapsed());
    let error = s["lastError"].as_str().unwrap();
    assert!(error.contains("chromium-headless-shell"), "{error}");
    assert!(error.contains(REFUSAL), "{error}");
    assert!(error.contains("BROWSER=chromium"), "{error}");
    assert_eq!(
        (&s["state"], &s["restarts"]),
        (&json!("stopped"), &json!(0))
    );
    t.assert_no_browsers_left().await;
    let row = t
        .store()
        .load_session(&crate::support::harness::key(&user, 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.intent, wa_supervisor::domain::Intent::Running);
}

/// A profile is a profile: linked under the shell, the session comes back linked under
/// `chromium` after a daemon restart, and back under the shell again — no new scan.
#[actix_web::test]
async fn a_session_linked_under_one_engine_restarts_linked_under_the_other() {
    let standin = StandIn::start(opts()).await;
    let tmp = tempfile::tempdir().unwrap();
    let (wpp_path, sha) = wpp::install(tmp.path());
    let wa_js = [
        "--wa-js-path",
        wpp_path.to_str().unwrap(),
        "--wa-js-sha256",
        &sha,
    ];
    let user = uuid_like(0x2030);
    let phone = "4915100020301";
    let boot = |engine: &'static str| {
        let args: Vec<&str> = wa_js.iter().copied().chain(["--browser", engine]).collect();
        let (dir, url) = (tmp.path().to_owned(), standin.url());
        async move { daemon::start(&dir, &url, &args).await }
    };

    let mut d = boot("shell").await;
    let (status, _) = d
        .call("POST", &format!("/api/start/{user}/1"), SERVICE_TOKEN)
        .await;
    assert_eq!(status, 202);
    let s = d.wait_state(&user, 1, LAUNCH, |s| s["state"] == "qr").await;
    standin
        .scan(s["qr"]["payload"].as_str().unwrap(), phone)
        .await
        .unwrap();
    d.wait_state(&user, 1, QUICK, |s| s["isConnected"] == true)
        .await;
    for engine in ["chromium", "shell"] {
        d.signal(libc::SIGTERM);
        assert_eq!(d.wait_exit(Duration::from_secs(30)).await.0, Some(0));
        d = boot(engine).await;
        let s = d
            .wait_state(&user, 1, LAUNCH, |s| s["isConnected"] == true)
            .await;
        assert_eq!(s["connectedNumber"], phone, "{engine}");
        let (_, ready) = d.call("GET", "/readyz", SERVICE_TOKEN).await;
        assert_eq!(ready["browser"]["engine"], engine);
        assert_eq!(standin.links(), 1, "{engine}: no new scan");
    }
    assert_eq!(standin.max_live_instances(), 1);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(30)).await.0, Some(0));
}

/// The bulkhead: a page whose heap grows past SESSION_MEMORY_MAX is recycled — closed,
/// relaunched on its profile, linked again without a scan — and counted; another user's
/// session keeps its browser.
#[actix_web::test]
async fn a_session_over_its_memory_is_recycled_and_another_user_s_is_untouched() {
    let t = spawn_app(
        opts(),
        &[
            "--session-memory-max",
            "256MiB",
            "--session-memory-check-secs",
            "1",
        ],
    )
    .await;
    let (a, b) = (uuid_like(0x2040), uuid_like(0x2041));
    let (phone_a, phone_b) = ("4915100020401", "4915100020411");
    for (user, phone) in [(&a, phone_a), (&b, phone_b)] {
        assert_eq!(t.start(user, 1).await, 202);
        t.scan(user, 1, phone).await;
    }
    let pid_a = browser_pid(&t, &a).await.unwrap();
    let pid_b = browser_pid(&t, &b).await.unwrap();
    // Both are measured, below the limit.
    let measured = eventually(QUICK, "memory figures", || async {
        let (ma, mb) = (actor(&t, &a).await, actor(&t, &b).await);
        (ma["memoryBytes"].is_u64() && mb["memoryBytes"].is_u64()).then_some((ma, mb))
    })
    .await;
    eprintln!(
        "idle: {} and {} MiB",
        measured.0["memoryBytes"].as_u64().unwrap() >> 20,
        measured.1["memoryBytes"].as_u64().unwrap() >> 20
    );

    t.standin.grow(phone_a, 320).unwrap();
    let recycled = eventually(Duration::from_secs(30), "a's recycle", || async {
        let info = actor(&t, &a).await;
        (info["recycles"] == 1 && info["state"] == "connected").then_some(info)
    })
    .await;
    assert_ne!(recycled["browserPid"].as_u64(), Some(pid_a));
    assert_eq!(
        (&recycled["restarts"], &recycled["lastError"]),
        (&json!(0), &Value::Null)
    );
    assert_eq!(recycled["connectedNumber"], phone_a);
    assert_eq!(t.standin.links(), 2, "no new scan");
    let events = t
        .store()
        .events(&crate::support::harness::key(&a, 1))
        .await
        .unwrap();
    assert!(
        events.iter().any(|e| e.kind == "recycled"
            && e.detail
                .as_deref()
                .is_some_and(|d| d.contains("SESSION_MEMORY_MAX"))),
        "{events:?}"
    );
    // The other user's session: same browser, never recycled.
    let other = actor(&t, &b).await;
    assert_eq!(
        (
            other["browserPid"].as_u64(),
            &other["recycles"],
            &other["state"]
        ),
        (Some(pid_b), &json!(0), &json!("connected"))
    );
    let metrics = t.text("/metrics", ADMIN_TOKEN).await;
    assert!(
        metrics.contains("wa_session_recycles_total{reason=\"memory\"} 1"),
        "{metrics}"
    );
    for user in [&a, &b] {
        t.stop(user, 1).await;
    }
    t.assert_no_browsers_left().await;
}

/// The short set on `chromium`: QR, link, send, a browser crash relaunched linked, a restart
/// without a scan.
#[actix_web::test]
async fn chromium_shows_a_qr_links_sends_survives_a_crash_and_restarts_without_a_scan() {
    let t = spawn_app(opts(), &["--browser", "chromium"]).await;
    let ready = t.call("GET", "/readyz", None).await;
    assert_eq!(ready.json["browser"]["engine"], "chromium");
    let user = uuid_like(0x2050);
    let phone = "4915100020501";
    t.link(&user, 1, phone).await;

    let sent = t
        .json(
            "POST",
            &format!("/api/messages/{user}/1"),
            json!({"to": "4915199990000", "text": "pedido confirmado"}),
        )
        .await;
    assert_eq!(sent.status, 201, "{sent:?}");
    assert!(t
        .standin
        .sent()
        .iter()
        .any(|m| m.body == "pedido confirmado" && m.to == "4915199990000@c.us"));

    let pid = browser_pid(&t, &user).await.unwrap();
    // SAFETY: plain syscall on this test's browser.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let s = t
        .wait_json(
            &format!("/api/status/{user}/1"),
            SERVICE_TOKEN,
            LAUNCH,
            "relaunched linked",
            |s| s["state"] == "connected" && s["restarts"] == 1,
        )
        .await;
    assert_eq!(s["connectedNumber"], phone);

    assert_eq!(t.stop(&user, 1).await, 200);
    assert_eq!(t.start(&user, 1).await, 202);
    t.wait_state(&user, 1, "connected", LAUNCH).await;
    assert_eq!(
        t.standin.links(),
        1,
        "no new scan after the crash or the restart"
    );
    t.stop(&user, 1).await;
    t.assert_no_browsers_left().await;
}

/// The shell has no process singleton of its own (no `SingletonLock`): the daemon's lock on the
/// profile is what keeps a second browser off it. Held by someone else, the start fails and no
/// browser runs on the profile; released, the session starts.
#[actix_web::test]
async fn the_daemon_s_profile_lock_keeps_a_second_browser_off_a_shell_profile() {
    let t = spawn_app(opts(), &[]).await;
    let user = uuid_like(0x2060);
    let profile = t.sessions_dir().join(format!("{user}-slot1"));
    let held = wa_supervisor::browser::FolderLock::acquire(&profile).unwrap();
    assert_eq!(t.start(&user, 1).await, 202);
    let s = t
        .wait_json(
            &format!("/api/status/{user}/1"),
            SERVICE_TOKEN,
            QUICK,
            "failed",
            |s| s["state"] == "failed",
        )
        .await;
    assert!(
        s["lastError"]
            .as_str()
            .unwrap()
            .contains("in use by another process"),
        "{s}"
    );
    assert!(crate::support::harness::browsers_on(&profile).is_empty());
    drop(held);
    assert_eq!(t.start(&user, 1).await, 202);
    t.wait_state(&user, 1, "qr", LAUNCH).await;
    assert!(
        !profile.join("SingletonLock").exists(),
        "the shell takes no lock of its own"
    );
    t.stop(&user, 1).await;
    t.assert_no_browsers_left().await;
}
