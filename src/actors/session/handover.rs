//! Cluster mode: what a session does around its browser so it can move between nodes
//! (docs/several-hosts.md, "Sessions move").
//!
//! - Before a launch under a new lease: the newest snapshot is restored into the profile when
//!   it is newer than what this profile last ran under. The profile keeps that epoch in
//!   [`EPOCH_FILE`].
//! - After a close: the login of the closed browser is snapshotted (a stop, a shutdown, a drain,
//!   a snapshot cycle) or forgotten (a logout); the last writes are flushed; then the lease is
//!   released unless the browser comes back at once (a snapshot cycle).

use std::path::{Path, PathBuf};

use actix::prelude::*;

use crate::cluster::snapshot;
use crate::domain::SessionKey;
use crate::store::{now_ms, Fence, Store};

/// In the profile folder: the lease epoch this profile last ran under.
pub const EPOCH_FILE: &str = "wa-supervisor-epoch";

fn epoch_of(profile: &Path) -> Option<i64> {
    std::fs::read_to_string(profile.join(EPOCH_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn mark(profile: &Path, fence: Fence) -> std::io::Result<()> {
    crate::files::create_dir(profile)?;
    std::fs::write(profile.join(EPOCH_FILE), fence.epoch.to_string())
}

/// Restores `key`'s newest snapshot into `profile` (its browser closed) when the snapshot was
/// taken under a later epoch than the profile last ran under — or, when that is a logout,
/// removes the login the profile kept — then marks the profile with `fence`. When the snapshot cannot be read or unpacked, the profile is not marked and the
/// error comes back: no browser may launch on it (a login that came back older, or none, would
/// be snapshotted later as the newest one).
pub async fn restore_newer(
    store: &Store,
    key: &SessionKey,
    profile: PathBuf,
    fence: Fence,
) -> Result<(), String> {
    let snap = store
        .snapshot(key)
        .await
        .map_err(|e| format!("the login snapshot could not be read: {}", crate::chain(&e)))?;
    let restored = tokio::task::spawn_blocking(move || {
        let local = epoch_of(&profile);
        let newer = snap.filter(|s| local.is_none_or(|l| s.epoch > l));
        let restored = match newer {
            Some(s) => {
                match &s.bytes {
                    Some(bytes) => snapshot::unpack(&profile, bytes)?,
                    None => snapshot::forget(&profile)?,
                }
                Some((s.epoch, s.node, s.bytes.map(|b| b.len())))
            }
            None => None,
        };
        mark(&profile, fence)?;
        Ok::<_, std::io::Error>(restored)
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    .map_err(|e| format!("the login snapshot could not be restored: {e}"))?;
    match restored {
        Some((epoch, node, Some(bytes))) => log::info!(
            "{key} login restored from the snapshot of epoch {epoch} by {node} ({bytes} bytes)"
        ),
        Some((epoch, node, None)) => log::info!(
            "{key} was logged out at epoch {epoch} by {node}: the login this profile kept is removed"
        ),
        None => {}
    }
    Ok(())
}

/// Snapshots the login of `key`'s closed browser under `fence`.
pub async fn take(store: &Store, key: &SessionKey, profile: PathBuf, fence: Fence) {
    let packed = tokio::task::spawn_blocking(move || snapshot::pack(&profile))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    match packed {
        Ok(Some(bytes)) => {
            let size = bytes.len();
            match store.put_snapshot(key, fence, now_ms(), bytes).await {
                Ok(()) => log::info!("{key} snapshot taken (epoch {}, {size} bytes)", fence.epoch),
                Err(e) => log::warn!("{key} snapshot not stored: {}", crate::chain(&e)),
            }
        }
        Ok(None) => {}
        Err(e) => log::warn!("{key} snapshot not taken: {e}"),
    }
}

/// Cluster mode (a drain): closes the browser, snapshots its login and releases the lease,
/// keeping the intent, so another node takes the session over. Replies once the lease is
/// released, with the session as this node leaves it.
#[derive(Message)]
#[rtype(result = "Result<super::Session, super::SessionError>")]
pub struct HandOver {
    pub key: SessionKey,
}

impl Handler<HandOver> for super::SessionActor {
    type Result = ResponseActFuture<Self, Result<super::Session, super::SessionError>>;

    fn handle(&mut self, msg: HandOver, ctx: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.check_key(&msg.key) {
            return Box::pin(fut::ready(Err(e)));
        }
        let closing = self.shut_down(super::StopKind::HandOver, "system:drain", ctx);
        Box::pin(
            async move {
                closing.await;
            }
            .into_actor(self)
            .map(|(), act, _| Ok(act.view())),
        )
    }
}
