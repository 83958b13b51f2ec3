//! The memory bulkhead's end in the session: a browser over `SESSION_MEMORY_MAX` is recycled —
//! closed gracefully (its profile flushed), relaunched on the same profile at once. The login
//! survives (no new scan); no crash is counted. The registry's memory check sends
//! [`OverMemory`] (`actors/registry/bulkhead.rs`).

use std::sync::atomic::Ordering::Relaxed;

use actix::prelude::*;

use super::{Cause, SessionActor, SYSTEM};
use crate::domain::{SessionKey, SessionState};

/// This browser's process tree uses `bytes` (PSS), more than `SESSION_MEMORY_MAX`. Ignored when
/// the session's browser is another one by now (`pid` tells).
#[derive(Message)]
#[rtype(result = "()")]
pub struct OverMemory {
    pub key: SessionKey,
    pub pid: u32,
    pub bytes: u64,
}

impl Handler<OverMemory> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: OverMemory, ctx: &mut Context<Self>) {
        if self.check_key(&msg.key).is_err() {
            return;
        }
        let current = self.run.as_ref().and_then(|r| r.browser.pid());
        if current != Some(msg.pid) || !self.machine.state.is_running() {
            return;
        }
        let mib = |b: u64| b / (1024 * 1024);
        let reason = format!(
            "memory: its browser uses {} MiB, over SESSION_MEMORY_MAX ({} MiB)",
            mib(msg.bytes),
            mib(self.env.memory.max_bytes)
        );
        self.recycle(reason, ctx);
    }
}

impl SessionActor {
    /// Closes the browser gracefully and launches it again on its profile.
    fn recycle(&mut self, reason: String, ctx: &mut Context<Self>) {
        if !self.transition(Cause::Recycle(reason), SYSTEM, ctx) {
            return;
        }
        let Some(run) = self.run.take() else { return };
        self.recycles += 1;
        self.env.metrics.recycles_memory.fetch_add(1, Relaxed);
        let (generation, grace) = (self.generation, self.env.close_grace);
        ctx.spawn(
            async move {
                drop(run.close(grace).await);
            }
            .into_actor(self)
            .map(move |(), act, ctx| {
                // Unless something else happened meanwhile (a stop, a shutdown).
                if act.generation == generation && act.machine.state == SessionState::Restarting {
                    act.launch(Cause::Relaunch, SYSTEM, ctx);
                }
            }),
        );
    }
}
