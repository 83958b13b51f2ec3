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
    #[error("the profile folder {path} was not deleted")]
    ProfileNotDeleted {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
