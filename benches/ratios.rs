//! The daemon against bare browsers, measured side by side in one run: `cargo bench --bench
//! ratios`. All read the same stand-in WhatsApp page on loopback.
//!
//! - start → QR: bare `chromium --headless=new` and a bare `chromium-headless-shell`
//!   (chromiumoxide's own launch, plain headless flags, a fresh profile) opening the page and
//!   polling its QR element, alternated with the daemon (start over HTTP, poll the API) on its
//!   default engine (the shell) through WA-JS (the stand-in WPP) and through the DOM signals,
//!   and on `chromium` through WA-JS;
//! - QR rotation → event: the stand-in notes when it hands each new QR payload to a page; the
//!   daemon's SSE `session` event with that payload, against a bare Chromium whose page reports
//!   the QR element's change through a CDP binding (the fastest a DOM observer can be told);
//! - scan → connected and browser crash → connected, through the API;
//! - memory: PSS summed over each browser's whole process tree, for 4 idle sessions on the QR
//!   page, then linked: the daemon on each engine against both bare browsers.

mod common;
#[path = "../tests/integration/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chromiumoxide::cdp::js_protocol::runtime::{AddBindingParams, EventBindingCalled};
use common::{all_ms, median, ms, percentile, pss_mib, tree, Bare, BareEngine};
use futures_util::StreamExt;
use support::harness::{spawn_app, uuid_like, TestApp, ADMIN_TOKEN, SERVICE_TOKEN};
use support::standin::{Refuse, StandInOptions};

const RUNS: usize = 9;
const SESSIONS: usize = 4;
/// QR payloads observed per side for the rotation figure.
const ROTATIONS: usize = 20;

/// The daemon: start over HTTP, poll the API until the session shows a QR code.
async fn daemon_to_qr(t: &TestApp, user: &str) -> Duration {
    let started = Instant::now();
    t.post(&format!("/api/start/{user}/1"), SERVICE_TOKEN).await;
    loop {
        let s = t.get(&format!("/api/status/{user}/1"), SERVICE_TOKEN).await;
        if s.json["state"] == "qr" {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn browser_pids(t: &TestApp) -> Vec<u32> {
    let r = t.get("/actors", ADMIN_TOKEN).await;
    r.json["actors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["browserPid"].as_u64().map(|p| p as u32))
        .collect()
}

/// The SSE stream of `user`'s events, opened with a ticket.
async fn open_events(t: &TestApp, user: &str) -> reqwest::Response {
    let ticket = t
        .post(&format!("/api/events/{user}/ticket"), SERVICE_TOKEN)
        .await;
    let url = ticket.json["url"].as_str().unwrap().to_owned();
    reqwest::Client::new()
        .get(t.url(&url))
        .send()
        .await
        .unwrap()
}

/// Reads `stream` until `count` distinct QR payloads arrived in `session` events; each with the
/// moment it arrived.
async fn qr_arrivals(mut stream: reqwest::Response, count: usize) -> HashMap<String, Instant> {
    let mut seen = HashMap::new();
    let mut buf = String::new();
    while seen.len() < count {
        let chunk = tokio::time::timeout(Duration::from_secs(30), stream.chunk())
            .await
            .expect("QR events keep coming")
            .unwrap()
            .expect("stream open");
        let now = Instant::now();
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            for data in frame.lines().filter_map(|l| l.strip_prefix("data: ")) {
                let v: serde_json::Value = serde_json::from_str(data).unwrap();
                if let Some(p) = v["qr"]["payload"].as_str() {
                    seen.entry(p.to_owned()).or_insert(now);
                }
            }
        }
    }
    seen
}

/// A bare Chromium on the QR page whose page calls a CDP binding whenever the QR element's
/// payload changes: the arrival of each of `count` new payloads.
async fn bare_qr_arrivals(url: &str, count: usize) -> HashMap<String, Instant> {
    let (bare, _) = Bare::to_qr(BareEngine::Shell, url).await;
    let mut events = bare
        .page
        .event_listener::<EventBindingCalled>()
        .await
        .unwrap();
    bare.page
        .execute(AddBindingParams::new("qrChanged"))
        .await
        .unwrap();
    bare.page
        .evaluate(
            "new MutationObserver(() => { const e = document.querySelector('div[data-ref]'); \
             if (e && e.getAttribute('data-ref')) qrChanged(e.getAttribute('data-ref')); })\
             .observe(document.body, {subtree: true, attributes: true, attributeFilter: ['data-ref']})",
        )
        .await
        .unwrap();
    let mut seen = HashMap::new();
    while seen.len() < count {
        let e = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .expect("QR changes keep coming")
            .unwrap();
        seen.entry(e.payload.clone()).or_insert_with(Instant::now);
    }
    bare.close().await;
    seen
}

/// How long after the stand-in handed each payload out it arrived.
fn delays(issued: &[(String, Instant)], arrived: &HashMap<String, Instant>) -> Vec<Duration> {
    issued
        .iter()
        .filter_map(|(p, at)| arrived.get(p).map(|a| a.saturating_duration_since(*at)))
        .collect()
}

/// Waits (polling every 5 ms) until `probe` holds; how long that took from `from`.
async fn until(from: Instant, limit: Duration, mut probe: impl AsyncFnMut() -> bool) -> Duration {
    while !probe().await {
        assert!(from.elapsed() < limit, "timed out");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    from.elapsed()
}

fn line(what: &str, v: &[Duration]) {
    println!(
        "  {what:<28} median {} p95 {} ({})",
        ms(median(v)),
        ms(percentile(v, 95.0)),
        all_ms(v)
    );
}

/// The pid of `user`'s (slot 1) browser, from `/actors`.
async fn browser_pid_of(t: &TestApp, user: &str) -> u32 {
    let r = t.get("/actors", ADMIN_TOKEN).await;
    r.json["actors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["userId"] == user)
        .and_then(|a| a["browserPid"].as_u64())
        .expect("a running browser") as u32
}

/// Ratio of two medians.
fn ratio(a: &[Duration], b: &[Duration]) -> f64 {
    median(a).as_secs_f64() / median(b).as_secs_f64()
}

/// Total PSS (MiB) of the daemon's browser trees and of the bare ones.
async fn memory(daemons: &[&TestApp], bares: &mut [(BareEngine, Vec<Bare>)]) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for (engine, list) in bares.iter_mut() {
        let pss: f64 = list.iter_mut().map(|b| pss_mib(&tree(b.pid()))).sum();
        out.push((engine.name().to_owned(), pss));
    }
    for t in daemons {
        let engine = t.get("/readyz", SERVICE_TOKEN).await.json["browser"]["engine"]
            .as_str()
            .unwrap()
            .to_owned();
        let pss: f64 = browser_pids(t)
            .await
            .iter()
            .map(|p| pss_mib(&tree(*p)))
            .sum();
        out.push((format!("daemon on {engine}"), pss));
    }
    out
}

fn memory_lines(what: &str, figures: &[(String, f64)]) {
    println!("2. {SESSIONS} idle sessions {what}, PSS of the browser trees:");
    for (name, pss) in figures {
        println!(
            "  {name:<36} {pss:6.0} MiB ({:.0} per session)",
            pss / SESSIONS as f64
        );
    }
    let get = |n: &str| {
        figures
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| *v)
            .unwrap()
    };
    let daemon = get("daemon on shell");
    println!(
        "  ratio daemon (shell): {:.2} x bare chromium, {:.2} x bare shell",
        daemon / get(BareEngine::Chromium.name()),
        daemon / get(BareEngine::Shell.name())
    );
}

fn main() {
    actix_web::rt::System::new().block_on(async {
        // The bare browsers say they are headless: the stand-in takes every browser here.
        let opts = || StandInOptions {
            rotation: Duration::from_secs(60),
            rotations: 6,
            refuse: Refuse::Never,
            ..Default::default()
        };
        let many = ["--start-burst", "1000", "--max-pending-per-user", "100"];
        let bridge = spawn_app(opts(), &many).await;
        let dom = spawn_app(opts(), &[&many[..], &["--wa-js-path", "/nonexistent"]].concat()).await;
        let chromium = spawn_app(opts(), &[&many[..], &["--browser", "chromium"]].concat()).await;
        let url = bridge.standin.url();

        // Start -> QR, alternated.
        let (mut bare_c, mut bare_s, mut wa_js, mut dom_t, mut on_chromium) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..RUNS {
            for (engine, out) in [(BareEngine::Chromium, &mut bare_c), (BareEngine::Shell, &mut bare_s)] {
                let (b, took) = Bare::to_qr(engine, &url).await;
                out.push(took);
                b.close().await;
            }
            for (t, out) in [(&bridge, &mut wa_js), (&dom, &mut dom_t), (&chromium, &mut on_chromium)] {
                let user = uuid_like(0xf00);
                out.push(daemon_to_qr(t, &user).await);
                t.post(&format!("/api/stop/{user}/1"), SERVICE_TOKEN).await;
            }
        }
        println!("1. start -> QR, median of {RUNS} alternated runs:");
        line("bare chromium --headless=new", &bare_c);
        line("bare chromium-headless-shell", &bare_s);
        line("daemon, shell, via WA-JS", &wa_js);
        line("daemon, shell, via the DOM", &dom_t);
        line("daemon, chromium, via WA-JS", &on_chromium);
        println!(
            "  ratio daemon (shell, WA-JS): {:.2} x bare chromium, {:.2} x bare shell; DOM: {:.2} x bare shell; daemon on chromium: {:.2} x bare chromium",
            ratio(&wa_js, &bare_c),
            ratio(&wa_js, &bare_s),
            ratio(&dom_t, &bare_s),
            ratio(&on_chromium, &bare_c),
        );

        // QR rotation -> event, both sides at once on a stand-in rotating every second.
        let rotating = spawn_app(
            StandInOptions {
                rotation: Duration::from_secs(1),
                rotations: 1000,
                refuse: Refuse::Never,
                ..Default::default()
            },
            &[],
        )
        .await;
        let user = uuid_like(0xf02);
        let stream = open_events(&rotating, &user).await;
        rotating.post(&format!("/api/start/{user}/1"), SERVICE_TOKEN).await;
        let rotating_url = rotating.standin.url();
        let (daemon_seen, bare_seen) = tokio::join!(
            qr_arrivals(stream, ROTATIONS + 1),
            bare_qr_arrivals(&rotating_url, ROTATIONS + 1)
        );
        rotating.post(&format!("/api/stop/{user}/1"), SERVICE_TOKEN).await;
        let issued = rotating.standin.issued_with_times();
        // The first payload of each side is read at start, not observed as a rotation.
        let rotation_delays = |seen: &HashMap<String, Instant>| {
            let mut v = delays(&issued, seen);
            v.sort();
            v.pop();
            v
        };
        let (d_rot, b_rot) = (rotation_delays(&daemon_seen), rotation_delays(&bare_seen));
        println!("3. QR rotation -> observed ({} rotations each, one per second):", d_rot.len());
        line("bare shell (CDP binding)", &b_rot);
        line("daemon (SSE session event)", &d_rot);

        // Scan -> connected, alternated with a bare shell reading the chat list.
        let (mut bare_scan, mut daemon_scan, mut linked) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..5u32 {
            let (b, _) = Bare::to_qr(BareEngine::Shell, &url).await;
            let qr = b.qr().await.unwrap();
            let at = Instant::now();
            bridge.standin.scan(&qr, &format!("4915100009{i:03}")).await.unwrap();
            bare_scan.push(
                until(at, Duration::from_secs(30), async || {
                    b.page
                        .evaluate("!!document.querySelector('#pane-side')")
                        .await
                        .ok()
                        .and_then(|r| r.into_value::<bool>().ok())
                        .unwrap_or(false)
                })
                .await,
            );
            b.close().await;
            let user = uuid_like(0xf20 + i);
            linked.push(user.clone());
            daemon_to_qr(&bridge, &user).await;
            let s = bridge.get(&format!("/api/status/{user}/1"), SERVICE_TOKEN).await;
            let qr = s.json["qr"]["payload"].as_str().unwrap().to_owned();
            let at = Instant::now();
            bridge.standin.scan(&qr, &format!("4915100008{i:03}")).await.unwrap();
            daemon_scan.push(
                until(at, Duration::from_secs(30), async || {
                    let s = bridge.get(&format!("/api/status/{user}/1"), SERVICE_TOKEN).await;
                    s.json["state"] == "connected"
                })
                .await,
            );
        }
        println!("   scan -> connected (5 each, alternated):");
        line("bare shell (chat list)", &bare_scan);
        line("daemon (API)", &daemon_scan);

        // Browser SIGKILL -> connected again (no bare equivalent: nothing relaunches it).
        let mut crash = Vec::new();
        for user in &linked {
            let pid = browser_pid_of(&bridge, user).await;
            let at = Instant::now();
            // SAFETY: plain syscall on a browser this benchmark's daemon started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            crash.push(
                until(at, Duration::from_secs(60), async || {
                    let s = bridge.get(&format!("/api/status/{user}/1"), SERVICE_TOKEN).await;
                    s.json["state"] == "connected" && s.json["restarts"].as_u64().unwrap_or(0) > 0
                })
                .await,
            );
        }
        println!("   browser SIGKILL -> connected (5 sessions, first crash each; backoff 1 s ± 20 %):");
        line("daemon (API)", &crash);
        for user in &linked {
            bridge.post(&format!("/api/stop/{user}/1"), SERVICE_TOKEN).await;
        }

        // Memory: SESSIONS idle on the QR page, then linked, each daemon beside both bare engines.
        let mut bares = vec![(BareEngine::Chromium, Vec::new()), (BareEngine::Shell, Vec::new())];
        for (engine, list) in bares.iter_mut() {
            for _ in 0..SESSIONS {
                list.push(Bare::to_qr(*engine, &url).await.0);
            }
        }
        let users: Vec<String> = (0..SESSIONS).map(|i| uuid_like(0xf10 + i as u32)).collect();
        for t in [&bridge, &chromium] {
            for u in &users {
                daemon_to_qr(t, u).await;
            }
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        memory_lines("on the QR page", &memory(&[&bridge, &chromium], &mut bares).await);
        // Linked: the stand-in shows the chat list (same page for all).
        for (n, t) in [&bridge, &chromium].into_iter().enumerate() {
            for (i, u) in users.iter().enumerate() {
                t.scan(u, 1, &format!("4915100{n}099{i:02}")).await;
            }
        }
        for (n, (_, list)) in bares.iter().enumerate() {
            for (i, b) in list.iter().enumerate() {
                let qr = b.qr().await.unwrap();
                bridge.standin.scan(&qr, &format!("4915100{n}098{i:02}")).await.unwrap();
            }
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        memory_lines("linked", &memory(&[&bridge, &chromium], &mut bares).await);
        for (_, list) in bares {
            for b in list {
                b.close().await;
            }
        }
        for t in [&bridge, &chromium] {
            for u in &users {
                t.post(&format!("/api/stop/{u}/1"), SERVICE_TOKEN).await;
            }
        }
        for t in [&bridge, &dom, &chromium, &rotating] {
            t.assert_no_browsers_left().await;
        }
    });
}
