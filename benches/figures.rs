//! The figures quoted in BENCHMARKS.md, measured against real Chromium and the stand-in
//! WhatsApp page on loopback: `cargo bench --bench figures`.
//!
//! - start → first QR and scan → connected (median of several sessions)
//! - proportional set size of one idle browser process tree
//! - `GET /api/status/{userId}` latency under concurrent load (p50 / p99)
//! - browser SIGKILL → connected again (median of several crashes)
//! - start → first QR through WA-JS (the stand-in `WPP`) vs through the DOM signals, alternated
//!   in one run

#[path = "../tests/integration/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::harness::{spawn_app, uuid_like, TestApp, ADMIN_TOKEN, SERVICE_TOKEN};
use support::standin::StandInOptions;

const RUNS: usize = 5;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

async fn wait(t: &TestApp, path: &str, pred: impl Fn(&serde_json::Value) -> bool) {
    t.wait_json(path, SERVICE_TOKEN, Duration::from_secs(60), path, pred)
        .await;
}

async fn browser_pid(t: &TestApp, user: &str) -> u32 {
    let r = t.get("/actors", ADMIN_TOKEN).await;
    r.json["actors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == format!("{user}:1"))
        .and_then(|a| a["browserPid"].as_u64())
        .unwrap() as u32
}

/// (processes, PSS MiB, RSS MiB) of a browser and every process in its group (zygotes,
/// renderers, utilities).
fn tree_memory(root_pid: u32) -> (usize, f64, f64) {
    use wa_supervisor::procfs;
    let pids: Vec<u32> = procfs::pids()
        .filter(|pid| procfs::pgrp(*pid) == Some(root_pid))
        .collect();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let pss = pids
        .iter()
        .map(|p| wa_supervisor::procfs::pss_bytes(*p))
        .sum();
    let rss = pids.iter().map(|p| procfs::rss_bytes(*p)).sum();
    (pids.len(), mib(pss), mib(rss))
}

/// Start → first QR through WA-JS and through the DOM signals, alternated, in one run.
async fn bridge_vs_dom() {
    let wa_js = spawn_app(StandInOptions::default(), &["--start-burst", "1000"]).await;
    let dom = spawn_app(
        StandInOptions::default(),
        &[
            "--start-burst",
            "1000",
            "--wa-js-path",
            "/nonexistent/wppconnect-wa.js",
        ],
    )
    .await;
    let (mut through_wa_js, mut through_dom) = (Vec::new(), Vec::new());
    for i in 0..RUNS as u32 {
        for (t, times, mode) in [
            (&wa_js, &mut through_wa_js, "wa-js"),
            (&dom, &mut through_dom, "dom"),
        ] {
            let user = uuid_like(0x9a0 + i);
            let started = Instant::now();
            t.post(&format!("/api/start/{user}/1"), SERVICE_TOKEN).await;
            wait(t, &format!("/api/status/{user}/1"), |s| {
                s["state"] == "qr" && s["bridge"] == mode
            })
            .await;
            times.push(started.elapsed());
            t.post(&format!("/api/stop/{user}/1"), SERVICE_TOKEN).await;
        }
    }
    println!(
        "start -> first QR through WA-JS: median {} (runs: {:?}); through the DOM: median {} (runs: {:?})",
        ms(median(through_wa_js.clone())),
        through_wa_js.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
        ms(median(through_dom.clone())),
        through_dom.iter().map(|d| ms(*d)).collect::<Vec<_>>()
    );
    wa_js.assert_no_browsers_left().await;
    dom.assert_no_browsers_left().await;
}

fn main() {
    actix_web::rt::System::new().block_on(async {
        bridge_vs_dom().await;
        let t = spawn_app(StandInOptions::default(), &["--start-burst", "1000", "--restart-backoff-ms", "1000"]).await;

        let (mut to_qr, mut to_connected) = (Vec::new(), Vec::new());
        let mut users = Vec::new();
        for i in 0..RUNS {
            let user = uuid_like(0x900 + i as u32);
            let started = Instant::now();
            t.post(&format!("/api/start/{user}/1"), SERVICE_TOKEN).await;
            wait(&t, &format!("/api/status/{user}/1"), |s| s["state"] == "qr").await;
            to_qr.push(started.elapsed());
            let s = t.get(&format!("/api/status/{user}/1"), SERVICE_TOKEN).await;
            let scanned = Instant::now();
            t.standin.scan(s.json["qr"]["payload"].as_str().unwrap(), &format!("49151000009{i:02}")).await.unwrap();
            wait(&t, &format!("/api/status/{user}/1"), |s| s["isConnected"] == true).await;
            to_connected.push(scanned.elapsed());
            users.push(user);
        }
        println!("start -> first QR:   median {} (runs: {:?})", ms(median(to_qr.clone())), to_qr.iter().map(|d| ms(*d)).collect::<Vec<_>>());
        println!("scan -> connected:   median {} (runs: {:?})", ms(median(to_connected.clone())), to_connected.iter().map(|d| ms(*d)).collect::<Vec<_>>());

        tokio::time::sleep(Duration::from_secs(5)).await; // let the pages settle (idle)
        let mut trees = Vec::new();
        for u in &users {
            trees.push(tree_memory(browser_pid(&t, u).await));
        }
        let n = trees.len() as f64;
        println!(
            "idle browser tree ({} sessions side by side): {:.0} processes, PSS {:.0} MiB, RSS (shared pages counted per process) {:.0} MiB each",
            trees.len(),
            trees.iter().map(|t| t.0 as f64).sum::<f64>() / n,
            trees.iter().map(|t| t.1).sum::<f64>() / n,
            trees.iter().map(|t| t.2).sum::<f64>() / n
        );

        // Status latency: 8 concurrent clients, 400 requests each, keep-alive connections.
        let user = users[0].clone();
        let url = t.url(&format!("/api/status/{user}"));
        let mut tasks = Vec::new();
        let load_started = Instant::now();
        for _ in 0..8 {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut lat = Vec::with_capacity(400);
                for _ in 0..400 {
                    let t0 = Instant::now();
                    let r = client.get(&url).bearer_auth(SERVICE_TOKEN).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    r.bytes().await.unwrap();
                    lat.push(t0.elapsed());
                }
                lat
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        let elapsed = load_started.elapsed();
        all.sort();
        let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
        println!(
            "GET /api/status/{{userId}} under 8 concurrent clients x 400: p50 {:.2} ms, p99 {:.2} ms, {:.0} req/s",
            pct(0.50).as_secs_f64() * 1000.0,
            pct(0.99).as_secs_f64() * 1000.0,
            all.len() as f64 / elapsed.as_secs_f64()
        );

        // Crash -> connected again (backoff 1 s included).
        let mut crash = Vec::new();
        for round in 1..=3u64 {
            let pid = browser_pid(&t, &users[1]).await;
            let killed = Instant::now();
            // SAFETY: plain syscall on the pid /actors reported.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            wait(&t, &format!("/api/status/{}/1", users[1]), |s| s["restarts"].as_u64() == Some(round) && s["isConnected"] == true).await;
            crash.push(killed.elapsed());
        }
        println!("browser SIGKILL -> connected again (1 s backoff first): median {} (runs: {:?})", ms(median(crash.clone())), crash.iter().map(|d| ms(*d)).collect::<Vec<_>>());

        for u in &users {
            t.post(&format!("/api/stop/{u}/1"), SERVICE_TOKEN).await;
        }
        t.assert_no_browsers_left().await;
    });
}
