//! The one error type of the HTTP API: every refusal is `{ "error": <code>, "message": <sentence> }`
//! with the status from one exhaustive table. A 500 never carries internals; the cause
//! is logged once, here.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::actors::registry::RegistryError;
use crate::actors::session::SessionError;
use crate::auth::AuthError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidUserId(String),
    #[error("{0}")]
    InvalidSlot(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid credentials")]
    Unauthorized,
    #[error("these credentials do not give access to this resource")]
    Forbidden,
    #[error("no such route")]
    NotFound,
    #[error("this session was never started")]
    UnknownSession,
    #[error("WhatsApp Web has no such chat")]
    UnknownChat,
    #[error("this session has no such media")]
    UnknownMedia,
    #[error("this media was removed (retention or quota); its message is still recorded")]
    MediaRemoved,
    #[error("the range is outside the media ({size} bytes)")]
    RangeNotSatisfiable { size: u64 },
    #[error("no QR code is being shown for this session")]
    NoQr,
    #[error("{0}")]
    InvalidPhoneNumber(String),
    #[error("this session is already linked to a number; log it out first")]
    AlreadyConnected,
    #[error("linking by phone number needs WA-JS, and this session's page runs without it; scan the QR code instead")]
    BridgeUnavailable,
    #[error("this session is not linked to a number")]
    NotConnected,
    #[error("a send with this idempotency key is in progress; do not retry it with another key")]
    SendInProgress,
    #[error("the first send with this idempotency key may have reached WhatsApp (message id {message_id}) and is never sent again; ask again with the same key: once WhatsApp Web's store shows the message, its result is answered")]
    SendOutcomeUnknown { message_id: String },
    #[error("{0}")]
    SendFailed(String),
    #[error("the media is larger than MEDIA_MAX_BYTES ({max} bytes)")]
    MediaTooLarge { max: u64 },
    #[error("{0}")]
    UnsupportedMedia(String),
    #[error("{0}")]
    MediaUnavailable(String),
    #[error("WhatsApp Web refused the file: {0}")]
    MediaRefused(String),
    #[error("{0}")]
    InvalidWebhookUrl(String),
    #[error("{limit} browsers are running, the most this host allows")]
    TooManySessions { limit: u32, retry_after_secs: u64 },
    #[error("this user already has {limit} sessions waiting to be linked; link or stop one first")]
    TooManyPending { limit: u32, retry_after_secs: u64 },
    #[error("too many requests; retry later")]
    RateLimited { retry_after_secs: u64 },
    #[error("the daemon is busy or shutting down; retry shortly")]
    Unavailable { retry_after_secs: u64 },
    #[error("cluster mode is off on this daemon (CLUSTER_TOKEN is not set)")]
    NotClustered,
    #[error("no live node of the cluster is called that")]
    UnknownNode,
    #[error(
        "no other live node takes sessions: a drain would only stop them; start another node first"
    )]
    NoOtherNode,
    #[error("this session is being removed (a purge or a user's deletion); start it again once that is done")]
    BeingRemoved,
    #[error("a backup is being taken; one at a time")]
    BackupInProgress,
    #[error("the node that runs this session did not answer; retry shortly (its sessions move to other nodes when its leases expire)")]
    OwnerUnreachable,
    /// The cause is logged (its whole chain, once, here), never sent.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// A failure that is ours, not the caller's: 500, cause logged.
    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> ApiError {
        ApiError::Internal(Box::new(e))
    }
}

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_SECS: u64 = 2;
/// Seconds before a refused start may succeed (a browser closes, a QR code times out).
const RETRY_START_SECS: u64 = 30;

/// Refused credentials as HTTP.
impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        match e {
            AuthError::Unauthorized => ApiError::Unauthorized,
            AuthError::Forbidden => ApiError::Forbidden,
            AuthError::RateLimited { retry_after_secs } => {
                ApiError::RateLimited { retry_after_secs }
            }
        }
    }
}

/// Media intake's refusals as HTTP (before anything reached the page).
impl From<crate::messaging::MediaError> for ApiError {
    fn from(e: crate::messaging::MediaError) -> ApiError {
        use crate::messaging::MediaError;
        match e {
            MediaError::TooLarge { max } => ApiError::MediaTooLarge { max },
            MediaError::Unsupported(why) => ApiError::UnsupportedMedia(why),
            MediaError::Unavailable(why) => ApiError::MediaUnavailable(why),
            MediaError::Bad(why) => ApiError::BadRequest(why),
            MediaError::NoTranscoder => ApiError::Unavailable {
                retry_after_secs: 3600,
            },
        }
    }
}

/// Webhook management's answers as HTTP.
impl From<crate::webhooks::WebhookError> for ApiError {
    fn from(e: crate::webhooks::WebhookError) -> ApiError {
        use crate::webhooks::WebhookError;
        match e {
            WebhookError::InvalidUrl(why) => ApiError::InvalidWebhookUrl(why),
            e @ WebhookError::InvalidEvent(_) => ApiError::BadRequest(e.to_string()),
            WebhookError::Store(e) => ApiError::internal(e),
        }
    }
}

/// The registry's answers as HTTP: the one place a refused or failed registry call gets its
/// status (mailbox failures included: 503).
impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> ApiError {
        match e {
            RegistryError::Unknown => ApiError::UnknownSession,
            RegistryError::Session(SessionError::NoQr) => ApiError::NoQr,
            RegistryError::Session(SessionError::AlreadyConnected) => ApiError::AlreadyConnected,
            RegistryError::Session(SessionError::BridgeUnavailable) => ApiError::BridgeUnavailable,
            RegistryError::Session(SessionError::Restarting) => ApiError::Unavailable {
                retry_after_secs: RETRY_AFTER_SECS,
            },
            RegistryError::Session(SessionError::NotConnected) => ApiError::NotConnected,
            RegistryError::Session(SessionError::SendInProgress) => ApiError::SendInProgress,
            RegistryError::Session(SessionError::SendOutcomeUnknown { message_id }) => {
                ApiError::SendOutcomeUnknown { message_id }
            }
            RegistryError::Session(SessionError::RateLimited { retry_after_secs }) => {
                ApiError::RateLimited { retry_after_secs }
            }
            RegistryError::Session(SessionError::SendFailed(why)) => {
                ApiError::SendFailed(format!("WhatsApp Web did not take the message: {why}"))
            }
            RegistryError::Session(SessionError::MediaRefused(why)) => ApiError::MediaRefused(why),
            RegistryError::Store(e) => ApiError::internal(e),
            RegistryError::Session(e) => ApiError::internal(e),
            RegistryError::TooManySessions { limit } => ApiError::TooManySessions {
                limit,
                retry_after_secs: RETRY_START_SECS,
            },
            RegistryError::TooManyPending { limit } => ApiError::TooManyPending {
                limit,
                retry_after_secs: RETRY_START_SECS,
            },
            RegistryError::RateLimited { retry_after } => ApiError::RateLimited {
                retry_after_secs: retry_after.as_secs().max(1),
            },
            RegistryError::Removing => ApiError::BeingRemoved,
            RegistryError::ShuttingDown => ApiError::Unavailable {
                retry_after_secs: RETRY_AFTER_SECS,
            },
            RegistryError::Mailbox(e) => {
                log::warn!("registry mailbox: {e}");
                ApiError::Unavailable {
                    retry_after_secs: RETRY_AFTER_SECS,
                }
            }
        }
    }
}

/// Every refusal's body.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The stable code: invalid_user_id, invalid_slot, bad_request, unauthorized, forbidden,
    /// not_found, unknown_session, unknown_chat, unknown_media, media_removed,
    /// range_not_satisfiable, no_qr, invalid_phone_number, already_connected,
    /// bridge_unavailable, not_connected, send_in_progress, send_outcome_unknown, send_failed,
    /// media_too_large, unsupported_media, media_unavailable, media_refused, invalid_webhook_url,
    /// too_many_sessions, too_many_pending, rate_limited, unavailable, not_clustered,
    /// unknown_node, no_other_node, owner_unreachable, being_removed, backup_in_progress,
    /// internal.
    #[schema(example = "unknown_session")]
    pub error: &'static str,
    /// A human sentence; never internals.
    #[schema(example = "this session was never started")]
    pub message: String,
}

impl ApiError {
    /// The stable, documented code of each error.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidUserId(_) => "invalid_user_id",
            ApiError::InvalidSlot(_) => "invalid_slot",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::NotFound => "not_found",
            ApiError::UnknownSession => "unknown_session",
            ApiError::UnknownChat => "unknown_chat",
            ApiError::UnknownMedia => "unknown_media",
            ApiError::MediaRemoved => "media_removed",
            ApiError::RangeNotSatisfiable { .. } => "range_not_satisfiable",
            ApiError::NoQr => "no_qr",
            ApiError::InvalidPhoneNumber(_) => "invalid_phone_number",
            ApiError::AlreadyConnected => "already_connected",
            ApiError::BridgeUnavailable => "bridge_unavailable",
            ApiError::NotConnected => "not_connected",
            ApiError::SendInProgress => "send_in_progress",
            ApiError::SendOutcomeUnknown { .. } => "send_outcome_unknown",
            ApiError::SendFailed(_) => "send_failed",
            ApiError::MediaTooLarge { .. } => "media_too_large",
            ApiError::UnsupportedMedia(_) => "unsupported_media",
            ApiError::MediaUnavailable(_) => "media_unavailable",
            ApiError::MediaRefused(_) => "media_refused",
            ApiError::InvalidWebhookUrl(_) => "invalid_webhook_url",
            ApiError::TooManySessions { .. } => "too_many_sessions",
            ApiError::TooManyPending { .. } => "too_many_pending",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::NotClustered => "not_clustered",
            ApiError::UnknownNode => "unknown_node",
            ApiError::NoOtherNode => "no_other_node",
            ApiError::OwnerUnreachable => "owner_unreachable",
            ApiError::BeingRemoved => "being_removed",
            ApiError::BackupInProgress => "backup_in_progress",
            ApiError::Internal(_) => "internal",
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::TooManySessions {
                retry_after_secs, ..
            }
            | ApiError::TooManyPending {
                retry_after_secs, ..
            }
            | ApiError::RateLimited { retry_after_secs }
            | ApiError::Unavailable { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidUserId(_)
            | ApiError::InvalidSlot(_)
            | ApiError::InvalidPhoneNumber(_)
            | ApiError::InvalidWebhookUrl(_)
            | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound
            | ApiError::UnknownSession
            | ApiError::UnknownChat
            | ApiError::UnknownMedia
            | ApiError::UnknownNode => StatusCode::NOT_FOUND,
            ApiError::MediaRemoved => StatusCode::GONE,
            ApiError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::NotClustered
            | ApiError::NoOtherNode
            | ApiError::BeingRemoved
            | ApiError::BackupInProgress => StatusCode::CONFLICT,
            ApiError::OwnerUnreachable => StatusCode::BAD_GATEWAY,
            ApiError::NoQr
            | ApiError::AlreadyConnected
            | ApiError::BridgeUnavailable
            | ApiError::NotConnected
            | ApiError::SendInProgress
            | ApiError::SendOutcomeUnknown { .. } => StatusCode::CONFLICT,
            ApiError::SendFailed(_) => StatusCode::BAD_GATEWAY,
            ApiError::MediaTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMedia(_)
            | ApiError::MediaUnavailable(_)
            | ApiError::MediaRefused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManySessions { .. }
            | ApiError::TooManyPending { .. }
            | ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(cause) = self {
            log::error!("internal error: {}", crate::chain(cause.as_ref()));
        }
        let mut res = HttpResponse::build(self.status_code());
        if let Some(secs) = self.retry_after() {
            res.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        if matches!(self, ApiError::Unauthorized) {
            res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if let ApiError::RangeNotSatisfiable { size } = self {
            res.insert_header((header::CONTENT_RANGE, format!("bytes */{size}")));
        }
        res.json(ErrorBody {
            error: self.code(),
            message: self.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let res = ApiError::Internal("password=hunter2 at db".into()).error_response();
        // (the cause goes to the log only)
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = actix_web::body::to_bytes(res.into_body());
        let body = futures_util::FutureExt::now_or_never(body)
            .unwrap()
            .unwrap();
        let text = std::str::from_utf8(&body).unwrap();
        assert_eq!(text, r#"{"error":"internal","message":"internal error"}"#);
    }

    #[test]
    fn limits_carry_retry_after() {
        let res = ApiError::TooManySessions {
            limit: 5,
            retry_after_secs: 10,
        }
        .error_response();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.headers().get(header::RETRY_AFTER).unwrap(), "10");
    }
}
