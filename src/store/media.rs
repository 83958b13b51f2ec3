//! Incoming media rows, their bytes in cluster mode (`media_blobs`), and the daemon's own
//! secrets (docs/media.md).
//!
//! A media row is written in the transaction of the event that announces it (`append_event`
//! with [`MediaRow`]): no event without its row, no row without its event.

use std::collections::HashSet;

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::connection::DbConnection;
use super::schema::{daemon_secrets, deliveries, media, media_blobs, outbox_events};
use super::{slot_value, Store, StoreError};
use crate::domain::{SessionKey, UserId};

/// Bytes per `media_blobs` row.
pub const BLOB_PART_BYTES: usize = 1 << 20;

/// Where a media row stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaState {
    /// Its bytes are stored (`sha256`).
    Stored,
    /// The download failed (`error` says why); a retry may store it.
    Failed,
    /// Its bytes were dropped (retention or quota).
    Removed,
}

impl MediaState {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaState::Stored => "stored",
            MediaState::Failed => "failed",
            MediaState::Removed => "removed",
        }
    }

    fn parse(s: &str) -> MediaState {
        match s {
            "stored" => MediaState::Stored,
            "removed" => MediaState::Removed,
            _ => MediaState::Failed,
        }
    }
}

/// One media message of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRow {
    pub id: String,
    pub key: SessionKey,
    pub message_id: String,
    pub state: MediaState,
    pub sha256: Option<String>,
    pub size: Option<u64>,
    pub mimetype: Option<String>,
    pub filename: Option<String>,
    pub error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = media)]
struct MediaRecord {
    id: String,
    message_id: String,
    state: String,
    sha256: Option<String>,
    size: Option<i64>,
    mimetype: Option<String>,
    filename: Option<String>,
    error: Option<String>,
    created_ms: i64,
    updated_ms: i64,
}

/// Bytes and counts of the stored media, per state (for `/metrics`; never per user).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaStats {
    /// Stored, with a webhook delivery of its event still pending.
    pub owed_bytes: u64,
    /// Stored, every delivery of its event ended.
    pub delivered_bytes: u64,
    pub stored: u64,
    pub failed: u64,
    pub removed: u64,
}

/// Writes `row` (its announcing event `event_id`) inside the caller's transaction: a new row, or
/// the row of a retry.
pub(super) fn upsert_media(
    conn: &mut DbConnection,
    row: &MediaRow,
    event_id: i64,
) -> Result<(), diesel::result::Error> {
    let values = (
        media::state.eq(row.state.as_str()),
        media::event_id.eq(Some(event_id)),
        media::sha256.eq(row.sha256.as_deref()),
        media::size.eq(row.size.map(|s| s as i64)),
        media::mimetype.eq(row.mimetype.as_deref()),
        media::filename.eq(row.filename.as_deref()),
        media::error.eq(row.error.as_deref()),
        media::updated_ms.eq(row.updated_ms),
    );
    let updated = diesel::update(media::table.filter(media::id.eq(&row.id)))
        .set(values)
        .execute(conn)?;
    if updated == 0 {
        diesel::insert_into(media::table)
            .values((
                media::id.eq(&row.id),
                media::user_id.eq(row.key.user_id().as_str()),
                media::slot.eq(slot_value(&row.key)),
                media::message_id.eq(&row.message_id),
                media::created_ms.eq(row.created_ms),
                values,
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// Media rows whose event has no pending delivery.
macro_rules! deliveries_ended {
    () => {
        media::table.filter(diesel::dsl::not(diesel::dsl::exists(
            deliveries::table
                .filter(deliveries::status.eq("pending"))
                .filter(deliveries::event_id.nullable().eq(media::event_id)),
        )))
    };
}

impl Store {
    /// The media `id` of `key`'s session (`None`: no such media, or another session's).
    pub async fn media(&self, key: &SessionKey, id: &str) -> Result<Option<MediaRow>, StoreError> {
        let (key, id) = (key.clone(), id.to_owned());
        self.run(move |conn, ctx| {
            let record: Option<MediaRecord> = media::table
                .filter(media::id.eq(&id))
                .filter(media::user_id.eq(key.user_id().as_str()))
                .filter(media::slot.eq(slot_value(&key)))
                .select(MediaRecord::as_select())
                .first(conn)
                .optional()
                .map_err(|e| ctx.query(e))?;
            Ok(record.map(|r| MediaRow {
                id: r.id,
                key: key.clone(),
                message_id: r.message_id,
                state: MediaState::parse(&r.state),
                sha256: r.sha256,
                size: r.size.map(|s| s.max(0) as u64),
                mimetype: r.mimetype,
                filename: r.filename,
                error: r.error,
                created_ms: r.created_ms,
                updated_ms: r.updated_ms,
            }))
        })
        .await
    }

    /// Whether `key`'s session stored an event with this dedupe key (a message id already
    /// recorded is not downloaded again).
    pub async fn has_event(&self, key: &SessionKey, dedupe: &str) -> Result<bool, StoreError> {
        let (key, dedupe) = (key.clone(), dedupe.to_owned());
        self.run(move |conn, ctx| {
            outbox_events::table
                .filter(outbox_events::user_id.eq(key.user_id().as_str()))
                .filter(outbox_events::slot.eq(slot_value(&key)))
                .filter(outbox_events::dedupe.eq(&dedupe))
                .select(outbox_events::id)
                .first::<i64>(conn)
                .optional()
                .map(|id| id.is_some())
                .map_err(|e| ctx.query(e))
        })
        .await
    }

    /// The payload of the event that announced media `id` (its message's chat for
    /// `message.media`).
    pub async fn media_event_payload(&self, id: &str) -> Result<Option<String>, StoreError> {
        let id = id.to_owned();
        self.run(move |conn, ctx| {
            let event: Option<Option<i64>> = media::table
                .filter(media::id.eq(&id))
                .select(media::event_id)
                .first(conn)
                .optional()
                .map_err(|e| ctx.query(e))?;
            let Some(Some(event)) = event else {
                return Ok(None);
            };
            outbox_events::table
                .filter(outbox_events::id.eq(event))
                .select(outbox_events::payload)
                .first(conn)
                .optional()
                .map_err(|e| ctx.query(e))
        })
        .await
    }

    /// Bytes of `user`'s stored media, each content once.
    pub async fn media_usage(&self, user: &UserId) -> Result<u64, StoreError> {
        let user = user.as_str().to_owned();
        self.run(move |conn, ctx| {
            let rows: Vec<(Option<String>, Option<i64>)> = media::table
                .filter(media::user_id.eq(&user))
                .filter(media::state.eq(MediaState::Stored.as_str()))
                .select((media::sha256, media::size))
                .load(conn)
                .map_err(|e| ctx.query(e))?;
            let mut seen = HashSet::new();
            Ok(rows
                .into_iter()
                .filter(|(sha, _)| seen.insert(sha.clone()))
                .map(|(_, size)| size.unwrap_or(0).max(0) as u64)
                .sum())
        })
        .await
    }

    /// Removes `user`'s oldest stored media whose deliveries all ended until the user's stored
    /// bytes plus `need` fit in `quota`. Whether it fits now; the contents no row names any more
    /// (their bytes can go).
    pub async fn make_room(
        &self,
        user: &UserId,
        need: u64,
        quota: u64,
        now: i64,
    ) -> Result<(bool, Vec<String>), StoreError> {
        let user = user.as_str().to_owned();
        self.run(move |conn, ctx| {
            conn.transaction(|conn| {
                let stored: Vec<(String, Option<String>, Option<i64>)> = media::table
                    .filter(media::user_id.eq(&user))
                    .filter(media::state.eq(MediaState::Stored.as_str()))
                    .select((media::id, media::sha256, media::size))
                    .load(conn)?;
                let mut seen = HashSet::new();
                let mut used: u64 = stored
                    .iter()
                    .filter(|(_, sha, _)| seen.insert(sha.clone()))
                    .map(|(_, _, size)| size.unwrap_or(0).max(0) as u64)
                    .sum();
                if used + need <= quota {
                    return Ok((true, Vec::new()));
                }
                let removable: Vec<(String, Option<String>)> = deliveries_ended!()
                    .filter(media::user_id.eq(&user))
                    .filter(media::state.eq(MediaState::Stored.as_str()))
                    .order(media::updated_ms.asc())
                    .select((media::id, media::sha256))
                    .load(conn)?;
                let mut freed = Vec::new();
                for (id, sha) in removable {
                    if used + need <= quota {
                        break;
                    }
                    remove(conn, &id, now)?;
                    // The user pays for a content while any of their rows names it.
                    let still: i64 = media::table
                        .filter(media::user_id.eq(&user))
                        .filter(media::state.eq(MediaState::Stored.as_str()))
                        .filter(media::sha256.eq(sha.as_deref()))
                        .count()
                        .get_result(conn)?;
                    if still == 0 {
                        let size = stored
                            .iter()
                            .find(|(i, _, _)| *i == id)
                            .and_then(|(_, _, size)| *size)
                            .unwrap_or(0)
                            .max(0) as u64;
                        used = used.saturating_sub(size);
                    }
                    freed.extend(sha);
                }
                let unreferenced = unreferenced(conn, freed)?;
                Ok((used + need <= quota, unreferenced))
            })
            .map_err(|e| ctx.query(e))
        })
        .await
    }

    /// Retention: stored media whose deliveries all ended and that was stored before
    /// `before_ms` is removed. The contents no row names any more.
    pub async fn expire_media(
        &self,
        before_ms: i64,
        now: i64,
    ) -> Result<(usize, Vec<String>), StoreError> {
        self.run(move |conn, ctx| {
            conn.transaction(|conn| {
                let old: Vec<(String, Option<String>)> = deliveries_ended!()
                    .filter(media::state.eq(MediaState::Stored.as_str()))
                    .filter(media::updated_ms.lt(before_ms))
                    .select((media::id, media::sha256))
                    .load(conn)?;
                let n = old.len();
                let mut shas = Vec::new();
                for (id, sha) in old {
                    remove(conn, &id, now)?;
                    shas.extend(sha);
                }
                Ok((n, unreferenced(conn, shas)?))
            })
            .map_err(|e| ctx.query(e))
        })
        .await
    }

    /// Every content a stored media row names (the start's sweep keeps these, deletes the rest).
    pub async fn referenced_blobs(&self) -> Result<HashSet<String>, StoreError> {
        self.run(|conn, ctx| {
            media::table
                .filter(media::state.eq(MediaState::Stored.as_str()))
                .select(media::sha256.assume_not_null())
                .distinct()
                .load::<String>(conn)
                .map(|v| v.into_iter().collect())
                .map_err(|e| ctx.query(e))
        })
        .await
    }

    /// `/metrics`: bytes and counts per state.
    pub async fn media_stats(&self) -> Result<MediaStats, StoreError> {
        self.run(|conn, ctx| {
            let count = |conn: &mut DbConnection, state: MediaState| -> QueryResult<u64> {
                media::table
                    .filter(media::state.eq(state.as_str()))
                    .count()
                    .get_result::<i64>(conn)
                    .map(|n| n.max(0) as u64)
            };
            let bytes = |sizes: Vec<Option<i64>>| -> u64 {
                sizes
                    .into_iter()
                    .map(|s| s.unwrap_or(0).max(0) as u64)
                    .sum()
            };
            let stored = media::table.filter(media::state.eq(MediaState::Stored.as_str()));
            let all: Vec<Option<i64>> = stored
                .select(media::size)
                .load(conn)
                .map_err(|e| ctx.query(e))?;
            let delivered: Vec<Option<i64>> = deliveries_ended!()
                .filter(media::state.eq(MediaState::Stored.as_str()))
                .select(media::size)
                .load(conn)
                .map_err(|e| ctx.query(e))?;
            let (all, delivered) = (bytes(all), bytes(delivered));
            Ok(MediaStats {
                owed_bytes: all.saturating_sub(delivered),
                delivered_bytes: delivered,
                stored: count(conn, MediaState::Stored).map_err(|e| ctx.query(e))?,
                failed: count(conn, MediaState::Failed).map_err(|e| ctx.query(e))?,
                removed: count(conn, MediaState::Removed).map_err(|e| ctx.query(e))?,
            })
        })
        .await
    }

    /// The secret `name`, made by `make` at its first use (every node then reads the same).
    pub async fn secret(
        &self,
        name: &'static str,
        make: impl FnOnce() -> String + Send + 'static,
    ) -> Result<String, StoreError> {
        self.run(move |conn, ctx| {
            let fresh = make();
            // A node that made it first wins (the unique name); every node then reads its value.
            match diesel::insert_into(daemon_secrets::table)
                .values((
                    daemon_secrets::name.eq(name),
                    daemon_secrets::value.eq(&fresh),
                ))
                .execute(conn)
            {
                Ok(_) | Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {}
                Err(e) => return Err(ctx.query(e)),
            }
            daemon_secrets::table
                .filter(daemon_secrets::name.eq(name))
                .select(daemon_secrets::value)
                .first(conn)
                .map_err(|e| ctx.query(e))
        })
        .await
    }

    /// Cluster mode: stores a content's bytes in parts (a content stored before is kept, and
    /// marked put now).
    pub async fn put_blob(
        &self,
        sha256: &str,
        parts: Vec<Vec<u8>>,
        now: i64,
    ) -> Result<(), StoreError> {
        let sha = sha256.to_owned();
        self.run(move |conn, ctx| {
            let stored = conn.transaction(|conn| {
                let known = diesel::update(media_blobs::table.filter(media_blobs::sha256.eq(&sha)))
                    .set(media_blobs::stored_ms.eq(now))
                    .execute(conn)?;
                if known == parts.len() {
                    return Ok(());
                }
                diesel::delete(media_blobs::table.filter(media_blobs::sha256.eq(&sha)))
                    .execute(conn)?;
                for (i, data) in parts.iter().enumerate() {
                    diesel::insert_into(media_blobs::table)
                        .values((
                            media_blobs::sha256.eq(&sha),
                            media_blobs::part.eq(i as i32),
                            media_blobs::data.eq(data),
                            media_blobs::stored_ms.eq(now),
                        ))
                        .execute(conn)?;
                }
                Ok(())
            });
            match stored {
                // Another node stored the same content at the same moment: it is there.
                Ok(()) | Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                    Ok(())
                }
                Err(e) => Err(ctx.query(e)),
            }
        })
        .await
    }

    /// Cluster mode: part `part` of a content (`None` past its end).
    pub async fn blob_part(&self, sha256: &str, part: u32) -> Result<Option<Vec<u8>>, StoreError> {
        let sha = sha256.to_owned();
        self.run(move |conn, ctx| {
            media_blobs::table
                .filter(media_blobs::sha256.eq(&sha))
                .filter(media_blobs::part.eq(part as i32))
                .select(media_blobs::data)
                .first(conn)
                .optional()
                .map_err(|e| ctx.query(e))
        })
        .await
    }

    /// Cluster mode: drops the bytes of contents no stored row names and that were not put
    /// since `put_before` (a row naming a content put since may still be on its way).
    pub async fn delete_blobs(&self, shas: Vec<String>, put_before: i64) -> Result<(), StoreError> {
        self.run(move |conn, ctx| {
            conn.transaction(|conn| {
                let gone = unreferenced(conn, shas)?;
                diesel::delete(
                    media_blobs::table
                        .filter(media_blobs::sha256.eq_any(&gone))
                        .filter(media_blobs::stored_ms.lt(put_before)),
                )
                .execute(conn)
                .map(drop)
            })
            .map_err(|e| ctx.query(e))
        })
        .await
    }

    /// Cluster mode: every content with bytes in the database not put since `put_before` (the
    /// sweep).
    pub async fn blob_shas(&self, put_before: i64) -> Result<Vec<String>, StoreError> {
        self.run(move |conn, ctx| {
            media_blobs::table
                .filter(media_blobs::stored_ms.lt(put_before))
                .select(media_blobs::sha256)
                .distinct()
                .load(conn)
                .map_err(|e| ctx.query(e))
        })
        .await
    }
}

fn remove(conn: &mut DbConnection, id: &str, now: i64) -> QueryResult<usize> {
    diesel::update(media::table.filter(media::id.eq(id)))
        .set((
            media::state.eq(MediaState::Removed.as_str()),
            media::updated_ms.eq(now),
        ))
        .execute(conn)
}

/// Of `shas`, those no stored row names.
pub(super) fn unreferenced(
    conn: &mut DbConnection,
    mut shas: Vec<String>,
) -> QueryResult<Vec<String>> {
    shas.sort();
    shas.dedup();
    let named: HashSet<String> = media::table
        .filter(media::state.eq(MediaState::Stored.as_str()))
        .filter(media::sha256.eq_any(&shas))
        .select(media::sha256.assume_not_null())
        .load::<String>(conn)?
        .into_iter()
        .collect();
    Ok(shas.into_iter().filter(|s| !named.contains(s)).collect())
}
