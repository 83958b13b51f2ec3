//! wa-supervisor: runs many WhatsApp Web sessions, one supervised actor and one headless
//! Chromium per `(userId, slot)`.
//!
//! # Layout
//! - [`domain`]: `UserId`, `Slot`, `SessionKey`, `SessionState` — the only way to name a session.

pub mod domain;
