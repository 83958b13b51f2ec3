//! Restoring a backup (docs/operations.md, "Restore") into an empty `DATA_DIR`, `SESSIONS_DIR`
//! and database: the whole archive is checked first in a staging folder, then the logins, the
//! media and the credentials are put in place, then the rows go in one transaction.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::archive::{self, EntryInfo, Refused, Staged};
use super::backup::{login_entry, Manifest, FORMAT};
use crate::config::Settings;
use crate::domain::{SessionKey, Slot, UserId};
use crate::store::DUMP_VERSION;

/// What a restore put back.
#[derive(Debug, Clone)]
pub struct Restored {
    pub manifest: Manifest,
    pub logins: usize,
    pub rows: u64,
    pub media: usize,
    pub credentials: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The archive is damaged, truncated, tampered with, foreign or for another key.
    #[error("the backup is refused")]
    Refused(#[from] Refused),
    /// Where it would go is not empty, or a daemon runs on it.
    #[error("{0}")]
    NotEmpty(String),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Startup(#[from] crate::startup::StartupError),
    #[error("the database")]
    Store(#[from] crate::store::StoreError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RestoreError {
    let what = what.into();
    move |source| RestoreError::Io { what, source }
}

/// A private folder in the system's temporary folder, removed with everything in it on drop.
struct Staging(PathBuf);

impl Staging {
    fn new() -> std::io::Result<Staging> {
        let path = std::env::temp_dir().join(format!(
            "wa-supervisor-restore-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::DirBuilder::new()
            .mode(crate::files::PRIVATE_DIR_MODE)
            .create(&path)?;
        Ok(Staging(path))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads and checks `file` (decrypted with the age key file `identity` if it is encrypted) into
/// a staging folder; nothing else is written.
fn check(
    file: &Path,
    identity: Option<&Path>,
) -> Result<(Staging, Staged, Manifest), RestoreError> {
    let identities = match identity {
        Some(path) => archive::identities(path).map_err(|why| Refused {
            entry: "--identity".to_owned(),
            why,
        })?,
        None => Vec::new(),
    };
    let input = archive::open(file, &identities)?;
    let staging = Staging::new().map_err(io("the staging folder"))?;
    let staged = archive::read(input, &staging.0, |bytes| {
        let manifest: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| format!("not a wa-supervisor manifest: {e}"))?;
        Ok::<Vec<EntryInfo>, String>(manifest.entries)
    })?;
    let refuse = |why: String| Refused {
        entry: archive::MANIFEST.to_owned(),
        why,
    };
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(staged.manifest()).map_err(io("the staged manifest"))?,
    )
    .map_err(|e| refuse(e.to_string()))?;
    if manifest.format != FORMAT {
        return Err(refuse(format!("format {:?} is not {FORMAT:?}", manifest.format)).into());
    }
    if manifest.schema_version > DUMP_VERSION {
        return Err(refuse(format!(
            "its rows are of schema version {}, newer than this wa-supervisor's ({DUMP_VERSION}): restore it with wa-supervisor {} or later",
            manifest.schema_version, manifest.daemon_version
        ))
        .into());
    }
    Ok((staging, staged, manifest))
}

/// Refuses a running daemon and anything already there (naming it).
fn check_empty(settings: &Settings) -> Result<(), RestoreError> {
    let sessions = &settings.sessions_dir;
    let lock = sessions.join(".wa-supervisor.lock");
    if crate::browser::in_use(sessions) {
        return Err(RestoreError::NotEmpty(format!(
            "a wa-supervisor runs on SESSIONS_DIR {}: stop it first",
            sessions.display()
        )));
    }
    let db_files: Vec<PathBuf> = match settings.database() {
        crate::store::DatabaseUrl::Sqlite(path) => ["", "-wal", "-shm"]
            .iter()
            .map(|s| PathBuf::from(format!("{}{s}", path.display())))
            .collect(),
        crate::store::DatabaseUrl::Postgres(_) => Vec::new(),
    };
    let allowed = |path: &Path| {
        db_files.iter().any(|f| f == path)
            || path == settings.wa_js_path().parent().unwrap_or(Path::new("/"))
            || path == lock
            || path == settings.data_dir.join("tmp")
            || path == sessions.as_path()
    };
    for dir in [&settings.data_dir, sessions] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let empty_dir = std::fs::read_dir(&path).is_ok_and(|mut d| d.next().is_none());
            if !allowed(&path) && !empty_dir {
                return Err(RestoreError::NotEmpty(format!(
                    "{} holds {}: a restore goes into an empty DATA_DIR and SESSIONS_DIR",
                    dir.display(),
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

/// Restores `file` with the daemon's `settings`.
pub async fn restore(
    settings: &Settings,
    file: &Path,
    identity: Option<&Path>,
) -> Result<Restored, RestoreError> {
    let (file_, identity_) = (file.to_owned(), identity.map(Path::to_owned));
    let (staging, staged, manifest) =
        tokio::task::spawn_blocking(move || check(&file_, identity_.as_deref()))
            .await
            .map_err(|e| io("the check")(std::io::Error::other(e)))??;
    check_empty(settings)?;
    let ground = crate::startup::Ground::prepare(settings).await?;
    if let Some(table) = ground.store.first_nonempty_table().await? {
        return Err(RestoreError::NotEmpty(format!(
            "the database ({}) already holds rows in {table}: a restore goes into an empty one",
            settings.database()
        )));
    }
    let cluster = settings.cluster_token.is_some() && ground.store.backend() == "postgres";
    let mut written: Vec<PathBuf> = Vec::new();
    let result = put_back(settings, &ground, &staged, &manifest, cluster, &mut written).await;
    let (logins, media, credentials) = match result {
        Ok(done) => done,
        Err(e) => {
            undo(&written);
            return Err(e);
        }
    };
    let tables: Vec<(String, PathBuf)> = crate::store::TABLES
        .iter()
        .filter_map(|t| {
            let name = format!("db/{t}.jsonl");
            staged
                .path(&name)
                .map(|p| ((*t).to_owned(), p.to_path_buf()))
        })
        .collect();
    let missing = manifest.missing_media.clone();
    let rows = match ground
        .store
        .load(tables, missing, crate::store::now_ms())
        .await
    {
        Ok(n) => n,
        Err(e) => {
            undo(&written);
            return Err(e.into());
        }
    };
    drop(staging);
    Ok(Restored {
        manifest,
        logins,
        rows,
        media,
        credentials,
    })
}

/// The files: logins into their profiles (cluster mode: also as the sessions' snapshots),
/// media contents, credentials. Every path created is pushed to `written`.
async fn put_back(
    settings: &Settings,
    ground: &crate::startup::Ground,
    staged: &Staged,
    manifest: &Manifest,
    cluster: bool,
    written: &mut Vec<PathBuf>,
) -> Result<(usize, usize, bool), RestoreError> {
    let mut logins = 0;
    for s in &manifest.sessions {
        let Some(entry) = &s.login else { continue };
        let key = SessionKey::new(
            UserId::parse(&s.user_id).map_err(|e| bad_session(s, e.to_string()))?,
            Slot::new(s.slot.into(), crate::domain::SLOT_CEILING)
                .map_err(|e| bad_session(s, e.to_string()))?,
        );
        if *entry != login_entry(&key) {
            return Err(bad_session(s, format!("its login entry is {entry}")));
        }
        let staged_login = staged
            .path(entry)
            .ok_or_else(|| bad_session(s, format!("{entry} is missing")))?;
        let bytes = std::fs::read(staged_login).map_err(io(entry.clone()))?;
        let profile = ground.sessions.profile_dir(&key);
        written.push(profile.clone());
        let unpack_bytes = bytes.clone();
        tokio::task::spawn_blocking(move || {
            crate::cluster::snapshot::unpack(&profile, &unpack_bytes)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        .map_err(|e| {
            RestoreError::Refused(Refused {
                entry: entry.clone(),
                why: format!("not a login snapshot: {e}"),
            })
        })?;
        if cluster {
            ground.store.put_restored_snapshot(&key, bytes).await?;
        }
        logins += 1;
    }

    let media_dir = settings.data_dir.join("media");
    let mut media = 0;
    for (info, path) in &staged.entries {
        let Some(sha) = info.name.strip_prefix("media/") else {
            continue;
        };
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Refused {
                entry: info.name.clone(),
                why: "not a content's name".to_owned(),
            }
            .into());
        }
        if info.sha256 != sha {
            return Err(Refused {
                entry: info.name.clone(),
                why: "its bytes are not the content it names".to_owned(),
            }
            .into());
        }
        if cluster {
            let bytes = std::fs::read(path).map_err(io(info.name.clone()))?;
            let parts = bytes
                .chunks(crate::store::BLOB_PART_BYTES)
                .map(<[u8]>::to_vec)
                .collect();
            ground
                .store
                .put_blob(sha, parts, crate::store::now_ms())
                .await?;
        } else {
            let folder = media_dir.join(&sha[..2]);
            crate::files::private_dir(&folder, false).map_err(io(folder.display().to_string()))?;
            let target = folder.join(sha);
            copy_private(path, &target).map_err(io(target.display().to_string()))?;
            written.push(target);
        }
        media += 1;
    }

    let credentials = match staged.path("data/credentials") {
        Some(path) => {
            let target = settings.data_dir.join(crate::auth::CREDENTIALS_FILE);
            copy_private(path, &target).map_err(io(target.display().to_string()))?;
            written.push(target);
            true
        }
        None => false,
    };
    Ok((logins, media, credentials))
}

fn bad_session(s: &super::backup::SessionEntry, why: String) -> RestoreError {
    RestoreError::Refused(Refused {
        entry: archive::MANIFEST.to_owned(),
        why: format!("session {}:{}: {why}", s.user_id, s.slot),
    })
}

/// Copies `from` to a new 0600 file `to`.
fn copy_private(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(crate::files::PRIVATE_FILE_MODE)
        .open(to)?;
    std::io::copy(&mut std::fs::File::open(from)?, &mut out)?;
    out.sync_all()
}

/// Removes what a failed restore wrote.
fn undo(written: &[PathBuf]) {
    for path in written.iter().rev() {
        let gone = if path.is_dir() {
            crate::files::remove_tree(path)
        } else {
            std::fs::remove_file(path)
        };
        if let Err(e) = gone {
            log::warn!("restore: {} not removed: {e}", path.display());
        }
    }
}
