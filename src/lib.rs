//! wa-supervisor: runs many WhatsApp Web sessions, one supervised actor and one headless
//! Chromium per `(userId, slot)`.
//!
//! # Layout
//! - [`domain`]: `UserId`, `Slot`, `SessionKey`, `SessionState` — the only way to name a session.
//! - [`config`]: the typed `Settings` (env vars, each also a CLI flag).
//! - [`startup`]: `Application::build(settings)` — folders, store, actors, HTTP listener.
//! - [`actors`]: the session actor (one per key, supervised) and its messages.
//! - [`browser`]: the Chromium process, the profile lock, the WhatsApp page protocol.
//! - [`qr`]: payload → PNG / SVG / text.
//! - [`http`]: routes and errors.
//! - [`store`]: diesel schema, queries, embedded migrations (SQLite and PostgreSQL).

pub mod actors;
pub mod auth;
pub mod browser;
pub mod config;
pub mod domain;
pub mod files;
pub mod http;
pub mod import;
pub mod metrics;
pub mod procfs;
pub mod qr;
pub mod startup;
pub mod store;

/// An error and its causes on one line (`a: b: c`), for `lastError` and log lines: where an
/// error is handled, its whole chain is reported once.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
