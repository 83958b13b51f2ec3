use actix::prelude::*;

use super::{Initiator, Session, SessionActor, SessionError, StopKind};
use crate::domain::SessionKey;

/// Closes the browser and keeps the profile (the number stays linked). Replies once the browser
/// process is gone, with the `stopped` session.
#[derive(Message)]
#[rtype(result = "Result<Session, SessionError>")]
pub struct Stop {
    pub key: SessionKey,
    pub by: Initiator,
}

impl Handler<Stop> for SessionActor {
    type Result = ResponseActFuture<Self, Result<Session, SessionError>>;

    fn handle(&mut self, msg: Stop, ctx: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.check_key(&msg.key) {
            return Box::pin(fut::ready(Err(e)));
        }
        let by = msg.by;
        match self.lease_for_write(ctx) {
            Some(claim) => Box::pin(claim.then(move |(), act, ctx| act.stop(&by, ctx))),
            None => self.stop(&by, ctx),
        }
    }
}

impl SessionActor {
    fn stop(
        &mut self,
        by: &str,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<Session, SessionError>> {
        let closing = self.shut_down(StopKind::Stopped, by, ctx);
        Box::pin(
            async move {
                closing.await;
            }
            .into_actor(self)
            .map(|(), act, _| Ok(act.view())),
        )
    }
}
