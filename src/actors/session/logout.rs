use actix::prelude::*;

use super::{Bridge, Cause, GetStatus, Initiator, Session, SessionActor, SessionError, StopKind};
use crate::browser::{Command, Source};
use crate::domain::{SessionKey, SessionState};

/// Unlinks: closes the browser, deletes the profile folder, clears the number. Replies once the
/// folder is gone, with the `stopped` session.
#[derive(Message)]
#[rtype(result = "Result<Session, SessionError>")]
pub struct Logout {
    pub key: SessionKey,
    pub by: Initiator,
    /// A linked session without a browser is first started on its profile, just long enough
    /// to unlink it on WhatsApp's side (what `POST /api/logout`, a purge and a user's deletion
    /// ask). Without it, or without WA-JS, such a session's logout only forgets the login here
    /// (`unlinkedOnWhatsApp: false`).
    pub wake: bool,
}

impl Handler<Logout> for SessionActor {
    type Result = ResponseActFuture<Self, Result<Session, SessionError>>;

    fn handle(&mut self, msg: Logout, ctx: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.check_key(&msg.key) {
            return Box::pin(fut::ready(Err(e)));
        }
        let by = msg.by;
        let asleep = self.run.is_none() && self.machine.number.is_some();
        if msg.wake && asleep && self.env.launcher.has_bridge() {
            log::info!(
                "{} started on its profile to unlink it on WhatsApp's side",
                self.key
            );
            self.crashes.clear();
            self.launch(Cause::Start, &by, ctx);
            let limit = self.env.page_ready_timeout.min(WAKE_WITHIN);
            let awake = until_awake(ctx.address(), self.key.clone(), limit);
            return Box::pin(
                awake
                    .into_actor(self)
                    .then(move |(), act, ctx| act.log_out_claimed(by, ctx)),
            );
        }
        self.log_out_claimed(by, ctx)
    }
}

/// The longest a logout waits for a woken session's page to be linked with WA-JS ready (a
/// forwarded request gives up after 60 s); past it the login is forgotten here only.
const WAKE_WITHIN: std::time::Duration = std::time::Duration::from_secs(40);

/// Resolves once the session is linked with WA-JS ready (it can be unlinked), or shows it is not
/// linked after all (a QR code, stopped, failed), or after `limit`.
async fn until_awake(addr: Addr<SessionActor>, key: SessionKey, limit: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let Ok(Ok(s)) = addr.send(GetStatus { key: key.clone() }).await else {
            return;
        };
        let awake = s.state == SessionState::Connected && s.bridge == Some(Source::Bridge);
        let not_linked = matches!(
            s.state,
            SessionState::Qr | SessionState::Pairing | SessionState::Stopped | SessionState::Failed
        );
        if awake || not_linked || tokio::time::Instant::now() >= deadline {
            return;
        }
    }
}

impl SessionActor {
    /// The logout, in a cluster once this node holds the session's lease for the writes.
    fn log_out_claimed(
        &mut self,
        by: Initiator,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<Session, SessionError>> {
        match self.lease_for_write(ctx) {
            Some(claim) => Box::pin(claim.then(move |(), act, ctx| act.log_out(by, ctx))),
            None => self.log_out(by, ctx),
        }
    }

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
                    tokio::task::spawn_blocking(move || crate::files::remove_tree(&target))
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
