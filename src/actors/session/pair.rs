use std::time::Duration;

use actix::prelude::*;

use super::{Bridge, Cause, Initiator, Session, SessionActor, SessionError};
use crate::domain::{PhoneNumber, SessionKey, SessionState};

/// How long a pairing request waits for WhatsApp's code before it answers without it (the code
/// then follows by SSE).
pub const PAIR_WAIT: Duration = Duration::from_secs(10);

/// Links by phone number: asks WA-JS for a linking code for `phone` (starting the browser if
/// needed). Replies with the session in state `pairing`, with its `pairingCode` once WhatsApp
/// gave one, or after [`PAIR_WAIT`] without it.
#[derive(Message)]
#[rtype(result = "Result<Session, SessionError>")]
pub struct Pair {
    pub key: SessionKey,
    pub phone: PhoneNumber,
    pub by: Initiator,
}

impl Handler<Pair> for SessionActor {
    type Result = ResponseActFuture<Self, Result<Session, SessionError>>;

    fn handle(&mut self, msg: Pair, ctx: &mut Context<Self>) -> Self::Result {
        let refused = |e| Box::pin(fut::ready(Err(e))) as Self::Result;
        if let Err(e) = self.check_key(&msg.key) {
            return refused(e);
        }
        match (self.machine.state, self.bridge) {
            (SessionState::Connected, _) => return refused(SessionError::AlreadyConnected),
            (_, Bridge::Dom) => return refused(SessionError::BridgeUnavailable),
            (SessionState::Restarting, _) => return refused(SessionError::Restarting),
            (state, _) if !state.is_running() => {
                self.crashes.clear();
                self.launch(Cause::Start, &msg.by, ctx);
            }
            _ => {}
        }
        let phone = msg.phone.as_str().to_owned();
        let same = self.pairing_phone.as_deref() == Some(phone.as_str());
        if !(same && self.machine.state == SessionState::Pairing) {
            self.pairing_phone = Some(phone);
            self.transition(Cause::Pairing { code: None }, &msg.by, ctx);
            self.request_pairing_code(ctx);
        }
        if self.machine.pairing_code.is_some() {
            return Box::pin(fut::ready(Ok(self.view())));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.pair_waiters.push(tx);
        Box::pin(
            async move {
                let _ = tokio::time::timeout(PAIR_WAIT, rx).await;
            }
            .into_actor(self)
            .map(|(), act, _| Ok(act.view())),
        )
    }
}
