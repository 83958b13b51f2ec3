//! The actors: one [`session::SessionActor`] per `(userId, slot)`.

pub mod session;
