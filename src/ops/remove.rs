//! Removing a session for good, which a purge and a user's deletion share (docs/operations.md):
//! logged out first when it runs or is linked (unlinked on WhatsApp's side), its actor retired,
//! its folder, row, events, deliveries, send keys, media and snapshot deleted, one audit event
//! left saying why and by whom.

use std::sync::Arc;

use serde::Serialize;

use crate::actors::registry::{RegistryError, RegistryHandle};
use crate::domain::{SessionKey, SessionsRoot, Slot, UserId};
use crate::media::Media;
use crate::store::{now_ms, NewEvent, Removed, Store, StoreError};

/// What removing one session did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionRemoval {
    pub user_id: UserId,
    pub slot: Slot,
    /// The number it was linked to, if any.
    pub number: Option<String>,
    /// WhatsApp was told (the phone's list of linked devices drops this one).
    pub unlinked_on_whats_app: bool,
    /// Bytes of the profile folder deleted.
    pub folder_bytes: u64,
    pub removed: Removed,
}

#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    /// `what`: the session key, or the user.
    #[error("{what}: the database")]
    Store {
        what: String,
        #[source]
        source: StoreError,
    },
    #[error("{what}: the session")]
    Session {
        what: String,
        #[source]
        source: RegistryError,
    },
    #[error("{what}: its profile folder")]
    Folder {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// What a removal works with: a running daemon's registry, or none (the daemon is stopped and
/// this process holds `SESSIONS_DIR`).
#[derive(Clone)]
pub struct Remover {
    pub store: Store,
    pub media: Arc<Media>,
    pub sessions: SessionsRoot,
    pub registry: Option<RegistryHandle>,
    /// Cluster mode, another node's call for a user's deletion: only this node's part — the
    /// sessions it runs are logged out, its actors retired, its folders deleted; the shared rows
    /// are the calling node's to delete.
    pub this_node_only: bool,
}

impl Remover {
    /// Removes `key`. `unlink`: a session that runs or is linked is logged out first, a
    /// stopped linked one started just long enough to unlink it (with a daemon; without one
    /// WhatsApp cannot be told). `audit_trail`: its audit trail goes too (a user's deletion);
    /// either way one `kind` event (`purged`, `deleted`) records `why` and `by`.
    pub async fn remove(
        &self,
        key: &SessionKey,
        kind: &str,
        why: &str,
        by: &str,
        unlink: bool,
        audit_trail: bool,
    ) -> Result<SessionRemoval, RemoveError> {
        let store_err = |source| RemoveError::Store {
            what: key.to_string(),
            source,
        };
        let session_err = |source| RemoveError::Session {
            what: key.to_string(),
            source,
        };
        let row = self.store.load_session(key).await.map_err(store_err)?;
        let mut number = row.as_ref().and_then(|r| r.connected_number.clone());
        let mut unlinked = false;
        if let Some(registry) = &self.registry {
            let view = match registry.status(key.clone()).await {
                Ok(view) => Some(view),
                Err(RegistryError::Unknown) => None,
                Err(e) => return Err(session_err(e)),
            };
            if let Some(view) = view {
                number = number.or(view.connected_number.clone());
                let live = view.state.is_running() || number.is_some();
                let runs_here = registry
                    .env()
                    .cluster
                    .as_ref()
                    .is_none_or(|c| c.holds(key).is_some());
                if unlink && live && (runs_here || !self.this_node_only) {
                    let out = registry
                        .logout(key.clone(), by.to_owned(), true)
                        .await
                        .map_err(session_err)?;
                    unlinked = out.unlinked_on_whats_app == Some(true);
                }
            }
            registry.retire(key.clone()).await.map_err(session_err)?;
        }
        let result = if self.this_node_only {
            self.delete_folder(key)
                .await
                .map(|folder_bytes| SessionRemoval {
                    user_id: key.user_id().clone(),
                    slot: key.slot(),
                    number,
                    unlinked_on_whats_app: unlinked,
                    folder_bytes,
                    removed: Removed::default(),
                })
        } else {
            self.delete(key, kind, why, by, audit_trail, number, unlinked)
                .await
        };
        if let Some(registry) = &self.registry {
            registry.removed(key.clone()).await;
        }
        result
    }

    /// The folder and the stored data of a session no actor runs any more.
    #[allow(clippy::too_many_arguments)]
    async fn delete(
        &self,
        key: &SessionKey,
        kind: &str,
        why: &str,
        by: &str,
        audit_trail: bool,
        number: Option<String>,
        unlinked: bool,
    ) -> Result<SessionRemoval, RemoveError> {
        let folder_bytes = self.delete_folder(key).await?;
        let removed = self
            .store
            .remove_session(key, audit_trail)
            .await
            .map_err(|source| RemoveError::Store {
                what: key.to_string(),
                source,
            })?;
        self.media.drop_contents(removed.freed.clone()).await;
        let detail = format!(
            "{why}: {} events, {} deliveries, {} media ({} bytes), folder {} bytes; WhatsApp {}",
            removed.events,
            removed.deliveries,
            removed.media,
            removed.media_bytes,
            folder_bytes,
            if unlinked { "told" } else { "not told" }
        );
        log::info!("{key} {kind} by {by}: {detail}");
        let audit = NewEvent {
            key: key.clone(),
            at_ms: now_ms(),
            kind: kind.to_owned(),
            detail: Some(detail),
            actor: by.to_owned(),
        };
        if let Err(e) = self.store.record_event(audit, None).await {
            log::warn!("{key} {kind}: not audited: {}", crate::chain(&e));
        }
        Ok(SessionRemoval {
            user_id: key.user_id().clone(),
            slot: key.slot(),
            number,
            unlinked_on_whats_app: unlinked,
            folder_bytes,
            removed,
        })
    }
}

impl Remover {
    /// Deletes `key`'s profile folder (no browser runs on it); its size.
    async fn delete_folder(&self, key: &SessionKey) -> Result<u64, RemoveError> {
        let profile = self.sessions.profile_dir(key);
        tokio::task::spawn_blocking(move || {
            let size = crate::files::tree_size(&profile);
            crate::files::remove_tree(&profile).map(|()| size)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        .map_err(|source| RemoveError::Folder {
            what: key.to_string(),
            source,
        })
    }
}

/// What deleting a user removed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserDeletion {
    pub user_id: UserId,
    /// Each slot that had anything, by slot.
    pub sessions: Vec<SessionRemoval>,
    /// The user's own webhook.
    pub webhook: bool,
    /// The sums over the slots.
    pub removed: Removed,
    /// Cluster mode: the other nodes asked to log out and forget their part, and what each said.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodePart>,
}

/// One other node's part in a user's deletion.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodePart {
    pub node: String,
    /// `ok`, or why not (the node did not answer: its folders stay until its own purge).
    pub outcome: String,
}

impl Remover {
    /// Deletes everything of `user` (docs/operations.md, "Deleting a user"). Idempotent.
    pub async fn delete_user(&self, user: &UserId, by: &str) -> Result<UserDeletion, RemoveError> {
        let mut keys = self
            .store
            .user_slots(user)
            .await
            .map_err(|source| RemoveError::Store {
                what: user.to_string(),
                source,
            })?;
        if let Some(registry) = &self.registry {
            let known =
                registry
                    .list(user.clone())
                    .await
                    .map_err(|source| RemoveError::Session {
                        what: user.to_string(),
                        source,
                    })?;
            keys.extend(known.into_iter().map(|s| s.key));
        }
        keys.extend(self.folders_of(user));
        keys.sort();
        keys.dedup();
        let mut deletion = UserDeletion {
            user_id: user.clone(),
            sessions: Vec::new(),
            webhook: false,
            removed: Removed::default(),
            nodes: Vec::new(),
        };
        for key in keys {
            let one = self
                .remove(&key, "deleted", "account deleted", by, true, true)
                .await?;
            deletion.removed.add(one.removed.clone());
            deletion.sessions.push(one);
        }
        if !self.this_node_only {
            deletion.webhook =
                self.store
                    .delete_webhook(user, now_ms())
                    .await
                    .map_err(|source| RemoveError::Store {
                        what: user.to_string(),
                        source,
                    })?;
        }
        deletion.removed.freed.clear();
        Ok(deletion)
    }

    /// The profile folders of `user` in `SESSIONS_DIR` (also those without a row).
    fn folders_of(&self, user: &UserId) -> Vec<SessionKey> {
        let Ok(entries) = std::fs::read_dir(self.sessions.path()) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|name| SessionKey::from_folder_name(&name, crate::domain::SLOT_CEILING))
            .filter(|k| k.user_id() == user)
            .collect()
    }
}
