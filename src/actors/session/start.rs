use actix::prelude::*;

use super::{Cause, Initiator, Session, SessionActor, SessionError};
use crate::domain::SessionKey;

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
        if !self.machine.state.is_running() {
            // An explicit start is a fresh chance: earlier crashes and errors are forgotten.
            self.crashes.clear();
            self.launch(Cause::Start, &msg.by, ctx);
        }
        Ok(self.view())
    }
}
