//! Media intake (docs/messaging.md, "Media"): the daemon, never the page, fetches a URL (with a
//! user's token: the webhook rules — https unless `WEBHOOK_ALLOW_HTTP`, the address guard unless
//! `WEBHOOK_ALLOW_NETWORKS`, no proxy; the service token is trusted like `WEBHOOK_URL`; never a
//! redirect; a timeout; `MEDIA_MAX_BYTES` enforced while streaming) or decodes base64; sniffs the
//! type from the bytes (a declared mimetype that contradicts them is refused); and turns a voice
//! note into Ogg/Opus mono 16 kHz with ffmpeg unless it already is.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;

use crate::webhooks::guard::{Guard, GuardedResolver};

/// `media` of a media message: exactly one of `url` and `data`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MediaInput {
    /// Fetched by the daemon (https; no redirects).
    #[schema(example = "https://example.com/menu.pdf")]
    url: Option<String>,
    /// The file itself, base64 (standard alphabet, padding optional).
    data: Option<String>,
    /// What the file is; checked against its bytes.
    #[schema(example = "application/pdf")]
    mimetype: Option<String>,
    /// The name the recipient sees (documents).
    #[schema(example = "menu.pdf")]
    filename: Option<String>,
}

/// What kind of media message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Image,
    Video,
    Audio,
    Voice,
    Document,
    Sticker,
}

impl MediaKind {
    pub fn name(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Video => "video",
            MediaKind::Audio => "audio",
            MediaKind::Voice => "voice",
            MediaKind::Document => "document",
            MediaKind::Sticker => "sticker",
        }
    }

    /// The types WhatsApp plays for this kind (documents take anything).
    fn accepts(self) -> &'static [&'static str] {
        match self {
            MediaKind::Image => &["image/jpeg", "image/png", "image/webp"],
            MediaKind::Video => &["video/mp4", "video/3gpp"],
            MediaKind::Audio => &[
                "audio/mpeg",
                "audio/ogg",
                "audio/mp4",
                "audio/aac",
                "audio/amr",
            ],
            MediaKind::Sticker => &["image/webp", "image/png", "image/jpeg"],
            MediaKind::Voice | MediaKind::Document => &[],
        }
    }
}

/// Media ready for the page.
#[derive(Clone)]
pub struct Media {
    pub kind: MediaKind,
    pub bytes: Arc<Vec<u8>>,
    pub mimetype: String,
    pub filename: String,
}

impl std::fmt::Debug for Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Media")
            .field("kind", &self.kind)
            .field("bytes", &self.bytes.len())
            .field("mimetype", &self.mimetype)
            .field("filename", &self.filename)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("the media is larger than MEDIA_MAX_BYTES ({max} bytes)")]
    TooLarge { max: u64 },
    /// The bytes are not what the message type needs, or cannot be decoded.
    #[error("{0}")]
    Unsupported(String),
    /// The URL could not be fetched (refused, unreachable, an error status, a redirect).
    #[error("{0}")]
    Unavailable(String),
    /// The request's media field itself is wrong.
    #[error("{0}")]
    Bad(String),
    /// Voice notes need ffmpeg, and this host has none.
    #[error("voice notes are transcoded with ffmpeg, which is not installed on this host")]
    NoTranscoder,
}

/// Takes media in for the sends of every session.
pub struct Intake {
    guard: Arc<Guard>,
    guarded: reqwest::Client,
    trusted: reqwest::Client,
    pub max_bytes: u64,
    ffmpeg: Option<PathBuf>,
    /// ffmpeg runs at most this many at once (it takes a core each).
    transcodes: tokio::sync::Semaphore,
}

/// How long a media URL may take, whole.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a voice note may take to transcode.
const TRANSCODE_TIMEOUT: Duration = Duration::from_secs(60);

impl Intake {
    /// The largest send body taken: base64 media is 4/3 of the file, and JSON a little more.
    pub fn body_limit(&self) -> usize {
        self.max_bytes as usize / 3 * 4 + 64 * 1024
    }

    pub fn new(guard: Arc<Guard>, max_bytes: u64, ffmpeg: Option<PathBuf>) -> Intake {
        let client = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs(10))
                .timeout(FETCH_TIMEOUT)
                .user_agent(concat!("wa-supervisor/", env!("CARGO_PKG_VERSION")))
        };
        Intake {
            guarded: client()
                .no_proxy()
                .dns_resolver(Arc::new(GuardedResolver(guard.clone())))
                .build()
                .expect("the HTTP client builds"),
            trusted: client().build().expect("the HTTP client builds"),
            guard,
            max_bytes,
            ffmpeg,
            transcodes: tokio::sync::Semaphore::new(2),
        }
    }

    /// ffmpeg's path, for `/readyz`.
    pub fn ffmpeg(&self) -> Option<&std::path::Path> {
        self.ffmpeg.as_deref()
    }

    /// The media of a message: fetched or decoded, sniffed, checked, transcoded for a voice note.
    /// `trusted`: the caller holds the service token (its URLs are not guarded).
    pub async fn take(
        &self,
        input: MediaInput,
        kind: MediaKind,
        trusted: bool,
    ) -> Result<Media, MediaError> {
        let bytes = match (input.url, input.data) {
            (Some(url), None) => self.fetch(&url, trusted).await?,
            (None, Some(data)) => self.decode(&data)?,
            _ => {
                return Err(MediaError::Bad(
                    "`media` takes exactly one of `url` and `data`".into(),
                ))
            }
        };
        if bytes.is_empty() {
            return Err(MediaError::Unsupported("the media is empty".into()));
        }
        let declared = input.mimetype.map(|m| m.trim().to_ascii_lowercase());
        if let Some(m) = &declared {
            if m.len() > 128 || !m.contains('/') {
                return Err(MediaError::Bad(format!(
                    "`media.mimetype` {m:?} is not a media type"
                )));
            }
        }
        let filename = match input.filename {
            Some(name) => Some(check_filename(&name)?),
            None => None,
        };
        let sniffed = sniff(&bytes);
        if let (Some(declared), Some(sniffed)) = (&declared, sniffed) {
            if !same_type(declared, sniffed) {
                return Err(MediaError::Unsupported(format!(
                    "`media.mimetype` says {declared}, the bytes are {sniffed}"
                )));
            }
        }
        let (bytes, mimetype) = match kind {
            MediaKind::Voice => match is_mono_opus(&bytes) {
                true => (bytes, "audio/ogg; codecs=opus".to_owned()),
                false => (
                    self.transcode(&bytes).await?,
                    "audio/ogg; codecs=opus".to_owned(),
                ),
            },
            MediaKind::Document => {
                let m = declared
                    .or(sniffed.map(str::to_owned))
                    .unwrap_or_else(|| "application/octet-stream".to_owned());
                (bytes, m)
            }
            _ => match sniffed {
                Some(s) if kind.accepts().contains(&s) => (bytes, s.to_owned()),
                Some(s) => {
                    return Err(MediaError::Unsupported(format!(
                        "a {} message takes {}; the bytes are {s}",
                        kind.name(),
                        kind.accepts().join(", ")
                    )))
                }
                None => {
                    return Err(MediaError::Unsupported(format!(
                        "a {} message takes {}; these bytes are none of them",
                        kind.name(),
                        kind.accepts().join(", ")
                    )))
                }
            },
        };
        let filename = filename.unwrap_or_else(|| {
            format!("{}.{}", kind.name(), extension(&mimetype).unwrap_or("bin"))
        });
        Ok(Media {
            kind,
            bytes: Arc::new(bytes),
            mimetype,
            filename,
        })
    }

    fn decode(&self, data: &str) -> Result<Vec<u8>, MediaError> {
        // Base64 is 4/3 of the bytes: refuse before decoding what cannot fit.
        if data.len() as u64 / 4 * 3 > self.max_bytes + 3 {
            return Err(MediaError::TooLarge {
                max: self.max_bytes,
            });
        }
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(data.trim().trim_end_matches('='))
            .map_err(|e| MediaError::Bad(format!("`media.data` is not base64: {e}")))?;
        if bytes.len() as u64 > self.max_bytes {
            return Err(MediaError::TooLarge {
                max: self.max_bytes,
            });
        }
        Ok(bytes)
    }

    async fn fetch(&self, raw: &str, trusted: bool) -> Result<Vec<u8>, MediaError> {
        let (url, client) = if trusted {
            let url = reqwest::Url::parse(raw)
                .map_err(|e| MediaError::Bad(format!("`media.url` is not a URL: {e}")))?;
            if !matches!(url.scheme(), "https" | "http") {
                return Err(MediaError::Bad("`media.url` must be http(s)".into()));
            }
            (url, &self.trusted)
        } else {
            let url = self
                .guard
                .check_url(raw)
                .map_err(|why| MediaError::Bad(format!("`media.url`: {why}")))?;
            (url, &self.guarded)
        };
        let host = url.host_str().unwrap_or_default().to_owned();
        let unavailable =
            |why: String| MediaError::Unavailable(format!("`media.url` ({host}): {why}"));
        let mut res = client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| unavailable(crate::chain(&e)))?;
        let status = res.status();
        if status.is_redirection() {
            return Err(unavailable(format!(
                "answered {status}: redirects are not followed (give the final URL)"
            )));
        }
        if !status.is_success() {
            return Err(unavailable(format!("answered {status}")));
        }
        if res.content_length().is_some_and(|n| n > self.max_bytes) {
            return Err(MediaError::TooLarge {
                max: self.max_bytes,
            });
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = res
            .chunk()
            .await
            .map_err(|e| unavailable(crate::chain(&e)))?
        {
            if (bytes.len() + chunk.len()) as u64 > self.max_bytes {
                return Err(MediaError::TooLarge {
                    max: self.max_bytes,
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    /// Any audio ffmpeg decodes → Ogg/Opus, mono, 16 kHz (what WhatsApp's apps play as a voice
    /// note). Files in a private temporary folder (an MP4's index may sit at its end: no pipe).
    async fn transcode(&self, input: &[u8]) -> Result<Vec<u8>, MediaError> {
        let ffmpeg = self.ffmpeg.as_ref().ok_or(MediaError::NoTranscoder)?;
        let _one_of_few = self.transcodes.acquire().await.expect("never closed");
        let dir =
            private_temp_dir().map_err(|e| MediaError::Unsupported(format!("transcoding: {e}")))?;
        let (src, out) = (dir.join("in"), dir.join("out.ogg"));
        let result = async {
            tokio::fs::write(&src, input)
                .await
                .map_err(|e| MediaError::Unsupported(format!("transcoding: {e}")))?;
            let run = tokio::process::Command::new(ffmpeg)
                .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i"])
                .arg(&src)
                .args(["-vn", "-map_metadata", "-1", "-ac", "1", "-ar", "16000"])
                .args([
                    "-c:a",
                    "libopus",
                    "-b:a",
                    "32k",
                    "-application",
                    "voip",
                    "-f",
                    "ogg",
                ])
                .arg(&out)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .output();
            let output = tokio::time::timeout(TRANSCODE_TIMEOUT, run)
                .await
                .map_err(|_| MediaError::Unsupported("transcoding took too long".into()))?
                .map_err(|e| MediaError::Unsupported(format!("ffmpeg: {e}")))?;
            if !output.status.success() {
                let why = String::from_utf8_lossy(&output.stderr);
                let why = why.lines().last().unwrap_or("no output").trim();
                return Err(MediaError::Unsupported(format!(
                    "the audio cannot be decoded: {}",
                    why.chars().take(200).collect::<String>()
                )));
            }
            let bytes = tokio::fs::read(&out)
                .await
                .map_err(|e| MediaError::Unsupported(format!("transcoding: {e}")))?;
            if bytes.len() as u64 > self.max_bytes {
                return Err(MediaError::TooLarge {
                    max: self.max_bytes,
                });
            }
            Ok(bytes)
        }
        .await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        result
    }
}

/// A folder only this user can read, for one transcode.
fn private_temp_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = std::env::temp_dir().join(format!(
        "wa-supervisor-voice-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

fn check_filename(raw: &str) -> Result<String, MediaError> {
    let ok = !raw.trim().is_empty()
        && raw.chars().count() <= 255
        && !raw.chars().any(|c| c.is_control() || c == '/' || c == '\\');
    ok.then(|| raw.trim().to_owned()).ok_or_else(|| {
        MediaError::Bad(
            "`media.filename` must be 1 to 255 characters, no slashes or control characters".into(),
        )
    })
}

/// The type the bytes are, by their magic numbers; `None` when they are none of these.
pub fn sniff(b: &[u8]) -> Option<&'static str> {
    let at = |off: usize, magic: &[u8]| {
        b.len() >= off + magic.len() && &b[off..off + magic.len()] == magic
    };
    Some(if at(0, b"\xFF\xD8\xFF") {
        "image/jpeg"
    } else if at(0, b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else if at(0, b"RIFF") && at(8, b"WEBP") {
        "image/webp"
    } else if at(0, b"GIF87a") || at(0, b"GIF89a") {
        "image/gif"
    } else if at(0, b"%PDF-") {
        "application/pdf"
    } else if at(4, b"ftyp") {
        match b.get(8..12) {
            Some(b"M4A ") | Some(b"M4B ") => "audio/mp4",
            Some(brand) if brand.starts_with(b"3g") => "video/3gpp",
            _ => "video/mp4",
        }
    } else if at(0, b"OggS") {
        "audio/ogg"
    } else if at(0, b"ID3") || (b.len() > 1 && b[0] == 0xFF && (b[1] & 0xE6) == 0xE2) {
        "audio/mpeg"
    } else if b.len() > 1 && b[0] == 0xFF && (b[1] & 0xF6) == 0xF0 {
        "audio/aac"
    } else if at(0, b"#!AMR") {
        "audio/amr"
    } else if at(0, b"RIFF") && at(8, b"WAVE") {
        "audio/wav"
    } else if at(0, b"fLaC") {
        "audio/flac"
    } else if at(0, b"\x1A\x45\xDF\xA3") {
        "video/webm"
    } else if at(0, b"PK\x03\x04") {
        "application/zip"
    } else {
        return None;
    })
}

/// Whether a declared type names what the bytes are (aliases and containers allowed: an Office
/// file is a zip, an M4A an MP4, Opus an Ogg).
fn same_type(declared: &str, sniffed: &str) -> bool {
    let declared = declared.split(';').next().unwrap_or(declared).trim();
    fn family(m: &str) -> &str {
        match m {
            "image/jpg" | "image/pjpeg" => "image/jpeg",
            "audio/mp3" | "audio/x-mpeg" => "audio/mpeg",
            "audio/x-m4a" | "audio/m4a" | "audio/mp4" | "video/mp4" | "video/quicktime" => "mp4",
            "audio/opus" | "application/ogg" | "video/ogg" | "audio/ogg" => "audio/ogg",
            "audio/x-wav" | "audio/wave" | "audio/vnd.wave" => "audio/wav",
            "audio/x-aac" | "audio/aacp" => "audio/aac",
            "video/3gpp" | "audio/3gpp" => "video/3gpp",
            other => other,
        }
    }
    if family(declared) == family(sniffed) {
        return true;
    }
    sniffed == "application/zip"
        && (declared.starts_with("application/vnd.openxmlformats-")
            || declared.starts_with("application/vnd.oasis.opendocument.")
            || matches!(
                declared,
                "application/epub+zip"
                    | "application/java-archive"
                    | "application/vnd.android.package-archive"
                    | "application/x-zip-compressed"
            ))
}

/// An Ogg stream whose first page is an Opus header with one channel.
fn is_mono_opus(b: &[u8]) -> bool {
    b.starts_with(b"OggS") && b.len() > 37 && &b[28..36] == b"OpusHead" && b[37] == 1
}

fn extension(mimetype: &str) -> Option<&'static str> {
    Some(match mimetype.split(';').next()? {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/webp" => "webp",
        "image/gif" => "gif",
        "application/pdf" => "pdf",
        "video/mp4" => "mp4",
        "video/3gpp" => "3gp",
        "audio/mp4" => "m4a",
        "audio/ogg" => "ogg",
        "audio/mpeg" => "mp3",
        "audio/aac" => "aac",
        "audio/amr" => "amr",
        "application/zip" => "zip",
        "text/plain" => "txt",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_tell_their_type() {
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0\0\x10JFIF"), Some("image/jpeg"));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff(b"%PDF-1.7\n"), Some("application/pdf"));
        assert_eq!(sniff(b"\0\0\0\x20ftypisom\0\0"), Some("video/mp4"));
        assert_eq!(sniff(b"\0\0\0\x20ftypM4A \0\0"), Some("audio/mp4"));
        assert_eq!(sniff(b"ID3\x04\0\0"), Some("audio/mpeg"));
        assert_eq!(sniff(b"\xFF\xFB\x90\x64"), Some("audio/mpeg"));
        assert_eq!(sniff(b"OggS\0\x02"), Some("audio/ogg"));
        assert_eq!(sniff(b"PK\x03\x04\x14\0"), Some("application/zip"));
        assert_eq!(sniff(b"hello, plain text"), None);
    }

    #[test]
    fn a_declared_type_must_not_contradict_the_bytes() {
        assert!(same_type("image/jpg", "image/jpeg"));
        assert!(same_type("audio/ogg; codecs=opus", "audio/ogg"));
        assert!(same_type(
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "application/zip"
        ));
        assert!(same_type("audio/x-m4a", "audio/mp4"));
        assert!(!same_type("image/png", "image/jpeg"));
        assert!(!same_type("application/pdf", "image/png"));
    }

    #[test]
    fn mono_opus_is_sent_as_it_is() {
        let mut page = b"OggS\0\x02".to_vec();
        page.resize(28, 0);
        page.extend_from_slice(b"OpusHead\x01\x01\x38\x01");
        assert!(is_mono_opus(&page));
        page[37] = 2;
        assert!(!is_mono_opus(&page));
    }

    #[tokio::test]
    async fn base64_is_refused_past_the_cap_before_decoding() {
        crate::auth::install_crypto_provider();
        let intake = Intake::new(Arc::new(Guard::default()), 8, None);
        let input = |data: &str| MediaInput {
            url: None,
            data: Some(data.into()),
            mimetype: None,
            filename: None,
        };
        let err = intake
            .take(input("AAAAAAAAAAAAAAAAAAAA"), MediaKind::Document, false)
            .await
            .unwrap_err();
        assert!(matches!(err, MediaError::TooLarge { max: 8 }), "{err}");
        let doc = intake
            .take(input("aGVsbG8="), MediaKind::Document, false)
            .await
            .unwrap();
        assert_eq!(
            (
                doc.bytes.as_slice(),
                doc.mimetype.as_str(),
                doc.filename.as_str()
            ),
            (&b"hello"[..], "application/octet-stream", "document.bin")
        );
        let err = intake
            .take(input("aGVsbG8="), MediaKind::Image, false)
            .await
            .unwrap_err();
        assert!(matches!(err, MediaError::Unsupported(_)), "{err}");
        let err = intake
            .take(input("aGVsbG8="), MediaKind::Voice, false)
            .await
            .unwrap_err();
        assert!(matches!(err, MediaError::NoTranscoder), "{err}");
    }
}
