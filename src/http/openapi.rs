//! `GET /openapi.json`: the API description, derived from the handlers' `#[utoipa::path]`
//! annotations and the response types' schemas. This module owns what the annotations share:
//! the document root, the security schemes, the schemas of the domain types (from their consts)
//! and the error responses.

use actix_web::{web, HttpResponse};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::RefOr;
use utoipa::{IntoResponses, Modify, OpenApi, PartialSchema, ToSchema};

use super::error::ErrorBody;
use super::routes::sessions::{self, QrFormat};
use super::routes::{admin, chats, events, media, messages, nodes, ops, webhooks};
use super::{console, health};
use crate::actors::registry::RegistryInfo;
use crate::actors::session::{ActorInfo, QrView, Session};
use crate::domain::{SessionState, Slot, UserId, MIN_SLOT, SLOT_CEILING, USER_ID_MAX_LEN};
use crate::http::AppState;

super::route_table! {
    get "/openapi.json" => openapi_json,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wa-supervisor",
        description = "Runs WhatsApp Web sessions, one supervised headless Chromium per (userId, slot). \
Errors are `{error, message}` with a stable `error` code."
    ),
    paths(
        health::healthz,
        health::readyz,
        sessions::start,
        sessions::pair,
        sessions::list,
        sessions::status,
        sessions::qr,
        sessions::stop,
        sessions::logout,
        messages::send,
        messages::list,
        chats::chats,
        chats::history,
        chats::read,
        chats::presence,
        chats::contact,
        media::media_bytes,
        media::media_link,
        media::media_retry,
        webhooks::put,
        webhooks::get,
        webhooks::delete,
        webhooks::deliveries,
        webhooks::retry,
        events::ticket,
        events::events,
        admin::actors,
        admin::metrics,
        nodes::nodes,
        nodes::drain,
        ops::backup,
        ops::purge,
        ops::delete_user,
        openapi_json,
        console::page,
        console::script,
        console::stylesheet,
    ),
    components(schemas(
        ErrorBody, UserId, Slot, SessionState, Session, QrView, QrFormat, ActorInfo, RegistryInfo,
        sessions::PairRequest, crate::browser::wajs::WaJsInfo, crate::messaging::SendRequest,
        crate::messaging::TextMessage, crate::messaging::MediaMessage,
        crate::messaging::LocationMessage, crate::messaging::ContactMessage,
        crate::messaging::ReactionMessage, crate::messaging::PollMessage,
        crate::messaging::MediaInput, chats::ChatList, chats::History, chats::PresenceRequest,
        crate::messaging::conversation::ChatView, crate::messaging::conversation::NumberCheck,
        crate::messaging::conversation::Presence,
        messages::EventPage, messages::StoredEventView, crate::actors::session::SentMessage,
        crate::events::MessageEvent, crate::events::AckEvent, crate::events::Ack,
        crate::events::MediaInfo, crate::events::Location, crate::events::ContactCard,
        crate::events::Poll, crate::events::MediaEvent, crate::events::ReactionEvent,
        crate::events::RevokedEvent, crate::events::EditedEvent, crate::events::VoteEvent,
        crate::events::Reaction, crate::events::Revoke, crate::events::Edit, crate::events::Vote,
        crate::events::VoteOption, media::MediaLink, media::MediaAnswer,
        webhooks::WebhookRequest, webhooks::WebhookView, webhooks::DeliveryView,
        nodes::ClusterView, nodes::LeaseView, crate::store::NodeRow,
        crate::cluster::drain::DrainReport, crate::cluster::drain::Moved,
        ops::BackupRequest, crate::ops::purge::PurgeRequest, crate::ops::purge::PurgeReport,
        crate::ops::purge::PurgeItem, crate::ops::purge::Reason, crate::store::Removed,
        crate::ops::remove::UserDeletion, crate::ops::remove::SessionRemoval,
        crate::ops::remove::NodePart
    )),
    modifiers(&SecuritySchemes),
    tags(
        (name = "sessions", description = "Start, watch, stop and unlink sessions"),
        (name = "events", description = "Server-Sent Events of a user's sessions"),
        (name = "messages", description = "Send through a linked session; its stored events"),
        (name = "webhooks", description = "A user's own webhook (Standard Webhooks) and its deliveries"),
        (name = "admin", description = "Operators only (admin token)"),
        (name = "health", description = "No credentials needed"),
        (name = "console", description = "The operator console page"),
    )
)]
struct ApiDoc;

// The names each operation's `security(...)` uses.
const BEARER: &str = "bearer";
const ACCESS_TOKEN_HEADER: &str = "stackAccessToken";
const SSE_TICKET: &str = "sseTicket";

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A Stack Auth access token (its `sub` must be the path's userId), \
the service token (any user) or the admin token (admin routes)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            ACCESS_TOKEN_HEADER,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-stack-access-token",
                "The same tokens as `Authorization: Bearer`",
            ))),
        );
        components.add_security_scheme(
            SSE_TICKET,
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "ticket",
                "A single-use ticket from `POST /api/events/{userId}/ticket` (EventSource cannot send headers)",
            ))),
        );
    }
}

/// The document as this daemon serves it: `Slot`'s maximum is the configured `MAX_SLOTS`.
pub fn api_doc(max_slots: u16) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    if let Some(components) = doc.components.as_mut() {
        components
            .schemas
            .insert(Slot::name().into_owned(), slot_schema(max_slots));
        // A send's body is one schema per `type`: say which field tells them apart.
        if let Some(utoipa::openapi::RefOr::T(utoipa::openapi::Schema::OneOf(one_of))) =
            components.schemas.get_mut("SendRequest")
        {
            one_of.discriminator = Some(utoipa::openapi::Discriminator::new("type"));
        }
    }
    doc
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "health",
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json")),
)]
async fn openapi_json(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(api_doc(state.max_slots))
}

/// `^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`: what `UserId::parse` accepts.
fn user_id_pattern() -> String {
    format!("^[A-Za-z0-9][A-Za-z0-9_-]{{0,{}}}$", USER_ID_MAX_LEN - 1)
}

impl PartialSchema for UserId {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(user_id_pattern()))
            .min_length(Some(1))
            .max_length(Some(USER_ID_MAX_LEN))
            .description(Some("The auth provider's user id"))
            .examples([serde_json::json!("3f2b8c1e-7d4a-4b9e-9a51-0c2d6e8f1a23")])
            .into()
    }
}
impl ToSchema for UserId {}

fn slot_schema(max_slots: u16) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(MIN_SLOT))
        .maximum(Some(max_slots))
        .description(Some("Slot number, 1..=MAX_SLOTS"))
        .into()
}

impl PartialSchema for Slot {
    fn schema() -> RefOr<Schema> {
        slot_schema(SLOT_CEILING)
    }
}
impl ToSchema for Slot {}

impl PartialSchema for SessionState {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::String))
            .enum_values(Some(SessionState::ALL.iter().map(|s| s.as_str())))
            .description(Some(
                "starting → qr → connected; restarting after a crash; stopped: no browser; failed: gave up",
            ))
            .into()
    }
}
impl ToSchema for SessionState {}

/// `{ticket, url}` of `POST /api/events/{userId}/ticket`.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes a `json!` reply; never built.
pub struct TicketReply {
    /// Single use, valid 60 s, bound to the user.
    ticket: String,
    /// `/api/events/{userId}?ticket=…`, ready for `new EventSource(url)`.
    url: String,
}

/// `{status}` of `GET /healthz`.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes a `json!` reply; never built.
pub struct Liveness {
    #[schema(example = "ok")]
    status: String,
}

/// `{database, chromium, browser, waJs, ffmpeg}` of `GET /readyz`: each `ok` or why not, the
/// browser (engine, version, path), the WA-JS in use and the ffmpeg of voice notes.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes a `json!` reply; never built.
pub struct Readiness {
    #[schema(example = "ok")]
    database: String,
    #[schema(example = "ok")]
    chromium: String,
    /// The browser sessions launch (`null`: none installed).
    browser: Option<crate::browser::BrowserBinary>,
    /// The WA-JS the pages get (`null`: none installed, the sessions use the DOM signals).
    #[schema(rename = "waJs")]
    wa_js: Option<crate::browser::wajs::WaJsInfo>,
    /// The ffmpeg voice notes are transcoded with (`null`: none; only Ogg/Opus mono voice
    /// notes can then be sent).
    ffmpeg: Option<FfmpegInfo>,
}

#[derive(ToSchema)]
#[allow(dead_code)] // Describes a `json!` reply; never built.
pub struct FfmpegInfo {
    #[schema(example = "/usr/bin/ffmpeg")]
    path: String,
}

// The error responses the annotations list: each a status, its codes and headers.
// They describe `ApiError` replies and are never built.

/// `invalid_user_id`: the user id in the path is not one.
#[derive(IntoResponses)]
#[response(status = 400, example = json!({"error": "invalid_user_id", "message": "user id must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-', starting with a letter or digit"}))]
#[allow(dead_code)]
pub struct BadUser(ErrorBody);

/// `invalid_user_id` or `invalid_slot`: the path does not name a session.
#[derive(IntoResponses)]
#[response(status = 400, examples(
    ("invalid_user_id" = (value = json!({"error": "invalid_user_id", "message": "user id must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-', starting with a letter or digit"}))),
    ("invalid_slot" = (value = json!({"error": "invalid_slot", "message": "slot must be an integer from 1 to 10"}))),
))]
#[allow(dead_code)]
pub struct BadSession(ErrorBody);

/// `invalid_user_id`, `invalid_slot` or `bad_request` (e.g. an unknown `format`).
#[derive(IntoResponses)]
#[response(status = 400, examples(
    ("invalid_user_id" = (value = json!({"error": "invalid_user_id", "message": "user id must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-', starting with a letter or digit"}))),
    ("invalid_slot" = (value = json!({"error": "invalid_slot", "message": "slot must be an integer from 1 to 10"}))),
    ("bad_request" = (value = json!({"error": "bad_request", "message": "format must be one of png, svg, txt, json"}))),
))]
#[allow(dead_code)]
pub struct BadQuery(ErrorBody);

/// `unauthorized`: no credentials, or bad ones.
#[derive(IntoResponses)]
#[response(
    status = 401,
    headers(("WWW-Authenticate" = String, description = "`Bearer`")),
    example = json!({"error": "unauthorized", "message": "missing or invalid credentials"})
)]
#[allow(dead_code)]
pub struct Unauthorized(ErrorBody);

/// `forbidden`: these credentials are not for this user (or not admin).
#[derive(IntoResponses)]
#[response(status = 403, example = json!({"error": "forbidden", "message": "these credentials do not give access to this resource"}))]
#[allow(dead_code)]
pub struct Forbidden(ErrorBody);

/// `unknown_session`: this session was never started.
#[derive(IntoResponses)]
#[response(status = 404, example = json!({"error": "unknown_session", "message": "this session was never started"}))]
#[allow(dead_code)]
pub struct UnknownSession(ErrorBody);

/// `no_qr`: no QR code is being shown for this session.
#[derive(IntoResponses)]
#[response(status = 409, example = json!({"error": "no_qr", "message": "no QR code is being shown for this session"}))]
#[allow(dead_code)]
pub struct NoQr(ErrorBody);

/// `invalid_user_id`, `invalid_slot`, `invalid_phone_number` or `bad_request` (a body that is not
/// `{ "phoneNumber": … }`).
#[derive(IntoResponses)]
#[response(status = 400, examples(
    ("invalid_user_id" = (value = json!({"error": "invalid_user_id", "message": "user id must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-', starting with a letter or digit"}))),
    ("invalid_slot" = (value = json!({"error": "invalid_slot", "message": "slot must be an integer from 1 to 10"}))),
    ("invalid_phone_number" = (value = json!({"error": "invalid_phone_number", "message": "phone number must be 8 to 15 digits, country code first (e.g. 4915112345678)"}))),
    ("bad_request" = (value = json!({"error": "bad_request", "message": "Json deserialize error: missing field `phoneNumber`"}))),
))]
#[allow(dead_code)]
pub struct BadPair(ErrorBody);

/// `already_connected` (log it out first) or `bridge_unavailable` (the page runs without WA-JS).
#[derive(IntoResponses)]
#[response(status = 409, examples(
    ("already_connected" = (value = json!({"error": "already_connected", "message": "this session is already linked to a number; log it out first"}))),
    ("bridge_unavailable" = (value = json!({"error": "bridge_unavailable", "message": "linking by phone number needs WA-JS, and this session's page runs without it; scan the QR code instead"}))),
))]
#[allow(dead_code)]
pub struct PairConflict(ErrorBody);

/// `too_many_sessions` (the host's browser limit), `too_many_pending` (this user's browsers not
/// linked yet) or `rate_limited` (this user's start rate).
#[derive(IntoResponses)]
#[response(
    status = 429,
    headers(("Retry-After" = u64, description = "Seconds to wait")),
    examples(
        ("too_many_sessions" = (value = json!({"error": "too_many_sessions", "message": "20 browsers are running, the most this host allows"}))),
        ("too_many_pending" = (value = json!({"error": "too_many_pending", "message": "this user already has 2 sessions waiting to be linked; link or stop one first"}))),
        ("rate_limited" = (value = json!({"error": "rate_limited", "message": "too many requests; retry later"}))),
    )
)]
#[allow(dead_code)]
pub struct TooMany(ErrorBody);

/// `rate_limited`: too many open tickets.
#[derive(IntoResponses)]
#[response(
    status = 429,
    headers(("Retry-After" = u64, description = "Seconds to wait")),
    example = json!({"error": "rate_limited", "message": "too many requests; retry later"})
)]
#[allow(dead_code)]
pub struct RateLimited(ErrorBody);

/// `unavailable`: the daemon is busy or shutting down.
#[derive(IntoResponses)]
#[response(
    status = 503,
    headers(("Retry-After" = u64, description = "Seconds to wait")),
    example = json!({"error": "unavailable", "message": "the daemon is busy or shutting down; retry shortly"})
)]
#[allow(dead_code)]
pub struct Unavailable(ErrorBody);

/// `invalid_user_id`, `invalid_slot` or `bad_request` (an unknown `type`, a field the type does
/// not take, a `to` that is no chat, an empty or oversized `text`, a bad `replyTo`,
/// `idempotencyKey` or `media`).
#[derive(IntoResponses)]
#[response(status = 400, examples(
    ("invalid_slot" = (value = json!({"error": "invalid_slot", "message": "slot must be an integer from 1 to 10"}))),
    ("bad_request" = (value = json!({"error": "bad_request", "message": "`to` must be a phone number (5 to 20 digits, country code first), <digits>@c.us, <id>@g.us or <digits>@lid"}))),
))]
#[allow(dead_code)]
pub struct BadSend(ErrorBody);

/// `not_connected` (not linked), `bridge_unavailable` (no WA-JS), `send_in_progress` (the
/// idempotency key's first send has no answer yet) or `send_outcome_unknown` (it may have reached
/// WhatsApp: never sent again; ask again with the key for its result).
#[derive(IntoResponses)]
#[response(status = 409, examples(
    ("not_connected" = (value = json!({"error": "not_connected", "message": "this session is not linked to a number"}))),
    ("bridge_unavailable" = (value = json!({"error": "bridge_unavailable", "message": "linking by phone number needs WA-JS, and this session's page runs without it; scan the QR code instead"}))),
    ("send_in_progress" = (value = json!({"error": "send_in_progress", "message": "a send with this idempotency key is in progress; do not retry it with another key"}))),
    ("send_outcome_unknown" = (value = json!({"error": "send_outcome_unknown", "message": "the first send with this idempotency key may have reached WhatsApp (message id 3EB0C431D5E6F7A8B9C0D1) and is never sent again; ask again with the same key: once WhatsApp Web's store shows the message, its result is answered"}))),
))]
#[allow(dead_code)]
pub struct SendConflict(ErrorBody);

/// `media_too_large`: the media (or the body carrying it) is larger than `MEDIA_MAX_BYTES`;
/// nothing reached the page.
#[derive(IntoResponses)]
#[response(status = 413, example = json!({"error": "media_too_large", "message": "the media is larger than MEDIA_MAX_BYTES (67108864 bytes)"}))]
#[allow(dead_code)]
pub struct MediaTooLarge(ErrorBody);

/// `unsupported_media` (the bytes are not what the type takes, contradict `media.mimetype`, or
/// cannot be decoded), `media_unavailable` (`media.url` could not be fetched: refused,
/// unreachable, an error status, a redirect) or `media_refused` (WhatsApp Web refused the file,
/// with its reason).
#[derive(IntoResponses)]
#[response(status = 422, examples(
    ("unsupported_media" = (value = json!({"error": "unsupported_media", "message": "`media.mimetype` says image/png, the bytes are image/jpeg"}))),
    ("media_unavailable" = (value = json!({"error": "media_unavailable", "message": "`media.url` (cdn.example.com): answered 302 Found: redirects are not followed (give the final URL)"}))),
    ("media_refused" = (value = json!({"error": "media_refused", "message": "WhatsApp Web refused the file: file_too_large"}))),
))]
#[allow(dead_code)]
pub struct MediaRefused(ErrorBody);

/// `unknown_chat`: WhatsApp Web has no such chat.
#[derive(IntoResponses)]
#[response(status = 404, example = json!({"error": "unknown_chat", "message": "WhatsApp Web has no such chat"}))]
#[allow(dead_code)]
pub struct UnknownChat(ErrorBody);

/// `unknown_media`: this session has no such media (or its download failed: see the event's
/// `media.error`).
#[derive(IntoResponses)]
#[response(status = 404, example = json!({"error": "unknown_media", "message": "this session has no such media"}))]
#[allow(dead_code)]
pub struct UnknownMedia(ErrorBody);

/// `media_removed`: the media's bytes were removed (`MEDIA_RETENTION_DAYS` or the quota).
#[derive(IntoResponses)]
#[response(status = 410, example = json!({"error": "media_removed", "message": "this media was removed (retention or quota); its message is still recorded"}))]
#[allow(dead_code)]
pub struct MediaGone(ErrorBody);

/// `send_failed`: WhatsApp Web did not take the message.
#[derive(IntoResponses)]
#[response(status = 502, example = json!({"error": "send_failed", "message": "WhatsApp Web did not take the message: …"}))]
#[allow(dead_code)]
pub struct SendFailed(ErrorBody);

/// `invalid_user_id`, `invalid_webhook_url` (not https, credentials, a private address) or
/// `bad_request`.
#[derive(IntoResponses)]
#[response(status = 400, examples(
    ("invalid_user_id" = (value = json!({"error": "invalid_user_id", "message": "user id must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-', starting with a letter or digit"}))),
    ("invalid_webhook_url" = (value = json!({"error": "invalid_webhook_url", "message": "webhook URLs must be https:// (WEBHOOK_ALLOW_HTTP is off)"}))),
    ("bad_request" = (value = json!({"error": "bad_request", "message": "unknown event type \"typing\""}))),
))]
#[allow(dead_code)]
pub struct BadWebhook(ErrorBody);
