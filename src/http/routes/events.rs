//! `GET /api/events/{userId}`: Server-Sent Events of that user's sessions, and nobody else's.
//!
//! Browsers' `EventSource` cannot send headers, so `POST /api/events/{userId}/ticket` (with
//! credentials) returns a short-lived single-use ticket for `?ticket=`; a bearer token never
//! appears in a URL.

use std::collections::VecDeque;
use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::stream;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::actors::registry::RegistryHandle;
use crate::actors::session::Session;
use crate::domain::UserId;
use crate::http::auth::{Auth, Principal};
use crate::http::extract::UserPath;
use crate::http::openapi::{
    BadUser, Forbidden, RateLimited, TicketReply, Unauthorized, Unavailable,
};
use crate::http::ApiError;
use crate::startup::AppState;

/// A comment line this often keeps proxies from closing an idle stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

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
    // Subscribe before reading the snapshot so no change falls between the two.
    let rx = state.sessions.events.subscribe();
    let snapshot = registry.list(user.clone()).await?;
    let body = session_stream(user, rx, snapshot.into(), KEEP_ALIVE);
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
pub fn session_stream(
    user: UserId,
    rx: broadcast::Receiver<Session>,
    snapshot: VecDeque<Session>,
    keep_alive: Duration,
) -> impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>> {
    let ticker = tokio::time::interval_at(tokio::time::Instant::now() + keep_alive, keep_alive);
    stream::unfold(
        (user, rx, snapshot, ticker),
        |(user, mut rx, mut pending, mut ticker)| async move {
            if let Some(session) = pending.pop_front() {
                return Some((Ok(frame(&session)), (user, rx, pending, ticker)));
            }
            loop {
                tokio::select! {
                    received = rx.recv() => match received {
                        // The only filter between users: the session's own user id.
                        Ok(session) if session.user_id == user => {
                            return Some((Ok(frame(&session)), (user, rx, pending, ticker)));
                        }
                        Ok(_) | Err(RecvError::Lagged(_)) => continue,
                        Err(RecvError::Closed) => return None,
                    },
                    _ = ticker.tick() => {
                        return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), (user, rx, pending, ticker)));
                    }
                }
            }
        },
    )
}
