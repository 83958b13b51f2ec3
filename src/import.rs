//! `wa-supervisor import-sessions`: adopts the legacy profile folders `<userId>-slot<N>` found in
//! `SESSIONS_DIR` (the PM2/Node backend's layout) by creating their missing rows — stopped, with
//! intent `running`, so the next boot restores them from their profiles without a new QR.
//! Idempotent; `--dry-run` only reports.

use std::path::Path;

use crate::domain::{Intent, SessionKey, SessionState, SessionsRoot, SLOT_CEILING};
use crate::store::{now_ms, NewEvent, SessionRow, Store, StoreError};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub adopted: Vec<SessionKey>,
    pub existing: Vec<SessionKey>,
    /// Folder entry name and why it was skipped.
    pub skipped: Vec<(String, String)>,
}

/// Why a folder entry is not a session profile, or its key.
fn classify(path: &Path, name: &str, max_slots: u16) -> Result<SessionKey, String> {
    if crate::files::is_symlink(path) {
        return Err("a symbolic link (refused, never followed)".to_owned());
    }
    if !path.is_dir() {
        return Err("not a folder".to_owned());
    }
    if let Some(key) = SessionKey::from_folder_name(name, max_slots) {
        return Ok(key);
    }
    match SessionKey::from_folder_name(name, SLOT_CEILING) {
        Some(key) => Err(format!(
            "slot {} is out of range (MAX_SLOTS is {max_slots})",
            key.slot()
        )),
        None => Err("name is not <userId>-slot<N> with a valid user id".to_owned()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("SESSIONS_DIR {path} cannot be read")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub async fn import_sessions(
    root: &SessionsRoot,
    store: &Store,
    max_slots: u16,
    dry_run: bool,
) -> Result<ImportReport, ImportError> {
    let mut entries: Vec<(std::path::PathBuf, String)> = std::fs::read_dir(root.path())
        .map_err(|source| ImportError::Read {
            path: root.path().display().to_string(),
            source,
        })?
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.path(), e.file_name().into_string().ok()?)))
        // Our own lock file and other hidden entries are not candidates.
        .filter(|(_, name)| !name.starts_with('.'))
        .collect();
    entries.sort_by(|a, b| a.1.cmp(&b.1));

    let mut report = ImportReport::default();
    for (path, name) in entries {
        let key = match classify(&path, &name, max_slots) {
            Ok(key) => key,
            Err(why) => {
                report.skipped.push((name, why));
                continue;
            }
        };
        if store.load_session(&key).await?.is_some() {
            report.existing.push(key);
            continue;
        }
        if !dry_run {
            let now = now_ms();
            store
                .save_session(
                    SessionRow {
                        key: key.clone(),
                        state: SessionState::Stopped,
                        intent: Intent::Running,
                        is_connected: false,
                        connected_number: None,
                        restarts: 0,
                        last_error: None,
                        created_ms: now,
                        updated_ms: now,
                    },
                    None,
                )
                .await?;
            store
                .record_event(
                    NewEvent {
                        key: key.clone(),
                        at_ms: now,
                        kind: "imported".to_owned(),
                        detail: Some(path.display().to_string()),
                        actor: "import-sessions".to_owned(),
                    },
                    None,
                )
                .await?;
        }
        report.adopted.push(key);
    }
    Ok(report)
}

impl ImportReport {
    /// One line per folder and a summary, for the operator.
    pub fn render(&self, dry_run: bool) -> String {
        let verb = if dry_run { "would adopt" } else { "adopted" };
        let mut out = String::new();
        for key in &self.adopted {
            out += &format!("{verb} {key} ({})\n", key.folder_name());
        }
        for key in &self.existing {
            out += &format!("exists  {key} (row already present)\n");
        }
        for (name, why) in &self.skipped {
            out += &format!("skipped {name}: {why}\n");
        }
        out += &format!(
            "{} {verb}, {} already present, {} skipped{}\n",
            self.adopted.len(),
            self.existing.len(),
            self.skipped.len(),
            if dry_run {
                " (dry run: nothing written)"
            } else {
                ""
            }
        );
        out
    }
}
