//! Test support: the stand-in WhatsApp Web page and the app harness.
#![allow(dead_code)]

pub mod cluster;
pub mod daemon;
pub mod harness;

pub mod jwt;
pub mod logs;
pub mod nginx;
pub mod pgproxy;
pub mod receiver;
pub mod standin;
pub mod wpp;

/// A client that keeps connections alive, but for less than the daemon's 5 s keep-alive: a
/// connection the server is closing is never reused (that race fails a request with
/// `IncompleteMessage`).
pub fn keep_alive_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(std::time::Duration::from_secs(2))
        .build()
        .unwrap()
}
pub mod soak;

/// The manifest of a plain backup file (docs/operations.md), read and checked by the daemon's
/// own reader.
pub fn manifest_of(file: &std::path::Path) -> serde_json::Value {
    let stage = tempfile::tempdir().unwrap();
    let input = std::io::BufReader::new(std::fs::File::open(file).unwrap());
    let staged = wa_supervisor::ops::archive::read(input, stage.path(), |bytes| {
        let m: wa_supervisor::ops::backup::Manifest =
            serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        Ok(m.entries)
    })
    .unwrap();
    serde_json::from_slice(&std::fs::read(staged.manifest()).unwrap()).unwrap()
}
