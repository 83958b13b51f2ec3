//! [`RegistryHandle`]: what HTTP code calls. Hides the actor plumbing; mailbox failures become
//! 503 with `Retry-After` here, and only here.

use std::sync::Arc;

use actix::Addr;

use super::{messages::*, Registry};
use crate::actors::session::{Initiator, QrView, Session, SessionError};
use crate::domain::{SessionKey, SessionState, UserId};
use crate::http::ApiError;

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_SECS: u64 = 2;

#[derive(Clone)]
pub struct RegistryHandle {
    addr: Addr<Registry>,
}

impl RegistryHandle {
    pub fn new(addr: Addr<Registry>) -> RegistryHandle {
        RegistryHandle { addr }
    }

    pub fn addr(&self) -> &Addr<Registry> {
        &self.addr
    }

    pub async fn start(&self, key: SessionKey, by: Initiator) -> Result<Session, ApiError> {
        flatten(self.addr.send(Start { key, by }).await)
    }

    pub async fn status(&self, key: SessionKey) -> Result<Session, ApiError> {
        self.addr
            .send(Status { key })
            .await
            .map_err(unavailable)?
            .ok_or(ApiError::UnknownSession)
    }

    pub async fn list(&self, user: UserId) -> Result<Vec<Session>, ApiError> {
        self.addr.send(ListUser { user }).await.map_err(unavailable)
    }

    pub async fn qr(&self, key: SessionKey) -> Result<Arc<QrView>, ApiError> {
        flatten(self.addr.send(Qr { key }).await)
    }

    pub async fn stop(&self, key: SessionKey, by: Initiator) -> Result<Session, ApiError> {
        flatten(self.addr.send(Stop { key, by }).await)
    }

    pub async fn logout(&self, key: SessionKey, by: Initiator) -> Result<Session, ApiError> {
        flatten(self.addr.send(Logout { key, by }).await)
    }

    /// Closes every session for a daemon shutdown; returns how many actors were asked.
    pub async fn shutdown_all(&self) -> usize {
        self.addr.send(ShutdownAll).await.unwrap_or(0)
    }

    pub async fn count_states(&self) -> Result<Vec<(SessionState, usize)>, ApiError> {
        self.addr.send(CountStates).await.map_err(unavailable)
    }

    pub async fn inspect(&self) -> Result<RegistryInfo, ApiError> {
        self.addr.send(InspectAll).await.map_err(unavailable)
    }
}

fn unavailable(e: actix::MailboxError) -> ApiError {
    log::warn!("registry mailbox: {e}");
    ApiError::Unavailable {
        retry_after_secs: RETRY_AFTER_SECS,
    }
}

fn flatten<T>(res: Result<Result<T, RegistryError>, actix::MailboxError>) -> Result<T, ApiError> {
    match res.map_err(unavailable)? {
        Ok(v) => Ok(v),
        Err(RegistryError::Unknown) => Err(ApiError::UnknownSession),
        Err(RegistryError::Session(SessionError::NoQr)) => Err(ApiError::NoQr),
        Err(RegistryError::Session(e)) => Err(ApiError::Internal(e.to_string())),
        Err(RegistryError::TooManySessions { limit }) => Err(ApiError::TooManySessions {
            limit,
            retry_after_secs: 30,
        }),
        Err(RegistryError::TooManyPending { limit }) => Err(ApiError::TooManyPending {
            limit,
            retry_after_secs: 30,
        }),
        Err(RegistryError::RateLimited { retry_after }) => Err(ApiError::RateLimited {
            retry_after_secs: retry_after.as_secs().max(1),
        }),
        Err(RegistryError::ShuttingDown) | Err(RegistryError::Mailbox(_)) => {
            Err(ApiError::Unavailable {
                retry_after_secs: RETRY_AFTER_SECS,
            })
        }
    }
}
