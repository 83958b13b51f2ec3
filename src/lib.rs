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
