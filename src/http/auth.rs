//! TEMPORARY: service/admin tokens only, until the Stack Auth module lands (same API).
use std::future::{ready, Ready};

use actix_web::http::header::HeaderMap;
use actix_web::{web, FromRequest, HttpRequest};

use super::ApiError;
use crate::config::Settings;
use crate::domain::UserId;

pub struct Auth {
    api: String,
    admin: String,
}
#[derive(Debug, thiserror::Error)]
#[error("auth setup")]
pub struct AuthSetupError;
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    User(UserId),
    Service,
    Admin,
}
impl Auth {
    pub fn from_settings(s: &Settings) -> Result<Auth, AuthSetupError> {
        Ok(Auth {
            api: s
                .api_token
                .clone()
                .unwrap_or_else(|| "service-token-xyz".into()),
            admin: s
                .admin_token
                .clone()
                .unwrap_or_else(|| "admin-token-xyz".into()),
        })
    }
    pub async fn authenticate(&self, h: &HeaderMap) -> Result<Principal, ApiError> {
        let t = h
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized)?;
        if t == self.api {
            Ok(Principal::Service)
        } else if t == self.admin {
            Ok(Principal::Admin)
        } else {
            Err(ApiError::Unauthorized)
        }
    }
    pub fn issue_ticket(&self, p: &Principal, u: &UserId) -> Result<String, ApiError> {
        p.authorize_user(u)?;
        Ok(format!("t-{u}"))
    }
    pub fn redeem_ticket(&self, t: &str, u: &UserId) -> Result<Principal, ApiError> {
        if t == format!("t-{u}") {
            Ok(Principal::Service)
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}
impl Principal {
    pub fn authorize_user(&self, u: &UserId) -> Result<(), ApiError> {
        match self {
            Principal::User(s) if s != u => Err(ApiError::Forbidden),
            _ => Ok(()),
        }
    }
    pub fn authorize_admin(&self) -> Result<(), ApiError> {
        match self {
            Principal::Admin => Ok(()),
            _ => Err(ApiError::Forbidden),
        }
    }
    pub fn audit_name(&self) -> String {
        match self {
            Principal::User(u) => format!("user:{u}"),
            Principal::Service => "service".into(),
            Principal::Admin => "admin".into(),
        }
    }
}
impl FromRequest for Principal {
    type Error = ApiError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Principal, ApiError>>>>;
    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let auth = req.app_data::<web::Data<Auth>>().cloned();
        let headers = req.headers().clone();
        Box::pin(async move {
            let auth = auth.ok_or_else(|| ApiError::Internal("no auth".into()))?;
            auth.authenticate(&headers).await
        })
    }
}
#[allow(dead_code)]
fn _unused() -> Ready<()> {
    ready(())
}
