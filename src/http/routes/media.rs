//! Incoming media (docs/media.md): the bytes behind a signed link or the user's own
//! credentials, a fresh link, and a download tried again.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::actors::registry::RegistryHandle;
use crate::auth::{Auth, Principal};
use crate::domain::{SessionKey, Slot, UserId};
use crate::events::{MediaEvent, MediaInfo, PageMedia};
use crate::http::error::ErrorBody;
use crate::http::extract::SessionPath;
use crate::http::openapi::{
    BadSession, Forbidden, MediaGone, MediaRefused, SendConflict, TooMany, Unauthorized,
    Unavailable, UnknownMedia,
};
use crate::http::ApiError;
use crate::media::Media;
use crate::store::{MediaRow, MediaState};

crate::http::route_table! {
    get "/api/media/{userId}/{slot}/{mediaId}" => media_bytes,
    post "/api/media/{userId}/{slot}/{mediaId}/url" => media_link,
    post "/api/media/{userId}/{slot}/{mediaId}/retry" => media_retry,
}

/// A media id: 32 lower-case hex digits (anything else names no media).
fn media_id(req: &HttpRequest) -> Result<String, ApiError> {
    let raw = req.match_info().get("mediaId").unwrap_or_default();
    let ok = raw.len() == 32 && raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    ok.then(|| raw.to_owned()).ok_or(ApiError::UnknownMedia)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LinkQuery {
    /// Unix seconds after which the link no longer works.
    expires: Option<i64>,
    /// The daemon's signature of the link (hex).
    signature: Option<String>,
}

async fn row_of(media: &Media, key: &SessionKey, id: &str) -> Result<MediaRow, ApiError> {
    media
        .store()
        .media(key, id)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::UnknownMedia)
}

/// One range of `size` bytes from a `Range` header (`bytes=a-b`, `bytes=a-`, `bytes=-n`): `None`
/// for none or one this route does not take (several ranges: the whole content is answered).
fn range(req: &HttpRequest, size: u64) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(raw) = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(None);
    };
    let Some(spec) = raw.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec
        .split_once('-')
        .ok_or(ApiError::RangeNotSatisfiable { size })?;
    let unsatisfiable = ApiError::RangeNotSatisfiable { size };
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n
                .parse()
                .map_err(|_| ApiError::RangeNotSatisfiable { size })?;
            (size.saturating_sub(n), size)
        }
        (a, "") => (
            a.parse()
                .map_err(|_| ApiError::RangeNotSatisfiable { size })?,
            size,
        ),
        (a, b) => {
            let a: u64 = a
                .parse()
                .map_err(|_| ApiError::RangeNotSatisfiable { size })?;
            let b: u64 = b
                .parse()
                .map_err(|_| ApiError::RangeNotSatisfiable { size })?;
            if b < a {
                return Err(unsatisfiable);
            }
            (a, (b + 1).min(size))
        }
    };
    if start >= end {
        return Err(unsatisfiable);
    }
    Ok(Some((start, end)))
}

/// `type/subtype` of token characters (a stored type that is anything else is not sent).
fn plain_mime(m: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    let base = m.split(';').next().unwrap_or_default().trim();
    m.len() <= 128
        && !m.bytes().any(|b| b.is_ascii_control())
        && base
            .split_once('/')
            .is_some_and(|(t, s)| token(t) && token(s))
}

/// A file name for `content-disposition` (quotes, controls and path separators replaced).
fn disposition(row: &MediaRow) -> String {
    let name: String = row
        .filename
        .as_deref()
        .unwrap_or("media")
        .chars()
        .map(|c| match c {
            '"' | '\\' | '/' => '_',
            c if c.is_control() || !c.is_ascii() => '_',
            c => c,
        })
        .collect();
    format!("attachment; filename=\"{name}\"")
}

/// The media's bytes: with the link's signature, or with the user's own credentials.
#[utoipa::path(
    get,
    path = "/api/media/{userId}/{slot}/{mediaId}",
    tag = "messages",
    params(("userId" = UserId, Path), ("slot" = Slot, Path), ("mediaId" = String, Path), LinkQuery),
    security((), ("bearer" = []), ("stackAccessToken" = [])),
    responses(
        (status = 200, description = "The bytes, with the stored `content-type` and `content-disposition: attachment`", content_type = "application/octet-stream"),
        (status = 206, description = "The requested range (`Range: bytes=…`; one range)"),
        (status = 416, description = "`range_not_satisfiable`", body = ErrorBody),
        BadSession, Unauthorized, Forbidden, UnknownMedia, MediaGone,
    ),
)]
async fn media_bytes(
    req: HttpRequest,
    SessionPath(key): SessionPath,
    query: web::Query<LinkQuery>,
    auth: web::Data<Auth>,
    media: web::Data<Media>,
) -> Result<HttpResponse, ApiError> {
    // The same answer for an unknown media as for one the caller may not see.
    match (&query.expires, &query.signature) {
        (Some(expires), Some(signature)) => {
            let id = media_id(&req).map_err(|_| ApiError::Forbidden)?;
            if !media.verify(key.user_id(), key.slot(), &id, *expires, signature) {
                return Err(ApiError::Forbidden);
            }
        }
        _ => auth
            .authenticate(req.headers())
            .await?
            .authorize_user(key.user_id())?,
    }
    let id = media_id(&req)?;
    let row = row_of(&media, &key, &id).await?;
    let (Some(sha256), Some(size), MediaState::Stored) = (&row.sha256, row.size, row.state) else {
        return Err(match row.state {
            MediaState::Removed => ApiError::MediaRemoved,
            _ => ApiError::UnknownMedia,
        });
    };
    let part = range(&req, size)?;
    let (start, end) = part.unwrap_or((0, size));
    let mut res = match part {
        Some(_) => HttpResponse::PartialContent(),
        None => HttpResponse::Ok(),
    };
    res.insert_header((
        header::CONTENT_TYPE,
        row.mimetype
            .as_deref()
            .filter(|m| plain_mime(m))
            .unwrap_or("application/octet-stream"),
    ))
    .insert_header((header::CONTENT_DISPOSITION, disposition(&row)))
    .insert_header((header::ACCEPT_RANGES, "bytes"))
    .insert_header((header::CACHE_CONTROL, "private, max-age=0"))
    .insert_header((header::ETAG, format!("\"{sha256}\"")))
    .no_chunking(end - start);
    if part.is_some() {
        res.insert_header((
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", end - 1),
        ));
    }
    Ok(res.streaming(media.blobs().read(sha256, start, end)))
}

/// A fresh link to the media.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MediaLink {
    /// `GET` it without other credentials until `expiresAt`.
    url: String,
    /// Unix seconds.
    expires_at: i64,
}

/// Mints a fresh signed link (`MEDIA_URL_TTL_SECS`) to a stored media.
#[utoipa::path(
    post,
    path = "/api/media/{userId}/{slot}/{mediaId}/url",
    tag = "messages",
    params(("userId" = UserId, Path), ("slot" = Slot, Path), ("mediaId" = String, Path)),
    security(("bearer" = []), ("stackAccessToken" = [])),
    responses((status = 200, description = "The link", body = MediaLink), BadSession, Unauthorized, Forbidden, UnknownMedia, MediaGone),
)]
async fn media_link(
    req: HttpRequest,
    SessionPath(key): SessionPath,
    who: Principal,
    media: web::Data<Media>,
) -> Result<HttpResponse, ApiError> {
    who.authorize_user(key.user_id())?;
    let id = media_id(&req)?;
    let row = row_of(&media, &key, &id).await?;
    match row.state {
        MediaState::Stored => {}
        MediaState::Removed => return Err(ApiError::MediaRemoved),
        MediaState::Failed => return Err(ApiError::UnknownMedia),
    }
    let (url, expires_at) = media.link(key.user_id(), key.slot(), &id);
    Ok(HttpResponse::Ok().json(MediaLink { url, expires_at }))
}

/// The media as stored now.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MediaAnswer {
    media: MediaInfo,
}

/// Downloads a media whose download failed again, through the session's page (linked; one
/// from `SEND_PER_MINUTE`); once stored, a `message.media` event follows. A stored media answers
/// as it is.
#[utoipa::path(
    post,
    path = "/api/media/{userId}/{slot}/{mediaId}/retry",
    tag = "messages",
    params(("userId" = UserId, Path), ("slot" = Slot, Path), ("mediaId" = String, Path)),
    security(("bearer" = []), ("stackAccessToken" = [])),
    responses((status = 200, description = "Stored (with a fresh `url`)", body = MediaAnswer), BadSession, Unauthorized, Forbidden, UnknownMedia, MediaGone, SendConflict, MediaRefused, TooMany, Unavailable),
)]
async fn media_retry(
    req: HttpRequest,
    SessionPath(key): SessionPath,
    who: Principal,
    media: web::Data<Media>,
    registry: web::Data<RegistryHandle>,
) -> Result<HttpResponse, ApiError> {
    who.authorize_user(key.user_id())?;
    let id = media_id(&req)?;
    let row = row_of(&media, &key, &id).await?;
    let answer = |row: &MediaRow| {
        let mut info = Media::info(row);
        info.url = Some(media.link(key.user_id(), key.slot(), &id).0);
        HttpResponse::Ok().json(MediaAnswer { media: info })
    };
    match row.state {
        MediaState::Stored => return Ok(answer(&row)),
        MediaState::Removed => return Err(ApiError::MediaRemoved),
        MediaState::Failed => {}
    }
    let page = registry.page(key.clone()).await?;
    let meta = PageMedia {
        mimetype: row.mimetype.clone(),
        filename: row.filename.clone(),
        size: row.size,
    };
    let media_arc = media.clone().into_inner();
    let (stored, _pending) = media_arc
        .fetch(&key, Some(&page), &row.message_id, &meta)
        .await;
    if stored.state != MediaState::Stored {
        return Err(ApiError::MediaUnavailable(format!(
            "the media is still not stored: {}",
            stored.error.as_deref().unwrap_or("unknown")
        )));
    }
    let chat_id = media
        .store()
        .media_event_payload(&id)
        .await
        .ok()
        .flatten()
        .and_then(|p| serde_json::from_str::<serde_json::Value>(&p).ok())
        .and_then(|p| p["chatId"].as_str().map(str::to_owned));
    let mut stored = stored;
    stored.created_ms = row.created_ms;
    let event = MediaEvent {
        user_id: key.user_id().clone(),
        slot: key.slot(),
        message_id: row.message_id.clone(),
        chat_id,
        media: Media::info(&stored),
    };
    registry.record_media(event, stored.clone()).await?;
    Ok(answer(&stored))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn ranges() {
        let with = |r: &str| {
            TestRequest::default()
                .insert_header((header::RANGE, r))
                .to_http_request()
        };
        assert_eq!(
            range(&TestRequest::default().to_http_request(), 10).unwrap(),
            None
        );
        assert_eq!(range(&with("bytes=0-3"), 10).unwrap(), Some((0, 4)));
        assert_eq!(range(&with("bytes=4-"), 10).unwrap(), Some((4, 10)));
        assert_eq!(range(&with("bytes=-3"), 10).unwrap(), Some((7, 10)));
        assert_eq!(range(&with("bytes=5-100"), 10).unwrap(), Some((5, 10)));
        assert_eq!(range(&with("bytes=0-1,4-5"), 10).unwrap(), None);
        for bad in ["bytes=10-", "bytes=5-2", "bytes=x-3", "bytes=-0"] {
            assert!(range(&with(bad), 10).is_err(), "{bad}");
        }
    }
}
