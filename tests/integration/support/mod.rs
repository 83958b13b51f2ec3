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
