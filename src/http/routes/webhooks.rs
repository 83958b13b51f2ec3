//! `/api/webhooks/{userId}`: a user's own webhook (Standard Webhooks), its deliveries, and
//! re-queuing one.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::actors::session::rfc3339;
use crate::auth::Principal;
use crate::domain::UserId;
use crate::http::extract::UserPath;
use crate::http::openapi::{BadUser, BadWebhook, Forbidden, Unauthorized, Unavailable};
use crate::http::{ApiError, AppState};
use crate::store::{DeliveryRow, WebhookRow};

crate::http::route_table! {
    put "/api/webhooks/{userId}" => put,
    get "/api/webhooks/{userId}" => get,
    delete "/api/webhooks/{userId}" => delete,
    get "/api/webhooks/{userId}/deliveries" => deliveries,
    post "/api/webhooks/{userId}/deliveries/{id}/retry" => retry,
}

/// The body of `PUT /api/webhooks/{userId}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookRequest {
    /// https:// (http:// only when the operator allows it); must resolve to public addresses.
    #[schema(example = "https://bots.example.com/wa-events")]
    url: String,
    /// Event types to receive: `message`, `message.ack`, `session.status` (default: all).
    events: Option<Vec<String>>,
}

/// The webhook; `secret` only in the answer that created it.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookView {
    url: String,
    events: Vec<String>,
    /// `active`, or `disabled` (the receiver answered 410 Gone, or did not take its deliveries
    /// for `WEBHOOK_DISABLE_AFTER`; PUT it again).
    state: &'static str,
    disabled_reason: Option<String>,
    /// `whsec_…`: the signing secret, shown this once.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

impl WebhookView {
    fn new(row: WebhookRow, secret: Option<String>) -> WebhookView {
        WebhookView {
            state: if row.disabled_reason.is_some() {
                "disabled"
            } else {
                "active"
            },
            url: row.url,
            events: row.events,
            disabled_reason: row.disabled_reason,
            secret,
        }
    }
}

/// Creates or replaces the user's webhook, with a new signing secret (shown once).
#[utoipa::path(
    put,
    path = "/api/webhooks/{userId}",
    tag = "webhooks",
    params(("userId" = UserId, Path)),
    request_body = WebhookRequest,
    security(("bearer" = []), ("stackAccessToken" = [])),
    responses((status = 200, description = "The webhook and its secret", body = WebhookView), BadWebhook, Unauthorized, Forbidden, Unavailable),
)]
async fn put(
    UserPath(user): UserPath,
    who: Principal,
    body: web::Json<WebhookRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    who.authorize_user(&user)?;
    let body = body.into_inner();
    let (row, secret) = state.webhooks.put(&user, &body.url, body.events).await?;
    Ok(HttpResponse::Ok().json(WebhookView::new(row, Some(secret))))
}

/// The user's webhook (never its secret).
#[utoipa::path(
    get,
    path = "/api/webhooks/{userId}",
    tag = "webhooks",
    params(("userId" = UserId, Path)),
    security(("bearer" = []), ("stackAccessToken" = [])),
    responses((status = 200, description = "The webhook", body = WebhookView), BadUser, Unauthorized, Forbidden, (status = 404, description = "`not_found`: no webhook", body = crate::http::error::ErrorBody), Unavailable),
)]
async fn get(
    UserPath(user): UserPath,
    who: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    who.authorize_user(&user)?;
    let row = state.webhooks.get(&user).await?.ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(WebhookView::new(row, None)))
}

/// Deletes the user's webhook; its pending deliveries fail.
#[utoipa::path(
    delete,
    path = "/api/webhooks/{userId}",
    tag = "webhooks",
    params(("userId" = UserId, Path)),
    security(("bearer" = []), ("stackAccessToken" = [])),
    responses((status = 204, description = "Deleted"), BadUser, Unauthorized, Forbidden, (status = 404, description = "`not_found`: no webhook", body = crate::http::error::ErrorBody), Unavailable),
)]
async fn delete(
    UserPath(user): UserPath,
    who: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    who.authorize_user(&user)?;
    if state.webhooks.delete(&user).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound)
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// `pending`, `delivered` or `failed`.
    status: Option<String>,
}

/// One delivery of one event to the user's webhook.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    id: i64,
    /// The event (the `id` of `GET /api/messages`).
    event_id: i64,
    /// The `webhook-id` header it carries, the same at every attempt: receivers dedupe by it.
    webhook_id: String,
    #[serde(rename = "type")]
    kind: String,
    slot: u16,
    /// `pending`, `delivered` or `failed`.
    status: String,
    attempts: u32,
    /// RFC 3339: the next attempt while pending.
    next_attempt_at: Option<String>,
    last_status: Option<u16>,
    last_error: Option<String>,
    created_at: String,
    updated_at: String,
}

impl From<DeliveryRow> for DeliveryView {
    fn from(d: DeliveryRow) -> DeliveryView {
        DeliveryView {
            next_attempt_at: (d.status == "pending").then(|| rfc3339(d.next_attempt_ms)),
            id: d.id,
            event_id: d.event_id,
            webhook_id: d.webhook_id,
            kind: d.kind,
            slot: d.key.slot().get(),
            status: d.status,
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error,
            created_at: rfc3339(d.created_ms),
            updated_at: rfc3339(d.updated_ms),
        }
    }
}

/// The newest 100 deliveries to the user's webhook.
#[utoipa::path(
    get,
    path = "/api/webhooks/{userId}/deliveries",
    tag = "webhooks",
    params(("userId" = UserId, Path), DeliveriesQuery),
    security(("bearer" = []), ("stackAccessToken" = [])),
    responses((status = 200, description = "Newest first", body = Vec<DeliveryView>), BadWebhook, Unauthorized, Forbidden, Unavailable),
)]
async fn deliveries(
    UserPath(user): UserPath,
    who: Principal,
    query: web::Query<DeliveriesQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    who.authorize_user(&user)?;
    let status = query.into_inner().status;
    if let Some(s) = &status {
        if !["pending", "delivered", "failed"].contains(&s.as_str()) {
            return Err(ApiError::BadRequest(
                "`status` must be pending, delivered or failed".into(),
            ));
        }
    }
    let list: Vec<DeliveryView> = state
        .webhooks
        .deliveries(&user, status)
        .await?
        .into_iter()
        .map(DeliveryView::from)
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

/// Re-queues a delivery (due now, attempts from zero).
#[utoipa::path(
    post,
    path = "/api/webhooks/{userId}/deliveries/{id}/retry",
    tag = "webhooks",
    params(("userId" = UserId, Path), ("id" = i64, Path)),
    security(("bearer" = []), ("stackAccessToken" = [])),
    responses((status = 202, description = "Queued"), BadWebhook, Unauthorized, Forbidden, (status = 404, description = "`not_found`: no such delivery of this user", body = crate::http::error::ErrorBody), Unavailable),
)]
async fn retry(
    UserPath(user): UserPath,
    who: Principal,
    id: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    who.authorize_user(&user)?;
    let id: i64 =
        id.1.parse()
            .map_err(|_| ApiError::BadRequest("the delivery id must be a number".into()))?;
    if state.webhooks.retry(&user, id).await? {
        Ok(HttpResponse::Accepted().finish())
    } else {
        Err(ApiError::NotFound)
    }
}
