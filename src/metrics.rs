//! Prometheus metrics, rendered by hand in the text exposition format (a handful of counters and
//! two histograms do not need a metrics crate). Served by `GET /metrics` (admin).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::domain::SessionState;

/// Upper bounds (seconds) of the latency histograms: a QR in under a second is the goal, a
/// human scan takes tens of seconds.
const BUCKETS: [f64; 12] = [
    0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];

#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (bound, n) in BUCKETS.iter().zip(&self.counts) {
            if secs <= *bound {
                n.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, n) in BUCKETS.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

#[derive(Default)]
pub struct Metrics {
    pub launches: AtomicU64,
    pub crashes: AtomicU64,
    pub restarts: AtomicU64,
    /// Messages refused by a session actor because they named another key (always 0).
    pub misrouted: AtomicU64,
    /// Browsers recycled for going over `SESSION_MEMORY_MAX`.
    pub recycles_memory: AtomicU64,
    /// Backups the daemon wrote whole, and those that failed (docs/operations.md).
    pub backups_ok: AtomicU64,
    pub backups_failed: AtomicU64,
    /// When the last whole backup ended (Unix seconds, 0: none yet) and its size.
    pub backup_last_ok_secs: AtomicU64,
    pub backup_last_bytes: AtomicU64,
    /// Sessions removed for good by purges and by users' deletions.
    pub removed_purge: AtomicU64,
    pub removed_deletion: AtomicU64,
    pub start_to_qr: Histogram,
    pub qr_to_connected: Histogram,
    /// (route pattern, method, status) → count.
    http: Mutex<BTreeMap<(String, String, u16), u64>>,
}

impl Metrics {
    pub fn http_request(&self, route: &str, method: &str, status: u16) {
        let mut http = self.http.lock().expect("metrics lock");
        *http
            .entry((route.to_owned(), method.to_owned(), status))
            .or_default() += 1;
    }

    /// The exposition text. `states` counts sessions per state; `browsers` is the number of
    /// browser processes and their total proportional set size; `binary` the browser sessions
    /// launch.
    pub fn render(
        &self,
        states: &[(SessionState, usize)],
        browsers: (usize, u64),
        binary: Option<&crate::browser::BrowserBinary>,
    ) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP wa_sessions Sessions by state.\n# TYPE wa_sessions gauge"
        );
        for (state, n) in states {
            let _ = writeln!(out, "wa_sessions{{state=\"{state}\"}} {n}");
        }
        for (name, help, value) in [
            (
                "wa_browser_launches_total",
                "Chromium launches (starts, restarts and restores).",
                &self.launches,
            ),
            (
                "wa_browser_crashes_total",
                "Browsers that died unexpectedly.",
                &self.crashes,
            ),
            (
                "wa_session_restarts_total",
                "Relaunches after a crash.",
                &self.restarts,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP wa_misrouted_messages_total Messages refused by an actor because they named another key (always 0).\n\
             # TYPE wa_misrouted_messages_total counter\nwa_misrouted_messages_total {}",
            self.misrouted.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP wa_session_recycles_total Browsers closed and relaunched on their profile, by reason.\n\
             # TYPE wa_session_recycles_total counter\nwa_session_recycles_total{{reason=\"memory\"}} {}",
            self.recycles_memory.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP wa_backups_total Backups the daemon took, by outcome.\n# TYPE wa_backups_total counter\n\
             wa_backups_total{{outcome=\"ok\"}} {}\nwa_backups_total{{outcome=\"failed\"}} {}\n\
             # HELP wa_backup_last_success_timestamp_seconds When the last whole backup ended (0: none since the start).\n\
             # TYPE wa_backup_last_success_timestamp_seconds gauge\nwa_backup_last_success_timestamp_seconds {}\n\
             # HELP wa_backup_last_bytes The size of the last whole backup.\n# TYPE wa_backup_last_bytes gauge\n\
             wa_backup_last_bytes {}\n\
             # HELP wa_sessions_removed_total Sessions removed for good, by what removed them.\n\
             # TYPE wa_sessions_removed_total counter\nwa_sessions_removed_total{{by=\"purge\"}} {}\n\
             wa_sessions_removed_total{{by=\"user_deletion\"}} {}",
            self.backups_ok.load(Ordering::Relaxed),
            self.backups_failed.load(Ordering::Relaxed),
            self.backup_last_ok_secs.load(Ordering::Relaxed),
            self.backup_last_bytes.load(Ordering::Relaxed),
            self.removed_purge.load(Ordering::Relaxed),
            self.removed_deletion.load(Ordering::Relaxed),
        );
        if let Some(b) = binary {
            let _ = writeln!(
                out,
                "# HELP wa_browser_info The browser sessions launch.\n# TYPE wa_browser_info gauge\n\
                 wa_browser_info{{engine=\"{}\",version=\"{}\"}} 1",
                b.engine,
                b.version.replace(['"', '\\', '\n'], "")
            );
        }
        self.start_to_qr.render(
            &mut out,
            "wa_start_to_qr_seconds",
            "From launch to the first QR code.",
        );
        self.qr_to_connected.render(
            &mut out,
            "wa_qr_to_connected_seconds",
            "From the first QR code to linked.",
        );
        let _ = writeln!(
            out,
            "# HELP wa_browser_processes Processes of the browsers on our profiles (browser, zygotes, renderers, utilities).\n# TYPE wa_browser_processes gauge\n\
             wa_browser_processes {}\n# HELP wa_browser_pss_bytes Total proportional set size of those processes.\n\
             # TYPE wa_browser_pss_bytes gauge\nwa_browser_pss_bytes {}",
            browsers.0, browsers.1
        );
        let _ = writeln!(out, "# HELP wa_http_requests_total HTTP requests by route and status.\n# TYPE wa_http_requests_total counter");
        for ((route, method, status), n) in self.http.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "wa_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.start_to_qr.observe(Duration::from_millis(400));
        m.start_to_qr.observe(Duration::from_secs(4));
        m.http_request("/api/start/{userId}/{slot}", "POST", 202);
        let binary = crate::browser::BrowserBinary {
            engine: crate::browser::Engine::Shell,
            path: "/usr/lib/chromium/chromium-headless-shell".into(),
            version: "156.0.8078.114".into(),
        };
        let text = m.render(&[(SessionState::Qr, 2)], (9, 1 << 20), Some(&binary));
        assert!(text.contains("wa_browser_info{engine=\"shell\",version=\"156.0.8078.114\"} 1"));
        assert!(text.contains("wa_session_recycles_total{reason=\"memory\"} 0"));
        assert!(text.contains("wa_start_to_qr_seconds_bucket{le=\"0.5\"} 1"));
        assert!(text.contains("wa_start_to_qr_seconds_bucket{le=\"5\"} 2"));
        assert!(text.contains("wa_start_to_qr_seconds_count 2"));
        assert!(text.contains("wa_sessions{state=\"qr\"} 2"));
        assert!(text.contains(
            "wa_http_requests_total{route=\"/api/start/{userId}/{slot}\",method=\"POST\",status=\"202\"} 1"
        ));
    }
}
