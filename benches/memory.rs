//! What each of the daemon's Chromium memory savers saves, one change at a time, on each engine
//! (`chromium-headless-shell` first, the default; then `chromium`): `cargo bench --bench memory`.
//!
//! Step 0 launches sessions through the daemon's own launcher with none of `MEMORY_SAVERS`;
//! each next step adds one more. Each step holds `SESSIONS` browsers side by side on the
//! stand-in WhatsApp page (the stand-in `WPP` injected, as the daemon does) until they show a QR
//! code, lets them settle, and sums the PSS of every process of every tree. Then each switch of
//! `MEMORY_CANDIDATES` (comma-separated, e.g. `--in-process-gpu,--renderer-process-limit=1`) is
//! measured alone on top of all the savers. `MEMORY_ENGINES=shell` measures one engine only.

#[path = "../tests/integration/support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::standin::{StandIn, StandInOptions};
use wa_supervisor::browser::engine::{resolve, EngineChoice};
use wa_supervisor::browser::{
    Browser, BrowserBinary, ChromiumLauncher, Launcher, MemorySaver, Observation, PageConfig,
    MEMORY_SAVERS,
};
use wa_supervisor::config::Settings;
use wa_supervisor::procfs;

const SESSIONS: usize = 4;
const SETTLE: Duration = Duration::from_secs(8);

fn launcher(
    binary: &BrowserBinary,
    url: &str,
    wa_js: &std::path::Path,
    sha: &str,
    savers: &'static [MemorySaver],
) -> ChromiumLauncher {
    let s = Settings::from_args(["wa-supervisor", "--whatsapp-url", url]).unwrap();
    ChromiumLauncher {
        binary: Ok(binary.clone()),
        page: PageConfig {
            url: url.to_owned(),
            qr_selector: s.qr_selector,
            reload_selector: s.qr_reload_selector,
            linked_selector: s.linked_selector,
            wid_keys: s.wid_keys,
            unsupported_text: s.unsupported_text,
        },
        wa_js: wa_supervisor::browser::wajs::load(wa_js, Some(sha)).unwrap(),
        startup_timeout: Duration::from_secs(30),
        memory_savers: savers,
    }
}

/// Every process whose process group is the browser's (zygotes, renderers, utilities, GPU).
fn group(pid: u32) -> Vec<u32> {
    procfs::pids()
        .filter(|p| procfs::pgrp(*p) == Some(pid))
        .collect()
}

/// The kind of a Chromium process, from its `--type=` (and utility sub-type) switch.
fn kind(pid: u32) -> String {
    // Chromium rewrites its helpers' argv into one space-separated string.
    let args: Vec<String> = procfs::cmdline(pid)
        .iter()
        .flat_map(|a| {
            String::from_utf8_lossy(a)
                .split(' ')
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    let value = |name: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(name).map(str::to_owned))
    };
    match (value("--type="), value("--utility-sub-type=")) {
        (None, _) => "browser".into(),
        (Some(t), Some(sub)) if t == "utility" => sub.rsplit('.').next().unwrap_or(&sub).to_owned(),
        (Some(t), _) => t,
    }
}

/// Launches `SESSIONS` browsers, waits for their QR codes, settles; (PSS MiB per session,
/// processes per session, MiB per session by process kind).
async fn measure(
    launcher: &ChromiumLauncher,
    dir: &std::path::Path,
) -> (f64, f64, std::collections::BTreeMap<String, f64>) {
    let mut browsers: Vec<Box<dyn Browser>> = Vec::new();
    let mut seen = Vec::new();
    for i in 0..SESSIONS {
        let qr = Arc::new(Mutex::new(false));
        let flag = qr.clone();
        let sink = Box::new(move |_, o: Observation| {
            if matches!(o, Observation::Qr(_)) {
                *flag.lock().unwrap() = true;
            }
        });
        let b = launcher
            .launch(dir.join(format!("p{i}")), format!("bench:{i}"), sink)
            .await
            .unwrap();
        browsers.push(b);
        seen.push(qr);
    }
    for _ in 0..600 {
        if seen.iter().all(|s| *s.lock().unwrap()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        seen.iter().all(|s| *s.lock().unwrap()),
        "every page shows a QR code"
    );
    tokio::time::sleep(SETTLE).await;
    let (mut pss, mut procs) = (0u64, 0usize);
    let mut kinds = std::collections::BTreeMap::new();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    for b in &browsers {
        let pids = group(b.pid().unwrap());
        procs += pids.len();
        for p in pids {
            let bytes = procfs::pss_bytes(p);
            pss += bytes;
            *kinds.entry(kind(p)).or_insert(0.0) += mib(bytes) / SESSIONS as f64;
        }
    }
    for b in browsers {
        b.close(Duration::from_secs(5)).await;
    }
    let n = SESSIONS as f64;
    (mib(pss) / n, procs as f64 / n, kinds)
}

fn describe(s: &MemorySaver) -> String {
    match s {
        MemorySaver::Switch(s) => s.to_string(),
        MemorySaver::DisableFeature(f) => format!("--disable-features={f}"),
        MemorySaver::EnableFeature(f) => format!("--enable-features={f}"),
        MemorySaver::ChromiumOnly(inner) => format!("{} (chromium only)", describe(inner)),
    }
}

/// `--x=y` → the saver it is (`--disable-features=` / `--enable-features=` merge into one).
fn candidate(raw: &str) -> MemorySaver {
    let raw: &'static str = Box::leak(raw.trim().to_owned().into_boxed_str());
    if let Some(f) = raw.strip_prefix("--disable-features=") {
        MemorySaver::DisableFeature(f)
    } else if let Some(f) = raw.strip_prefix("--enable-features=") {
        MemorySaver::EnableFeature(f)
    } else {
        MemorySaver::Switch(raw)
    }
}

fn main() {
    actix_web::rt::System::new().block_on(async {
        let standin = StandIn::start(StandInOptions {
            rotation: Duration::from_secs(60),
            rotations: 6,
            ..Default::default()
        })
        .await;
        let tmp = tempfile::tempdir().unwrap();
        let (wpp, sha) = support::wpp::install(tmp.path());
        let engines = std::env::var("MEMORY_ENGINES").unwrap_or_else(|_| "shell,chromium".into());
        let candidates: Vec<MemorySaver> = std::env::var("MEMORY_CANDIDATES")
            .unwrap_or_default()
            .split(',')
            .filter(|c| !c.trim().is_empty())
            .map(candidate)
            .collect();
        for engine in engines.split(',') {
            let choice = match engine.trim() {
                "shell" => EngineChoice::Shell,
                _ => EngineChoice::Chromium,
            };
            let (binary, _) = resolve(choice, None).await.unwrap().unwrap();
            println!(
                "{}: {SESSIONS} sessions side by side on the QR page, PSS per session (whole tree):",
                binary.describe()
            );
            let dir = tmp.path().join(engine.trim());
            let mut previous = None;
            let mut all = 0.0;
            for i in 0..=MEMORY_SAVERS.len() {
                let l = launcher(&binary, &standin.url(), &wpp, &sha, &MEMORY_SAVERS[..i]);
                let (pss, procs, kinds) = measure(&l, &dir.join(format!("step{i}"))).await;
                let what = if i == 0 {
                    "none of the savers".to_owned()
                } else {
                    format!("+ {}", describe(&MEMORY_SAVERS[i - 1]))
                };
                match previous {
                    None => println!("  {what:55} {pss:6.1} MiB, {procs:.0} processes"),
                    Some(p) => println!(
                        "  {what:55} {pss:6.1} MiB, {procs:.0} processes ({:+.1} MiB)",
                        pss - p
                    ),
                }
                previous = Some(pss);
                all = pss;
                if i == 0 || i == MEMORY_SAVERS.len() {
                    let parts: Vec<String> =
                        kinds.iter().map(|(k, v)| format!("{k} {v:.1}")).collect();
                    println!(
                        "      by process kind (MiB per session): {}",
                        parts.join(", ")
                    );
                }
            }
            for (n, c) in candidates.iter().enumerate() {
                let savers: &'static [MemorySaver] = Box::leak(
                    MEMORY_SAVERS
                        .iter()
                        .copied()
                        .chain(std::iter::once(*c))
                        .collect::<Vec<_>>()
                        .into_boxed_slice(),
                );
                let l = launcher(&binary, &standin.url(), &wpp, &sha, savers);
                let (pss, procs, _) = measure(&l, &dir.join(format!("candidate{n}"))).await;
                println!(
                    "  candidate {:45} {pss:6.1} MiB, {procs:.0} processes ({:+.1} MiB against all the savers)",
                    describe(c),
                    pss - all
                );
            }
        }
        standin.stop().await;
    });
}
