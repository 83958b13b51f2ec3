//! Incoming media: downloaded once from the page, stored by content, handed out through signed,
//! expiring links (docs/media.md).
//!
//! - [`page`]: the download, in slices, into a private temporary file, hashed as it is written.
//! - [`blobs`]: where contents live — 0600 files under `DATA_DIR/media` on one node, PostgreSQL
//!   parts in cluster mode.
//! - [`intake`]: a session's messages in order; a media message is stored before its event.
//! - [`Media`]: what the sessions and the routes share: the quota, the links, the retention.

pub mod blobs;
pub mod intake;
pub mod page;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{KeyInit, Mac};

use crate::domain::{SessionKey, Slot, UserId};
use crate::events::{MediaInfo, PageMedia};
use crate::store::{now_ms, MediaRow, MediaState, Store, StoreError};
pub use blobs::Blobs;

/// What the daemon does with incoming media (one per daemon).
pub struct Media {
    store: Store,
    blobs: Blobs,
    /// The HMAC-SHA256 key of the links (`daemon_secrets`, shared by every node).
    key: Vec<u8>,
    /// `PUBLIC_URL` (or the node's URL): links are absolute with it, else paths.
    base: Mutex<Option<String>>,
    pub ttl: Duration,
    pub max_bytes: u64,
    pub quota: u64,
    pub retention_days: u32,
    /// Contents put but whose row is not written yet: the retention leaves them alone.
    pending: Mutex<std::collections::HashMap<String, usize>>,
}

/// Settings of [`Media::open`].
pub struct MediaSettings {
    pub dir: PathBuf,
    pub in_database: bool,
    pub base: Option<String>,
    pub ttl: Duration,
    pub max_bytes: u64,
    pub quota: u64,
    pub retention_days: u32,
}

/// Why a media could not be stored: the text of `media.error`.
pub type Failure = String;

impl Media {
    /// Opens the store of contents and reads (or makes) the links' key.
    pub async fn open(store: Store, settings: MediaSettings) -> Result<Media, StoreError> {
        let secret = store
            .secret("media_url_key", || {
                format!(
                    "{:032x}{:032x}",
                    rand::random::<u128>(),
                    rand::random::<u128>()
                )
            })
            .await?;
        let blobs = if settings.in_database {
            Blobs::Database(store.clone(), settings.dir.clone())
        } else {
            Blobs::Files(settings.dir.clone())
        };
        Ok(Media {
            store,
            blobs,
            key: secret.into_bytes(),
            base: Mutex::new(settings.base),
            ttl: settings.ttl,
            max_bytes: settings.max_bytes,
            quota: settings.quota,
            retention_days: settings.retention_days,
            pending: Default::default(),
        })
    }

    /// The links' base when `PUBLIC_URL` is unset (cluster mode: the node's URL).
    pub fn default_base(&self, url: String) {
        let mut base = self.base.lock().expect("media base lock");
        if base.is_none() {
            *base = Some(url);
        }
    }

    pub fn blobs(&self) -> &Blobs {
        &self.blobs
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The media id of `key`'s message: the same for every path that sees the message.
    pub fn id_of(key: &SessionKey, message_id: &str) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(
            format!("{}\0{}\0{message_id}", key.user_id(), key.slot()).as_bytes(),
        );
        hex(&digest[..16])
    }

    /// Downloads the media of `message_id` through `page` and stores it (quota first). The row
    /// to write with the event that announces it, stored or failed; the caller holds `Pending`
    /// until that write landed.
    pub async fn fetch(
        self: &Arc<Self>,
        key: &SessionKey,
        page: Option<&crate::browser::PageHandle>,
        message_id: &str,
        meta: &PageMedia,
    ) -> (MediaRow, Option<Pending>) {
        let now = now_ms();
        let mut row = MediaRow {
            id: Self::id_of(key, message_id),
            key: key.clone(),
            message_id: message_id.to_owned(),
            state: MediaState::Failed,
            sha256: None,
            size: meta.size,
            mimetype: meta.mimetype.clone(),
            filename: meta.filename.clone(),
            error: None,
            created_ms: now,
            updated_ms: now,
        };
        match self.try_fetch(key, page, message_id, meta).await {
            Ok((sha, size, mimetype, pending)) => {
                row.state = MediaState::Stored;
                row.sha256 = Some(sha);
                row.size = Some(size);
                if row.mimetype.is_none() {
                    row.mimetype = mimetype;
                }
                (row, Some(pending))
            }
            Err(why) => {
                log::warn!("{key} media of {message_id} not stored: {why}");
                row.error = Some(why);
                (row, None)
            }
        }
    }

    async fn try_fetch(
        self: &Arc<Self>,
        key: &SessionKey,
        page: Option<&crate::browser::PageHandle>,
        message_id: &str,
        meta: &PageMedia,
    ) -> Result<(String, u64, Option<String>, Pending), Failure> {
        let page = page.ok_or_else(|| {
            "the browser that saw the message is gone: POST …/retry downloads it".to_owned()
        })?;
        if let Some(size) = meta.size.filter(|s| *s > self.max_bytes) {
            return Err(format!(
                "too large: {size} bytes (MEDIA_MAX_BYTES is {})",
                self.max_bytes
            ));
        }
        let tmp = self.blobs.temp_dir();
        let file = page::download(page, message_id, meta.size, self.max_bytes, &tmp)
            .await
            .map_err(|e| format!("download failed: {e}"))?;
        let result = self.keep(key, &file).await;
        let _ = tokio::fs::remove_file(&file.path).await;
        result.map(|pending| {
            (
                file.sha256.clone(),
                file.size,
                file.mimetype.clone(),
                pending,
            )
        })
    }

    /// The quota, then the content into the blobs.
    async fn keep(
        self: &Arc<Self>,
        key: &SessionKey,
        file: &page::Downloaded,
    ) -> Result<Pending, Failure> {
        let pending = Pending::new(self.clone(), file.sha256.clone());
        let (fits, freed) = self
            .store
            .make_room(key.user_id(), file.size, self.quota, now_ms())
            .await
            .map_err(|e| format!("the database: {}", crate::chain(&e)))?;
        self.drop_contents(freed).await;
        if !fits {
            return Err("quota".to_owned());
        }
        self.blobs
            .put(&file.sha256, &file.path)
            .await
            .map_err(|e| format!("could not store it: {e}"))?;
        Ok(pending)
    }

    /// Keeps content `sha256` from the retention and the quota while the guard lives (a backup
    /// reads it).
    pub fn hold(self: &Arc<Self>, sha256: &str) -> Pending {
        Pending::new(self.clone(), sha256.to_owned())
    }

    /// Deletes the bytes of contents no stored row names (and none is being stored).
    pub async fn drop_contents(&self, shas: Vec<String>) {
        let shas: Vec<String> = {
            let pending = self.pending.lock().expect("media pending lock");
            shas.into_iter()
                .filter(|s| !pending.contains_key(s))
                .collect()
        };
        if shas.is_empty() {
            return;
        }
        if let Err(e) = self.blobs.delete(&shas).await {
            log::warn!("media: could not delete {} contents: {e}", shas.len());
        }
    }

    /// The start's sweep: every content no stored row names, and every temporary file, go
    /// (what a daemon killed between storing and writing left).
    pub async fn sweep(&self) -> Result<usize, String> {
        let keep = self
            .store
            .referenced_blobs()
            .await
            .map_err(|e| crate::chain(&e))?;
        self.blobs.sweep(&keep).await
    }

    /// The hourly retention: media whose deliveries all ended more than `MEDIA_RETENTION_DAYS`
    /// ago; in cluster mode also the contents a killed node left (`Blobs::sweep_stale`).
    pub async fn expire(&self) -> Result<usize, StoreError> {
        let now = now_ms();
        let before = now - i64::from(self.retention_days) * 86_400_000;
        let (n, freed) = self.store.expire_media(before, now).await?;
        self.drop_contents(freed).await;
        let keep = self.store.referenced_blobs().await?;
        match self.blobs.sweep_stale(&keep).await {
            Ok(0) => {}
            Ok(n) => log::info!("media: swept {n} contents no event names"),
            Err(e) => log::warn!("media: the sweep failed: {e}"),
        }
        Ok(n)
    }

    /// A signed link to media `id` of `key`'s session, valid for at most the TTL from now (its
    /// expiry is a whole second, rounded down).
    pub fn link(&self, user: &UserId, slot: Slot, id: &str) -> (String, i64) {
        let expires = now_ms() / 1000 + self.ttl.as_secs() as i64;
        let signature = self.sign(user, slot, id, expires);
        let base = self
            .base
            .lock()
            .expect("media base lock")
            .clone()
            .unwrap_or_default();
        (
            format!(
                "{base}/api/media/{}/{slot}/{id}?expires={expires}&signature={signature}",
                percent(user.as_str())
            ),
            expires,
        )
    }

    /// Whether `signature` is this daemon's for the link, and the link has not expired.
    pub fn verify(
        &self,
        user: &UserId,
        slot: Slot,
        id: &str,
        expires: i64,
        signature: &str,
    ) -> bool {
        if expires.saturating_mul(1000) <= now_ms() {
            return false;
        }
        let Some(given) = unhex(signature) else {
            return false;
        };
        self.mac(user, slot, id, expires)
            .verify_slice(&given)
            .is_ok()
    }

    fn mac(&self, user: &UserId, slot: Slot, id: &str, expires: i64) -> hmac::Hmac<sha2::Sha256> {
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(format!("{user}\n{slot}\n{id}\n{expires}").as_bytes());
        mac
    }

    fn sign(&self, user: &UserId, slot: Slot, id: &str, expires: i64) -> String {
        hex(&self.mac(user, slot, id, expires).finalize().into_bytes())
    }

    /// An event's data as it leaves the daemon: a stored media gets a fresh link.
    pub fn present(&self, kind: &str, payload: &str) -> String {
        if kind != crate::events::MESSAGE && kind != crate::events::MESSAGE_MEDIA
            || !payload.contains("\"sha256\"")
        {
            return payload.to_owned();
        }
        let Ok(mut data) = serde_json::from_str::<serde_json::Value>(payload) else {
            return payload.to_owned();
        };
        let user = data["userId"].as_str().and_then(|u| UserId::parse(u).ok());
        let slot = data["slot"].as_i64();
        let id = data["media"]["id"].as_str().map(str::to_owned);
        if let (Some(user), Some(slot), Some(id)) = (user, slot, id) {
            if let Ok(slot) = Slot::new(slot, u16::MAX) {
                data["media"]["url"] = serde_json::Value::String(self.link(&user, slot, &id).0);
            }
        }
        data.to_string()
    }

    /// What an event carries of a media row.
    pub fn info(row: &MediaRow) -> MediaInfo {
        MediaInfo {
            id: row.id.clone(),
            mimetype: row.mimetype.clone(),
            filename: row.filename.clone(),
            size: row.size,
            sha256: (row.state == MediaState::Stored)
                .then(|| row.sha256.clone())
                .flatten(),
            url: None,
            error: match row.state {
                MediaState::Stored => None,
                MediaState::Removed => Some("removed".to_owned()),
                MediaState::Failed => row.error.clone(),
            },
        }
    }
}

/// A content put into the blobs whose row is not written yet; the retention leaves it alone
/// until this is dropped.
pub struct Pending {
    media: Arc<Media>,
    sha256: String,
}

impl Pending {
    fn new(media: Arc<Media>, sha256: String) -> Pending {
        *media
            .pending
            .lock()
            .expect("media pending lock")
            .entry(sha256.clone())
            .or_default() += 1;
        Pending { media, sha256 }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut pending = self.media.pending.lock().expect("media pending lock");
        if let Some(n) = pending.get_mut(&self.sha256) {
            *n -= 1;
            if *n == 0 {
                pending.remove(&self.sha256);
            }
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A path segment, percent-encoded (user ids may hold characters a URL cannot).
fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_junk() {
        assert_eq!(unhex(&hex(&[0, 1, 254, 255])), Some(vec![0, 1, 254, 255]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(percent("user_1.a~b"), "user_1.a~b");
        assert_eq!(percent("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn media_ids_are_per_session_and_message() {
        let key = |u: &str, s: u16| {
            SessionKey::new(UserId::parse(u).unwrap(), Slot::new(s.into(), 10).unwrap())
        };
        let a = Media::id_of(&key("alice", 1), "m1");
        assert_eq!(a, Media::id_of(&key("alice", 1), "m1"));
        assert_ne!(a, Media::id_of(&key("alice", 2), "m1"));
        assert_ne!(a, Media::id_of(&key("bob", 1), "m1"));
        assert_ne!(a, Media::id_of(&key("alice", 1), "m2"));
        assert_eq!(a.len(), 32);
    }
}
