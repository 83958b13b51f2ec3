//! The actors: one [`session::SessionActor`] per `(userId, slot)`.

pub mod registry;
pub mod session;
