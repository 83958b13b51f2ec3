//! Routes per resource.

pub mod admin;
pub mod chats;
pub mod events;
pub mod media;
pub mod messages;
pub mod nodes;
pub mod ops;
pub mod sessions;
pub mod webhooks;
