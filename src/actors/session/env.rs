//! What every session actor shares: configuration, the store, the event bus.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::broadcast;

use super::view::Session;
use crate::browser::PageConfig;
use crate::domain::SessionsRoot;
use crate::store::Store;

/// Crash handling (SPEC §7); values come from `Settings::supervision`.
#[derive(Debug, Clone)]
pub struct Supervision {
    pub backoff_first: Duration,
    pub backoff_max: Duration,
    /// More than this many crashes within `crash_window` → `failed`.
    pub max_crashes: usize,
    pub crash_window: Duration,
}

pub struct SessionEnv {
    pub sessions: SessionsRoot,
    /// `None` when Chromium was not found: starts fail with that reason.
    pub chromium: Result<PathBuf, String>,
    pub page: PageConfig,
    pub qr_timeout: Duration,
    pub launch_timeout: Duration,
    /// From a launched browser to its first QR code or chat list; longer counts as a crash.
    pub page_ready_timeout: Duration,
    /// Grace for a browser to exit after CDP close before its group is killed.
    pub close_grace: Duration,
    pub poll_every: Duration,
    pub supervision: Supervision,
    /// Browsers being launched at once, host-wide.
    pub launches: tokio::sync::Semaphore,
    pub launch_concurrency: usize,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,

    pub store: Store,
    /// Every change of every session; subscribers filter by user.
    pub events: broadcast::Sender<Session>,
}
