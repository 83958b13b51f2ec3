use actix::prelude::*;

use super::{SessionActor, StopKind, SYSTEM};
use crate::domain::SessionKey;

/// The daemon is stopping: close the browser gracefully (the profile is flushed), keep the
/// intent (so the next boot restores the session) and the number, and reply once the browser is
/// gone and the row is written.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown {
    pub key: SessionKey,
}

impl Handler<Shutdown> for SessionActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        if self.check_key(&msg.key).is_err() {
            return Box::pin(fut::ready(()));
        }
        let closing = self.shut_down(StopKind::Shutdown, SYSTEM, ctx);
        let flushed = self.writer.flushed();
        Box::pin(
            async move {
                closing.await;
                flushed.await;
            }
            .into_actor(self),
        )
    }
}
