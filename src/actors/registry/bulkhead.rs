//! The memory bulkhead (`SESSION_MEMORY_MAX`): every `SESSION_MEMORY_CHECK_SECS` one pass over
//! `/proc`, off the actor threads, finds every browser on a profile under `SESSIONS_DIR` and
//! measures its whole process group; a session whose browser's PSS is over the limit is told so
//! ([`OverMemory`]) and recycles it — closed gracefully, relaunched on its profile, no new scan.
//! One tenant's page can never take the host's memory.
//!
//! PSS costs the kernel a walk of every mapping (about 2 ms per Chromium process: 1 s of CPU per
//! pass at 100 sessions), so the pass reads each tree's resident size first (`statm`, 26 µs a
//! process), an upper bound of its PSS, and reads the PSS only of a tree whose resident size is
//! over the limit. Each tree's private resident memory (a lower bound of its PSS, and what grows
//! with the page's heap) is kept for `/actors`.

use std::collections::HashMap;

use actix::prelude::*;

use super::Registry;
use crate::actors::session::OverMemory;
use crate::domain::SessionKey;

impl Registry {
    /// Arms the periodic check (called once, when the registry starts).
    pub(super) fn watch_memory(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.env.memory.check_every, |act, ctx| {
            act.check_memory(ctx)
        });
    }

    fn check_memory(&mut self, ctx: &mut Context<Self>) {
        if self.memory_check_running {
            return;
        }
        self.memory_check_running = true;
        let root = self.env.sessions.path().to_path_buf();
        let max_slots = crate::domain::SLOT_CEILING;
        let max = self.env.memory.max_bytes;
        let read = tokio::task::spawn_blocking(move || {
            crate::browser::process::browser_trees(&root)
                .into_iter()
                .filter_map(|tree| {
                    let name = tree.profile.file_name()?.to_str()?;
                    let key = SessionKey::from_folder_name(name, max_slots)?;
                    let (resident, private) = tree.resident_bytes();
                    let over = (resident > max)
                        .then(|| tree.pss_bytes())
                        .filter(|pss| *pss > max);
                    Some((key, (tree.leader, private, over)))
                })
                .collect::<HashMap<_, _>>()
        });
        ctx.spawn(read.into_actor(self).map(|trees, act, _| {
            act.memory_check_running = false;
            let Ok(trees) = trees else { return };
            for (key, (pid, _, over)) in &trees {
                let Some(bytes) = *over else { continue };
                if let Some(addr) = act.actors.get(key).filter(|a| a.connected()) {
                    addr.do_send(OverMemory {
                        key: key.clone(),
                        pid: *pid,
                        bytes,
                    });
                }
            }
            act.memory = trees
                .into_iter()
                .map(|(k, (_, private, _))| (k, private))
                .collect();
        }));
    }
}
