//! The session as the API and the events show it.

use std::sync::Arc;

use serde::Serialize;

use crate::domain::{SessionKey, SessionState, Slot, UserId};
use crate::store::SessionRow;

/// A QR payload and its PNG as a `data:` URL, rendered once per payload.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QrView {
    /// What the QR code encodes.
    pub payload: String,
    /// `data:image/png;base64,…`, large enough to scan from a screen.
    pub data_url: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    #[serde(skip)]
    pub key: SessionKey,
    pub user_id: UserId,
    pub slot: Slot,
    pub state: SessionState,
    pub is_connected: bool,
    pub connected_number: Option<String>,
    #[schema(value_type = Option<QrView>)]
    pub qr: Option<Arc<QrView>>,
    /// In state `pairing`: the code to enter on the phone (`null` until WhatsApp gave one; it
    /// follows by SSE).
    #[schema(example = "ABCD-EFGH")]
    pub pairing_code: Option<String>,
    /// While connected, with WA-JS: whether the phone is online.
    pub online: Option<bool>,
    /// Which page signals drive the session: `wa-js` (WhatsApp Web's own functions) or `dom`
    /// (the fallback: selectors and storage keys); `null` without a browser or while WA-JS is
    /// awaited.
    #[schema(value_type = Option<String>, example = "wa-js")]
    pub bridge: Option<crate::browser::Source>,
    pub restarts: u32,
    pub last_error: Option<String>,
    /// RFC 3339, UTC.
    pub updated_at: String,
    /// Only in a logout's answer: whether WhatsApp was told, so the phone's list of linked
    /// devices drops this one (a stopped linked session is started on its profile for that).
    /// `false` when it could not be (no WA-JS, the page not linked any more): remove the device
    /// on the phone (Settings → Linked devices); the login is gone on every node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unlinked_on_whats_app: Option<bool>,
}

impl Session {
    /// A session as its stored row describes it, after a daemon restart (no browser yet).
    pub fn from_row(row: &SessionRow) -> Session {
        Session::stored(row, row.state.at_boot())
    }

    /// A session another node runs, as that node last wrote it (cluster mode).
    pub fn as_written(row: &SessionRow) -> Session {
        Session::stored(row, row.state)
    }

    fn stored(row: &SessionRow, state: SessionState) -> Session {
        Session {
            key: row.key.clone(),
            user_id: row.key.user_id().clone(),
            slot: row.key.slot(),
            state,
            is_connected: state == SessionState::Connected,
            connected_number: row.connected_number.clone(),
            qr: None,
            pairing_code: None,
            online: None,
            bridge: None,
            restarts: row.restarts,
            last_error: row.last_error.clone(),
            updated_at: rfc3339(row.updated_ms),
            unlinked_on_whats_app: None,
        }
    }
}

/// Unix epoch milliseconds as RFC 3339 (`2026-11-28T12:00:00.000Z`).
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (H. Hinnant), proleptic Gregorian.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_epoch_millis() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_795_867_200_000), "2026-11-28T12:00:00.000Z");
    }
}
