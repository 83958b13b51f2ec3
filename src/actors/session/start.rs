use actix::prelude::*;

use super::{Initiator, Session, SessionActor, SessionError};
use crate::domain::{Intent, SessionKey};

/// Starts the session's browser. Idempotent: a running session is left as it is.
/// Returns the session as it is now (usually `starting`).
#[derive(Message)]
#[rtype(result = "Result<Session, SessionError>")]
pub struct Start {
    pub key: SessionKey,
    pub by: Initiator,
}

impl Handler<Start> for SessionActor {
    type Result = Result<Session, SessionError>;

    fn handle(&mut self, msg: Start, ctx: &mut Context<Self>) -> Self::Result {
        self.check_key(&msg.key)?;
        if !self.state.is_running() {
            // An explicit start is a fresh chance: forget earlier crashes and errors.
            self.intent = Intent::Running;
            self.crashes.clear();
            self.last_error = None;
            log::info!("{} start requested by {}", self.key, msg.by);
            self.launch(ctx);
        }
        Ok(self.view())
    }
}
