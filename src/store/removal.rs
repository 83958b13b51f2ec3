//! Removing a session's data for good (a purge, a user's deletion; docs/operations.md), and what
//! the clean-up reads to choose its candidates.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Text};

use super::connection::DbConnection;
use super::schema::{
    deliveries, media, outbox_events, sent_messages, session_events, whatsapp_bots,
};
use super::{slot_value, Store, StoreError};
use crate::domain::{SessionKey, UserId};

/// What a removal took away.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct Removed {
    /// The `whatsapp_bots` row.
    pub rows: u64,
    /// Stored events (messages, acks, state changes).
    pub events: u64,
    pub deliveries: u64,
    /// Idempotency keys of sends.
    pub send_keys: u64,
    /// Media rows, and the bytes of the contents no other row names.
    pub media: u64,
    pub media_bytes: u64,
    /// Audit events (a user's deletion; a purge keeps the trail).
    pub audit_events: u64,
    /// Cluster: login snapshots (the logout tombstone stays).
    pub snapshots: u64,
    /// Contents no stored media row names any more: the caller deletes their bytes.
    #[serde(skip)]
    pub freed: Vec<String>,
}

impl Removed {
    pub fn add(&mut self, other: Removed) {
        self.rows += other.rows;
        self.events += other.events;
        self.deliveries += other.deliveries;
        self.send_keys += other.send_keys;
        self.media += other.media;
        self.media_bytes += other.media_bytes;
        self.audit_events += other.audit_events;
        self.snapshots += other.snapshots;
        self.freed.extend(other.freed);
    }
}

/// When a session was last linked and last unlinked from WhatsApp's side, by the audit trail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkMarks {
    pub connected_ms: Option<i64>,
    pub unlinked_ms: Option<i64>,
}

impl LinkMarks {
    /// The last word was an unlink from the phone or by WhatsApp.
    pub fn unlinked_last(&self) -> bool {
        match (self.unlinked_ms, self.connected_ms) {
            (Some(u), Some(c)) => u >= c,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

#[derive(QueryableByName)]
struct Mark {
    #[diesel(sql_type = Text, column_name = "userId")]
    user_id: String,
    #[diesel(sql_type = Integer)]
    slot: i32,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = BigInt)]
    at: i64,
}

impl Store {
    /// Deletes everything stored for `key` in one transaction: its row, stored events and their
    /// deliveries, send keys, media rows; its audit trail when `audit`; in a cluster its
    /// snapshot's bytes (the logout tombstone stays: an old profile elsewhere must not come back).
    pub async fn remove_session(
        &self,
        key: &SessionKey,
        audit: bool,
    ) -> Result<Removed, StoreError> {
        let key = key.clone();
        self.run(move |conn, ctx| {
            let postgres = matches!(conn, DbConnection::Pg(_));
            let (user, slot) = (key.user_id().as_str().to_owned(), slot_value(&key));
            conn.transaction(|conn| -> QueryResult<Removed> {
                let mut removed = Removed {
                    deliveries: diesel::delete(
                        deliveries::table
                            .filter(deliveries::user_id.eq(&user))
                            .filter(deliveries::slot.eq(slot)),
                    )
                    .execute(conn)? as u64,
                    events: diesel::delete(
                        outbox_events::table
                            .filter(outbox_events::user_id.eq(&user))
                            .filter(outbox_events::slot.eq(slot)),
                    )
                    .execute(conn)? as u64,
                    send_keys: diesel::delete(
                        sent_messages::table
                            .filter(sent_messages::user_id.eq(&user))
                            .filter(sent_messages::slot.eq(slot)),
                    )
                    .execute(conn)? as u64,
                    rows: diesel::delete(
                        whatsapp_bots::table
                            .filter(whatsapp_bots::user_id.eq(&user))
                            .filter(whatsapp_bots::slot.eq(slot)),
                    )
                    .execute(conn)? as u64,
                    ..Removed::default()
                };
                let contents: Vec<(Option<String>, Option<i64>, String)> = media::table
                    .filter(media::user_id.eq(&user))
                    .filter(media::slot.eq(slot))
                    .select((media::sha256, media::size, media::state))
                    .load(conn)?;
                removed.media = diesel::delete(
                    media::table
                        .filter(media::user_id.eq(&user))
                        .filter(media::slot.eq(slot)),
                )
                .execute(conn)? as u64;
                let mut shas: Vec<(String, i64)> = contents
                    .into_iter()
                    .filter(|(_, _, state)| state == "stored")
                    .filter_map(|(sha, size, _)| Some((sha?, size.unwrap_or(0))))
                    .collect();
                shas.sort();
                shas.dedup();
                let freed = super::media::unreferenced(
                    conn,
                    shas.iter().map(|(s, _)| s.clone()).collect(),
                )?;
                removed.media_bytes = shas
                    .iter()
                    .filter(|(s, _)| freed.contains(s))
                    .map(|(_, n)| *n as u64)
                    .sum();
                removed.freed = freed;
                if audit {
                    removed.audit_events = diesel::delete(
                        session_events::table
                            .filter(session_events::user_id.eq(&user))
                            .filter(session_events::slot.eq(slot)),
                    )
                    .execute(conn)? as u64;
                }
                if postgres {
                    removed.snapshots = diesel::sql_query(
                        r#"DELETE FROM session_snapshot_blobs WHERE "userId" = $1 AND slot = $2"#,
                    )
                    .bind::<Text, _>(&user)
                    .bind::<Integer, _>(slot)
                    .execute(conn)? as u64;
                    diesel::sql_query(
                        r#"UPDATE session_snapshots SET bytes = NULL, blob = NULL
                           WHERE "userId" = $1 AND slot = $2"#,
                    )
                    .bind::<Text, _>(&user)
                    .bind::<Integer, _>(slot)
                    .execute(conn)?;
                }
                Ok(removed)
            })
            .map_err(|e| ctx.query(e))
        })
        .await
    }

    /// The slots `user` has anything stored for (a row, events, media, send keys, audit — but
    /// the `deleted` events a user's deletion leaves, so a second deletion finds nothing).
    pub async fn user_slots(&self, user: &UserId) -> Result<Vec<SessionKey>, StoreError> {
        let user = user.clone();
        self.run(move |conn, ctx| {
            #[derive(QueryableByName)]
            struct SlotRow {
                #[diesel(sql_type = Integer)]
                slot: i32,
            }
            let mut sql = String::new();
            for (i, table) in [
                "whatsapp_bots",
                "outbox_events",
                "media",
                "sent_messages",
                "session_events",
                "deliveries",
            ]
            .iter()
            .enumerate()
            {
                if i > 0 {
                    sql.push_str(" UNION ");
                }
                sql.push_str(&format!(
                    r#"SELECT slot FROM {table} WHERE "userId" = $1 AND slot IS NOT NULL"#
                ));
                if *table == "session_events" {
                    sql.push_str(" AND kind <> 'deleted'");
                }
            }
            let rows: Vec<SlotRow> = diesel::sql_query(sql)
                .bind::<Text, _>(user.as_str())
                .load(conn)
                .map_err(|e| ctx.query(e))?;
            let mut keys: Vec<SessionKey> = rows
                .into_iter()
                .filter_map(|r| ctx.key_of(Some(user.as_str()), Some(r.slot)))
                .collect();
            keys.sort();
            keys.dedup();
            Ok(keys)
        })
        .await
    }

    /// Per session, when it was last linked and last unlinked from WhatsApp's side (`connected`
    /// and `unlinked` in the audit trail).
    pub async fn link_marks(&self) -> Result<HashMap<SessionKey, LinkMarks>, StoreError> {
        self.run(|conn, ctx| {
            let rows: Vec<Mark> = diesel::sql_query(
                r#"SELECT "userId", slot, kind, max(at_ms) AS at FROM session_events
                   WHERE kind IN ('connected', 'unlinked') GROUP BY "userId", slot, kind"#,
            )
            .load(conn)
            .map_err(|e| ctx.query(e))?;
            let mut marks: HashMap<SessionKey, LinkMarks> = HashMap::new();
            for r in rows {
                let Some(key) = ctx.key_of(Some(&r.user_id), Some(r.slot)) else {
                    continue;
                };
                let mark = marks.entry(key).or_default();
                match r.kind.as_str() {
                    "connected" => mark.connected_ms = Some(r.at),
                    _ => mark.unlinked_ms = Some(r.at),
                }
            }
            Ok(marks)
        })
        .await
    }

    /// Bytes of the stored media of `key` (what a purge frees, at most).
    pub async fn media_bytes_of(&self, key: &SessionKey) -> Result<u64, StoreError> {
        let key = key.clone();
        self.run(move |conn, ctx| {
            let sizes: Vec<Option<i64>> = media::table
                .filter(media::user_id.eq(key.user_id().as_str()))
                .filter(media::slot.eq(slot_value(&key)))
                .filter(media::state.eq("stored"))
                .select(media::size)
                .load(conn)
                .map_err(|e| ctx.query(e))?;
            Ok(sizes.into_iter().flatten().map(|n| n as u64).sum())
        })
        .await
    }
}
