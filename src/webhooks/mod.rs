//! Webhooks (Standard Webhooks): the service webhook (`WEBHOOK_URL`, every user's events) and
//! per-user webhooks, delivered from the durable outbox at least once, in order per (target,
//! session), with retries on a schedule ([`dispatch`]); signed ([`sign`]); per-user URLs kept
//! off the host's network ([`guard`]).

pub mod admin;
pub mod dispatch;
pub mod guard;
pub mod sign;

pub use admin::{WebhookError, Webhooks};
pub use dispatch::{Dispatcher, ServiceWebhook, SCHEDULE};
pub use guard::Guard;
pub use sign::SigningSecret;
