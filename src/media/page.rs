//! A media message's bytes out of the page (docs/media.md): `WPP.chat.downloadMedia` runs as a
//! job in the page and keeps the Blob there; short calls then read it in slices of
//! [`SLICE_BYTES`] (base64 in the answer: 683 KiB, never near DevTools' 1 MiB) into a private
//! temporary file, hashed as it is written. The Blob is dropped at the end, whatever happened.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use sha2::Digest;
use tokio::io::AsyncWriteExt;

use crate::browser::{Command, PageHandle};

/// Every `WPP` member the download touches.
pub const WPP_MEMBERS: &[&str] = &["WPP.chat.downloadMedia"];

/// Bytes per DevTools answer.
pub const SLICE_BYTES: u64 = 512 * 1024;

/// A finished download, in a private temporary file.
pub struct Downloaded {
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
    /// The Blob's type, when the page gives one.
    pub mimetype: Option<String>,
}

/// How long WhatsApp Web may take to fetch and decrypt a media: 30 s, and a second more for
/// every 256 KiB announced, at most 5 minutes.
fn deadline(size: Option<u64>) -> Duration {
    let extra = size.unwrap_or(0) / (256 * 1024);
    (Duration::from_secs(30) + Duration::from_secs(extra)).min(Duration::from_secs(300))
}

/// Downloads the media of `message_id` into a new file in `tmp` (made 0700). At most
/// `max_bytes`.
pub async fn download(
    page: &PageHandle,
    message_id: &str,
    announced: Option<u64>,
    max_bytes: u64,
    tmp: &Path,
) -> Result<Downloaded, String> {
    let job = js(&format!("{:032x}", rand::random::<u128>()));
    let start = format!(
        "const d = (window.__waSupDownloads = window.__waSupDownloads || {{}}); const j = {{ done: false }}; \
         d[{job}] = j; \
         j.p = WPP.chat.downloadMedia({id}).then((b) => {{ j.done = true; j.blob = b; }}, \
           (e) => {{ j.done = true; j.error = String(e && e.message || e); }}); \
         setTimeout(() => {{ delete d[{job}]; }}, 600000); return true;",
        id = js(message_id),
    );
    call(page, start).await?;
    let result = read(page, &job, announced, max_bytes, tmp).await;
    let drop =
        format!("if (window.__waSupDownloads) delete window.__waSupDownloads[{job}]; return true;");
    let _ = call(page, drop).await;
    if result.as_ref().is_ok_and(|d| d.size > 1 << 20) {
        let _ = (page)(Command::CollectGarbage).await;
    }
    result
}

async fn read(
    page: &PageHandle,
    job: &str,
    announced: Option<u64>,
    max_bytes: u64,
    tmp: &Path,
) -> Result<Downloaded, String> {
    let wait = format!(
        "const j = (window.__waSupDownloads || {{}})[{job}]; if (!j) return {{ gone: true }}; \
         if (!j.done) await Promise.race([j.p, new Promise((r) => setTimeout(r, 4000))]); \
         if (!j.done) return {{ pending: true }}; \
         if (j.error != null) return {{ failed: j.error }}; \
         return {{ size: j.blob.size, type: j.blob.type || null }};"
    );
    let until = tokio::time::Instant::now() + deadline(announced);
    let (size, mimetype) = loop {
        let answer = call(page, wait.clone()).await?;
        if let Some(failed) = answer.get("failed") {
            return Err(failed.as_str().unwrap_or("failed").to_owned());
        }
        if answer.get("gone").is_some() {
            return Err("the page was reloaded during the download".to_owned());
        }
        if let Some(size) = answer.get("size").and_then(|s| s.as_u64()) {
            let mimetype = answer["type"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            break (size, mimetype);
        }
        if tokio::time::Instant::now() >= until {
            return Err(format!(
                "WhatsApp Web did not hand it over within {:?}",
                deadline(announced)
            ));
        }
    };
    if size > max_bytes {
        return Err(format!(
            "too large: {size} bytes (MEDIA_MAX_BYTES is {max_bytes})"
        ));
    }
    crate::files::private_dir(tmp, false).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let path = tmp.join(format!("{:032x}", rand::random::<u128>()));
    let written = write_slices(page, job, size, &path).await;
    match written {
        Ok(sha256) => Ok(Downloaded {
            path,
            sha256,
            size,
            mimetype,
        }),
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            Err(e)
        }
    }
}

/// The Blob's `size` bytes into `path`, slice by slice; their SHA-256.
async fn write_slices(
    page: &PageHandle,
    job: &str,
    size: u64,
    path: &Path,
) -> Result<String, String> {
    let std_file = crate::files::open_no_follow(path).map_err(|e| e.to_string())?;
    let mut file = tokio::fs::File::from_std(std_file);
    let mut hash = sha2::Sha256::new();
    let mut at = 0;
    while at < size {
        let end = (at + SLICE_BYTES).min(size);
        let slice = format!(
            "const j = (window.__waSupDownloads || {{}})[{job}]; if (!j || !j.blob) return null; \
             const a = new Uint8Array(await j.blob.slice({at}, {end}).arrayBuffer()); let s = ''; \
             for (let i = 0; i < a.length; i += 32768) s += String.fromCharCode.apply(null, a.subarray(i, i + 32768)); \
             return btoa(s);"
        );
        let answer = call(page, slice).await?;
        let b64 = answer
            .as_str()
            .ok_or_else(|| "the page dropped the media during the download".to_owned())?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("the page sent unreadable bytes: {e}"))?;
        if bytes.len() as u64 != end - at {
            return Err(format!(
                "the page sent {} bytes for {at}..{end}",
                bytes.len()
            ));
        }
        hash.update(&bytes);
        file.write_all(&bytes).await.map_err(|e| e.to_string())?;
        at = end;
    }
    file.flush().await.map_err(|e| e.to_string())?;
    file.sync_all().await.map_err(|e| e.to_string())?;
    Ok(super::hex(&hash.finalize()))
}

async fn call(page: &PageHandle, body: String) -> Result<serde_json::Value, String> {
    (page)(Command::Call {
        what: "downloadMedia",
        body,
    })
    .await
    .map_err(|e| crate::chain(&e))
}

fn js(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uses_only_the_listed_members() {
        let text = include_str!("page.rs");
        let used = crate::browser::bridge::members_used(text);
        assert_eq!(used, WPP_MEMBERS);
    }

    #[test]
    fn deadlines_grow_with_the_size_and_stop() {
        assert_eq!(deadline(None), Duration::from_secs(30));
        assert_eq!(deadline(Some(30 << 20)), Duration::from_secs(150));
        assert_eq!(deadline(Some(1 << 30)), Duration::from_secs(300));
    }
}
