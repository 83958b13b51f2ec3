//! Path extractors: raw path segments become `UserId` / `SessionKey` here, or a 400 with the
//! reason — before anything else happens.

use std::future::{ready, Ready};

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;

use super::ApiError;
use crate::auth::{Auth, Principal};
use crate::domain::{SessionKey, Slot, UserId};
use crate::http::AppState;

/// `{userId}` of the path.
pub struct UserPath(pub UserId);

/// `{userId}/{slot}` of the path.
pub struct SessionPath(pub SessionKey);

fn user_id(req: &HttpRequest) -> Result<UserId, ApiError> {
    let raw = req.match_info().get("userId").unwrap_or_default();
    UserId::parse(raw).map_err(|e| ApiError::InvalidUserId(e.to_string()))
}

impl FromRequest for UserPath {
    type Error = ApiError;
    type Future = Ready<Result<UserPath, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(user_id(req).map(UserPath))
    }
}

impl FromRequest for SessionPath {
    type Error = ApiError;
    type Future = Ready<Result<SessionPath, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let max_slots = req
            .app_data::<web::Data<AppState>>()
            .map(|s| s.max_slots)
            .unwrap_or(crate::domain::DEFAULT_MAX_SLOTS);
        ready(user_id(req).and_then(|user| {
            let raw = req.match_info().get("slot").unwrap_or_default();
            let slot =
                Slot::parse(raw, max_slots).map_err(|e| ApiError::InvalidSlot(e.to_string()))?;
            Ok(SessionPath(SessionKey::new(user, slot)))
        }))
    }
}

/// The caller, authenticated by the app's [`Auth`].
impl FromRequest for Principal {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Principal, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let auth = req.app_data::<web::Data<Auth>>().cloned();
        let headers = req.headers().clone();
        Box::pin(async move {
            let auth = auth.ok_or_else(|| {
                ApiError::Internal("web::Data<Auth> is not registered on the app".into())
            })?;
            Ok(auth.authenticate(&headers).await?)
        })
    }
}
