//! Gap filling (docs/nothing-lost.md): WhatsApp hands a message to a device once, so a message
//! the page received while nothing could record it (the daemon down or killed between the page's
//! receipt and the write, a page that announced nothing) is only in the page's own store. Whenever
//! a page becomes ready and linked (link, relaunch, restore at boot, recycle, takeover) and when
//! WhatsApp says its offline delivery ended, the session reads the page's store for messages at
//! or after its newest recorded one and records them, flagged `backfill: true`. The store's dedupe
//! key makes a message already recorded a no-op, so a pass may overlap freely.

use actix::prelude::*;

use super::{Bridge, SessionActor};
use crate::browser::Command;
use crate::chain;

/// At most this many chats per pass: the ones at the top of the chat list (the most recent).
pub const BACKFILL_CHATS: u32 = 50;
/// At most this many of each chat's latest messages per pass.
pub const BACKFILL_PER_CHAT: u32 = 100;

impl SessionActor {
    /// As a browser launches, reads where its gap filling will start: the newest message
    /// recorded so far. Read now, not when the page is ready, so that messages the new page
    /// reports live before the pass cannot move the start past an older message only the page
    /// has (after a daemon was killed with writes queued).
    pub(super) fn note_backfill_start(&mut self, generation: u64, ctx: &mut Context<Self>) {
        self.backfill_since = None;
        let (store, key) = (self.env.store.clone(), self.key.clone());
        let first_recordable = self.created_ms / 1000;
        let read = async move { store.last_message_ts(&key).await };
        ctx.spawn(read.into_actor(self).map(move |last, act, _| {
            if act.generation == generation {
                match last {
                    Ok(last) => act.backfill_since = Some(last.unwrap_or(first_recordable)),
                    Err(e) => log::warn!("{} newest recorded message: {}", act.key, chain(&e)),
                }
            }
        }));
    }

    /// Starts one gap-filling pass on the current browser (WA-JS needed; one pass at a time).
    pub(super) fn backfill(&mut self, why: &'static str, ctx: &mut Context<Self>) {
        if !(self.run.is_some() && self.bridge == Bridge::WaJs) || self.backfilling {
            return;
        }
        self.backfilling = true;
        let (store, key) = (self.env.store.clone(), self.key.clone());
        let first_recordable = self.created_ms / 1000;
        let generation = self.generation;
        // From the newest message recorded before this browser launched (inclusive: several may
        // share its second), or from the session's creation when it recorded none (older
        // history is not ours); read now if the launch-time read did not land.
        let known = self.backfill_since;
        let since = async move {
            match known {
                Some(since) => Ok(Some(since)),
                None => store.last_message_ts(&key).await,
            }
        };
        ctx.spawn(since.into_actor(self).then(move |since, act, _| {
            let since = since.map(|last| last.unwrap_or(first_recordable));
            let command = match (&since, &act.run) {
                (Ok(since), Some(run)) if act.generation == generation => {
                    Some(run.browser.command(Command::RecentMessages {
                        since: *since,
                        chats: BACKFILL_CHATS,
                        per_chat: BACKFILL_PER_CHAT,
                    }))
                }
                _ => None,
            };
            async move {
                let since =
                    since.map_err(|e| format!("the newest recorded message: {}", chain(&e)))?;
                let answer = command
                    .ok_or_else(|| "the browser went away".to_owned())?
                    .await
                    .map_err(|e| chain(&e))?;
                serde_json::from_value::<Vec<crate::events::PageMessage>>(answer)
                    .map(|found| (since, found))
                    .map_err(|e| format!("unreadable messages: {e}"))
            }
            .into_actor(act)
            .map(move |result, act, _| {
                act.backfilling = false;
                match result {
                    Ok((since, found)) => {
                        log::info!(
                            "{} gap filling ({why}): {} messages in the page's store since {since}",
                            act.key,
                            found.len()
                        );
                        for mut message in found {
                            message.backfill = true;
                            let page = act.page_of(generation);
                            act.record_message(message, page);
                        }
                    }
                    Err(e) => log::warn!("{} gap filling ({why}) failed: {e}", act.key),
                }
            })
        }));
    }
}
