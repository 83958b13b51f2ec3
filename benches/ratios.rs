//! The daemon against bare Chromium, measured side by side in one run: `cargo bench --bench
//! ratios`. Both read the same stand-in WhatsApp page on loopback.
//!
//! - start → QR: a bare Chromium (chromiumoxide's own launch, plain headless flags, a fresh
//!   profile) opening the page and polling its QR element, alternated with the daemon (start
//!   over HTTP, poll the API) — through WA-JS (the stand-in WPP) and through the DOM signals;
//! - memory: PSS summed over each browser's whole process tree, for 4 idle sessions on the QR
//!   page, then linked;
//! - the daemon process's own memory.

#[path = "../tests/integration/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use chromiumoxide::error::CdpError;
use chromiumoxide::{Browser, BrowserConfig, Page};
use futures_util::StreamExt;
use support::harness::{spawn_app, uuid_like, TestApp, ADMIN_TOKEN, SERVICE_TOKEN};
use support::standin::StandInOptions;
use wa_supervisor::procfs;

const RUNS: usize = 9;
const SESSIONS: usize = 4;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// A bare Chromium, launched the plain way.
struct Bare {
    browser: Browser,
    handler: tokio::task::JoinHandle<()>,
    page: Page,
    _profile: tempfile::TempDir,
}

impl Bare {
    /// Launches and opens `url`; resolves when the page shows a QR payload.
    async fn to_qr(url: &str) -> (Bare, Duration) {
        let started = Instant::now();
        let profile = tempfile::tempdir().unwrap();
        let config = BrowserConfig::builder()
            .chrome_executable("/usr/lib/chromium/chromium")
            .new_headless_mode()
            .no_sandbox()
            .arg("disable-gpu")
            .user_data_dir(profile.path())
            .build()
            .unwrap();
        let (browser, mut handler) = Browser::launch(config).await.unwrap();
        let handler = tokio::spawn(async move {
            while let Some(event) = handler.next().await {
                if matches!(event, Err(e) if !matches!(e, CdpError::InvalidMessage(..))) {
                    break;
                }
            }
        });
        let page = browser.new_page(url).await.unwrap();
        loop {
            let qr: Option<String> = page
                .evaluate("(() => { const e = document.querySelector('div[data-ref]'); const v = e && e.getAttribute('data-ref'); return v || null; })()")
                .await
                .ok()
                .and_then(|r| r.into_value().ok())
                .flatten();
            if qr.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = started.elapsed();
        (
            Bare {
                browser,
                handler,
                page,
                _profile: profile,
            },
            took,
        )
    }

    fn pid(&mut self) -> u32 {
        self.browser
            .get_mut_child()
            .unwrap()
            .as_mut_inner()
            .id()
            .unwrap()
    }

    async fn close(mut self) {
        let _ = self.browser.close().await;
        let _ = self.browser.wait().await;
        self.handler.abort();
        drop(self.page);
    }
}

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

/// A process and all its descendants.
fn tree(root: u32) -> Vec<u32> {
    let all: Vec<u32> = procfs::pids().collect();
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            all.iter()
                .copied()
                .filter(|p| procfs::ppid(*p) == Some(parent)),
        );
        i += 1;
    }
    out
}

fn pss_mib(pids: &[u32]) -> f64 {
    pids.iter().map(|p| procfs::pss_bytes(*p)).sum::<u64>() as f64 / (1024.0 * 1024.0)
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

fn main() {
    actix_web::rt::System::new().block_on(async {
        let opts = || StandInOptions {
            rotation: Duration::from_secs(60),
            rotations: 6,
        };
        let bridge = spawn_app(opts(), &["--start-burst", "1000", "--max-pending-per-user", "100"]).await;
        let dom = spawn_app(
            opts(),
            &["--start-burst", "1000", "--max-pending-per-user", "100", "--wa-js-path", "/nonexistent"],
        )
        .await;
        let url = bridge.standin.url();

        // Start -> QR, alternated.
        let (mut bare, mut wa_js, mut dom_t) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..RUNS {
            let (b, took) = Bare::to_qr(&url).await;
            bare.push(took);
            b.close().await;
            let user = uuid_like(0xf00);
            wa_js.push(daemon_to_qr(&bridge, &user).await);
            bridge.post(&format!("/api/stop/{user}/1"), SERVICE_TOKEN).await;
            let user = uuid_like(0xf01);
            dom_t.push(daemon_to_qr(&dom, &user).await);
            dom.post(&format!("/api/stop/{user}/1"), SERVICE_TOKEN).await;
        }
        let (b, w, d) = (median(bare.clone()), median(wa_js.clone()), median(dom_t.clone()));
        println!("start -> QR, median of {RUNS} alternated runs:");
        println!("  bare Chromium      {} (runs {:?})", ms(b), bare.iter().map(|d| ms(*d)).collect::<Vec<_>>());
        println!("  daemon via WA-JS   {} (runs {:?}) ratio {:.2}", ms(w), wa_js.iter().map(|d| ms(*d)).collect::<Vec<_>>(), w.as_secs_f64() / b.as_secs_f64());
        println!("  daemon via the DOM {} (runs {:?}) ratio {:.2}", ms(d), dom_t.iter().map(|d| ms(*d)).collect::<Vec<_>>(), d.as_secs_f64() / b.as_secs_f64());

        // Memory: SESSIONS idle on the QR page, then linked.
        let mut bares = Vec::new();
        for _ in 0..SESSIONS {
            bares.push(Bare::to_qr(&url).await.0);
        }
        let users: Vec<String> = (0..SESSIONS).map(|i| uuid_like(0xf10 + i as u32)).collect();
        for u in &users {
            daemon_to_qr(&bridge, u).await;
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        let bare_pss: f64 = bares.iter_mut().map(|b| pss_mib(&tree(b.pid()))).sum();
        let daemon_pss: f64 = browser_pids(&bridge).await.iter().map(|p| pss_mib(&tree(*p))).sum();
        println!(
            "{SESSIONS} idle sessions on the QR page, PSS of the browser trees: bare {bare_pss:.0} MiB, daemon {daemon_pss:.0} MiB, ratio {:.2}",
            daemon_pss / bare_pss
        );
        // Linked: the stand-in shows the chat list (same page for both).
        for (i, u) in users.iter().enumerate() {
            bridge.scan(u, 1, &format!("49151000099{i:02}")).await;
        }
        for (i, b) in bares.iter().enumerate() {
            let qr: String = b
                .page
                .evaluate("document.querySelector('div[data-ref]').getAttribute('data-ref')")
                .await
                .unwrap()
                .into_value()
                .unwrap();
            bridge.standin.scan(&qr, &format!("49151000098{i:02}")).await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        let bare_pss: f64 = bares.iter_mut().map(|b| pss_mib(&tree(b.pid()))).sum();
        let daemon_pss: f64 = browser_pids(&bridge).await.iter().map(|p| pss_mib(&tree(*p))).sum();
        println!(
            "{SESSIONS} idle linked sessions, PSS of the browser trees: bare {bare_pss:.0} MiB, daemon {daemon_pss:.0} MiB, ratio {:.2}",
            daemon_pss / bare_pss
        );
        let me = std::process::id();
        println!(
            "the benchmark process (daemon + harness, no browsers): RSS {:.1} MiB",
            procfs::rss_bytes(me) as f64 / (1024.0 * 1024.0)
        );
        for b in bares {
            b.close().await;
        }
        for u in &users {
            bridge.post(&format!("/api/stop/{u}/1"), SERVICE_TOKEN).await;
        }
        bridge.assert_no_browsers_left().await;
        dom.assert_no_browsers_left().await;
    });
}
