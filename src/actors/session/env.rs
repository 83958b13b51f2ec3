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

pub struct SessionEnv {
    /// Where profile folders are (the only source of their paths).
    pub sessions: SessionsRoot,
    /// Starts browsers: Chromium in the daemon, a scripted fake in supervision tests.
    pub launcher: Arc<dyn Launcher>,
    /// The WA-JS the pages get, if any (shown by `/readyz` and `/actors`).
    pub wa_js: Option<crate::browser::wajs::WaJsInfo>,
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
}
