//! `/api/messages/{userId}/{slot}`: send a message through a linked session (its types and
//! media: `src/messaging/`); page through the
//! session's stored events (messages, acks, state changes).

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::actors::registry::RegistryHandle;
use crate::actors::session::{rfc3339, SentMessage};
use crate::auth::Principal;
use crate::domain::{Slot, UserId};
use crate::http::extract::SessionPath;
use crate::http::openapi::{
    BadSend, BadSession, Forbidden, MediaRefused, MediaTooLarge, SendConflict, SendFailed, TooMany,
    Unauthorized, Unavailable, UnknownSession,
};
use crate::http::ApiError;
use crate::messaging::{Intake, SendRequest};

crate::http::route_table! {
    post "/api/messages/{userId}/{slot}" => send,
    get "/api/messages/{userId}/{slot}" => list,
}

/// Events a page holds at most.
pub const PAGE_MAX: i64 = 500;

/// Sends a message through the session: text (the default `type`), image, video, audio, voice,
/// document, sticker, location, contact, reaction or poll (201 once WhatsApp Web accepted it
/// locally; `message.ack` events follow). Media comes by `url` (fetched by the daemon) or as
/// base64 `data`, at most `MEDIA_MAX_BYTES`.
#[utoipa::path(
    post,
    path = "/api/messages/{userId}/{slot}",
    tag = "messages",
    params(("userId" = UserId, Path), ("slot" = Slot, Path)),
    request_body = SendRequest,
    security(("bearer" = []), ("stackAccessToken" = [])),
    responses((status = 201, description = "Accepted by WhatsApp Web", body = SentMessage), BadSend, Unauthorized, Forbidden, UnknownSession, SendConflict, MediaTooLarge, MediaRefused, TooMany, SendFailed, Unavailable),
)]
async fn send(
    SessionPath(key): SessionPath,
    who: Principal,
    body: web::Payload,
    registry: web::Data<RegistryHandle>,
    intake: web::Data<Intake>,
) -> Result<HttpResponse, ApiError> {
    who.authorize_user(key.user_id())?;
    let body = body
        .to_bytes_limited(intake.body_limit())
        .await
        .map_err(|_| ApiError::MediaTooLarge {
            max: intake.max_bytes,
        })?
        .map_err(|e| ApiError::BadRequest(format!("the body could not be read: {e}")))?;
    let draft = SendRequest::parse(&body)
        .and_then(SendRequest::check)
        .map_err(ApiError::BadRequest)?;
    drop(body);
    let idempotency_key = draft.idempotency_key.clone();
    let trusted = matches!(who, Principal::Service | Principal::Admin);
    let message = draft.take_in(&intake, trusted).await?;
    let sent = registry.send(key, message, idempotency_key).await?;
    Ok(HttpResponse::Created().json(sent))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only events after this cursor (an event's `id`; default 0: from the oldest kept).
    after: Option<i64>,
    /// At most this many (1 to 500, default 100).
    limit: Option<i64>,
}

/// One stored event.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredEventView {
    /// The cursor: pass it as `after` to get what came next.
    id: i64,
    /// `message`, `message.ack` or `session.status`.
    #[serde(rename = "type")]
    kind: String,
    /// RFC 3339, when the daemon stored it.
    timestamp: String,
    /// The `webhook-id` its deliveries carry (`evt_…`), unique for good: receivers dedupe by it.
    #[schema(example = "evt_3f9c1e0b7a2d4c58b1e6a0d9f2c47e15")]
    webhook_id: String,
    /// The event's data (a message, an ack, or the session object).
    #[schema(value_type = Object)]
    data: serde_json::Value,
}

/// A page of events.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventPage {
    events: Vec<StoredEventView>,
    /// The `after` of the next page (the last event's id, or the request's `after`).
    next: i64,
}

/// The session's stored events, oldest first: messages, acks and state changes (kept
/// `EVENT_RETENTION_DAYS`).
#[utoipa::path(
    get,
    path = "/api/messages/{userId}/{slot}",
    operation_id = "list_messages",
    tag = "messages",
    params(("userId" = UserId, Path), ("slot" = Slot, Path), ListQuery),
    security(("bearer" = []), ("stackAccessToken" = [])),
    responses((status = 200, description = "A page of events", body = EventPage), BadSession, Unauthorized, Forbidden, Unavailable),
)]
async fn list(
    SessionPath(key): SessionPath,
    who: Principal,
    query: web::Query<ListQuery>,
    registry: web::Data<RegistryHandle>,
) -> Result<HttpResponse, ApiError> {
    who.authorize_user(key.user_id())?;
    let after = query.after.unwrap_or(0);
    let limit = query.limit.unwrap_or(100);
    if after < 0 || !(1..=PAGE_MAX).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "`after` must be ≥ 0 and `limit` 1 to {PAGE_MAX}"
        )));
    }
    let events = registry.events(key, after, limit).await?;
    let next = events.last().map_or(after, |e| e.id);
    let events = events
        .into_iter()
        .map(|e| StoredEventView {
            id: e.id,
            webhook_id: e.webhook_id(),
            timestamp: rfc3339(e.created_ms),
            data: serde_json::from_str(&e.payload).unwrap_or(serde_json::Value::Null),
            kind: e.kind,
        })
        .collect();
    Ok(HttpResponse::Ok().json(EventPage { events, next }))
}
