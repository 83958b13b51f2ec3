//! `/api/{start,pair,status,qr,stop,logout}/…`: one registry message per request.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::actors::registry::RegistryHandle;
use crate::actors::session::{QrView, Session};
use crate::auth::Principal;
use crate::domain::{PhoneNumber, Slot, UserId};
use crate::http::extract::{SessionPath, UserPath};
use crate::http::openapi::{
    BadPair, BadQuery, BadSession, BadUser, Forbidden, NoQr, PairConflict, TooMany, Unauthorized,
    Unavailable, UnknownSession,
};
use crate::http::ApiError;

crate::http::route_table! {
    post "/api/start/{userId}/{slot}" => start,
    post "/api/pair/{userId}/{slot}" => pair,
    get "/api/status/{userId}" => list,
    get "/api/status/{userId}/{slot}" => status,
    get "/api/qr/{userId}/{slot}" => qr,
    post "/api/stop/{userId}/{slot}" => stop,
    post "/api/logout/{userId}/{slot}" => logout,
}

/// Starts the session (idempotent: a running session is left as it is).
#[utoipa::path(
    post,
    path = "/api/start/{userId}/{slot}",
    tag = "sessions",
    params(("userId" = UserId, Path), ("slot" = Slot, Path)),
    security(("bearer" = []), ("stackAccessToken" = [])),
    responses((status = 202, description = "Started or already running", body = Session), BadSession, Unauthorized, Forbidden, TooMany, Unavailable),
)]
async fn start(
    SessionPath(key): SessionPath,
    who: Principal,
    registry: web::Data<RegistryHandle>,
) -> Result<HttpResponse, ApiError> {
    who.authorize_user(key.user_id())?;
    let session = registry.start(key, who.audit_name()).await?;
    Ok(HttpResponse::Accepted().json(session))
}

/// The body of `POST /api/pair/{userId}/{slot}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PairRequest {
    /// 8 to 15 digits, country code first (a leading `+` is allowed).
    #[schema(example = "4915112345678")]
    phone_number: String,
}

/// Links by phone number instead of a QR code: starts the session if needed and asks WhatsApp
/// for a linking code. The session comes back in state `pairing`, with its `pairingCode` once
/// WhatsApp gave one (within a few seconds; otherwise it follows by SSE). Enter the code on the
/// phone under Linked devices → Link with phone number. It rotates, and times out like a QR.
#[utoipa::path(
    post,
    path = "/api/pair/{userId}/{slot}",
    tag = "sessions",
    params(("userId" = UserId, Path), ("slot" = Slot, Path)),
    request_body = PairRequest,
    security(("bearer" = []), ("stackAccessToken" = [])),
    responses((status = 202, description = "Pairing; the code when it exists", body = Session), BadPair, Unauthorized, Forbidden, PairConflict, TooMany, Unavailable),
)]
async fn pair(
    SessionPath(key): SessionPath,
    who: Principal,
    body: web::Json<PairRequest>,
    registry: web::Data<RegistryHandle>,
) -> Result<HttpResponse, ApiError> {
    who.authorize_user(key.user_id())?;
    let phone = PhoneNumber::parse(&body.phone_number)
        .map_err(|e| ApiError::InvalidPhoneNumber(e.to_string()))?;
    let session = registry.pair(key, phone, who.audit_name()).await?;
    Ok(HttpResponse::Accepted().json(session))
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct UserSessions {
    user_id: UserId,
    sessions: Vec<Session>,
}

/// The user's sessions, by slot.
#[utoipa::path(
    get,
    path = "/api/status/{userId}",
    operation_id = "list_sessions",
    tag = "sessions",
    params(("userId" = UserId, Path)),
    security(("bearer" = []), ("stackAccessToken" = [])),
    responses((status = 200, description = "Only this user's sessions", body = UserSessions), BadUser, Unauthorized, Forbidden, Unavailable),
)]
async fn list(
    UserPath(user): UserPath,
    who: Principal,
    registry: web::Data<RegistryHandle>,
) -> Result<HttpResponse, ApiError> {
    who.authorize_user(&user)?;
    let sessions = registry.list(user.clone()).await?;
    Ok(HttpResponse::Ok().json(UserSessions {
        user_id: user,
        sessions,
    }))
}

/// One session.
#[utoipa::path(
    get,
    path = "/api/status/{userId}/{slot}",
    tag = "sessions",
    params(("userId" = UserId, Path), ("slot" = Slot, Path)),
    security(("bearer" = []), ("stackAccessToken" = [])),
    responses((status = 200, description = "The session", body = Session), BadSession, Unauthorized, Forbidden, UnknownSession, Unavailable),
)]
async fn status(
    SessionPath(key): SessionPath,
    who: Principal,
    registry: web::Data<RegistryHandle>,
) -> Result<HttpResponse, ApiError> {
    who.authorize_user(key.user_id())?;
    Ok(HttpResponse::Ok().json(registry.status(key).await?))
}

#[derive(Deserialize)]
pub struct QrQuery {
    format: Option<String>,
}

/// How a QR code is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum QrFormat {
    Png,
    Svg,
    Txt,
    Json,
}

impl QrFormat {
    pub fn parse(raw: Option<&str>) -> Result<QrFormat, ApiError> {
        match raw.unwrap_or("png") {
            "png" => Ok(QrFormat::Png),
            "svg" => Ok(QrFormat::Svg),
            "txt" => Ok(QrFormat::Txt),
            "json" => Ok(QrFormat::Json),
            _ => Err(ApiError::BadRequest(
                "format must be one of png, svg, txt, json".to_owned(),
            )),
        }
    }
}

/// The QR code being shown (never cached).
#[utoipa::path(
    get,
    path = "/api/qr/{userId}/{slot}",
    tag = "sessions",
    params(("userId" = UserId, Path), ("slot" = Slot, Path), ("format" = Option<QrFormat>, Query, description = "Default png")),
    security(("bearer" = []), ("stackAccessToken" = [])),
    responses((status = 200, description = "The QR code in the asked format", content(
        ("image/png"),
        (String = "image/svg+xml"),
        (String = "text/plain"),
        (QrView = "application/json"),
    )), BadQuery, Unauthorized, Forbidden, UnknownSession, NoQr, Unavailable),
)]
async fn qr(
    SessionPath(key): SessionPath,
    query: web::Query<QrQuery>,
    who: Principal,
    registry: web::Data<RegistryHandle>,
) -> Result<HttpResponse, ApiError> {
    let format = QrFormat::parse(query.format.as_deref())?;
    who.authorize_user(key.user_id())?;
    let view = registry.qr(key).await?;
    let render = || crate::qr::Qr::new(&view.payload).map_err(ApiError::internal);
    let mut res = HttpResponse::Ok();
    // A QR code is a short-lived credential: never cache it.
    res.insert_header(("Cache-Control", "no-store"));
    Ok(match format {
        QrFormat::Png => res
            .content_type("image/png")
            .body(render()?.png().map_err(ApiError::internal)?),
        QrFormat::Svg => res.content_type("image/svg+xml").body(render()?.svg()),
        QrFormat::Txt => res
            .content_type("text/plain; charset=utf-8")
            .body(render()?.text()),
        QrFormat::Json => res.json(&*view),
    })
}

/// Closes the browser and keeps the profile (the session stays linked).
#[utoipa::path(
    post,
    path = "/api/stop/{userId}/{slot}",
    tag = "sessions",
    params(("userId" = UserId, Path), ("slot" = Slot, Path)),
    security(("bearer" = []), ("stackAccessToken" = [])),
    responses((status = 200, description = "Stopped", body = Session), BadSession, Unauthorized, Forbidden, UnknownSession, Unavailable),
)]
async fn stop(
    SessionPath(key): SessionPath,
    who: Principal,
    registry: web::Data<RegistryHandle>,
) -> Result<HttpResponse, ApiError> {
    who.authorize_user(key.user_id())?;
    Ok(HttpResponse::Ok().json(registry.stop(key, who.audit_name()).await?))
}

/// Unlinks: on WhatsApp's side too (a stopped linked session is started on its profile for
/// that), then closes the browser, deletes the profile folder, clears the number.
#[utoipa::path(
    post,
    path = "/api/logout/{userId}/{slot}",
    tag = "sessions",
    params(("userId" = UserId, Path), ("slot" = Slot, Path)),
    security(("bearer" = []), ("stackAccessToken" = [])),
    responses((status = 200, description = "Logged out", body = Session), BadSession, Unauthorized, Forbidden, UnknownSession, Unavailable),
)]
async fn logout(
    SessionPath(key): SessionPath,
    who: Principal,
    registry: web::Data<RegistryHandle>,
) -> Result<HttpResponse, ApiError> {
    who.authorize_user(key.user_id())?;
    Ok(HttpResponse::Ok().json(registry.logout(key, who.audit_name(), true).await?))
}
