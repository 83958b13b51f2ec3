//! What every session actor shares: configuration, the browser launcher, the store, the event
//! bus, the metrics.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use super::supervision::Supervision;
use super::view::Session;
use crate::browser::Launcher;
use crate::domain::SessionsRoot;
use crate::metrics::Metrics;
use crate::store::Store;

/// `SESSION_MEMORY_MAX` and how often it is checked (one pass over `/proc` for every session).
#[derive(Debug, Clone, Copy)]
pub struct MemoryLimit {
    pub max_bytes: u64,
    pub check_every: Duration,
}

pub struct SessionEnv {
    /// Where profile folders are (the only source of their paths).
    pub sessions: SessionsRoot,
    /// Starts browsers: Chromium in the daemon, a scripted fake in supervision tests.
    pub launcher: Arc<dyn Launcher>,
    /// The browser binary sessions launch (`None`: none installed; starts fail, not ready).
    pub browser: Option<crate::browser::BrowserBinary>,
    /// The WA-JS the pages get, if any (shown by `/readyz` and `/actors`).
    pub wa_js: Option<crate::browser::wajs::WaJsInfo>,
    /// The WA-JS version the latest page reported (`WPP.version`): what `/readyz` shows when
    /// the file's own version is not known (a file pinned by `WA_JS_SHA256` without a banner).
    pub wa_js_reported: std::sync::Mutex<Option<String>>,
    /// The memory bulkhead: a browser tree above `max_bytes` is recycled.
    pub memory: MemoryLimit,
    /// An unscanned QR code closes the browser after this long.
    pub qr_timeout: Duration,
    /// From a launched browser to its first QR code or chat list; longer counts as a crash.
    pub page_ready_timeout: Duration,
    /// Grace for a browser to exit after an orderly close before its group is killed.
    pub close_grace: Duration,
    /// The safety-net poll of the page beside its pushed observations.
    pub poll_every: Duration,
    pub supervision: Supervision,
    /// Browsers being launched at once, host-wide.
    pub launches: tokio::sync::Semaphore,
    pub launch_concurrency: usize,
    pub metrics: Arc<Metrics>,
    pub store: Store,
    /// Where messages, acks and state changes are written first, then streamed and delivered.
    pub outbox: Arc<crate::events::Outbox>,
    /// Every change of every session (the registry's cache); subscribers filter by user.
    pub events: broadcast::Sender<Session>,
    /// Sends a session may make per minute (`SEND_PER_MINUTE`; WhatsApp bans bursts).
    pub send_per_minute: u32,
    /// This node in a cluster (docs/several-hosts.md); `None` for a single node.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Incoming media (`None` in the logic tests: media messages are recorded without it).
    pub media: Option<Arc<crate::media::Media>>,
}

impl SessionEnv {
    /// The WA-JS in use as operators see it: the file's version, or the one its pages report
    /// when the file does not say.
    pub fn wa_js_info(&self) -> Option<crate::browser::wajs::WaJsInfo> {
        let mut info = self.wa_js.clone()?;
        if info.version == crate::browser::wajs::UNKNOWN_VERSION {
            if let Some(reported) = self.wa_js_reported.lock().expect("not poisoned").clone() {
                info.version = reported;
            }
        }
        Some(info)
    }
}
