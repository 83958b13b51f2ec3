use crate::domain::SessionKey;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Defence in depth: a message reached an actor of another key. Never expected.
    #[error("message for {got} reached the session actor of {expected}")]
    WrongKey {
        expected: SessionKey,
        got: SessionKey,
    },
    #[error("no QR code is being shown for this session")]
    NoQr,
    #[error("could not render the QR code: {0}")]
    Render(String),
    #[error("could not delete the profile folder: {0}")]
    Profile(String),
}
