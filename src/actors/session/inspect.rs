use std::path::PathBuf;

use actix::prelude::*;
use serde::Serialize;

use super::{Session, SessionActor};

/// What an operator sees of one actor in `/actors`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActorInfo {
    pub key: String,
    #[serde(flatten)]
    pub session: Session,
    pub browser_pid: Option<u32>,
    #[schema(value_type = String)]
    pub profile_path: PathBuf,
    pub uptime_secs: u64,
    /// Milliseconds until the next relaunch while `restarting`.
    pub restart_in_ms: Option<u64>,
    /// Cluster mode: the epoch of this node's lease on the session, while it holds one.
    pub lease_epoch: Option<i64>,
    /// The WA-JS version the browser's page reported, once ready.
    pub wa_js_version: Option<String>,
    /// Browsers recycled for going over `SESSION_MEMORY_MAX` since the daemon started.
    pub recycles: u32,
    /// The browser's private resident memory (its whole process tree, shared pages left out)
    /// at the last memory check, in bytes: what grows with the page's heap. The bulkhead compares
    /// the PSS, which adds the tree's share of the shared pages.
    pub memory_bytes: Option<u64>,
}

/// The actor's own description for `/actors`.
#[derive(Message)]
#[rtype(result = "ActorInfo")]
pub struct Inspect;

impl Handler<Inspect> for SessionActor {
    type Result = MessageResult<Inspect>;

    fn handle(&mut self, _: Inspect, _: &mut Context<Self>) -> Self::Result {
        MessageResult(ActorInfo {
            key: self.key.to_string(),
            session: self.view(),
            browser_pid: self.run.as_ref().and_then(|r| r.browser.pid()),
            profile_path: self.env.sessions.profile_dir(&self.key),
            uptime_secs: self.born.elapsed().as_secs(),
            lease_epoch: self.fence.map(|f| f.epoch),
            wa_js_version: self.wa_js_version.clone(),
            recycles: self.recycles,
            memory_bytes: None,
            restart_in_ms: self
                .relaunch_at
                .filter(|_| self.machine.state == crate::domain::SessionState::Restarting)
                .map(|at| {
                    at.saturating_duration_since(tokio::time::Instant::now())
                        .as_millis() as u64
                }),
        })
    }
}
