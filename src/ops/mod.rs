//! The seed's operations, done safely (docs/operations.md): backup, restore, clean-up, deleting
//! a user.
//!
//! - [`archive`]: the backup file — a checked tar, optionally an age file.
//! - [`backup`]: taking one: logins from closed browsers, the rows, the media, the manifest.
//! - [`commands`]: `wa-supervisor backup | restore | purge`, through the daemon or alone.
//! - [`purge`]: the clean-up: candidates, a dry run, removal.
//! - [`remove`]: removing a session for good, and a user's deletion.
//! - [`restore`]: a backup back into an empty daemon, checked whole before anything is written.

pub mod archive;
pub mod backup;
pub mod commands;
pub mod purge;
pub mod remove;
pub mod restore;

use std::path::PathBuf;
use std::sync::Arc;

use crate::actors::registry::RegistryHandle;
use crate::media::Media;

/// What the operations' routes share (one per daemon).
pub struct Ops {
    pub data_dir: PathBuf,
    pub max_slots: u16,
    pub media: Arc<Media>,
    /// One backup at a time (a second is refused: 409 `backup_in_progress`).
    backups: Arc<tokio::sync::Mutex<()>>,
    /// Purges and deletions one after the other.
    pub removals: tokio::sync::Mutex<()>,
}

impl Ops {
    pub fn new(data_dir: PathBuf, max_slots: u16, media: Arc<Media>) -> Ops {
        Ops {
            data_dir,
            max_slots,
            media,
            backups: Default::default(),
            removals: Default::default(),
        }
    }

    /// The right to take a backup now, if no other is being taken.
    pub fn try_backup(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        self.backups.clone().try_lock_owned().ok()
    }

    /// A remover working through the running daemon's registry.
    pub fn remover(&self, registry: RegistryHandle) -> remove::Remover {
        remove::Remover {
            store: registry.store().clone(),
            media: self.media.clone(),
            sessions: registry.env().sessions.clone(),
            registry: Some(registry),
            this_node_only: false,
        }
    }
}
