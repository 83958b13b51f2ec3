//! Around the conversation, through a linked session's page (`src/messaging/conversation.rs`):
//! mark read, presence, chats and their history, and number checks. Authorized like every
//! route of the user; each call takes one from the session's `SEND_PER_MINUTE` like a send.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::actors::registry::RegistryHandle;
use crate::auth::Principal;
use crate::browser::BrowserError;
use crate::domain::{ChatId, PhoneNumber, Slot, UserId};
use crate::events::PageMessage;
use crate::http::extract::SessionPath;
use crate::http::openapi::{
    BadSession, Forbidden, SendConflict, SendFailed, TooMany, Unauthorized, Unavailable,
    UnknownChat,
};
use crate::http::ApiError;
use crate::messaging::conversation::{self, ChatView, NumberCheck, Presence, LIST_MAX};

crate::http::route_table! {
    get "/api/chats/{userId}/{slot}" => chats,
    get "/api/chats/{userId}/{slot}/{chatId}/messages" => history,
    post "/api/chats/{userId}/{slot}/{chatId}/read" => read,
    post "/api/chats/{userId}/{slot}/{chatId}/presence" => presence,
    get "/api/contacts/{userId}/{slot}/{phone}" => contact,
}

fn chat_of(req: &HttpRequest) -> Result<ChatId, ApiError> {
    let raw = req.match_info().get("chatId").unwrap_or_default();
    ChatId::parse(raw).map_err(|e| ApiError::BadRequest(e.to_string().replace("`to`", "`chatId`")))
}

fn limit_of(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(50);
    if !(1..=LIST_MAX).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "`limit` must be 1 to {LIST_MAX}"
        )));
    }
    Ok(limit)
}

/// What the page answered, as HTTP: a chat WhatsApp does not have is 404, anything else that
/// went wrong in the page 502.
fn page_error(e: BrowserError) -> ApiError {
    match &e {
        BrowserError::Command { message, .. }
            if message.contains("not_found") || message.contains("not found") =>
        {
            ApiError::UnknownChat
        }
        _ => ApiError::SendFailed(format!("WhatsApp Web did not answer: {}", crate::chain(&e))),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChatsQuery {
    /// Only chats with unread messages.
    unread: Option<bool>,
    /// At most this many (1 to 200, default 50).
    limit: Option<u32>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ChatList {
    chats: Vec<ChatView>,
}

/// The session's chats from WhatsApp Web, the most recent first.
#[utoipa::path(
    get,
    path = "/api/chats/{userId}/{slot}",
    tag = "messages",
    params(("userId" = UserId, Path), ("slot" = Slot, Path), ChatsQuery),
    security(("bearer" = []), ("stackAccessToken" = [])),
    responses((status = 200, description = "The chats", body = ChatList), BadSession, Unauthorized, Forbidden, UnknownChat, SendConflict, TooMany, SendFailed, Unavailable),
)]
async fn chats(
    SessionPath(key): SessionPath,
    who: Principal,
    query: web::Query<ChatsQuery>,
    registry: web::Data<RegistryHandle>,
) -> Result<HttpResponse, ApiError> {
    who.authorize_user(key.user_id())?;
    let limit = limit_of(query.limit)?;
    let page = registry.page(key).await?;
    let chats = conversation::chats(&page, limit, query.unread.unwrap_or(false))
        .await
        .map_err(page_error)?;
    Ok(HttpResponse::Ok().json(ChatList { chats }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only messages before this one (a message id), for the next page back.
    before: Option<String>,
    /// At most this many (1 to 200, default 50).
    limit: Option<u32>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct History {
    /// Oldest first, shaped like `message` events.
    #[schema(value_type = Vec<Object>)]
    messages: Vec<PageMessage>,
}

/// A chat's messages from WhatsApp Web's own store (not only those the daemon recorded).
#[utoipa::path(
    get,
    path = "/api/chats/{userId}/{slot}/{chatId}/messages",
    tag = "messages",
    params(("userId" = UserId, Path), ("slot" = Slot, Path), ("chatId" = String, Path), HistoryQuery),
    security(("bearer" = []), ("stackAccessToken" = [])),
    responses((status = 200, description = "The messages", body = History), BadSession, Unauthorized, Forbidden, UnknownChat, SendConflict, TooMany, SendFailed, Unavailable),
)]
async fn history(
    req: HttpRequest,
    SessionPath(key): SessionPath,
    who: Principal,
    query: web::Query<HistoryQuery>,
    registry: web::Data<RegistryHandle>,
) -> Result<HttpResponse, ApiError> {
    who.authorize_user(key.user_id())?;
    let chat = chat_of(&req)?;
    let limit = limit_of(query.limit)?;
    if let Some(before) = &query.before {
        crate::messaging::check_message_id(before, "before").map_err(ApiError::BadRequest)?;
    }
    let page = registry.page(key).await?;
    let messages = conversation::history(&page, &chat, query.before.as_deref(), limit)
        .await
        .map_err(page_error)?;
    Ok(HttpResponse::Ok().json(History { messages }))
}

/// Marks the chat read (its messages get the blue ticks).
#[utoipa::path(
    post,
    path = "/api/chats/{userId}/{slot}/{chatId}/read",
    tag = "messages",
    params(("userId" = UserId, Path), ("slot" = Slot, Path), ("chatId" = String, Path)),
    security(("bearer" = []), ("stackAccessToken" = [])),
    responses((status = 204, description = "Marked read"), BadSession, Unauthorized, Forbidden, UnknownChat, SendConflict, TooMany, SendFailed, Unavailable),
)]
async fn read(
    req: HttpRequest,
    SessionPath(key): SessionPath,
    who: Principal,
    registry: web::Data<RegistryHandle>,
) -> Result<HttpResponse, ApiError> {
    who.authorize_user(key.user_id())?;
    let chat = chat_of(&req)?;
    let page = registry.page(key).await?;
    conversation::mark_read(&page, &chat)
        .await
        .map_err(page_error)?;
    Ok(HttpResponse::NoContent().finish())
}

/// The body of `POST …/{chatId}/presence`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PresenceRequest {
    state: Presence,
}

/// Shows "typing…" or "recording audio…" in the chat, or stops it (`paused`).
#[utoipa::path(
    post,
    path = "/api/chats/{userId}/{slot}/{chatId}/presence",
    tag = "messages",
    params(("userId" = UserId, Path), ("slot" = Slot, Path), ("chatId" = String, Path)),
    request_body = PresenceRequest,
    security(("bearer" = []), ("stackAccessToken" = [])),
    responses((status = 204, description = "Shown"), BadSession, Unauthorized, Forbidden, UnknownChat, SendConflict, TooMany, SendFailed, Unavailable),
)]
async fn presence(
    req: HttpRequest,
    SessionPath(key): SessionPath,
    who: Principal,
    body: web::Json<PresenceRequest>,
    registry: web::Data<RegistryHandle>,
) -> Result<HttpResponse, ApiError> {
    who.authorize_user(key.user_id())?;
    let chat = chat_of(&req)?;
    let page = registry.page(key).await?;
    conversation::presence(&page, &chat, body.state)
        .await
        .map_err(page_error)?;
    Ok(HttpResponse::NoContent().finish())
}

/// Whether a number is on WhatsApp, with the chat id to send to and its linked id.
#[utoipa::path(
    get,
    path = "/api/contacts/{userId}/{slot}/{phone}",
    tag = "messages",
    params(("userId" = UserId, Path), ("slot" = Slot, Path), ("phone" = String, Path, description = "Digits, country code first (optional `+`)")),
    security(("bearer" = []), ("stackAccessToken" = [])),
    responses((status = 200, description = "Checked (`exists: false` for a number not on WhatsApp)", body = NumberCheck), BadSession, Unauthorized, Forbidden, SendConflict, TooMany, SendFailed, Unavailable),
)]
async fn contact(
    req: HttpRequest,
    SessionPath(key): SessionPath,
    who: Principal,
    registry: web::Data<RegistryHandle>,
) -> Result<HttpResponse, ApiError> {
    who.authorize_user(key.user_id())?;
    let raw = req.match_info().get("phone").unwrap_or_default();
    let phone = PhoneNumber::parse(raw).map_err(|e| ApiError::InvalidPhoneNumber(e.to_string()))?;
    let page = registry.page(key).await?;
    let check = conversation::check_number(&page, phone.as_str())
        .await
        .map_err(page_error)?;
    Ok(HttpResponse::Ok().json(check))
}
