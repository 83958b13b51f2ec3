//! The clean-up (docs/operations.md, "Clean-up"): what the seed did with `rm -rf` and
//! `TRUNCATE whatsapp_bots`, one candidate at a time and only where nothing is lost. A dry run
//! unless asked to apply; a session that runs or is linked is never a candidate unless named.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::remove::{RemoveError, Remover};
use crate::domain::{SessionKey, SessionState, Slot, UserId};
use crate::store::{now_ms, NewEvent, Removed, StoreError};

/// Days a stopped, unlinked session stays before it is a candidate, unless asked otherwise.
pub const DEFAULT_IDLE_DAYS: u32 = 30;

/// `POST /admin/purge`'s body (every field optional), and the command's flags.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PurgeRequest {
    /// Remove what is listed (default: only list it).
    #[serde(default)]
    pub apply: bool,
    /// Days a stopped or failed session without a number must have been unchanged (default 30).
    #[serde(default)]
    pub idle_days: Option<u32>,
    /// Sessions (`userId:slot`) to remove whatever their state: running or linked ones are
    /// logged out first (unlinked on WhatsApp's side).
    #[serde(default)]
    pub sessions: Vec<String>,
}

/// Why something is a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Named in the request.
    Named,
    /// Its last unlink came from WhatsApp's side (the phone, or WhatsApp itself).
    LoggedOutOnWhatsapp,
    /// Stopped or failed, no number, unchanged for the idle days.
    Idle,
    /// Its profile folder is gone (a logout, or deleted by hand).
    RowWithoutFolder,
    /// A profile folder no row names.
    FolderWithoutRow,
    /// Lock files of processes that are gone.
    StaleLock,
}

/// One candidate, and after `apply` what became of it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PurgeItem {
    /// `userId:slot`, for a session or a profile folder.
    pub session: Option<String>,
    /// The files' path, for a folder without a row or a lock file.
    pub path: Option<String>,
    pub reason: Reason,
    /// What it frees: the profile folder and the session's stored media, or the files.
    pub bytes: u64,
    /// After `apply`: the rows that went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed: Option<Removed>,
    /// After `apply`, for a named session: whether WhatsApp was told.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unlinked_on_whats_app: Option<bool>,
    /// After `apply`: why this one could not be removed (the others were).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PurgeReport {
    /// `false`: a dry run, nothing was removed.
    pub applied: bool,
    pub idle_days: u32,
    pub items: Vec<PurgeItem>,
    /// The sum of the items' bytes.
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error("{0}")]
    BadSession(String),
    #[error("{0} has no row and no profile folder")]
    UnknownSession(String),
    #[error("the database")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Remove(#[from] RemoveError),
}

/// `userId:slot`.
pub fn parse_session(raw: &str, max_slots: u16) -> Result<SessionKey, PurgeError> {
    let bad = |why: String| PurgeError::BadSession(format!("{raw:?}: {why}"));
    let (user, slot) = raw
        .trim()
        .rsplit_once(':')
        .ok_or_else(|| bad("expected userId:slot".to_owned()))?;
    let user = UserId::parse(user).map_err(|e| bad(e.to_string()))?;
    let slot = Slot::parse(slot, max_slots).map_err(|e| bad(e.to_string()))?;
    Ok(SessionKey::new(user, slot))
}

enum Target {
    Session(SessionKey),
    Folder(SessionKey),
    Locks(SessionKey, Vec<std::path::PathBuf>),
}

struct Candidate {
    target: Target,
    reason: Reason,
    bytes: u64,
}

/// Lists the candidates and, with `apply`, removes them; `by` is audited.
pub async fn purge(
    remover: &Remover,
    request: &PurgeRequest,
    max_slots: u16,
    by: &str,
) -> Result<PurgeReport, PurgeError> {
    let idle_days = request.idle_days.unwrap_or(DEFAULT_IDLE_DAYS);
    let named = request
        .sessions
        .iter()
        .map(|raw| parse_session(raw, max_slots))
        .collect::<Result<Vec<_>, _>>()?;
    let candidates = plan(remover, &named, idle_days, max_slots).await?;
    let mut items = Vec::with_capacity(candidates.len());
    for c in candidates {
        let mut item = PurgeItem {
            session: match &c.target {
                Target::Session(k) | Target::Folder(k) | Target::Locks(k, _) => Some(k.to_string()),
            },
            path: match &c.target {
                Target::Session(_) => None,
                Target::Folder(k) => Some(remover.sessions.profile_dir(k).display().to_string()),
                Target::Locks(_, paths) => Some(
                    paths
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
            },
            reason: c.reason,
            bytes: c.bytes,
            removed: None,
            unlinked_on_whats_app: None,
            error: None,
        };
        if request.apply {
            apply(remover, &c, &mut item, by).await;
        }
        items.push(item);
    }
    Ok(PurgeReport {
        applied: request.apply,
        idle_days,
        bytes: items.iter().map(|i| i.bytes).sum(),
        items,
    })
}

async fn plan(
    remover: &Remover,
    named: &[SessionKey],
    idle_days: u32,
    max_slots: u16,
) -> Result<Vec<Candidate>, PurgeError> {
    let store = &remover.store;
    let rows = store.list_sessions(None).await?;
    let marks = store.link_marks().await?;
    // What this node knows of each session (its state now).
    let states: HashMap<SessionKey, SessionState> = match &remover.registry {
        Some(registry) => registry
            .all()
            .await
            .map_err(|source| RemoveError::Session {
                what: "the registry".to_owned(),
                source,
            })?
            .into_iter()
            .map(|s| (s.key, s.state))
            .collect(),
        None => HashMap::new(),
    };
    let root = remover.sessions.clone();
    let folders: Vec<SessionKey> = tokio::task::spawn_blocking(move || {
        let mut keys: Vec<SessionKey> = std::fs::read_dir(root.path())
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter_map(|name| SessionKey::from_folder_name(&name, max_slots))
                    .collect()
            })
            .unwrap_or_default();
        keys.sort();
        keys
    })
    .await
    .unwrap_or_default();
    let size = |key: &SessionKey| crate::files::tree_size(&remover.sessions.profile_dir(key));

    let mut out = Vec::new();
    for key in named {
        let known = rows.iter().any(|r| r.key == *key) || folders.contains(key);
        if !known && !states.contains_key(key) {
            return Err(PurgeError::UnknownSession(key.to_string()));
        }
        let bytes = size(key) + store.media_bytes_of(key).await?;
        out.push(Candidate {
            target: Target::Session(key.clone()),
            reason: Reason::Named,
            bytes,
        });
    }
    let idle_before = now_ms() - i64::from(idle_days) * 86_400_000;
    for row in rows.iter().filter(|r| !named.contains(&r.key)) {
        let key = &row.key;
        let runs = states.get(key).is_some_and(|s| s.is_running()) || row.state.is_running();
        if runs || row.connected_number.is_some() {
            continue;
        }
        let has_folder = folders.contains(key);
        let reason = if marks.get(key).is_some_and(|m| m.unlinked_last()) {
            Reason::LoggedOutOnWhatsapp
        } else if matches!(row.state, SessionState::Stopped | SessionState::Failed)
            && row.updated_ms < idle_before
        {
            Reason::Idle
        } else if !has_folder {
            Reason::RowWithoutFolder
        } else {
            continue;
        };
        let bytes = size(key) + store.media_bytes_of(key).await?;
        out.push(Candidate {
            target: Target::Session(key.clone()),
            reason,
            bytes,
        });
    }
    for key in &folders {
        if named.contains(key) || states.get(key).is_some_and(|s| s.is_running()) {
            continue;
        }
        if !rows.iter().any(|r| r.key == *key) {
            out.push(Candidate {
                target: Target::Folder(key.clone()),
                reason: Reason::FolderWithoutRow,
                bytes: size(key),
            });
            continue;
        }
        if out
            .iter()
            .any(|c| matches!(&c.target, Target::Session(k) if k == key))
        {
            continue;
        }
        let profile = remover.sessions.profile_dir(key);
        let locks = crate::browser::stale_locks(&profile);
        if !locks.is_empty() {
            let bytes = locks
                .iter()
                .filter_map(|p| std::fs::symlink_metadata(p).ok())
                .map(|m| m.len())
                .sum();
            out.push(Candidate {
                target: Target::Locks(key.clone(), locks),
                reason: Reason::StaleLock,
                bytes,
            });
        }
    }
    Ok(out)
}

async fn apply(remover: &Remover, c: &Candidate, item: &mut PurgeItem, by: &str) {
    let why = match c.reason {
        Reason::Named => "named in a purge",
        Reason::LoggedOutOnWhatsapp => "logged out on WhatsApp's side",
        Reason::Idle => "stopped and not linked for the idle days",
        Reason::RowWithoutFolder => "its profile folder is gone",
        Reason::FolderWithoutRow => "a profile folder without a row",
        Reason::StaleLock => "lock files of gone processes",
    };
    match &c.target {
        Target::Session(key) => {
            let unlink = c.reason == Reason::Named;
            match remover.remove(key, "purged", why, by, unlink, false).await {
                Ok(done) => {
                    item.unlinked_on_whats_app = unlink.then_some(done.unlinked_on_whats_app);
                    item.removed = Some(done.removed);
                }
                Err(e) => item.error = Some(crate::chain(&e)),
            }
        }
        Target::Folder(key) => {
            // Still without a row, and nobody's browser on it: the profile's lock is free.
            let profile = remover.sessions.profile_dir(key);
            let result = match remover.store.load_session(key).await {
                Ok(Some(_)) => Err("a row appeared meanwhile; left alone".to_owned()),
                Err(e) => Err(crate::chain(&e)),
                Ok(None) => tokio::task::spawn_blocking(move || {
                    let _lock = crate::browser::FolderLock::acquire(&profile)?;
                    crate::files::remove_tree(&profile)
                })
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)))
                .map_err(|e| e.to_string()),
            };
            match result {
                Ok(()) => {
                    log::info!("{key} purged by {by}: {why}");
                    let audit = NewEvent {
                        key: key.clone(),
                        at_ms: now_ms(),
                        kind: "purged".to_owned(),
                        detail: Some(format!("{why}: folder {} bytes", c.bytes)),
                        actor: by.to_owned(),
                    };
                    if let Err(e) = remover.store.record_event(audit, None).await {
                        log::warn!("{key} purged: not audited: {}", crate::chain(&e));
                    }
                    item.removed = Some(Removed::default());
                }
                Err(e) => item.error = Some(e),
            }
        }
        Target::Locks(key, _) => {
            let profile = remover.sessions.profile_dir(key);
            let removed =
                tokio::task::spawn_blocking(move || crate::browser::remove_stale_locks(&profile))
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            match removed {
                Ok(n) => {
                    log::info!("{key}: {n} stale lock files removed by {by}");
                    item.removed = Some(Removed::default());
                }
                Err(e) => item.error = Some(e.to_string()),
            }
        }
    }
}
