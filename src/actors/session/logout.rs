use actix::prelude::*;

use super::{Bridge, Initiator, Session, SessionActor, SessionError, StopKind};
use crate::browser::Command;
use crate::domain::SessionKey;

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
        let by = msg.by;
        match self.lease_for_write(ctx) {
            Some(claim) => Box::pin(claim.then(move |(), act, ctx| act.log_out(by, ctx))),
            None => self.log_out(by, ctx),
        }
    }
}

impl SessionActor {
    fn log_out(
        &mut self,
        by: Initiator,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<Session, SessionError>> {
        let number = self.machine.number.clone();
        // Linked through WA-JS: unlink on WhatsApp's side first, so the phone's list of linked
        // devices drops this one (bounded by the command timeout; the folder goes anyway).
        let unlink = match (&self.run, self.bridge, self.machine.is_connected()) {
            (Some(run), Bridge::WaJs, true) => Some(run.browser.command(Command::Logout)),
            _ => None,
        };
        let (key, was_linked) = (self.key.clone(), number.is_some());
        // The state changes now; the browser is closed once the unlink is done.
        let shut = self.shut_down(StopKind::LoggedOut, &by, ctx);
        let closing = async move {
            let unlinked = match unlink {
                Some(unlink) => match unlink.await {
                    Ok(_) => {
                        log::info!("{key} unlinked on WhatsApp's side");
                        true
                    }
                    Err(e) => {
                        log::warn!("{key} WA-JS logout failed: {}", crate::chain(&e));
                        false
                    }
                },
                None => {
                    if was_linked {
                        log::info!(
                            "{key} logged out with no browser running: WhatsApp was not told (the phone removes the device)"
                        );
                    }
                    false
                }
            };
            (shut.await, unlinked)
        };
        let dir = self.env.sessions.profile_dir(&self.key);
        let is_ours = self.env.sessions.is_profile_dir(&dir);
        let key = self.key.clone();
        Box::pin(
            async move {
                // Keep the gate until the folder is gone, so no launch sees half a profile.
                let (_gate, unlinked) = closing.await;
                let target = dir.clone();
                let removed = if is_ours {
                    tokio::task::spawn_blocking(move || remove_profile(&target))
                        .await
                        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
                } else {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "not a profile folder",
                    ))
                };
                match removed {
                    Ok(()) => {
                        log::info!(
                            "{key} profile deleted (was {})",
                            number.as_deref().unwrap_or("not linked")
                        );
                        Ok(unlinked)
                    }
                    Err(source) => {
                        let e = SessionError::ProfileNotDeleted { path: dir, source };
                        log::error!("{key} profile NOT deleted: {}", crate::chain(&e));
                        Err(e)
                    }
                }
            }
            .into_actor(self)
            .map(|result, act, _| {
                result.map(|unlinked| Session {
                    unlinked_on_whats_app: Some(unlinked),
                    ..act.view()
                })
            }),
        )
    }
}

/// Deletes a profile folder; a symbolic link in its place is refused, never followed or removed.
fn remove_profile(dir: &std::path::Path) -> std::io::Result<()> {
    if crate::files::is_symlink(dir) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "it is a symbolic link; refusing to delete through it",
        ));
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
