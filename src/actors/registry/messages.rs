//! The registry's messages: each names a session by its key (or a user), nothing else.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::Registry;
use crate::actors::session::{
    self, ActorInfo, GetQr, Initiator, QrView, Session, SessionActor, SessionError,
};
use crate::domain::{PhoneNumber, SessionKey, SessionState, UserId};
use crate::store::SessionRow;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("this session was never started")]
    Unknown,
    #[error("{limit} browsers are running")]
    TooManySessions { limit: u32 },
    #[error("{limit} sessions of this user are waiting to be linked")]
    TooManyPending { limit: u32 },
    #[error("too many starts for this user")]
    RateLimited { retry_after: Duration },
    #[error("shutting down")]
    ShuttingDown,
    #[error("this session is being removed")]
    Removing,
    #[error("actor unavailable")]
    Mailbox(#[from] MailboxError),
    #[error("the database failed")]
    Store(#[source] crate::store::StoreError),
}

impl RegistryError {
    pub fn store(e: crate::store::StoreError) -> RegistryError {
        RegistryError::Store(e)
    }
}

/// Starts `(userId, slot)` (creating its actor on first use); idempotent. Checks the host-wide
/// browser limit and the user's start rate first. Returns the session as it is now.
#[derive(Message)]
#[rtype(result = "Result<Session, RegistryError>")]
pub struct Start {
    pub key: SessionKey,
    pub by: Initiator,
}

impl Handler<Start> for Registry {
    type Result = ResponseFuture<Result<Session, RegistryError>>;

    fn handle(&mut self, msg: Start, _: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.admit(&msg.key) {
            return Box::pin(async move { Err(e) });
        }
        let request = self.actor(&msg.key).send(session::Start {
            key: msg.key.clone(),
            by: msg.by,
        });
        Box::pin(async move { Ok(request.await??) })
    }
}

/// Links `(userId, slot)` by phone number (starting it if needed, with the same limits as a
/// start): the session in state `pairing`, with its code once WhatsApp gave one.
#[derive(Message)]
#[rtype(result = "Result<Session, RegistryError>")]
pub struct Pair {
    pub key: SessionKey,
    pub phone: PhoneNumber,
    pub by: Initiator,
}

impl Handler<Pair> for Registry {
    type Result = ResponseFuture<Result<Session, RegistryError>>;

    fn handle(&mut self, msg: Pair, _: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.admit(&msg.key) {
            return Box::pin(async move { Err(e) });
        }
        let request = self.actor(&msg.key).send(session::Pair {
            key: msg.key,
            phone: msg.phone,
            by: msg.by,
        });
        Box::pin(async move { Ok(request.await??) })
    }
}

impl Registry {
    /// May `key` start a browser now? A running session may always go on; a new browser must
    /// fit `MAX_SESSIONS`, the user's pending limit and start rate. Admitted starts are counted
    /// until their first event comes back.
    fn admit(&mut self, key: &SessionKey) -> Result<(), RegistryError> {
        if self.shutting_down {
            return Err(RegistryError::ShuttingDown);
        }
        if self.removing.contains(key) {
            return Err(RegistryError::Removing);
        }
        if self.views.get(key).is_some_and(|v| v.state.is_running()) {
            return Ok(());
        }
        if self.running_count(key) >= self.max_sessions as usize {
            return Err(RegistryError::TooManySessions {
                limit: self.max_sessions,
            });
        }
        if !self.would_be_linked(key)
            && self.pending_count(key) >= self.max_pending_per_user as usize
        {
            return Err(RegistryError::TooManyPending {
                limit: self.max_pending_per_user,
            });
        }
        self.take_start(key.user_id())
            .map_err(|retry_after| RegistryError::RateLimited { retry_after })?;
        self.pending_starts.insert(key.clone());
        Ok(())
    }
}

/// Cluster mode: a session that should run and that no node holds; started here (its lease
/// is claimed as it launches), within `MAX_SESSIONS`, without the per-user limits (like a boot
/// restore). `row` is its stored row.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Adopt {
    pub row: SessionRow,
}

impl Handler<Adopt> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Adopt, _: &mut Context<Self>) {
        let key = msg.row.key.clone();
        if self.shutting_down
            || self.removing.contains(&key)
            || self.views.get(&key).is_some_and(|v| v.state.is_running())
            || self.running_count(&key) >= self.max_sessions as usize
        {
            return;
        }
        self.learn(msg.row);
        self.pending_starts.insert(key.clone());
        self.actor(&key).do_send(session::Start {
            key,
            by: "system:takeover".to_owned(),
        });
    }
}

/// Cluster mode: a session another node created, now known here too (its stored row).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Learn {
    pub row: SessionRow,
}

impl Handler<Learn> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Learn, _: &mut Context<Self>) {
        self.learn(msg.row);
    }
}

/// One session from the cache; `None` if never started.
#[derive(Message)]
#[rtype(result = "Option<Session>")]
pub struct Status {
    pub key: SessionKey,
}

impl Handler<Status> for Registry {
    type Result = Option<Session>;
    fn handle(&mut self, msg: Status, _: &mut Context<Self>) -> Self::Result {
        self.views.get(&msg.key).cloned()
    }
}

/// Every session of one user, by slot, from the cache.
#[derive(Message)]
#[rtype(result = "Vec<Session>")]
pub struct ListUser {
    pub user: UserId,
}

impl Handler<ListUser> for Registry {
    type Result = MessageResult<ListUser>;
    fn handle(&mut self, msg: ListUser, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.views_of(&msg.user).map(|(_, s)| s.clone()).collect())
    }
}

/// The QR code the session shows now.
#[derive(Message)]
#[rtype(result = "Result<Arc<QrView>, RegistryError>")]
pub struct Qr {
    pub key: SessionKey,
}

impl Handler<Qr> for Registry {
    type Result = ResponseFuture<Result<Arc<QrView>, RegistryError>>;

    fn handle(&mut self, msg: Qr, _: &mut Context<Self>) -> Self::Result {
        // Only a live actor can show a code; do not create one to ask.
        let Some(addr) = self.actors.get(&msg.key).filter(|a| a.connected()).cloned() else {
            let known = self.views.contains_key(&msg.key);
            return Box::pin(async move {
                Err(if known {
                    RegistryError::Session(SessionError::NoQr)
                } else {
                    RegistryError::Unknown
                })
            });
        };
        Box::pin(async move { Ok(addr.send(GetQr { key: msg.key }).await??) })
    }
}

/// Sends a message through a known session (see [`session::Send`]).
#[derive(Message)]
#[rtype(result = "Result<crate::actors::session::SendJob, RegistryError>")]
pub struct SendMessage(pub session::Send);

impl Handler<SendMessage> for Registry {
    type Result = ResponseFuture<Result<crate::actors::session::SendJob, RegistryError>>;

    /// The session's send job, for the caller to run (outside every actor).
    fn handle(&mut self, msg: SendMessage, _: &mut Context<Self>) -> Self::Result {
        let addr = self.known_actor(&msg.0.key);
        Box::pin(async move {
            let addr = addr.ok_or(RegistryError::Unknown)?;
            Ok(addr.send(msg.0).await?)
        })
    }
}

/// The page of a known, linked session (see [`session::UsePage`]).
#[derive(Message)]
#[rtype(result = "Result<crate::browser::PageHandle, RegistryError>")]
pub struct UsePage(pub session::UsePage);

impl Handler<UsePage> for Registry {
    type Result = ResponseFuture<Result<crate::browser::PageHandle, RegistryError>>;

    fn handle(&mut self, msg: UsePage, _: &mut Context<Self>) -> Self::Result {
        let addr = self.known_actor(&msg.0.key);
        Box::pin(async move {
            let addr = addr.ok_or(RegistryError::Unknown)?;
            Ok(addr.send(msg.0).await??)
        })
    }
}

/// A media stored on retry, to its session's writer (see [`session::RecordMedia`]).
#[derive(Message)]
#[rtype(result = "Result<(), RegistryError>")]
pub struct RecordMedia(pub session::RecordMedia);

impl Handler<RecordMedia> for Registry {
    type Result = ResponseFuture<Result<(), RegistryError>>;

    fn handle(&mut self, msg: RecordMedia, _: &mut Context<Self>) -> Self::Result {
        let addr = self.known_actor(&msg.0.key);
        Box::pin(async move {
            let addr = addr.ok_or(RegistryError::Unknown)?;
            Ok(addr.send(msg.0).await??)
        })
    }
}

/// Stops a known session (keeps its profile). Replies once its browser is gone.
#[derive(Message)]
#[rtype(result = "Result<Session, RegistryError>")]
pub struct Stop {
    pub key: SessionKey,
    pub by: Initiator,
}

impl Handler<Stop> for Registry {
    type Result = ResponseFuture<Result<Session, RegistryError>>;

    fn handle(&mut self, msg: Stop, _: &mut Context<Self>) -> Self::Result {
        forward(
            self.known_actor(&msg.key),
            session::Stop {
                key: msg.key,
                by: msg.by,
            },
        )
    }
}

/// Cluster mode: hands a session this node runs over to another node (see
/// [`session::HandOver`]).
#[derive(Message)]
#[rtype(result = "Result<Session, RegistryError>")]
pub struct HandOver {
    pub key: SessionKey,
}

impl Handler<HandOver> for Registry {
    type Result = ResponseFuture<Result<Session, RegistryError>>;

    fn handle(&mut self, msg: HandOver, _: &mut Context<Self>) -> Self::Result {
        let addr = self.actors.get(&msg.key).filter(|a| a.connected()).cloned();
        forward(addr, session::HandOver { key: msg.key })
    }
}

/// Logs a known session out (deletes its profile). Replies once the folder is gone. `wake`:
/// see [`session::Logout`].
#[derive(Message)]
#[rtype(result = "Result<Session, RegistryError>")]
pub struct Logout {
    pub key: SessionKey,
    pub by: Initiator,
    pub wake: bool,
}

impl Handler<Logout> for Registry {
    type Result = ResponseFuture<Result<Session, RegistryError>>;

    fn handle(&mut self, msg: Logout, _: &mut Context<Self>) -> Self::Result {
        forward(
            self.known_actor(&msg.key),
            session::Logout {
                key: msg.key,
                by: msg.by,
                wake: msg.wake,
            },
        )
    }
}

fn forward<M>(
    addr: Option<Addr<SessionActor>>,
    msg: M,
) -> ResponseFuture<Result<Session, RegistryError>>
where
    M: Message<Result = Result<Session, SessionError>> + Send + 'static,
    SessionActor: Handler<M>,
{
    Box::pin(async move {
        let addr = addr.ok_or(RegistryError::Unknown)?;
        Ok(addr.send(msg).await??)
    })
}

/// Every actor as operators see it (`/actors`), by key.
#[derive(Message)]
#[rtype(result = "RegistryInfo")]
pub struct InspectAll;

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryInfo {
    pub known_sessions: usize,
    pub live_actors: usize,
    pub running_browsers: usize,
    pub max_sessions: u32,
    /// Browsers being launched right now (bounded by LAUNCH_CONCURRENCY).
    pub launches_in_flight: usize,
    /// The WA-JS injected into the pages (`null`: none; DOM signals only).
    pub wa_js: Option<crate::browser::wajs::WaJsInfo>,
    /// The browser binary sessions launch (`null`: none installed).
    pub browser: Option<crate::browser::BrowserBinary>,
    pub actors: Vec<ActorInfo>,
}

impl Handler<InspectAll> for Registry {
    type Result = ResponseFuture<RegistryInfo>;

    fn handle(&mut self, _: InspectAll, _: &mut Context<Self>) -> Self::Result {
        self.actors.retain(|_, a| a.connected());
        let requests: Vec<_> = self
            .actors
            .values()
            .map(|a| a.send(session::Inspect))
            .collect();
        let known_sessions = self.views.len();
        let live_actors = self.actors.len();
        let max_sessions = self.max_sessions;
        let launches_in_flight =
            self.env.launch_concurrency - self.env.launches.available_permits();
        let memory = self.memory.clone();
        let wa_js = self.env.wa_js_info();
        let browser = self.env.browser.clone();
        Box::pin(async move {
            let mut actors: Vec<ActorInfo> = futures_util::future::join_all(requests)
                .await
                .into_iter()
                .filter_map(Result::ok)
                .collect();
            actors.sort_by(|a, b| a.session.key.cmp(&b.session.key));
            for a in &mut actors {
                a.memory_bytes = a
                    .browser_pid
                    .and_then(|_| memory.get(&a.session.key).copied());
            }
            RegistryInfo {
                known_sessions,
                live_actors,
                running_browsers: actors.iter().filter(|a| a.browser_pid.is_some()).count(),
                max_sessions,
                launches_in_flight,
                wa_js,
                browser,
                actors,
            }
        })
    }
}

/// The daemon is stopping: refuse new starts, close every browser gracefully in parallel (intent
/// and numbers kept, rows written), reply when all are done.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct ShutdownAll;

impl Handler<ShutdownAll> for Registry {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, _: ShutdownAll, _: &mut Context<Self>) -> Self::Result {
        self.shutting_down = true;
        let closing: Vec<_> = self
            .actors
            .iter()
            .filter(|(_, a)| a.connected())
            .map(|(key, a)| a.send(session::Shutdown { key: key.clone() }))
            .collect();
        Box::pin(async move {
            let n = closing.len();
            futures_util::future::join_all(closing).await;
            n
        })
    }
}

/// How many known sessions are in each state (for `/metrics`).
#[derive(Message)]
#[rtype(result = "Vec<(SessionState, usize)>")]
pub struct CountStates;

impl Handler<CountStates> for Registry {
    type Result = MessageResult<CountStates>;

    fn handle(&mut self, _: CountStates, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            SessionState::ALL
                .into_iter()
                .map(|st| (st, self.views.values().filter(|v| v.state == st).count()))
                .collect(),
        )
    }
}

/// Copies a known session's login for a backup (see [`session::CopyLogin`]).
#[derive(Message)]
#[rtype(result = "Result<session::LoginCopy, RegistryError>")]
pub struct CopyLogin {
    pub key: SessionKey,
}

impl Handler<CopyLogin> for Registry {
    type Result = ResponseFuture<Result<session::LoginCopy, RegistryError>>;

    fn handle(&mut self, msg: CopyLogin, _: &mut Context<Self>) -> Self::Result {
        let addr = self.known_actor(&msg.key);
        Box::pin(async move {
            let addr = addr.ok_or(RegistryError::Unknown)?;
            Ok(addr.send(session::CopyLogin { key: msg.key }).await??)
        })
    }
}

/// A session is being removed for good (docs/operations.md): starts of it are refused until
/// [`Removed`], its actor closes what runs, lets its writes land and stops, and the registry
/// forgets it. Replies once the actor is gone.
#[derive(Message)]
#[rtype(result = "Result<(), RegistryError>")]
pub struct Retire {
    pub key: SessionKey,
}

impl Handler<Retire> for Registry {
    type Result = ResponseFuture<Result<(), RegistryError>>;

    fn handle(&mut self, msg: Retire, _: &mut Context<Self>) -> Self::Result {
        self.removing.insert(msg.key.clone());
        self.views.remove(&msg.key);
        self.rows.remove(&msg.key);
        self.pending_starts.remove(&msg.key);
        self.memory.remove(&msg.key);
        let addr = self.actors.remove(&msg.key).filter(|a| a.connected());
        Box::pin(async move {
            if let Some(addr) = addr {
                addr.send(session::Retire { key: msg.key }).await?;
            }
            Ok(())
        })
    }
}

/// The removal of a session is done: it may be started again (as a new session).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Removed {
    pub key: SessionKey,
}

impl Handler<Removed> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Removed, _: &mut Context<Self>) {
        self.removing.remove(&msg.key);
        // A view that came back meanwhile (a change published before the actor stopped).
        if !self.actors.contains_key(&msg.key) {
            self.views.remove(&msg.key);
        }
    }
}

/// Every known session, by key, from the cache.
#[derive(Message)]
#[rtype(result = "Vec<Session>")]
pub struct ListAll;

impl Handler<ListAll> for Registry {
    type Result = MessageResult<ListAll>;
    fn handle(&mut self, _: ListAll, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.views.values().cloned().collect())
    }
}
