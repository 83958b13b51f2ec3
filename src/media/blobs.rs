//! Where media contents live, by SHA-256: files under `DATA_DIR/media` (0700 folders, 0600
//! files) on one node; `media_blobs` rows of 1 MiB in cluster mode, which every node reaches.
//! A content is written once, however many messages carry it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use actix_web::web::Bytes;
use futures_util::stream::{self, Stream};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::store::{Store, BLOB_PART_BYTES};

/// Cluster mode: a content put within this long is left alone by the clean-up even when no row
/// names it yet (its row may still be on its way from another node: the download, then the
/// write, which waits out a database outage).
pub const IN_FLIGHT_MS: i64 = 3_600_000;

/// How much of a content one piece of an answer carries.
const READ_BYTES: usize = 256 * 1024;

pub enum Blobs {
    /// `DATA_DIR/media`: contents in `ab/abcdef…`, downloads in progress in `tmp/`.
    Files(PathBuf),
    /// Cluster mode: the contents in the database; downloads in progress still go to the node's
    /// `DATA_DIR/media/tmp`.
    Database(Store, PathBuf),
}

fn valid(sha256: &str) -> bool {
    sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

impl Blobs {
    /// The folder of downloads in progress (the start's sweep empties it).
    pub fn temp_dir(&self) -> PathBuf {
        match self {
            Blobs::Files(dir) | Blobs::Database(_, dir) => dir.join("tmp"),
        }
    }

    fn path(dir: &Path, sha256: &str) -> PathBuf {
        dir.join(&sha256[..2]).join(sha256)
    }

    /// Moves the finished download `file` in as content `sha256` (kept as it is when stored
    /// before).
    pub async fn put(&self, sha256: &str, file: &Path) -> Result<(), String> {
        if !valid(sha256) {
            return Err(format!("{sha256:?} is not a SHA-256"));
        }
        match self {
            Blobs::Files(dir) => {
                let target = Self::path(dir, sha256);
                let parent = target.parent().expect("a content has a folder").to_owned();
                let file = file.to_owned();
                tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                    crate::files::private_dir(&parent, false)?;
                    if target.is_file() {
                        return Ok(());
                    }
                    // The download is complete and on disk before it gets its name.
                    std::fs::File::open(&file)?.sync_all()?;
                    std::fs::rename(&file, &target)?;
                    std::fs::File::open(&parent)?.sync_all()
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
            }
            Blobs::Database(store, _) => {
                let bytes = tokio::fs::read(file).await.map_err(|e| e.to_string())?;
                let parts = bytes.chunks(BLOB_PART_BYTES).map(<[u8]>::to_vec).collect();
                store
                    .put_blob(sha256, parts, crate::store::now_ms())
                    .await
                    .map_err(|e| crate::chain(&e))
            }
        }
    }

    /// Whether content `sha256` is stored whole (`size` bytes: a file of that length, or its
    /// first part in the database).
    pub async fn holds(&self, sha256: &str, size: u64) -> bool {
        if !valid(sha256) {
            return false;
        }
        match self {
            Blobs::Files(dir) => tokio::fs::metadata(Self::path(dir, sha256))
                .await
                .is_ok_and(|m| m.is_file() && m.len() == size),
            Blobs::Database(store, _) => {
                size == 0 || matches!(store.blob_part(sha256, 0).await, Ok(Some(_)))
            }
        }
    }

    /// Bytes `start..end` of content `sha256`, in pieces.
    pub fn read(
        &self,
        sha256: &str,
        start: u64,
        end: u64,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + 'static {
        enum Source {
            File(PathBuf, Option<tokio::fs::File>),
            Db(Store),
        }
        let source = match self {
            Blobs::Files(dir) => Source::File(Self::path(dir, sha256), None),
            Blobs::Database(store, _) => Source::Db(store.clone()),
        };
        let sha = sha256.to_owned();
        stream::try_unfold((source, start), move |(mut source, at)| {
            let sha = sha.clone();
            async move {
                if at >= end {
                    return Ok(None);
                }
                let want = (end - at).min(READ_BYTES as u64) as usize;
                let piece = match &mut source {
                    Source::File(path, file) => {
                        if file.is_none() {
                            let mut f = tokio::fs::File::open(&*path).await?;
                            f.seek(std::io::SeekFrom::Start(at)).await?;
                            *file = Some(f);
                        }
                        let f = file.as_mut().expect("opened above");
                        let mut buf = vec![0u8; want];
                        let mut got = 0;
                        while got < want {
                            let n = f.read(&mut buf[got..]).await?;
                            if n == 0 {
                                break;
                            }
                            got += n;
                        }
                        buf.truncate(got);
                        buf
                    }
                    Source::Db(store) => {
                        let part = (at / BLOB_PART_BYTES as u64) as u32;
                        let offset = (at % BLOB_PART_BYTES as u64) as usize;
                        let data = store
                            .blob_part(&sha, part)
                            .await
                            .map_err(|e| std::io::Error::other(crate::chain(&e)))?
                            .unwrap_or_default();
                        let stop = (offset + want).min(data.len());
                        data.get(offset..stop).unwrap_or_default().to_vec()
                    }
                };
                if piece.is_empty() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the stored content is shorter than its row says",
                    ));
                }
                let next = at + piece.len() as u64;
                Ok(Some((Bytes::from(piece), (source, next))))
            }
        })
    }

    /// Deletes the contents `shas` (the caller checked no stored row names them).
    pub async fn delete(&self, shas: &[String]) -> Result<(), String> {
        match self {
            Blobs::Files(dir) => {
                for sha in shas.iter().filter(|s| valid(s)) {
                    match tokio::fs::remove_file(Self::path(dir, sha)).await {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e.to_string()),
                    }
                }
                Ok(())
            }
            Blobs::Database(store, _) => store
                .delete_blobs(shas.to_vec(), crate::store::now_ms() - IN_FLIGHT_MS)
                .await
                .map_err(|e| crate::chain(&e)),
        }
    }

    /// Deletes every content not in `keep` and every download in progress; how many went. On
    /// one node this runs before any session does; in cluster mode other nodes run, so a content
    /// put within [`IN_FLIGHT_MS`] stays (the hourly retention sweeps it later).
    pub async fn sweep(&self, keep: &HashSet<String>) -> Result<usize, String> {
        let tmp = self.temp_dir();
        let mut gone = 0;
        if let Ok(mut entries) = tokio::fs::read_dir(&tmp).await {
            while let Ok(Some(entry)) = entries.next_entry().await {
                if tokio::fs::remove_file(entry.path()).await.is_ok() {
                    gone += 1;
                }
            }
        }
        match self {
            Blobs::Files(dir) => {
                let dir = dir.clone();
                let keep = keep.clone();
                gone += tokio::task::spawn_blocking(move || -> std::io::Result<usize> {
                    let mut gone = 0;
                    let Ok(folders) = std::fs::read_dir(&dir) else {
                        return Ok(0);
                    };
                    for folder in folders.flatten() {
                        let name = folder.file_name().to_string_lossy().into_owned();
                        if name.len() != 2 || !folder.file_type()?.is_dir() {
                            continue;
                        }
                        for file in std::fs::read_dir(folder.path())?.flatten() {
                            let sha = file.file_name().to_string_lossy().into_owned();
                            if !keep.contains(&sha) {
                                std::fs::remove_file(file.path())?;
                                gone += 1;
                            }
                        }
                    }
                    Ok(gone)
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            }
            Blobs::Database(..) => gone += self.sweep_stale(keep).await?,
        }
        Ok(gone)
    }

    /// Cluster mode: the contents in the database no row names and not put within
    /// [`IN_FLIGHT_MS`] go (at the start and with every hourly retention pass: a node killed
    /// between storing a content and writing its event leaves it). Files: nothing (one node
    /// sweeps them at its start, before any session runs).
    pub async fn sweep_stale(&self, keep: &HashSet<String>) -> Result<usize, String> {
        let Blobs::Database(store, _) = self else {
            return Ok(0);
        };
        let stored = store
            .blob_shas(crate::store::now_ms() - IN_FLIGHT_MS)
            .await
            .map_err(|e| crate::chain(&e))?;
        let orphans: Vec<String> = stored.into_iter().filter(|s| !keep.contains(s)).collect();
        self.delete(&orphans).await?;
        Ok(orphans.len())
    }
}
