use std::path::PathBuf;

use crate::domain::SessionKey;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Defence in depth: a message reached an actor of another key. Never expected.
    #[error("message for {got} reached the session actor of {expected}")]
    WrongKey {
        expected: SessionKey,
        got: SessionKey,
    },
    #[error("no QR code is being shown for this session")]
    NoQr,
    #[error("this session is already linked to a number")]
    AlreadyConnected,
    #[error("linking by phone number needs WA-JS, and this session's page runs without it")]
    BridgeUnavailable,
    #[error("the session's browser is restarting")]
    Restarting,
    #[error("this session is not linked to a number")]
    NotConnected,
    #[error("a send with this idempotency key is in progress")]
    SendInProgress,
    /// The first send with this idempotency key may have reached WhatsApp (it timed out, or the
    /// browser or daemon died mid-send); it is never sent again.
    #[error(
        "the outcome of the send with this idempotency key is unknown (message id {message_id})"
    )]
    SendOutcomeUnknown { message_id: String },
    #[error("more than SEND_PER_MINUTE messages in a minute")]
    RateLimited { retry_after_secs: u64 },
    #[error("WhatsApp Web did not take the message: {0}")]
    SendFailed(String),
    /// WhatsApp Web refused a file (its reason, e.g. `file_too_large`).
    #[error("WhatsApp Web refused the file: {0}")]
    MediaRefused(String),
    #[error("the database failed")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the login could not be copied")]
    LoginNotCopied {
        #[source]
        source: std::io::Error,
    },
    #[error("the profile folder {path} was not deleted")]
    ProfileNotDeleted {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl SessionError {
    pub fn store(e: impl std::error::Error + Send + Sync + 'static) -> SessionError {
        SessionError::Store(Box::new(e))
    }
}
