use actix::prelude::*;

use super::{Session, SessionActor, SessionError};
use crate::domain::SessionKey;

/// The session as it is now. Never waits on the browser.
#[derive(Message)]
#[rtype(result = "Result<Session, SessionError>")]
pub struct GetStatus {
    pub key: SessionKey,
}

impl Handler<GetStatus> for SessionActor {
    type Result = Result<Session, SessionError>;

    fn handle(&mut self, msg: GetStatus, _: &mut Context<Self>) -> Self::Result {
        self.check_key(&msg.key)?;
        Ok(self.view())
    }
}
