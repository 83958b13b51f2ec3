use std::sync::Arc;

use actix::prelude::*;

use super::{QrView, SessionActor, SessionError};
use crate::domain::SessionKey;

/// The QR code shown right now, or [`SessionError::NoQr`].
#[derive(Message)]
#[rtype(result = "Result<Arc<QrView>, SessionError>")]
pub struct GetQr {
    pub key: SessionKey,
}

impl Handler<GetQr> for SessionActor {
    type Result = Result<Arc<QrView>, SessionError>;

    fn handle(&mut self, msg: GetQr, _: &mut Context<Self>) -> Self::Result {
        self.check_key(&msg.key)?;
        self.machine.qr.clone().ok_or(SessionError::NoQr)
    }
}
