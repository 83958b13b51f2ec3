//! wa-supervisor: runs many WhatsApp Web sessions, one supervised actor and one headless
//! Chromium per `(userId, slot)`.
//!
//! # Layout
//! docs/ARCHITECTURE.md describes how these fit together.
//! - [`domain`]: `UserId`, `Slot`, `SessionKey`, `SessionState` and its transition table — the only
//!   way to name a session.
//! - [`config`]: the typed `Settings` (env vars, each also a CLI flag).
//! - [`startup`]: `Application::build(settings)` — folders, store, actors, HTTP listener.
//! - [`actors`]: the registry (key → actor, global limits) and the session actor (state machine,
//!   supervision, its row).
//! - [`browser`]: the browser seam and Chromium behind it: process group, DevTools pipe, profile
//!   lock, the WhatsApp page protocol.
//! - [`auth`]: principals, tokens, SSE tickets, the boot-time credentials file, Stack Auth JWKS.
//! - [`http`]: routes, extractors, the one error table, SSE, OpenAPI, the console.
//! - [`store`]: diesel schema, queries, embedded migrations (SQLite and PostgreSQL), the outbox.
//! - [`events`]: messages, acks and state changes as events; the outbox that writes them first.
//! - [`webhooks`]: Standard Webhooks signing, the SSRF guard, the delivery dispatcher.
//! - [`files`]: private folders and files, no symlinks followed.
//! - [`procfs`]: what the daemon reads from `/proc`.
//! - [`metrics`]: counters and histograms for `/metrics`.
//! - [`qr`]: payload → PNG / SVG / text.
//! - [`import`]: `import-sessions`, adopting legacy profile folders.
//! - [`ops`]: backup, restore, clean-up, deleting a user (docs/operations.md).

pub mod actors;
pub mod auth;
pub mod browser;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod events;
pub mod files;
pub mod http;
pub mod import;
pub mod media;
pub mod messaging;
pub mod metrics;
pub mod ops;
pub mod procfs;
pub mod qr;
pub mod startup;
pub mod store;
pub mod webhooks;

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
