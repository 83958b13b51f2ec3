//! `/api/{start,status,qr,stop,logout}/…`: one registry message per request.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::actors::registry::RegistryHandle;
use crate::actors::session::Session;
use crate::domain::UserId;
use crate::http::auth::Principal;
use crate::http::extract::{SessionPath, UserPath};
use crate::http::ApiError;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/start/{userId}/{slot}", web::post().to(start))
        .route("/api/status/{userId}", web::get().to(list))
        .route("/api/status/{userId}/{slot}", web::get().to(status))
        .route("/api/qr/{userId}/{slot}", web::get().to(qr))
        .route("/api/stop/{userId}/{slot}", web::post().to(stop))
        .route("/api/logout/{userId}/{slot}", web::post().to(logout));
}

async fn start(
    SessionPath(key): SessionPath,
    who: Principal,
    registry: web::Data<RegistryHandle>,
) -> Result<HttpResponse, ApiError> {
    who.authorize_user(key.user_id())?;
    let session = registry.start(key, who.audit_name()).await?;
    Ok(HttpResponse::Accepted().json(session))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserSessions {
    user_id: UserId,
    sessions: Vec<Session>,
}

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

async fn qr(
    SessionPath(key): SessionPath,
    query: web::Query<QrQuery>,
    who: Principal,
    registry: web::Data<RegistryHandle>,
) -> Result<HttpResponse, ApiError> {
    let format = QrFormat::parse(query.format.as_deref())?;
    who.authorize_user(key.user_id())?;
    let view = registry.qr(key).await?;
    let render =
        || crate::qr::Qr::new(&view.payload).map_err(|e| ApiError::Internal(e.to_string()));
    let mut res = HttpResponse::Ok();
    // A QR code is a short-lived credential: never cache it.
    res.insert_header(("Cache-Control", "no-store"));
    Ok(match format {
        QrFormat::Png => res.content_type("image/png").body(
            render()?
                .png()
                .map_err(|e| ApiError::Internal(e.to_string()))?,
        ),
        QrFormat::Svg => res.content_type("image/svg+xml").body(render()?.svg()),
        QrFormat::Txt => res
            .content_type("text/plain; charset=utf-8")
            .body(render()?.text()),
        QrFormat::Json => res.json(&*view),
    })
}

async fn stop(
    SessionPath(key): SessionPath,
    who: Principal,
    registry: web::Data<RegistryHandle>,
) -> Result<HttpResponse, ApiError> {
    who.authorize_user(key.user_id())?;
    Ok(HttpResponse::Ok().json(registry.stop(key, who.audit_name()).await?))
}

async fn logout(
    SessionPath(key): SessionPath,
    who: Principal,
    registry: web::Data<RegistryHandle>,
) -> Result<HttpResponse, ApiError> {
    who.authorize_user(key.user_id())?;
    Ok(HttpResponse::Ok().json(registry.logout(key, who.audit_name()).await?))
}
