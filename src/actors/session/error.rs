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
    #[error("the profile folder {path} was not deleted")]
    ProfileNotDeleted {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
