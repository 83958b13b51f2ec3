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
