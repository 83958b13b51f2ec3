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
    // Subscribe before reading the snapshot so no change falls between the two.
    let rx = registry.subscribe();
    let snapshot = registry.list(user.clone()).await?;
    let registry = registry.get_ref().clone();
    let refresh = move |user| {
        let registry = registry.clone();
        async move { registry.list(user).await.unwrap_or_default() }
    };
    let body = session_stream(user, rx, snapshot.into(), KEEP_ALIVE, refresh).map(move |frame| {
        let _held_until_the_stream_ends = &slot;
        frame
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

fn frame(session: &Session) -> Bytes {
    let data = serde_json::to_string(session).expect("session serializes");
    Bytes::from(format!("event: session\ndata: {data}\n\n"))
}

/// The user's current sessions first, then each change of theirs, with keep-alive comments.
/// When the stream falls behind the event bus (a slow client), the events it missed are gone:
/// it sends the user's current sessions again from `refresh`, so no state change (such as
/// `connected`) is ever lost to a subscriber.
pub fn session_stream<R, F>(
    user: UserId,
    rx: broadcast::Receiver<Session>,
    snapshot: VecDeque<Session>,
    keep_alive: Duration,
    refresh: R,
) -> impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>>
where
    R: Fn(UserId) -> F + 'static,
    F: std::future::Future<Output = Vec<Session>>,
{
    let ticker = tokio::time::interval_at(tokio::time::Instant::now() + keep_alive, keep_alive);
    stream::unfold(
        (user, rx, snapshot, ticker, refresh),
        |(user, mut rx, mut pending, mut ticker, refresh)| async move {
            loop {
                if let Some(session) = pending.pop_front() {
                    return Some((Ok(frame(&session)), (user, rx, pending, ticker, refresh)));
                }
                tokio::select! {
                    received = rx.recv() => match received {
                        // The only filter between users: the session's own user id.
                        Ok(session) if session.user_id == user => {
                            return Some((Ok(frame(&session)), (user, rx, pending, ticker, refresh)));
                        }
                        Ok(_) => continue,
                        Err(RecvError::Lagged(missed)) => {
                            log::warn!("{user}: event stream fell {missed} events behind; resending the user's sessions");
                            pending = refresh(user.clone()).await.into();
                        }
                        Err(RecvError::Closed) => return None,
                    },
                    _ = ticker.tick() => {
                        return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), (user, rx, pending, ticker, refresh)));
                    }
                }
            }
        },
    )
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

    #[tokio::test]
    async fn a_lagging_stream_resends_the_users_sessions() {
        let user = UserId::parse("alice").unwrap();
        let (tx, rx) = broadcast::channel(2);
        // More changes than the channel holds: the stream lags and misses `connected`.
        for state in [
            SessionState::Starting,
            SessionState::Qr,
            SessionState::Qr,
            SessionState::Connected,
        ] {
            tx.send(session(&user, 1, state)).unwrap();
        }
        let current = session(&user, 1, SessionState::Connected);
        let refresh = {
            let current = current.clone();
            move |_| {
                let current = current.clone();
                async move { vec![current] }
            }
        };
        let frames: Vec<String> = session_stream(
            user.clone(),
            rx,
            VecDeque::new(),
            Duration::from_secs(60),
            refresh,
        )
        .take(1)
        .map(|f| String::from_utf8(f.unwrap().to_vec()).unwrap())
        .collect()
        .await;
        assert_eq!(
            frames,
            [String::from_utf8(frame(&current).to_vec()).unwrap()]
        );
        assert!(frames[0].contains("\"state\":\"connected\""));
    }
}
