//! The session's part in the operations of docs/operations.md: copying its login for a backup
//! (from a closed browser, then relaunched at once), and retiring for good when the session is
//! removed (a purge, a user's deletion).

use actix::prelude::*;

use super::{Cause, SessionActor, SessionError, SYSTEM};
use crate::cluster::snapshot;
use crate::domain::{SessionKey, SessionState};

/// Copies the session's login for a backup. A browser that runs on a linked profile (a number
/// is known) is closed gracefully (its profile flushed), the login folders are packed, and it
/// is launched again at once on its profile — a recycle, no crash counted. A session without a
/// browser is packed as its profile lies (an adopted legacy profile has a login before its
/// number is known), holding the profile gate so no launch starts meanwhile. Replies once
/// packed (the relaunch may still be under way): `login` is `None` when there is none to copy —
/// a browser showing a QR code, or a profile without the login folders.
#[derive(Message)]
#[rtype(result = "Result<LoginCopy, SessionError>")]
pub struct CopyLogin {
    pub key: SessionKey,
}

#[derive(Debug)]
pub struct LoginCopy {
    /// `Default/IndexedDB` and `Default/Local Storage` as a tar.gz (cluster/snapshot.rs).
    pub login: Option<Vec<u8>>,
    /// The browser was closed for the copy and is being launched again.
    pub relaunched: bool,
}

/// What a pack that failed says.
fn packed(
    result: Result<std::io::Result<Option<Vec<u8>>>, tokio::task::JoinError>,
) -> Result<Option<Vec<u8>>, SessionError> {
    result
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        .map_err(|source| SessionError::LoginNotCopied { source })
}

impl Handler<CopyLogin> for SessionActor {
    type Result = ResponseActFuture<Self, Result<LoginCopy, SessionError>>;

    fn handle(&mut self, msg: CopyLogin, ctx: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.check_key(&msg.key) {
            return Box::pin(fut::ready(Err(e)));
        }
        // A browser on a QR code or a pairing code holds no login (whatever number the session
        // kept from an earlier link).
        let unlinked_page = matches!(self.machine.state, SessionState::Qr | SessionState::Pairing);
        if self.run.is_some() && (self.machine.number.is_none() || unlinked_page) {
            return Box::pin(fut::ready(Ok(LoginCopy {
                login: None,
                relaunched: false,
            })));
        }
        let profile = self.env.sessions.profile_dir(&self.key);
        let pack = move || tokio::task::spawn_blocking(move || snapshot::pack(&profile));
        if self.run.is_some()
            && self.transition(
                Cause::Recycle("backup: the login is copied from the closed browser".to_owned()),
                SYSTEM,
                ctx,
            )
        {
            let run = self.run.take().expect("checked above");
            let (generation, grace) = (self.generation, self.env.close_grace);
            let key = self.key.clone();
            return Box::pin(
                async move {
                    let started = std::time::Instant::now();
                    let gate = run.close(grace).await;
                    let closed = started.elapsed();
                    let login = packed(pack().await);
                    drop(gate);
                    log::info!(
                        "{key} login copied for a backup: browser closed in {} ms, packed in {} ms ({} bytes)",
                        closed.as_millis(),
                        (started.elapsed() - closed).as_millis(),
                        login.as_ref().ok().and_then(|l| l.as_ref()).map_or(0, Vec::len)
                    );
                    login
                }
                .into_actor(self)
                .map(move |login, act, ctx| {
                    // Unless something else happened meanwhile (a stop, a shutdown).
                    if act.generation == generation && act.machine.state == SessionState::Restarting
                    {
                        act.launch(Cause::Relaunch, SYSTEM, ctx);
                    }
                    Ok(LoginCopy {
                        login: login?,
                        relaunched: true,
                    })
                }),
            );
        }
        if self.run.is_some() || self.machine.state == SessionState::Starting {
            // A browser being launched (it holds the profile gate once up): ask again shortly.
            return Box::pin(fut::ready(Err(SessionError::Restarting)));
        }
        let gate = self.gate.clone();
        Box::pin(
            async move {
                let _gate = gate.lock_owned().await;
                Ok(LoginCopy {
                    login: packed(pack().await)?,
                    relaunched: false,
                })
            }
            .into_actor(self),
        )
    }
}

/// The session is removed for good: its browser (if any) is closed, every write queued so far
/// lands, and the actor stops. The registry has dropped its address before sending this, so
/// the supervisor does not bring it back.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire {
    pub key: SessionKey,
}

impl Handler<Retire> for SessionActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Retire, ctx: &mut Context<Self>) -> Self::Result {
        if self.check_key(&msg.key).is_err() {
            return Box::pin(fut::ready(()));
        }
        let closing = self
            .machine
            .state
            .is_running()
            .then(|| self.shut_down(super::StopKind::Stopped, SYSTEM, ctx));
        let flushed = self.writer.flushed();
        Box::pin(
            async move {
                if let Some(closing) = closing {
                    drop(closing.await);
                }
                flushed.await;
            }
            .into_actor(self)
            .map(|(), _, ctx| ctx.stop()),
        )
    }
}
