use actix::prelude::*;

use super::{Initiator, Session, SessionActor, SessionError};
use crate::domain::{Intent, SessionKey};

/// Unlinks: closes the browser, deletes the profile folder, clears the number. Replies once the
/// folder is gone, with the `stopped` session.
#[derive(Message)]
#[rtype(result = "Result<Session, SessionError>")]
pub struct Logout {
    pub key: SessionKey,
    pub by: Initiator,
}

impl Handler<Logout> for SessionActor {
    type Result = ResponseActFuture<Self, Result<Session, SessionError>>;

    fn handle(&mut self, msg: Logout, ctx: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.check_key(&msg.key) {
            return Box::pin(fut::ready(Err(e)));
        }
        let number = self.number.take();
        self.last_error = None;
        let closing = self.shut_down("logged_out", &msg.by, Intent::Stopped, ctx);
        let dir = self.env.sessions.profile_dir(&self.key);
        let is_ours = self.env.sessions.is_profile_dir(&dir);
        let key = self.key.clone();
        Box::pin(
            async move {
                // Keep the gate until the folder is gone, so no launch sees half a profile.
                let _gate = closing.await;
                if !is_ours {
                    return Err(SessionError::Profile(format!(
                        "{} is not a profile folder",
                        dir.display()
                    )));
                }
                let removed = tokio::task::spawn_blocking(move || remove_profile(&dir))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r);
                match &removed {
                    Ok(()) => log::info!(
                        "{key} profile deleted (was {})",
                        number.as_deref().unwrap_or("not linked")
                    ),
                    Err(e) => log::error!("{key} profile NOT deleted: {e}"),
                }
                removed.map_err(SessionError::Profile)
            }
            .into_actor(self)
            .map(|result, act, _| result.map(|()| act.view())),
        )
    }
}

/// Deletes a profile folder; a symbolic link in its place is refused, never followed or removed.
fn remove_profile(dir: &std::path::Path) -> Result<(), String> {
    if crate::files::is_symlink(dir) {
        return Err(format!(
            "{} is a symbolic link; refusing to delete through it",
            dir.display()
        ));
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("could not delete {}: {e}", dir.display()))
        }
        _ => Ok(()),
    }
}
