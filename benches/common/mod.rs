//! What the benchmarks share: the bare-Chromium baseline, process trees, statistics.

#![allow(dead_code)] // each benchmark uses its own part

use std::time::{Duration, Instant};

use chromiumoxide::error::CdpError;
use chromiumoxide::{Browser, BrowserConfig, Page};
use futures_util::StreamExt;
use wa_supervisor::procfs;

/// The QR payload the stand-in page shows, or null.
pub const READ_QR: &str = "(() => { const e = document.querySelector('div[data-ref]'); const v = e && e.getAttribute('data-ref'); return v || null; })()";

/// Which binary a bare baseline runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareEngine {
    /// `chromium --headless=new`.
    Chromium,
    /// `chromium-headless-shell` (headless by construction).
    Shell,
}

impl BareEngine {
    pub fn name(self) -> &'static str {
        match self {
            BareEngine::Chromium => "bare chromium --headless=new",
            BareEngine::Shell => "bare chromium-headless-shell",
        }
    }
}

/// A bare Chromium, launched the plain way: chromiumoxide's own launch, plain headless flags,
/// a fresh profile. The stand-in must not refuse it (`Refuse::Never`): it says it is headless.
pub struct Bare {
    pub browser: Browser,
    handler: tokio::task::JoinHandle<()>,
    pub page: Page,
    _profile: tempfile::TempDir,
}

impl Bare {
    /// Launches and opens `url`; resolves when the page shows a QR payload.
    pub async fn to_qr(engine: BareEngine, url: &str) -> (Bare, Duration) {
        let started = Instant::now();
        let profile = tempfile::tempdir().unwrap();
        let builder = match engine {
            BareEngine::Chromium => BrowserConfig::builder()
                .chrome_executable("/usr/lib/chromium/chromium")
                .new_headless_mode(),
            BareEngine::Shell => BrowserConfig::builder()
                .chrome_executable("/usr/lib/chromium/chromium-headless-shell"),
        };
        let config = builder
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
        let bare = Bare {
            browser,
            handler,
            page,
            _profile: profile,
        };
        while bare.qr().await.is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (bare, started.elapsed())
    }

    /// The QR payload the page shows now.
    pub async fn qr(&self) -> Option<String> {
        self.page
            .evaluate(READ_QR)
            .await
            .ok()
            .and_then(|r| r.into_value().ok())
            .flatten()
    }

    pub fn pid(&mut self) -> u32 {
        self.browser
            .get_mut_child()
            .unwrap()
            .as_mut_inner()
            .id()
            .unwrap()
    }

    pub async fn close(mut self) {
        let _ = self.browser.close().await;
        let _ = self.browser.wait().await;
        self.handler.abort();
        drop(self.page);
    }
}

/// A process and all its descendants.
pub fn tree(root: u32) -> Vec<u32> {
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

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// PSS summed over `pids`, in MiB.
pub fn pss_mib(pids: &[u32]) -> f64 {
    mib(pids.iter().map(|p| procfs::pss_bytes(*p)).sum())
}

/// CPU time (user + system) a process has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

pub fn cpu_of(pids: &[u32]) -> Duration {
    pids.iter().map(|p| cpu_time(*p)).sum()
}

/// The `p`-th percentile (0–100) by nearest rank.
pub fn percentile(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

pub fn median(v: &[Duration]) -> Duration {
    percentile(v, 50.0)
}

pub fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

pub fn all_ms(v: &[Duration]) -> String {
    v.iter()
        .map(|d| format!("{:.0}", d.as_secs_f64() * 1000.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Samples the daemon's RSS and the browser tree's PSS every 100 ms until stopped: the peaks.
pub struct Peaks {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    peaks: std::sync::Arc<std::sync::Mutex<(f64, f64)>>,
    thread: std::thread::JoinHandle<()>,
}

impl Peaks {
    pub fn start(daemon: u32, browser: u32) -> Peaks {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let peaks = std::sync::Arc::new(std::sync::Mutex::new((0.0f64, 0.0f64)));
        let thread = {
            let (done, peaks) = (done.clone(), peaks.clone());
            std::thread::spawn(move || {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let rss = wa_supervisor::procfs::rss_bytes(daemon) as f64 / 1048576.0;
                    let pss = pss_mib(&tree(browser));
                    let mut p = peaks.lock().unwrap();
                    p.0 = p.0.max(rss);
                    p.1 = p.1.max(pss);
                    drop(p);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Peaks {
            done,
            peaks,
            thread,
        }
    }

    pub fn stop(self) -> (f64, f64) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap();
        *self.peaks.lock().unwrap()
    }
}

/// Starts `user:1`, scans its QR code for `phone` and waits until it is connected through WA-JS.
pub async fn link(
    d: &crate::support::daemon::Daemon,
    standin: &crate::support::standin::StandIn,
    user: &str,
    phone: &str,
) {
    d.call(
        "POST",
        &format!("/api/start/{user}/1"),
        crate::support::harness::SERVICE_TOKEN,
    )
    .await;
    let s = d
        .wait_state(user, 1, Duration::from_secs(60), |s| {
            s["qr"]["payload"].is_string()
        })
        .await;
    standin
        .scan(s["qr"]["payload"].as_str().unwrap(), phone)
        .await
        .unwrap();
    d.wait_state(user, 1, Duration::from_secs(60), |s| {
        s["state"] == "connected" && s["bridge"] == "wa-js"
    })
    .await;
}
