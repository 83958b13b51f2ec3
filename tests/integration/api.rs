//! The HTTP API end to end: real app on port 0, real Chromium, the stand-in WhatsApp page.
//! Includes the seed's acceptance test: two users press "generate QR" at the same moment.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::harness::{spawn_app, uuid_like, TestApp, ADMIN_TOKEN, SERVICE_TOKEN};
use crate::support::jwt::{TestIssuer, TokenOpts};
use crate::support::standin::StandInOptions;
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

/// key "user:slot" → actor entry of `/actors`.
async fn actors(t: &TestApp) -> HashMap<String, Value> {
    let r = t.get("/actors", ADMIN_TOKEN).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.json["actors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["key"].as_str().unwrap().to_owned(), a.clone()))
        .collect()
}

async fn row(t: &TestApp, user: &str, slot: u16) -> Option<wa_supervisor::store::SessionRow> {
    let k = crate::support::harness::key(user, slot);
    t.store().load_session(&k).await.unwrap()
}

/// Waits until the stored row says `pred` (rows are written right after each transition).
async fn wait_row(
    t: &TestApp,
    user: &str,
    slot: u16,
    pred: impl Fn(&wa_supervisor::store::SessionRow) -> bool,
) {
    for _ in 0..250 {
        if row(t, user, slot).await.is_some_and(|r| pred(&r)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "row {user}:{slot} never matched; last {:?}",
        row(t, user, slot).await
    );
}

#[actix_web::test]
async fn two_users_generate_qr_at_the_same_moment_and_never_touch_each_other() {
    let t = spawn_app(opts(), &[]).await;
    let (a, b) = (uuid_like(0xa), uuid_like(0xb));
    let (path_a, path_b) = (format!("/api/start/{a}/1"), format!("/api/start/{b}/1"));
    let (start_a, start_b) = tokio::join!(
        t.post(&path_a, SERVICE_TOKEN),
        t.post(&path_b, SERVICE_TOKEN)
    );
    assert_eq!(start_a.status, 202, "{start_a:?}");
    assert_eq!(start_b.status, 202, "{start_b:?}");
    assert_eq!(start_a.json["userId"], a.as_str());
    assert_eq!(start_a.json["slot"], 1);

    let is_qr = |s: &Value| s["state"] == "qr";
    let qa = t
        .wait_json(
            &format!("/api/status/{a}/1"),
            SERVICE_TOKEN,
            LAUNCH,
            "A qr",
            is_qr,
        )
        .await;
    let qb = t
        .wait_json(
            &format!("/api/status/{b}/1"),
            SERVICE_TOKEN,
            LAUNCH,
            "B qr",
            is_qr,
        )
        .await;
    let (pa, pb) = (
        qa["qr"]["payload"].as_str().unwrap(),
        qb["qr"]["payload"].as_str().unwrap(),
    );
    assert_ne!(pa, pb, "distinct QR codes");
    assert!(qa["qr"]["dataUrl"]
        .as_str()
        .unwrap()
        .starts_with("data:image/png;base64,"));

    // Distinct browsers on distinct profile folders <userId>-slot1.
    let before = actors(&t).await;
    let (aa, ab) = (&before[&format!("{a}:1")], &before[&format!("{b}:1")]);
    let (pid_a, pid_b) = (
        aa["browserPid"].as_u64().unwrap(),
        ab["browserPid"].as_u64().unwrap(),
    );
    assert_ne!(pid_a, pid_b);
    let root = t.sessions_dir();
    assert_eq!(
        aa["profilePath"],
        root.join(format!("{a}-slot1")).to_str().unwrap()
    );
    assert_eq!(
        ab["profilePath"],
        root.join(format!("{b}-slot1")).to_str().unwrap()
    );
    assert!(root.join(format!("{a}-slot1")).is_dir() && root.join(format!("{b}-slot1")).is_dir());

    // The PNG endpoint serves the same payload A's page shows.
    let png = reqwest::Client::new()
        .get(t.url(&format!("/api/qr/{a}/1")))
        .bearer_auth(SERVICE_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(png.headers()["content-type"], "image/png");
    let json = t
        .get(&format!("/api/qr/{a}/1?format=json"), SERVICE_TOKEN)
        .await;
    assert_eq!(json.json["payload"], pa);

    // Each phone scans its own code.
    t.standin.scan(pa, "4915100000001").await.unwrap();
    t.standin.scan(pb, "4915100000002").await.unwrap();
    let on = |s: &Value| s["isConnected"] == true;
    let sa = t
        .wait_json(
            &format!("/api/status/{a}/1"),
            SERVICE_TOKEN,
            QUICK,
            "A on",
            on,
        )
        .await;
    let sb = t
        .wait_json(
            &format!("/api/status/{b}/1"),
            SERVICE_TOKEN,
            QUICK,
            "B on",
            on,
        )
        .await;
    assert_eq!(sa["connectedNumber"], "4915100000001");
    assert_eq!(sb["connectedNumber"], "4915100000002");

    // Each user sees only their own sessions.
    let list_a = t.get(&format!("/api/status/{a}"), SERVICE_TOKEN).await.json;
    assert_eq!(list_a["userId"], a.as_str());
    let sessions = list_a["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["connectedNumber"], "4915100000001");
    wait_row(&t, &a, 1, |r| {
        r.is_connected && r.connected_number.as_deref() == Some("4915100000001")
    })
    .await;
    wait_row(&t, &b, 1, |r| {
        r.is_connected && r.connected_number.as_deref() == Some("4915100000002")
    })
    .await;
    let row_b = row(&t, &b, 1).await.unwrap();

    // Whatever A does next never changes B's browser, state or row.
    let b_unchanged = |label: &'static str| {
        let t = &t;
        let b = b.clone();
        let row_b = row_b.clone();
        async move {
            let now = actors(t).await;
            assert_eq!(
                now[&format!("{b}:1")]["browserPid"].as_u64(),
                Some(pid_b),
                "{label}: B's pid"
            );
            let sb = t
                .get(&format!("/api/status/{b}/1"), SERVICE_TOKEN)
                .await
                .json;
            assert_eq!(sb["state"], "connected", "{label}: B's state");
            assert_eq!(sb["connectedNumber"], "4915100000002", "{label}");
            assert_eq!(row(t, &b, 1).await.unwrap(), row_b, "{label}: B's row");
        }
    };
    assert_eq!(
        t.post(&format!("/api/start/{a}/2"), SERVICE_TOKEN)
            .await
            .status,
        202
    );
    t.wait_json(
        &format!("/api/status/{a}/2"),
        SERVICE_TOKEN,
        LAUNCH,
        "A2 qr",
        is_qr,
    )
    .await;
    b_unchanged("A starts slot 2").await;
    let again = t.post(&format!("/api/start/{a}/1"), SERVICE_TOKEN).await;
    assert_eq!(
        (again.status, again.json["state"].as_str()),
        (202, Some("connected"))
    );
    assert_eq!(
        actors(&t).await[&format!("{a}:1")]["browserPid"].as_u64(),
        Some(pid_a),
        "idempotent start"
    );
    b_unchanged("A presses start again").await;
    let stopped = t.post(&format!("/api/stop/{a}/1"), SERVICE_TOKEN).await;
    assert_eq!(
        (stopped.status, stopped.json["state"].as_str()),
        (200, Some("stopped"))
    );
    assert_eq!(
        stopped.json["connectedNumber"], "4915100000001",
        "stop keeps the number"
    );
    b_unchanged("A stops slot 1").await;
    let out = t.post(&format!("/api/logout/{a}/2"), SERVICE_TOKEN).await;
    assert_eq!(out.status, 200);
    assert!(!root.join(format!("{a}-slot2")).exists());
    b_unchanged("A logs out slot 2").await;
    let out = t.post(&format!("/api/logout/{a}/1"), SERVICE_TOKEN).await;
    assert_eq!(out.json["connectedNumber"], Value::Null);
    b_unchanged("A logs out slot 1").await;
    wait_row(&t, &a, 1, |r| {
        !r.is_connected && r.connected_number.is_none()
    })
    .await;

    t.post(&format!("/api/stop/{b}/1"), SERVICE_TOKEN).await;
    t.assert_no_browsers_left().await;
}

#[actix_web::test]
async fn events_stream_carries_only_that_users_sessions() {
    let t = spawn_app(opts(), &[]).await;
    let (a, b) = (uuid_like(0xc), uuid_like(0xd));
    let ticket = t
        .post(&format!("/api/events/{a}/ticket"), SERVICE_TOKEN)
        .await;
    assert_eq!(ticket.status, 200, "{ticket:?}");
    let url = ticket.json["url"].as_str().unwrap().to_owned();
    assert!(!url.contains(SERVICE_TOKEN));
    let mut stream = reqwest::Client::new()
        .get(t.url(&url))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    // A ticket is single-use.
    assert_eq!(t.call("GET", &url, None).await.status, 401);

    t.post(&format!("/api/start/{b}/1"), SERVICE_TOKEN).await;
    t.post(&format!("/api/start/{a}/1"), SERVICE_TOKEN).await;
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + LAUNCH;
    while !text.contains("\"state\":\"qr\"") {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .expect("qr event in time");
        text.push_str(std::str::from_utf8(&chunk.unwrap().unwrap()).unwrap());
    }
    // B's session reached qr as well before we stop: make sure its events had their chance.
    t.wait_json(
        &format!("/api/status/{b}/1"),
        SERVICE_TOKEN,
        LAUNCH,
        "B qr",
        |s| s["state"] == "qr",
    )
    .await;
    t.post(&format!("/api/stop/{a}/1"), SERVICE_TOKEN).await;
    while !text.contains("\"state\":\"stopped\"") {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .expect("stopped event");
        text.push_str(std::str::from_utf8(&chunk.unwrap().unwrap()).unwrap());
    }
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(events.len() >= 3, "{text}");
    assert!(
        events.iter().all(|e| e["userId"] == a.as_str()),
        "only A's events: {text}"
    );
    assert!(!text.contains(&b));
    t.post(&format!("/api/stop/{b}/1"), SERVICE_TOKEN).await;
    t.assert_no_browsers_left().await;
}

#[actix_web::test]
async fn hostile_ids_and_slots_are_refused_on_every_route_without_side_effects() {
    let t = spawn_app(opts(), &[]).await;
    let user_routes = [
        ("GET", "/api/status/{u}"),
        ("GET", "/api/events/{u}"),
        ("POST", "/api/events/{u}/ticket"),
    ];
    let session_routes = [
        ("POST", "/api/start/{u}/{s}"),
        ("GET", "/api/status/{u}/{s}"),
        ("GET", "/api/qr/{u}/{s}"),
        ("POST", "/api/stop/{u}/{s}"),
        ("POST", "/api/logout/{u}/{s}"),
    ];
    let long = "a".repeat(65);
    let bad_users = [
        "..",
        ".",
        "a%2Fb",
        "a%5Cb",
        "%2e%2e",
        "a%00b",
        "%D0%B0dmin",
        long.as_str(),
        "-lead",
        "_x",
        "a.b",
        "a%20b",
        "%2e",
        "a%2f..%2f..%2fetc",
    ];
    let bad_slots = ["0", "11", "-1", "1.5", "abc", "18446744073709551616", "01"];
    for (method, route) in user_routes {
        for u in bad_users {
            let r = t
                .raw_call(method, &route.replace("{u}", u), Some(SERVICE_TOKEN))
                .await;
            assert!(matches!(r.status, 400 | 404), "{method} {route} {u}: {r:?}");
            assert!(r.json["error"].is_string(), "{method} {route} {u}: {r:?}");
        }
    }
    for (method, route) in session_routes {
        for u in bad_users {
            let r = t
                .raw_call(
                    method,
                    &route.replace("{u}", u).replace("{s}", "1"),
                    Some(SERVICE_TOKEN),
                )
                .await;
            assert!(matches!(r.status, 400 | 404), "{method} {route} {u}: {r:?}");
            assert!(r.json["error"].is_string());
        }
        for s in bad_slots {
            let r = t
                .raw_call(
                    method,
                    &route.replace("{u}", "alice").replace("{s}", s),
                    Some(SERVICE_TOKEN),
                )
                .await;
            assert_eq!(r.status, 400, "{method} {route} slot {s}: {r:?}");
            assert_eq!(r.json["error"], "invalid_slot");
        }
    }
    // Empty segments and extra segments are no route at all.
    for path in [
        "/api/start//1",
        "/api/start/a/1/2",
        "/api/status/",
        "/api/qr/a",
    ] {
        let r = t.raw_call("POST", path, Some(SERVICE_TOKEN)).await;
        assert!(matches!(r.status, 400 | 404 | 405), "{path}: {r:?}");
    }
    let r = t.get("/api/status/alice/1", SERVICE_TOKEN).await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (404, Some("unknown_session"))
    );
    let r = t.get("/api/qr/alice/1?format=gif", SERVICE_TOKEN).await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (400, Some("bad_request"))
    );

    assert_no_side_effects(&t).await;
}

#[actix_web::test]
async fn missing_or_wrong_credentials_are_refused_without_side_effects() {
    let t = spawn_app(opts(), &[]).await;
    let routes = [
        ("POST", "/api/start/alice/1"),
        ("GET", "/api/status/alice"),
        ("GET", "/api/status/alice/1"),
        ("GET", "/api/qr/alice/1"),
        ("POST", "/api/stop/alice/1"),
        ("POST", "/api/logout/alice/1"),
        ("GET", "/api/events/alice"),
        ("POST", "/api/events/alice/ticket"),
        ("GET", "/actors"),
    ];
    for (method, path) in routes {
        for token in [
            None,
            Some("wrong"),
            Some(&SERVICE_TOKEN[..SERVICE_TOKEN.len() - 1]),
            Some(""),
        ] {
            let r = t.call(method, path, token).await;
            assert_eq!(r.status, 401, "{method} {path} {token:?}: {r:?}");
            assert_eq!(r.json["error"], "unauthorized");
        }
    }
    // The service token is not an admin token.
    let r = t.get("/actors", SERVICE_TOKEN).await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (403, Some("forbidden"))
    );
    let r = t
        .call("GET", "/api/events/alice?ticket=made-up", None)
        .await;
    assert_eq!(r.status, 401);
    assert_no_side_effects(&t).await;
    // Health needs no credentials.
    assert_eq!(t.call("GET", "/healthz", None).await.status, 200);
}

#[actix_web::test]
async fn actors_page_renders_for_a_browser() {
    let t = spawn_app(opts(), &[]).await;
    let html = reqwest::Client::new()
        .get(t.url("/actors"))
        .bearer_auth(ADMIN_TOKEN)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(html.status(), 200);
    assert!(html.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(html.text().await.unwrap().contains("<table>"));
}

/// Nothing was created: no profile folder, no row, no event, no browser.
async fn assert_no_side_effects(t: &TestApp) {
    // Only the daemon's own lock file may be there.
    let entries: Vec<_> = std::fs::read_dir(t.sessions_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != ".wa-supervisor.lock")
        .collect();
    assert!(entries.is_empty(), "sessions dir: {entries:?}");
    let rows = t.store().list_sessions(None).await.unwrap();
    assert!(rows.is_empty(), "rows: {rows:?}");
    assert!(wa_supervisor::browser::process::pids_using_profiles(&t.sessions_dir()).is_empty());
    let info = t.get("/actors", ADMIN_TOKEN).await;
    assert_eq!(info.json["liveActors"], 0, "{info:?}");
}

#[actix_web::test]
async fn many_users_hammering_start_stop_status_never_cross_and_never_double_a_browser() {
    use rand::seq::IndexedRandom;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let t = std::rc::Rc::new(spawn_app(opts(), &["--start-burst", "1000"]).await);
    let users: Vec<String> = (0..3).map(|i| uuid_like(0x100 + i)).collect();
    let keys: Vec<(String, u16)> = users
        .iter()
        .flat_map(|u| [(u.clone(), 1), (u.clone(), 2)])
        .collect();
    let root = t.sessions_dir();

    // Sampler: at most one browser per profile at any moment.
    let done = Arc::new(AtomicBool::new(false));
    let worst = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (done, worst, root, keys) = (done.clone(), worst.clone(), root.clone(), keys.clone());
        std::thread::spawn(move || {
            let mut samples = 0;
            while !done.load(Ordering::Relaxed) {
                for (u, s) in &keys {
                    let pids =
                        crate::support::harness::browsers_on(&root.join(format!("{u}-slot{s}")));
                    worst.fetch_max(pids.len(), Ordering::Relaxed);
                }
                samples += 1;
                std::thread::sleep(Duration::from_millis(30));
            }
            samples
        })
    };

    let ops = ["start", "start", "stop", "status", "list"];
    let mut tasks = Vec::new();
    for worker in 0..6 {
        let (t, keys) = (t.clone(), keys.clone());
        tasks.push(actix_web::rt::spawn(async move {
            for _ in 0..12 {
                let (op, (u, s)) = {
                    let mut rng = rand::rng();
                    (
                        *ops.choose(&mut rng).unwrap(),
                        keys.choose(&mut rng).unwrap().clone(),
                    )
                };
                let r = match op {
                    "start" => t.post(&format!("/api/start/{u}/{s}"), SERVICE_TOKEN).await,
                    "stop" => t.post(&format!("/api/stop/{u}/{s}"), SERVICE_TOKEN).await,
                    "status" => t.get(&format!("/api/status/{u}/{s}"), SERVICE_TOKEN).await,
                    _ => t.get(&format!("/api/status/{u}"), SERVICE_TOKEN).await,
                };
                match op {
                    "start" => assert_eq!(r.status, 202, "worker {worker} {op} {u}:{s}: {r:?}"),
                    "list" => {
                        assert_eq!(r.status, 200);
                        let sessions = r.json["sessions"].as_array().unwrap();
                        assert!(sessions.iter().all(|x| x["userId"] == u.as_str()), "{r:?}");
                    }
                    // Stop/status of a key never started yet is a clean 404.
                    _ => assert!(
                        matches!(r.status, 200 | 404),
                        "worker {worker} {op} {u}:{s}: {r:?}"
                    ),
                }
                if op != "list" && (r.status == 200 || r.status == 202) {
                    if let Some(owner) = r.json["userId"].as_str() {
                        assert_eq!(
                            (owner, r.json["slot"].as_u64()),
                            (u.as_str(), Some(u64::from(s))),
                            "reply for another key"
                        );
                    }
                }
                let pause = rand::random_range(0..150);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for (u, s) in &keys {
        let r = t.post(&format!("/api/stop/{u}/{s}"), SERVICE_TOKEN).await;
        assert!(matches!(r.status, 200 | 404), "{r:?}");
    }
    t.assert_no_browsers_left().await;
    done.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap();
    assert!(samples > 10);
    assert!(
        worst.load(Ordering::Relaxed) <= 1,
        "two browsers on one profile at once"
    );
    assert_eq!(
        t.env().metrics.misrouted.load(Ordering::Relaxed),
        0,
        "a message reached an actor of another key"
    );
    // Every stored row belongs to one of the keys used, and there is exactly one per key.
    let rows = t.store().list_sessions(None).await.unwrap();
    for r in &rows {
        assert!(keys
            .iter()
            .any(|(u, s)| r.key.user_id().as_str() == u && r.key.slot().get() == *s));
        assert_eq!(r.state.as_str(), "stopped");
    }
}

#[actix_web::test]
async fn a_users_token_reaches_only_that_users_sessions() {
    let issuer = TestIssuer::start().await;
    let args = issuer.settings_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let t = spawn_app(opts(), &args).await;
    let (a, b) = (uuid_like(0x200), uuid_like(0x201));
    let (ta, tb) = (
        issuer.token(&a, TokenOpts::default()),
        issuer.token(&b, TokenOpts::default()),
    );

    // B's token on every one of A's routes: 403, and nothing happens.
    for (method, path) in [
        ("POST", format!("/api/start/{a}/1")),
        ("GET", format!("/api/status/{a}")),
        ("GET", format!("/api/status/{a}/1")),
        ("GET", format!("/api/qr/{a}/1")),
        ("POST", format!("/api/stop/{a}/1")),
        ("POST", format!("/api/logout/{a}/1")),
        ("GET", format!("/api/events/{a}")),
        ("POST", format!("/api/events/{a}/ticket")),
        ("GET", "/actors".to_owned()),
        ("GET", "/metrics".to_owned()),
    ] {
        let r = t.call(method, &path, Some(&tb)).await;
        assert_eq!(r.status, 403, "{method} {path}: {r:?}");
        assert_eq!(r.json["error"], "forbidden");
    }
    // Tokens that are expired, for another project, HS256 or unsigned are not credentials at all.
    let expired = issuer.token(
        &a,
        TokenOpts {
            exp_offset: Some(-3600),
            ..TokenOpts::default()
        },
    );
    let other_aud = issuer.token(
        &a,
        TokenOpts {
            aud: Some("another-project".into()),
            ..TokenOpts::default()
        },
    );
    let hs256 = issuer.hs256_token(&a, issuer.project_id().as_bytes());
    let none = issuer.none_token(&a);
    for bad in [&expired, &other_aud, &hs256, &none] {
        let r = t
            .call("POST", &format!("/api/start/{a}/1"), Some(bad))
            .await;
        assert_eq!(r.status, 401, "{r:?}");
    }
    assert_no_side_effects(&t).await;

    // A's own token works on A's routes, and A's ticket cannot open B's stream.
    let r = t
        .call("POST", &format!("/api/start/{a}/1"), Some(&ta))
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let r = t.call("GET", &format!("/api/status/{a}"), Some(&ta)).await;
    assert_eq!(r.json["sessions"].as_array().unwrap().len(), 1);
    let ticket = t
        .call("POST", &format!("/api/events/{a}/ticket"), Some(&ta))
        .await;
    let ticket = ticket.json["ticket"].as_str().unwrap().to_owned();
    let r = t
        .call("GET", &format!("/api/events/{b}?ticket={ticket}"), None)
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    let r = t.call("POST", &format!("/api/stop/{a}/1"), Some(&ta)).await;
    assert_eq!(r.status, 200);
    // The audit trail names who did it.
    let events = t
        .store()
        .events(&crate::support::harness::key(&a, 1))
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "stopped" && e.actor == format!("user:{a}")),
        "{events:?}"
    );
    t.assert_no_browsers_left().await;
}

#[actix_web::test]
async fn metrics_describe_sessions_browsers_and_requests() {
    let t = spawn_app(opts(), &[]).await;
    let a = uuid_like(0x300);
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
    assert_eq!(t.get("/metrics", SERVICE_TOKEN).await.status, 403);
    let text = reqwest::Client::new()
        .get(t.url("/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
    };
    assert_eq!(value("wa_sessions{state=\"qr\"}"), 1.0);
    assert_eq!(value("wa_browser_launches_total"), 1.0);
    assert_eq!(value("wa_start_to_qr_seconds_count"), 1.0);
    assert_eq!(value("wa_misrouted_messages_total"), 0.0);
    // The whole browser tree is counted: browser, zygotes, renderers, utilities.
    assert!(value("wa_browser_processes") >= 3.0, "{text}");
    assert!(
        value("wa_browser_pss_bytes") > 50.0 * 1024.0 * 1024.0,
        "{text}"
    );
    assert_eq!(
        value("wa_http_requests_total{route=\"/api/start/{userId}/{slot}\",method=\"POST\",status=\"202\"}"),
        1.0
    );
    t.post(&format!("/api/stop/{a}/1"), SERVICE_TOKEN).await;
    t.assert_no_browsers_left().await;
}
