//! The integration tests: one binary (one link, one build of the test support), a module per
//! area. They start the real daemon in-process or as a child process, drive it over HTTP on
//! loopback with real Chromium, a stand-in WhatsApp Web page, SQLite and PostgreSQL.
//! Supervision logic that does not need a real browser is tested faster in
//! `src/actors/session/tests.rs`, against a fake browser on a paused clock.

mod support;

mod api;
mod auth;
mod bridge;
mod cluster;
mod config;
mod console;
mod engine;
mod examples;
mod hardening;
mod lifecycle;
mod messages;
mod nothing_lost;
mod openapi;
mod operations;
mod receiving;
mod sending;
mod session;
mod several_hosts;
mod store;
