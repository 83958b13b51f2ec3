//! Taking a backup (docs/operations.md, "Backup"): each linked session's login from a closed
//! browser, one session at a time; then the daemon's rows in one read transaction; the media
//! contents they name; the generated credentials; the manifest. Written as it is made into a
//! [`Sink`]: a file, or an HTTP response.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::archive::{self, EntryInfo, Sink, Writer};
use crate::actors::registry::{RegistryError, RegistryHandle};
use crate::cluster::snapshot;
use crate::domain::{SessionKey, SessionState, SessionsRoot};
use crate::media::Media;
use crate::store::{now_ms, SessionRow, Store, StoreError, DUMP_VERSION};

/// What the manifest's `format` says.
pub const FORMAT: &str = "wa-supervisor-backup";
/// How long a session copied from a running browser may take to be connected again before the
/// next one is taken (it is then left to its own supervision, and the manifest says so).
const BACK_WITHIN: Duration = Duration::from_secs(90);

/// Where the logins come from.
pub enum Logins {
    /// A running daemon: each session copies its own (stop-copy-start); in a cluster the
    /// sessions another node runs give their newest stored snapshot.
    Daemon(RegistryHandle),
    /// The daemon is stopped: the profiles as they lie (their browsers are closed).
    Profiles(SessionsRoot),
    /// The daemon is stopped, in cluster mode: the newest stored snapshots (a profile on this
    /// host may be older than what another node ran since).
    Snapshots,
}

/// Everything a backup reads.
pub struct Backup {
    pub store: Store,
    pub media: Arc<Media>,
    pub data_dir: PathBuf,
    pub logins: Logins,
}

/// The manifest: the last entry of every backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: String,
    /// The format of the rows (`store::DUMP_VERSION`); a restore refuses a newer one.
    pub schema_version: u32,
    pub daemon_version: String,
    pub created_at: String,
    /// The database it was taken from: `sqlite` or `postgres`.
    pub backend: String,
    pub sessions: Vec<SessionEntry>,
    /// Rows per table.
    pub tables: Vec<TableEntry>,
    /// Every entry before the manifest, in order.
    pub entries: Vec<EntryInfo>,
    /// Media contents the rows name that were missing or damaged on disk: left out (a restore
    /// marks their media removed, as the retention would).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_media: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionEntry {
    pub user_id: String,
    pub slot: u16,
    pub number: Option<String>,
    pub intent: String,
    /// The entry holding its login; `null` when there is none (a QR code was showing, or the
    /// profile holds no login folders).
    pub login: Option<String>,
    /// `closed_browser` (closed for the copy and relaunched), `profile_at_rest` (no browser
    /// ran), `stored_snapshot` (cluster: another node runs it), or why there is none.
    pub login_from: Option<String>,
    /// From the browser's close to `connected` again (closed for the copy only).
    pub away_ms: Option<u64>,
    /// How the session came back when it was not `connected` within the wait.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TableEntry {
    pub table: String,
    pub rows: u64,
}

/// What a finished backup holds, for the log and the command's answer.
#[derive(Debug, Clone)]
pub struct Summary {
    pub bytes: u64,
    pub manifest: Manifest,
    pub took: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("the database")]
    Store(#[from] StoreError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the login of {key} could not be copied")]
    Login {
        key: SessionKey,
        #[source]
        source: RegistryError,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let what = what.into();
    move |source| BackupError::Io { what, source }
}

/// The entry of a session's login.
pub fn login_entry(key: &SessionKey) -> String {
    format!("logins/{}.tar.gz", key.folder_name())
}

/// A file in `DATA_DIR/tmp` removed when dropped.
struct Spool(PathBuf);

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Backup {
    /// Writes the whole backup into `sink`.
    pub async fn write(&self, sink: impl Sink) -> Result<Summary, BackupError> {
        let started = Instant::now();
        let mut out = Writer::new(sink);
        let rows = self.store.list_sessions(None).await?;
        let mut sessions = Vec::with_capacity(rows.len());
        for row in &rows {
            sessions.push(self.login(row, &mut out).await?);
        }

        let tmp = self.data_dir.join("tmp");
        crate::files::private_dir(&tmp, false).map_err(io(format!("{}", tmp.display())))?;
        let spool = Spool(tmp.join(format!(
            "backup-{}-{:08x}.jsonl",
            std::process::id(),
            rand::random::<u32>()
        )));
        let dumps = self.store.dump(spool.0.clone()).await?;
        let mut shas = BTreeSet::new();
        for d in &dumps {
            let name = format!("db/{}.jsonl", d.table);
            out.file_range(&name, &spool.0, d.offset, d.len)
                .await
                .map_err(io(name))?;
            if d.table == "media" {
                shas = stored_contents(&spool.0, d.offset, d.len).map_err(io("db/media.jsonl"))?;
            }
        }
        // Held while read, so no retention or quota pass deletes one mid-copy.
        let _held: Vec<_> = shas.iter().map(|(sha, _)| self.media.hold(sha)).collect();
        let mut missing_media = Vec::new();
        for (sha, size) in &shas {
            if !self.media.blobs().holds(sha, *size).await {
                // Gone from the disk (by hand, or a retention pass just before the hold): the
                // backup goes on without it, and a restore marks its rows removed.
                log::warn!("backup: media content {sha} is missing or damaged; left out");
                missing_media.push(sha.clone());
                continue;
            }
            let name = format!("media/{sha}");
            let bytes = self.media.blobs().read(sha, 0, *size);
            out.stream(&name, *size, bytes).await.map_err(io(name))?;
        }
        let credentials = self.data_dir.join(crate::auth::CREDENTIALS_FILE);
        match std::fs::read(&credentials) {
            Ok(bytes) => out
                .bytes("data/credentials", &bytes)
                .await
                .map_err(io("data/credentials"))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("data/credentials")(e)),
        }

        let manifest = Manifest {
            format: FORMAT.to_owned(),
            schema_version: DUMP_VERSION,
            daemon_version: env!("CARGO_PKG_VERSION").to_owned(),
            created_at: crate::actors::session::rfc3339(now_ms()),
            backend: self.store.backend().to_owned(),
            sessions,
            tables: dumps
                .iter()
                .map(|d| TableEntry {
                    table: d.table.to_owned(),
                    rows: d.rows,
                })
                .collect(),
            entries: out.entries().to_vec(),
            missing_media,
        };
        let text = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
        let bytes = out.finish(&text).await.map_err(io(archive::MANIFEST))?;
        Ok(Summary {
            bytes,
            manifest,
            took: started.elapsed(),
        })
    }

    /// Writes `row`'s login (when there is one to copy) and says where it came from.
    async fn login<S: Sink>(
        &self,
        row: &SessionRow,
        out: &mut Writer<S>,
    ) -> Result<SessionEntry, BackupError> {
        let key = &row.key;
        let mut entry = SessionEntry {
            user_id: key.user_id().to_string(),
            slot: key.slot().get(),
            number: row.connected_number.clone(),
            intent: row.intent.as_str().to_owned(),
            login: None,
            login_from: None,
            away_ms: None,
            note: None,
        };
        let held_elsewhere = |registry: &RegistryHandle| {
            registry
                .env()
                .cluster
                .as_ref()
                .is_some_and(|c| c.holds(key).is_none())
        };
        let login = match &self.logins {
            Logins::Daemon(registry) if !held_elsewhere(registry) => {
                let mut changes = registry.subscribe();
                let (closed, copy) = copy_login(registry, key).await?;
                if copy.relaunched {
                    entry.login_from = Some("closed_browser".to_owned());
                    match back(key, &mut changes).await {
                        Ok(()) => entry.away_ms = Some(closed.elapsed().as_millis() as u64),
                        Err(note) => {
                            log::warn!("{key} backup: {note}");
                            entry.note = Some(note);
                        }
                    }
                } else {
                    entry.login_from = Some("profile_at_rest".to_owned());
                }
                copy.login
            }
            Logins::Daemon(_) | Logins::Snapshots => {
                entry.login_from = Some("stored_snapshot".to_owned());
                self.store.snapshot(key).await?.and_then(|s| s.bytes)
            }
            Logins::Profiles(root) => {
                entry.login_from = Some("profile_at_rest".to_owned());
                let profile = root.profile_dir(key);
                tokio::task::spawn_blocking(move || snapshot::pack(&profile))
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
                    .map_err(io(format!("the profile of {key}")))?
            }
        };
        match login {
            Some(bytes) => {
                let name = login_entry(key);
                out.bytes(&name, &bytes).await.map_err(io(name.clone()))?;
                entry.login = Some(name);
            }
            None => {
                entry.login_from = None;
                entry.away_ms = None;
            }
        }
        Ok(entry)
    }
}

/// `key`'s login copy, asked again while its browser is being launched; when the close began.
async fn copy_login(
    registry: &RegistryHandle,
    key: &SessionKey,
) -> Result<(Instant, crate::actors::session::LoginCopy), BackupError> {
    use crate::actors::session::SessionError;
    let deadline = Instant::now() + BACK_WITHIN;
    loop {
        let asked = Instant::now();
        match registry.copy_login(key.clone()).await {
            Ok(copy) => return Ok((asked, copy)),
            Err(RegistryError::Session(SessionError::Restarting)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(source) => {
                return Err(BackupError::Login {
                    key: key.clone(),
                    source,
                })
            }
        }
    }
}

/// Waits until `key` is connected again after its copy; `Err` says how it came back instead.
async fn back(
    key: &SessionKey,
    changes: &mut tokio::sync::broadcast::Receiver<crate::actors::session::Session>,
) -> Result<(), String> {
    let wait = async {
        loop {
            match changes.recv().await {
                Ok(s) if s.key == *key => match s.state {
                    SessionState::Connected => return Ok(()),
                    SessionState::Qr | SessionState::Stopped | SessionState::Failed => {
                        return Err(format!("came back {} after the copy", s.state))
                    }
                    _ => {}
                },
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return Err("the daemon is stopping".to_owned())
                }
            }
        }
    };
    tokio::time::timeout(BACK_WITHIN, wait)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "not connected again within {} s of the copy",
                BACK_WITHIN.as_secs()
            ))
        })
}

/// The contents (sha256, size) the stored media rows of a dump name.
fn stored_contents(
    spool: &Path,
    offset: u64,
    len: u64,
) -> std::io::Result<BTreeSet<(String, u64)>> {
    use std::io::{Read, Seek};
    #[derive(Deserialize)]
    struct Line {
        state: String,
        sha256: Option<String>,
        size: Option<i64>,
    }
    let mut file = std::fs::File::open(spool)?;
    file.seek(std::io::SeekFrom::Start(offset))?;
    let mut shas = BTreeSet::new();
    for line in std::io::BufReader::new(file.take(len)).lines() {
        let line: Line = serde_json::from_str(&line?).map_err(std::io::Error::other)?;
        if let (true, Some(sha), Some(size)) = (line.state == "stored", line.sha256, line.size) {
            shas.insert((sha, size.max(0) as u64));
        }
    }
    Ok(shas)
}
