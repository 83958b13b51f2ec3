//! Routes per resource.

pub mod admin;
pub mod events;
pub mod sessions;
