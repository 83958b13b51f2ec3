//! The backup file (docs/operations.md, "The file"): a POSIX tar whose every header is the one
//! [`header`] makes for its name and size, zero padding, `manifest.json` last, then one trailer
//! line with the SHA-256 of every byte before it. Optionally the whole is an age file.
//!
//! The writer streams into a [`Sink`] (a file, an HTTP response); the reader checks everything
//! while it copies the entries into a staging folder, and names the entry at fault.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use actix_web::web::Bytes;
use sha2::{Digest, Sha256};

const BLOCK: usize = 512;
/// The first bytes of the trailer line; the hex digest and a newline follow.
const TRAILER: &[u8] = b"wa-supervisor-backup sha256=";
/// The trailer line's length: prefix, 64 hex digits, newline.
const TRAILER_LEN: usize = TRAILER.len() + 64 + 1;
/// The last entry of every archive.
pub const MANIFEST: &str = "manifest.json";
/// What an age file starts with.
const AGE_MAGIC: &[u8] = b"age-encryption.org/";
/// The largest entry a ustar size field holds (11 octal digits).
const MAX_ENTRY: u64 = 0o77777777777;
/// Pieces an entry is copied in.
const PIECE: usize = 256 * 1024;

/// Where the archive's bytes go, in order.
pub trait Sink {
    fn send(&mut self, bytes: Bytes) -> impl std::future::Future<Output = io::Result<()>>;
    /// No more bytes: flush, sync.
    fn close(&mut self) -> impl std::future::Future<Output = io::Result<()>>;
}

impl Sink for tokio::fs::File {
    async fn send(&mut self, bytes: Bytes) -> io::Result<()> {
        tokio::io::AsyncWriteExt::write_all(self, &bytes).await
    }
    async fn close(&mut self) -> io::Result<()> {
        tokio::io::AsyncWriteExt::flush(self).await?;
        self.sync_all().await
    }
}

/// An HTTP response's body: the receiver gone is a write error.
impl Sink for tokio::sync::mpsc::Sender<io::Result<Bytes>> {
    async fn send(&mut self, bytes: Bytes) -> io::Result<()> {
        tokio::sync::mpsc::Sender::send(self, Ok(bytes))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the receiver went away"))
    }
    async fn close(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The bytes age writes, taken out after every write.
#[derive(Clone, Default)]
struct Spill(Arc<Mutex<Vec<u8>>>);

impl Spill {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().expect("spill lock"))
    }
}

impl Write for Spill {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("spill lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A sink that encrypts to age recipients on the way.
pub struct Encrypted<S> {
    inner: S,
    age: Option<age::stream::StreamWriter<Spill>>,
    spill: Spill,
}

impl<S: Sink> Encrypted<S> {
    pub fn new(inner: S, recipients: &[Recipient]) -> io::Result<Encrypted<S>> {
        let encryptor =
            age::Encryptor::with_recipients(recipients.iter().map(|r| r.0.as_ref() as _))
                .map_err(|e| io::Error::other(format!("age: {e}")))?;
        let spill = Spill::default();
        let age = encryptor.wrap_output(spill.clone())?;
        Ok(Encrypted {
            inner,
            age: Some(age),
            spill,
        })
    }

    async fn drain(&mut self) -> io::Result<()> {
        let out = self.spill.take();
        if out.is_empty() {
            return Ok(());
        }
        self.inner.send(Bytes::from(out)).await
    }
}

impl<S: Sink> Sink for Encrypted<S> {
    async fn send(&mut self, bytes: Bytes) -> io::Result<()> {
        let age = self
            .age
            .as_mut()
            .ok_or_else(|| io::Error::other("closed"))?;
        age.write_all(&bytes)?;
        self.drain().await
    }
    async fn close(&mut self) -> io::Result<()> {
        if let Some(age) = self.age.take() {
            age.finish()?;
        }
        self.drain().await?;
        self.inner.close().await
    }
}

/// An age recipient: X25519 (`age1…`, what `age-keygen` makes) or post-quantum (`age1pq1…`).
#[derive(Clone)]
pub struct Recipient(Arc<dyn age::Recipient + Send + Sync>);

impl std::str::FromStr for Recipient {
    type Err = String;
    fn from_str(raw: &str) -> Result<Recipient, String> {
        let raw = raw.trim();
        if let Ok(pq) = raw.parse::<age::pq::Recipient>() {
            return Ok(Recipient(Arc::new(pq)));
        }
        // X25519 is what Debian's `age-keygen` makes; age calls it legacy.
        #[allow(deprecated)]
        raw.parse::<age::x25519::Recipient>()
            .map(|r| Recipient(Arc::new(r)))
            .map_err(|e| format!("{raw:?} is not an age recipient (age1…): {e}"))
    }
}

impl std::fmt::Debug for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recipient")
    }
}

/// One entry as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EntryInfo {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// The canonical header of an entry: a regular file, mode 0600, owner 0, time 0, ustar.
pub fn header(name: &str, size: u64) -> io::Result<[u8; BLOCK]> {
    if name.is_empty()
        || name.len() > 100
        || !name.bytes().all(|b| b.is_ascii_graphic())
        || name
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not an entry name"),
        ));
    }
    if size > MAX_ENTRY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name} is larger than a tar entry holds ({size} bytes)"),
        ));
    }
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000600\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    Ok(h)
}

fn padding(size: u64) -> usize {
    (BLOCK - (size % BLOCK as u64) as usize) % BLOCK
}

/// Writes an archive into a sink: entries, then [`Writer::finish`] with the manifest.
pub struct Writer<S> {
    sink: S,
    digest: Sha256,
    entries: Vec<EntryInfo>,
    written: u64,
}

impl<S: Sink> Writer<S> {
    pub fn new(sink: S) -> Writer<S> {
        Writer {
            sink,
            digest: Sha256::new(),
            entries: Vec::new(),
            written: 0,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn entries(&self) -> &[EntryInfo] {
        &self.entries
    }

    async fn put(&mut self, bytes: Vec<u8>) -> io::Result<()> {
        self.digest.update(&bytes);
        self.written += bytes.len() as u64;
        self.sink.send(Bytes::from(bytes)).await
    }

    /// An entry held in memory.
    pub async fn bytes(&mut self, name: &str, content: &[u8]) -> io::Result<()> {
        let size = content.len() as u64;
        self.put(header(name, size)?.to_vec()).await?;
        for piece in content.chunks(PIECE) {
            self.put(piece.to_vec()).await?;
        }
        self.put(vec![0; padding(size)]).await?;
        self.entries.push(EntryInfo {
            name: name.to_owned(),
            size,
            sha256: crate::media::hex(&Sha256::digest(content)),
        });
        Ok(())
    }

    /// An entry of `size` bytes read from `source`, in pieces; fewer or more bytes than `size`
    /// fail the archive (a content that changed under the backup).
    pub async fn stream<E>(
        &mut self,
        name: &str,
        size: u64,
        source: impl futures_util::Stream<Item = Result<Bytes, E>>,
    ) -> io::Result<()>
    where
        E: std::fmt::Display,
    {
        use futures_util::StreamExt;
        self.put(header(name, size)?.to_vec()).await?;
        let mut hash = Sha256::new();
        let mut got = 0u64;
        let mut source = std::pin::pin!(source);
        while let Some(piece) = source.next().await {
            let piece = piece.map_err(|e| io::Error::other(format!("{name}: {e}")))?;
            got += piece.len() as u64;
            if got > size {
                break;
            }
            hash.update(&piece);
            self.put(piece.to_vec()).await?;
        }
        if got != size {
            return Err(io::Error::other(format!(
                "{name}: {got} bytes read where {size} were expected"
            )));
        }
        self.put(vec![0; padding(size)]).await?;
        self.entries.push(EntryInfo {
            name: name.to_owned(),
            size,
            sha256: crate::media::hex(&hash.finalize()),
        });
        Ok(())
    }

    /// An entry read from a file, from `offset`, `len` bytes.
    pub async fn file_range(
        &mut self,
        name: &str,
        path: &Path,
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut file = tokio::fs::File::open(path).await?;
        file.seek(io::SeekFrom::Start(offset)).await?;
        let source = futures_util::stream::try_unfold((file, len), |(mut file, left)| async move {
            if left == 0 {
                return Ok::<_, io::Error>(None);
            }
            let mut buf = vec![0u8; (left as usize).min(PIECE)];
            let n = file.read(&mut buf).await?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file ended"));
            }
            buf.truncate(n);
            Ok(Some((Bytes::from(buf), (file, left - n as u64))))
        });
        self.stream(name, len, source).await
    }

    /// The manifest (made from the entries written), the end of the tar, the trailer; closes
    /// the sink. The manifest's own entry is not in the list it holds.
    pub async fn finish(mut self, manifest: &[u8]) -> io::Result<u64> {
        self.bytes(MANIFEST, manifest).await?;
        self.put(vec![0; 2 * BLOCK]).await?;
        let digest = crate::media::hex(&std::mem::take(&mut self.digest).finalize());
        let mut trailer = TRAILER.to_vec();
        trailer.extend_from_slice(digest.as_bytes());
        trailer.push(b'\n');
        self.written += trailer.len() as u64;
        self.sink.send(Bytes::from(trailer)).await?;
        self.sink.close().await?;
        Ok(self.written)
    }
}

/// Why an archive is refused: the entry at fault (or the part of the file) and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{entry}: {why}")]
pub struct Refused {
    pub entry: String,
    pub why: String,
}

fn refused(entry: impl Into<String>, why: impl Into<String>) -> Refused {
    Refused {
        entry: entry.into(),
        why: why.into(),
    }
}

/// The entries of a checked archive, each in a file of the staging folder.
#[derive(Debug)]
pub struct Staged {
    /// Name → staged file, in archive order (the manifest last).
    pub entries: Vec<(EntryInfo, PathBuf)>,
}

impl Staged {
    pub fn path(&self, name: &str) -> Option<&Path> {
        self.entries
            .iter()
            .find(|(e, _)| e.name == name)
            .map(|(_, p)| p.as_path())
    }

    pub fn manifest(&self) -> &Path {
        self.path(MANIFEST)
            .expect("a staged archive has its manifest")
    }
}

/// Reads the whole archive from `input`, copying each entry into `stage` (a private, empty
/// folder), and checks it: canonical headers, zero padding, the trailer's digest, and every
/// entry against the manifest (`manifest_entries` reads the manifest's list from its bytes).
/// Nothing but `stage` is written.
pub fn read(
    input: impl Read,
    stage: &Path,
    manifest_entries: impl FnOnce(&[u8]) -> Result<Vec<EntryInfo>, String>,
) -> Result<Staged, Refused> {
    let mut input = Hashing {
        inner: input,
        digest: Sha256::new(),
    };
    let mut entries: Vec<(EntryInfo, PathBuf)> = Vec::new();
    let after = |entries: &[(EntryInfo, PathBuf)]| match entries.last() {
        Some((e, _)) => format!("the header after {}", e.name),
        None => "the first header".to_owned(),
    };
    loop {
        let mut block = [0u8; BLOCK];
        read_exact(&mut input, &mut block).map_err(|why| refused(after(&entries), why))?;
        if block.iter().all(|b| *b == 0) {
            let mut second = [0u8; BLOCK];
            read_exact(&mut input, &mut second)
                .map_err(|why| refused("the end of the archive", why))?;
            if second.iter().any(|b| *b != 0) {
                return Err(refused("the end of the archive", "damaged"));
            }
            break;
        }
        let name_len = block[..100].iter().position(|b| *b == 0).unwrap_or(100);
        let name = String::from_utf8_lossy(&block[..name_len]).into_owned();
        let size = std::str::from_utf8(&block[124..135])
            .ok()
            .and_then(|s| u64::from_str_radix(s, 8).ok());
        let canonical = size.and_then(|size| header(&name, size).ok());
        let (Some(size), Some(canonical)) = (size, canonical) else {
            let why = if entries.is_empty() {
                "not a wa-supervisor backup"
            } else {
                "damaged: not a header this program writes"
            };
            return Err(refused(after(&entries), why));
        };
        if canonical != block {
            if entries.is_empty() {
                return Err(refused(
                    &name,
                    "not a wa-supervisor backup (a header this program does not write)",
                ));
            }
            return Err(refused(&name, "its header was changed"));
        }
        if entries.iter().any(|(e, _)| e.name == name) {
            return Err(refused(&name, "appears twice"));
        }
        let path = stage.join(format!("{:06}", entries.len()));
        let mut file = std::fs::File::create(&path)
            .map_err(|e| refused(&name, format!("cannot be staged: {e}")))?;
        let mut hash = Sha256::new();
        let mut left = size;
        let mut buf = vec![0u8; PIECE];
        while left > 0 {
            let want = (left as usize).min(PIECE);
            read_exact(&mut input, &mut buf[..want]).map_err(|why| refused(&name, why))?;
            hash.update(&buf[..want]);
            file.write_all(&buf[..want])
                .map_err(|e| refused(&name, format!("cannot be staged: {e}")))?;
            left -= want as u64;
        }
        let mut pad = vec![0u8; padding(size)];
        read_exact(&mut input, &mut pad).map_err(|why| refused(&name, why))?;
        if pad.iter().any(|b| *b != 0) {
            return Err(refused(&name, "the padding after it was changed"));
        }
        entries.push((
            EntryInfo {
                name,
                size,
                sha256: crate::media::hex(&hash.finalize()),
            },
            path,
        ));
    }
    let digest = crate::media::hex(&std::mem::take(&mut input.digest).finalize());
    let mut trailer = Vec::new();
    input
        .inner
        .take(TRAILER_LEN as u64 + 1)
        .read_to_end(&mut trailer)
        .map_err(|e| refused("the trailer", e.to_string()))?;
    let want = [TRAILER, digest.as_bytes(), b"\n"].concat();
    let Some((_, manifest_path)) = entries.last().filter(|(e, _)| e.name == MANIFEST) else {
        return Err(refused(MANIFEST, "missing: not a wa-supervisor backup"));
    };
    if trailer.len() < TRAILER_LEN || !trailer.starts_with(TRAILER) {
        return Err(refused("the trailer", "missing: the file is truncated"));
    }
    if trailer.len() > TRAILER_LEN {
        return Err(refused("the trailer", "bytes follow it"));
    }
    if trailer != want {
        // An entry whose content changed is named by the comparison with the manifest; what is
        // left is a manifest (or trailer) whose bytes changed.
        let listed = std::fs::read(manifest_path)
            .ok()
            .and_then(|bytes| manifest_entries(&bytes).ok());
        if let Some(listed) = listed {
            compare(&entries, &listed)?;
        }
        return Err(refused(
            MANIFEST,
            "the archive's checksum does not match: changed or damaged",
        ));
    }
    let bytes = std::fs::read(manifest_path).map_err(|e| refused(MANIFEST, e.to_string()))?;
    let listed = manifest_entries(&bytes).map_err(|why| refused(MANIFEST, why))?;
    compare(&entries, &listed)?;
    Ok(Staged { entries })
}

/// Every entry before the manifest is the one the manifest lists, in order.
fn compare(entries: &[(EntryInfo, PathBuf)], listed: &[EntryInfo]) -> Result<(), Refused> {
    let read = &entries[..entries.len() - 1];
    for (i, (got, _)) in read.iter().enumerate() {
        match listed.get(i) {
            Some(want) if want.name != got.name => {
                return Err(refused(&got.name, "not where the manifest lists it"))
            }
            Some(want) if want.size != got.size || want.sha256 != got.sha256 => {
                return Err(refused(
                    &got.name,
                    "its content differs from the manifest's sha256: changed or damaged",
                ))
            }
            Some(_) => {}
            None => return Err(refused(&got.name, "not in the manifest")),
        }
    }
    if let Some(missing) = listed.get(read.len()) {
        return Err(refused(
            &missing.name,
            "in the manifest but not in the archive",
        ));
    }
    Ok(())
}

/// `read_exact` with the words of a refusal.
fn read_exact(input: &mut impl Read, buf: &mut [u8]) -> Result<(), String> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => "the file ends inside it: truncated".to_owned(),
        _ => format!("unreadable: {e}"),
    })
}

struct Hashing<R> {
    inner: R,
    digest: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digest.update(&buf[..n]);
        Ok(n)
    }
}

/// Opens an archive file for [`read`]: plain, or decrypted with one of `identities` (age).
pub fn open(
    path: &Path,
    identities: &[Box<dyn age::Identity + Send + Sync>],
) -> Result<Box<dyn Read>, Refused> {
    let whole = |why: String| refused(path.display().to_string(), why);
    let file = std::fs::File::open(path).map_err(|e| whole(e.to_string()))?;
    let mut input = io::BufReader::with_capacity(PIECE, file);
    let start = io::BufRead::fill_buf(&mut input).map_err(|e| whole(e.to_string()))?;
    if !start.starts_with(AGE_MAGIC) {
        return Ok(Box::new(input));
    }
    if identities.is_empty() {
        return Err(whole(
            "the archive is encrypted (age): pass the key file with --identity".to_owned(),
        ));
    }
    let decryptor = age::Decryptor::new_buffered(input)
        .map_err(|e| whole(format!("not a readable age file: {e}")))?;
    let reader = decryptor
        .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => {
                whole("the archive is encrypted to another key than --identity's".to_owned())
            }
            e => whole(format!("cannot be decrypted: {e}")),
        })?;
    Ok(Box::new(AgeErrors(reader)))
}

/// Decryption failures (a damaged or truncated chunk) as plain I/O errors with age's words.
struct AgeErrors<R>(R);

impl<R: Read> Read for AgeErrors<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| {
            io::Error::other(format!(
                "decryption failed (the encrypted file is damaged or truncated): {e}"
            ))
        })
    }
}

/// Reads identities from an age key file (`AGE-SECRET-KEY-1…` lines).
pub fn identities(path: &Path) -> Result<Vec<Box<dyn age::Identity + Send + Sync>>, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    age::IdentityFile::from_buffer(io::BufReader::new(&text[..]))
        .and_then(|f| f.into_identities().map_err(io::Error::other))
        .map_err(|e| format!("{} is not an age key file: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink into memory.
    #[derive(Default)]
    struct Memory(Vec<u8>);

    impl Sink for Memory {
        async fn send(&mut self, bytes: Bytes) -> io::Result<()> {
            self.0.extend_from_slice(&bytes);
            Ok(())
        }
        async fn close(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink for &mut Memory {
        async fn send(&mut self, bytes: Bytes) -> io::Result<()> {
            self.0.extend_from_slice(&bytes);
            Ok(())
        }
        async fn close(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn listed(bytes: &[u8]) -> Result<Vec<EntryInfo>, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }

    async fn archive(sink: impl Sink) -> io::Result<u64> {
        let mut w = Writer::new(sink);
        w.bytes("logins/alice-slot1.tar.gz", &[7u8; 1000]).await?;
        w.bytes("db/empty.jsonl", b"").await?;
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let source = futures_util::stream::iter(
            big.chunks(70_000)
                .map(|c| Ok::<_, io::Error>(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        w.stream("media/abc", big.len() as u64, source).await?;
        let manifest = serde_json::to_vec(w.entries()).unwrap();
        w.finish(&manifest).await
    }

    async fn plain() -> Vec<u8> {
        let mut out = Memory::default();
        let n = archive(&mut out).await.unwrap();
        assert_eq!(n, out.0.len() as u64);
        out.0
    }

    fn read_bytes(bytes: &[u8]) -> Result<Staged, Refused> {
        let stage = tempfile::tempdir().unwrap();
        let staged = read(bytes, stage.path(), listed);
        // Keep the staged files alive for the assertions.
        std::mem::forget(stage);
        staged
    }

    #[tokio::test]
    async fn a_written_archive_reads_back_whole_and_gnu_tar_lists_it() {
        let bytes = plain().await;
        let staged = read_bytes(&bytes).unwrap();
        let names: Vec<&str> = staged
            .entries
            .iter()
            .map(|(e, _)| e.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "logins/alice-slot1.tar.gz",
                "db/empty.jsonl",
                "media/abc",
                MANIFEST
            ]
        );
        assert_eq!(
            std::fs::read(staged.path("logins/alice-slot1.tar.gz").unwrap()).unwrap(),
            vec![7u8; 1000]
        );
        assert_eq!(
            std::fs::read(staged.path("media/abc").unwrap())
                .unwrap()
                .len(),
            300_000
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("b.tar");
        std::fs::write(&file, &bytes).unwrap();
        let out = std::process::Command::new("tar")
            .args(["-tvf"])
            .arg(&file)
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{listing}");
        assert!(
            listing.lines().any(|l| l.starts_with("-rw------- 0/0")
                && l.ends_with("300000 1970-01-01 00:00 media/abc")),
            "{listing}"
        );
    }

    #[tokio::test]
    async fn any_changed_byte_is_refused_naming_where() {
        let bytes = plain().await;
        // Every 97th byte (headers, contents, padding, the manifest, the end, the trailer).
        for at in (0..bytes.len()).step_by(97).chain([bytes.len() - 2]) {
            let mut bad = bytes.clone();
            bad[at] ^= 0x20;
            let err = read_bytes(&bad).expect_err(&format!("byte {at} changed"));
            assert!(!err.entry.is_empty(), "{err}");
        }
        // A byte of the second entry's content, and of the manifest.
        let mut bad = bytes.clone();
        bad[512 + 1024 + 512 + 512 + 100] ^= 1;
        let err = read_bytes(&bad).unwrap_err();
        assert_eq!(err.entry, "media/abc", "{err}");
        let mut bad = bytes.clone();
        let manifest_at = bad.len() - TRAILER_LEN - 2 * BLOCK - 512;
        bad[manifest_at] ^= 1;
        let err = read_bytes(&bad).unwrap_err();
        assert_eq!(err.entry, MANIFEST, "{err}");
    }

    #[tokio::test]
    async fn a_truncated_archive_is_refused_wherever_it_ends() {
        let bytes = plain().await;
        for len in [
            0,
            100,
            512,
            1500,
            300_000,
            bytes.len() - TRAILER_LEN,
            bytes.len() - 1,
        ] {
            let err = read_bytes(&bytes[..len]).expect_err(&format!("cut at {len}"));
            assert!(
                err.why.contains("truncated") || err.entry == MANIFEST,
                "cut at {len}: {err}"
            );
        }
        let mut longer = bytes.clone();
        longer.extend_from_slice(b"more");
        assert!(read_bytes(&longer).is_err(), "bytes after the trailer");
    }

    #[tokio::test]
    async fn an_encrypted_archive_needs_its_key() {
        let key = age::pq::Identity::generate();
        #[allow(deprecated)]
        let other = age::x25519::Identity::generate();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.age");
        let file = tokio::fs::File::create(&path).await.unwrap();
        let sink = Encrypted::new(file, &[key.to_public().to_string().parse().unwrap()]).unwrap();
        archive(sink).await.unwrap();
        let stage = tempfile::tempdir().unwrap();

        let mine: Vec<Box<dyn age::Identity + Send + Sync>> = vec![Box::new(key.clone())];
        let staged = read(open(&path, &mine).unwrap(), stage.path(), listed).unwrap();
        assert_eq!(staged.entries.len(), 4);

        let theirs: Vec<Box<dyn age::Identity + Send + Sync>> = vec![Box::new(other)];
        let err = open(&path, &theirs).err().unwrap();
        assert!(err.why.contains("another key"), "{err}");
        let err = open(&path, &[]).err().unwrap();
        assert!(err.why.contains("--identity"), "{err}");

        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() - 3000;
        bytes[at] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let stage = tempfile::tempdir().unwrap();
        let err = read(open(&path, &mine).unwrap(), stage.path(), listed).unwrap_err();
        assert!(err.why.contains("decryption failed"), "{err}");

        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let stage = tempfile::tempdir().unwrap();
        assert!(read(open(&path, &mine).unwrap(), stage.path(), listed).is_err());
    }

    #[test]
    fn headers_are_valid_ustar() {
        let h = header("db/x.jsonl", 1234).unwrap();
        let sum: u32 = h
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(*b)
                }
            })
            .sum();
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        assert_eq!(sum, stored);
        assert!(header("../x", 1).is_err());
        assert!(header("a//b", 1).is_err());
        assert!(header(&"x".repeat(101), 1).is_err());
        assert!(header("x", MAX_ENTRY + 1).is_err());
    }
}
