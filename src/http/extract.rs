//! Path extractors: raw path segments become `UserId` / `SessionKey` here, or a 400 with the
//! reason — before anything else happens.

use std::future::{ready, Ready};

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};

use super::ApiError;
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
