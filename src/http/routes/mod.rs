//! Routes per resource.

pub mod admin;
pub mod events;
pub mod messages;
pub mod sessions;
pub mod webhooks;
