//! `GET /api/events/{userId}`: Server-Sent Events of that user's sessions, and nobody else's.
//!
//! Browsers' `EventSource` cannot send headers, so `POST /api/events/{userId}/ticket` (with
//! credentials) returns a short-lived single-use ticket for `?ticket=`; a bearer token never
//! appears in a URL.

use std::collections::VecDeque;
use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::{stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::actors::registry::RegistryHandle;
use crate::actors::session::Session;
use crate::auth::{Auth, Principal};
use crate::domain::UserId;
use crate::http::extract::UserPath;
use crate::http::openapi::{
    BadUser, Forbidden, RateLimited, TicketReply, Unauthorized, Unavailable,
};
use crate::http::ApiError;
use crate::http::AppState;
use crate::store::StoredEvent;

/// A comment line this often keeps proxies from closing an idle stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Event streams one user may hold open at once (browser tabs); one more answers 429 to that
/// user only.
pub const MAX_STREAMS_PER_USER: usize = 8;

/// Open event streams per user. Each stream holds a [`StreamSlot`] until it ends.
#[derive(Default)]
pub struct StreamSlots(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<UserId, usize>>>);

impl StreamSlots {
    fn take(&self, user: &UserId) -> Result<StreamSlot, ApiError> {
        let mut open = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(user.clone()).or_default();
        if *n >= MAX_STREAMS_PER_USER {
            return Err(ApiError::RateLimited {
                retry_after_secs: KEEP_ALIVE.as_secs(),
            });
        }
        *n += 1;
        Ok(StreamSlot {
            open: self.0.clone(),
            user: user.clone(),
        })
    }
}

/// One open stream of a user; gives its place back when dropped.
struct StreamSlot {
    open: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<UserId, usize>>>,
    user: UserId,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

crate::http::route_table! {
    get "/api/events/{userId}" => events,
    post "/api/events/{userId}/ticket" => ticket,
}

/// A ticket for `GET /api/events/{userId}?ticket=…` (single use, valid 60 s).
#[utoipa::path(
    post,
    path = "/api/events/{userId}/ticket",
    tag = "events",
    params(("userId" = UserId, Path)),
    security(("bearer" = []), ("stackAccessToken" = [])),
    responses(
        (status = 200, description = "The ticket and the URL to open", body = TicketReply),
        BadUser, Unauthorized, Forbidden, RateLimited,
    ),
)]
async fn ticket(
    UserPath(user): UserPath,
    who: Principal,
    auth: web::Data<Auth>,
) -> Result<HttpResponse, ApiError> {
    let ticket = auth.issue_ticket(&who, &user)?;
    Ok(HttpResponse::Ok()
        .json(json!({ "ticket": ticket, "url": format!("/api/events/{user}?ticket={ticket}") })))
}

#[derive(Deserialize)]
struct EventsQuery {
    ticket: Option<String>,
}

/// `session` events (the full session object) of this user only: the current sessions first,
/// then each change; a `: keep-alive` comment every 15 s.
#[utoipa::path(
    get,
    path = "/api/events/{userId}",
    tag = "events",
    params(
        ("userId" = UserId, Path),
        ("ticket" = Option<String>, Query, description = "From `POST /api/events/{userId}/ticket`; instead of credential headers"),
    ),
    security(("bearer" = []), ("stackAccessToken" = []), ("sseTicket" = [])),
    responses(
        (status = 200, description = "`event: session` frames, `data:` a Session as JSON", content_type = "text/event-stream", body = Session),
        BadUser, Unauthorized, Forbidden, Unavailable,
    ),
)]
async fn events(
    req: HttpRequest,
    UserPath(user): UserPath,
    query: web::Query<EventsQuery>,
    auth: web::Data<Auth>,
    state: web::Data<AppState>,
    registry: web::Data<RegistryHandle>,
) -> Result<HttpResponse, ApiError> {
    let who = match &query.ticket {
        Some(ticket) => auth.redeem_ticket(ticket, &user)?,
        None => auth.authenticate(req.headers()).await?,
    };
    who.authorize_user(&user)?;
    let slot = state.streams.take(&user)?;
    // Subscribe before reading the snapshot so no change falls between the two; a stream that
    // falls behind before its first event catches up from the newest event at this moment.
    let rx = registry.subscribe_events();
    let start_after = registry.latest_event_id().await?;
    let snapshot: VecDeque<Bytes> = registry
        .list(user.clone())
        .await?
        .iter()
        .map(session_frame)
        .collect();
    let registry = registry.get_ref().clone();
    let catch_up = move |user: UserId, after: i64, first: bool| {
        let registry = registry.clone();
        async move { catch_up(&registry, user, after, first).await }
    };
    let body =
        event_stream(user, rx, snapshot, start_after, KEEP_ALIVE, catch_up).map(move |frame| {
            let _held_until_the_stream_ends = &slot;
            frame
        });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

/// Events one catch-up step reads (a stream never holds a user's whole history).
pub const CATCH_UP_PAGE: i64 = 200;

/// One step of a stream that fell behind: on the `first` step the user's sessions as they are
/// now, then one page of the stored messages and acks after `after`. The frames, the cursor after
/// them, and whether more may follow. `Err` when the database failed: the stream ends (the
/// client reconnects) rather than skip what it could not read.
async fn catch_up(
    registry: &RegistryHandle,
    user: UserId,
    after: i64,
    first: bool,
) -> Result<CatchUp, ()> {
    let mut frames = VecDeque::new();
    if first {
        let sessions = registry.list(user.clone()).await.map_err(drop)?;
        frames.extend(sessions.iter().map(session_frame));
    }
    let page = registry
        .user_events(user.clone(), after, CATCH_UP_PAGE)
        .await
        .map_err(|e| log::warn!("{user}: event stream catch-up failed: {e:?}"))?;
    let cursor = page.last().map_or(after, |e| e.id);
    let more = page.len() as i64 == CATCH_UP_PAGE;
    frames.extend(
        page.iter()
            .filter(|e| e.kind != crate::events::SESSION_STATUS)
            .map(event_frame),
    );
    Ok(CatchUp {
        frames,
        cursor,
        more,
    })
}

/// What one catch-up step gives a stream.
pub struct CatchUp {
    pub frames: VecDeque<Bytes>,
    /// The id of the last event read (the stream never sends an id at or below it again).
    pub cursor: i64,
    /// Another page may follow.
    pub more: bool,
}

fn session_frame(session: &Session) -> Bytes {
    let data = serde_json::to_string(session).expect("session serializes");
    Bytes::from(format!("event: session\ndata: {data}\n\n"))
}

/// A stored event as an SSE frame: `session` for state changes (the session object), else
/// the event's type; `id:` is its cursor.
fn event_frame(e: &StoredEvent) -> Bytes {
    let name = if e.kind == crate::events::SESSION_STATUS {
        "session"
    } else {
        e.kind.as_str()
    };
    Bytes::from(format!(
        "event: {name}\nid: {}\ndata: {}\n\n",
        e.id, e.payload
    ))
}

/// `snapshot` first, then each stored event of `user`'s after `start_after`, with keep-alive
/// comments. When the stream falls behind (a slow client), it catches up from the store page by
/// page (`catch_up(user, cursor, first step)`), then goes on with the live events it has not sent
/// yet: no state change and no message is ever lost to a subscriber, none is sent twice, and a
/// user's history is never in memory at once.
pub fn event_stream<C, F>(
    user: UserId,
    rx: broadcast::Receiver<StoredEvent>,
    snapshot: VecDeque<Bytes>,
    start_after: i64,
    keep_alive: Duration,
    catch_up: C,
) -> impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>>
where
    C: Fn(UserId, i64, bool) -> F + 'static,
    F: std::future::Future<Output = Result<CatchUp, ()>>,
{
    let ticker = tokio::time::interval_at(tokio::time::Instant::now() + keep_alive, keep_alive);
    struct State<C> {
        user: UserId,
        rx: broadcast::Receiver<StoredEvent>,
        pending: VecDeque<Bytes>,
        ticker: tokio::time::Interval,
        catch_up: C,
        /// The last event id sent (or read while catching up).
        cursor: i64,
        /// Catching up: `Some(first step?)`.
        catching: Option<bool>,
    }
    let state = State {
        user,
        rx,
        pending: snapshot,
        ticker,
        catch_up,
        cursor: start_after,
        catching: None,
    };
    stream::unfold(state, |mut st| async move {
        loop {
            if let Some(frame) = st.pending.pop_front() {
                return Some((Ok(frame), st));
            }
            if let Some(first) = st.catching {
                let Ok(step) = (st.catch_up)(st.user.clone(), st.cursor, first).await else {
                    return None;
                };
                st.pending = step.frames;
                st.cursor = step.cursor;
                st.catching = step.more.then_some(false);
                continue;
            }
            tokio::select! {
                received = st.rx.recv() => match received {
                    // The only filter between users: the event's own user id. An event read
                    // while catching up is not sent again.
                    Ok(e) if e.key.user_id() == &st.user && e.id > st.cursor => {
                        st.cursor = e.id;
                        return Some((Ok(event_frame(&e)), st));
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => {
                        log::warn!("{}: event stream fell {missed} events behind; catching up", st.user);
                        st.catching = Some(true);
                    }
                    Err(RecvError::Closed) => return None,
                },
                _ = st.ticker.tick() => {
                    return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), st));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{SessionKey, SessionState, Slot};

    fn session(user: &UserId, slot: u16, state: SessionState) -> Session {
        let key = SessionKey::new(user.clone(), Slot::new(slot.into(), 10).unwrap());
        let mut s = Session::from_row(&crate::store::SessionRow {
            key,
            state: SessionState::Stopped,
            intent: crate::domain::Intent::Running,
            is_connected: false,
            connected_number: None,
            restarts: 0,
            last_error: None,
            created_ms: 0,
            updated_ms: 0,
        });
        s.state = state;
        s.is_connected = state == SessionState::Connected;
        s
    }

    fn stored(user: &UserId, id: i64, state: SessionState) -> StoredEvent {
        let s = session(user, 1, state);
        StoredEvent {
            id,
            key: s.key.clone(),
            kind: crate::events::SESSION_STATUS.to_owned(),
            payload: serde_json::to_string(&s).unwrap(),
            created_ms: 0,
            uid: format!("uid{id}"),
        }
    }

    fn text(b: &Bytes) -> String {
        String::from_utf8(b.to_vec()).unwrap()
    }

    /// A stream that falls behind catches up from its cursor (the newest event at its start when
    /// it sent none yet, not the user's whole history), page by page with the cursor moving on,
    /// and then sends none of the live events it already read again.
    #[tokio::test]
    async fn a_lagging_stream_catches_up_page_by_page_and_sends_no_id_twice() {
        let user = UserId::parse("alice").unwrap();
        let (tx, rx) = broadcast::channel(2);
        // More than the channel holds: the stream lags before its first event.
        for id in 11..=14 {
            tx.send(stored(&user, id, SessionState::Qr)).unwrap();
        }
        let current = session(&user, 1, SessionState::Qr);
        let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let catch_up = {
            let (current, calls, user) = (current.clone(), calls.clone(), user.clone());
            move |_, after: i64, first: bool| {
                calls.lock().unwrap().push((after, first));
                let frame = |id| event_frame(&stored(&user, id, SessionState::Qr));
                let step = match after {
                    10 => CatchUp {
                        frames: [session_frame(&current), frame(11), frame(12)].into(),
                        cursor: 12,
                        more: true,
                    },
                    _ => CatchUp {
                        frames: [frame(13)].into(),
                        cursor: 13,
                        more: false,
                    },
                };
                async move { Ok(step) }
            }
        };
        let frames: Vec<String> = event_stream(
            user.clone(),
            rx,
            VecDeque::new(),
            10,
            Duration::from_secs(60),
            catch_up,
        )
        .take(5)
        .map(|f| text(&f.unwrap()))
        .collect()
        .await;
        assert_eq!(*calls.lock().unwrap(), [(10, true), (12, false)]);
        assert_eq!(frames[0], text(&session_frame(&current)));
        let ids: Vec<&str> = frames[1..]
            .iter()
            .map(|f| f.lines().find_map(|l| l.strip_prefix("id: ")).unwrap())
            .collect();
        assert_eq!(ids, ["11", "12", "13", "14"], "each id once, in order");
    }

    /// A catch-up the database cannot answer ends the stream (the client reconnects) instead
    /// of skipping what it could not read.
    #[tokio::test]
    async fn a_failed_catch_up_ends_the_stream() {
        let user = UserId::parse("alice").unwrap();
        let (tx, rx) = broadcast::channel(1);
        for id in 1..=3 {
            tx.send(stored(&user, id, SessionState::Qr)).unwrap();
        }
        let catch_up = |_, _, _| async { Err(()) };
        let frames: Vec<_> = event_stream(
            user,
            rx,
            VecDeque::new(),
            0,
            Duration::from_secs(60),
            catch_up,
        )
        .collect()
        .await;
        assert!(frames.is_empty());
    }
}
