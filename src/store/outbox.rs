//! The durable outbox: events (messages, acks, state changes) and their webhook deliveries,
//! per-user webhooks, and the idempotency keys of sent messages (docs/ARCHITECTURE.md,
//! "Messages and webhooks").
//!
//! An event and the deliveries it owes are written in one transaction, before the event goes
//! anywhere else. Deliveries are claimed in order per (target, session): only the oldest pending
//! delivery of each is due, and claiming it puts a lease on it (its next attempt moves to the
//! lease's end), so a daemon that dies mid-delivery leaves it to be retried. On PostgreSQL the
//! claim skips rows another daemon has locked (`FOR UPDATE SKIP LOCKED`).

use diesel::prelude::*;
use diesel::sql_types::BigInt;

use super::connection::DbConnection;
use super::schema::{deliveries, outbox_events, sent_messages, webhooks};
use super::{fenced, slot_value, Ctx, Fence, FencedError, Store, StoreError};
use crate::domain::{SessionKey, UserId};

/// Where a delivery goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The service webhook (`WEBHOOK_URL`): every user's events.
    Service,
    /// The user's own webhook.
    User,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Service => "service",
            Target::User => "user",
        }
    }

    fn parse(s: &str) -> Target {
        if s == "service" {
            Target::Service
        } else {
            Target::User
        }
    }
}

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewOutboxEvent {
    pub key: SessionKey,
    /// `message`, `message.ack` or `session.status`.
    pub kind: &'static str,
    /// The event's `data`, JSON.
    pub payload: String,
    pub created_ms: i64,
    /// What makes it the same event as another of this session (`msg:<WhatsApp id>`,
    /// `ack:<id>:<ack>`): a second one with the same value is not stored.
    pub dedupe: Option<String>,
    /// The media row the event announces, written in its transaction (docs/media.md).
    pub media: Option<super::MediaRow>,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub id: i64,
    pub key: SessionKey,
    pub kind: String,
    pub payload: String,
    pub created_ms: i64,
    /// Unique for good (a restore or another database repeats row ids): the `webhook-id`.
    pub uid: String,
}

impl StoredEvent {
    /// `evt_<uid>`: the `webhook-id` of its deliveries, the same at every retry.
    pub fn webhook_id(&self) -> String {
        format!("evt_{}", self.uid)
    }
}

/// A fresh event uid: 128 random bits, hex.
pub fn new_uid() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// A user's webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRow {
    pub user: UserId,
    pub url: String,
    /// Event types, or `["*"]`.
    pub events: Vec<String>,
    pub secret: String,
    pub disabled_reason: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl WebhookRow {
    pub fn wants(&self, kind: &str) -> bool {
        self.events.iter().any(|e| e == "*" || e == kind)
    }
}

/// A delivery as listed to its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    pub id: i64,
    pub event_id: i64,
    /// The `webhook-id` it carries (`evt_<the event's uid>`).
    pub webhook_id: String,
    pub kind: String,
    pub target: Target,
    pub key: SessionKey,
    pub status: String,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A delivery due now, with what sending it needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: i64,
    pub target: Target,
    pub attempts: u32,
    pub event: StoredEvent,
    /// The user's webhook for [`Target::User`] (gone: the delivery fails).
    pub webhook: Option<WebhookRow>,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered {
        status: u16,
    },
    /// Try again at `next_ms`.
    Retry {
        next_ms: i64,
        status: Option<u16>,
        error: String,
    },
    /// No more attempts.
    Failed {
        status: Option<u16>,
        error: String,
    },
}

/// What an idempotency key says about a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// The key is new: this caller sends.
    Reserved,
    /// Sent before: its answer.
    Done(String),
    /// Another call with this key is sending, since `since_ms`, with this message id.
    InFlight { message_id: String, since_ms: i64 },
    /// A send with this key may have reached WhatsApp (timed out, or died mid-send): with this
    /// message id. Never sent again.
    Unknown { message_id: String },
}

/// An idempotency key's row: result, message id, unknown since, reserved at.
type KeyRecord = (Option<String>, Option<String>, Option<i64>, i64);

/// How a reserved send ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// WhatsApp Web took it: the answer (JSON), kept for replays.
    Sent(String),
    /// Nothing can have been sent (not linked, refused by the page): the key is free again.
    NotSent,
    /// It may have been sent (a timeout, a crash): the key stays, answering "unknown".
    Unknown,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = outbox_events)]
struct EventRecord {
    id: i64,
    user_id: String,
    slot: i32,
    kind: String,
    payload: String,
    created_ms: i64,
    uid: String,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = webhooks)]
struct WebhookRecord {
    user_id: String,
    url: String,
    events: String,
    secret: String,
    disabled_reason: Option<String>,
    created_ms: i64,
    updated_ms: i64,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = deliveries)]
struct DeliveryRecord {
    id: i64,
    event_id: i64,
    target: String,
    user_id: String,
    slot: i32,
    status: String,
    attempts: i32,
    next_attempt_ms: i64,
    last_status: Option<i32>,
    last_error: Option<String>,
    created_ms: i64,
    updated_ms: i64,
}

#[derive(QueryableByName)]
struct IdRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

fn webhook_row(r: WebhookRecord) -> Option<WebhookRow> {
    Some(WebhookRow {
        user: UserId::parse(&r.user_id).ok()?,
        url: r.url,
        events: r.events.split(',').map(str::to_owned).collect(),
        secret: r.secret,
        disabled_reason: r.disabled_reason,
        created_ms: r.created_ms,
        updated_ms: r.updated_ms,
    })
}

/// The oldest pending delivery of each (target, session) that is due, leased until
/// `now + lease_ms`; their ids.
const CLAIM_SQL: &str = r#"
UPDATE deliveries SET next_attempt_ms = $1 + $2, updated_ms = $1
WHERE id IN (
    SELECT d.id FROM deliveries d
    WHERE d.status = 'pending' AND d.next_attempt_ms <= $1 AND (d.target <> 'service' OR $4)
      AND NOT EXISTS (
          SELECT 1 FROM deliveries e
          WHERE e.status = 'pending' AND e.target = d.target AND e."userId" = d."userId"
            AND e.slot = d.slot AND e.id < d.id)
    ORDER BY d.id
    LIMIT $3 __LOCK__)
RETURNING id"#;

/// The earliest time a head of line (the oldest pending delivery of a target and session) is due.
const NEXT_DUE_SQL: &str = r#"
SELECT MIN(d.next_attempt_ms) AS at FROM deliveries d
WHERE d.status = 'pending' AND (d.target <> 'service' OR $1)
  AND NOT EXISTS (
      SELECT 1 FROM deliveries e
      WHERE e.status = 'pending' AND e.target = d.target AND e."userId" = d."userId"
        AND e.slot = d.slot AND e.id < d.id)"#;

fn claim(
    conn: &mut DbConnection,
    now: i64,
    lease_ms: i64,
    limit: i64,
    service: bool,
) -> QueryResult<Vec<i64>> {
    let sql = match conn {
        DbConnection::Pg(_) => CLAIM_SQL.replace("__LOCK__", "FOR UPDATE SKIP LOCKED"),
        // `?N`: SQLite numbers `$N` parameters by first appearance, not by N.
        DbConnection::Sqlite(_) => CLAIM_SQL.replace("__LOCK__", "").replace('$', "?"),
    };
    let rows: Vec<IdRow> = diesel::sql_query(sql)
        .bind::<BigInt, _>(now)
        .bind::<BigInt, _>(lease_ms)
        .bind::<BigInt, _>(limit)
        .bind::<diesel::sql_types::Bool, _>(service)
        .load(conn)?;
    Ok(rows.into_iter().map(|r| r.id).collect())
}

fn event_of(ctx: &Ctx, r: EventRecord) -> Option<StoredEvent> {
    let key = ctx.key_of(Some(&r.user_id), Some(r.slot))?;
    Some(StoredEvent {
        id: r.id,
        key,
        kind: r.kind,
        payload: r.payload,
        created_ms: r.created_ms,
        uid: r.uid,
    })
}

impl Store {
    /// Writes the event and the deliveries it owes (to the service webhook when `service` is
    /// set, to the user's webhook when it is active and wants this type), in one transaction.
    /// `None`: an event of this session with the same `dedupe` is stored already (nothing is
    /// written; the unique index is the guarantee, the lookup before it the usual answer).
    ///
    /// With a fence, only while this node holds the session's lease; in a cluster the other
    /// nodes are told (`NOTIFY wa_outbox, '<node> <id>'`) when the transaction commits.
    pub async fn append_event(
        &self,
        ev: NewOutboxEvent,
        service: bool,
        fence: Option<Fence>,
    ) -> Result<Option<StoredEvent>, StoreError> {
        self.run(move |conn, ctx| {
            let user = ev.key.user_id().as_str().to_owned();
            let slot = slot_value(&ev.key);
            let notify = ctx.node.clone();
            let uid = new_uid();
            fenced(conn, ctx, &ev.key.clone(), fence, |conn| {
                conn.transaction::<_, diesel::result::Error, _>(|conn| {
                    if let Some(dedupe) = &ev.dedupe {
                        let seen: Option<i64> = outbox_events::table
                            .filter(outbox_events::user_id.eq(&user))
                            .filter(outbox_events::slot.eq(slot))
                            .filter(outbox_events::dedupe.eq(dedupe))
                            .select(outbox_events::id)
                            .first(conn)
                            .optional()?;
                        if seen.is_some() {
                            return Ok(None);
                        }
                    }
                    let id: i64 = diesel::insert_into(outbox_events::table)
                        .values((
                            outbox_events::user_id.eq(&user),
                            outbox_events::slot.eq(slot),
                            outbox_events::kind.eq(ev.kind),
                            outbox_events::payload.eq(&ev.payload),
                            outbox_events::created_ms.eq(ev.created_ms),
                            outbox_events::uid.eq(&uid),
                            outbox_events::dedupe.eq(ev.dedupe.as_deref()),
                        ))
                        .returning(outbox_events::id)
                        .get_result(conn)?;
                    if let Some(row) = &ev.media {
                        super::media::upsert_media(conn, row, id)?;
                    }
                    let hook: Option<WebhookRecord> = webhooks::table
                        .filter(webhooks::user_id.eq(&user))
                        .filter(webhooks::disabled_reason.is_null())
                        .select(WebhookRecord::as_select())
                        .first(conn)
                        .optional()?;
                    let wants = hook.and_then(webhook_row).is_some_and(|h| h.wants(ev.kind));
                    let targets = [(Target::Service, service), (Target::User, wants)];
                    for (target, _) in targets.iter().filter(|(_, on)| *on) {
                        diesel::insert_into(deliveries::table)
                            .values((
                                deliveries::event_id.eq(id),
                                deliveries::target.eq(target.as_str()),
                                deliveries::user_id.eq(&user),
                                deliveries::slot.eq(slot),
                                deliveries::status.eq("pending"),
                                deliveries::attempts.eq(0),
                                deliveries::next_attempt_ms.eq(ev.created_ms),
                                deliveries::created_ms.eq(ev.created_ms),
                                deliveries::updated_ms.eq(ev.created_ms),
                            ))
                            .execute(conn)?;
                    }
                    if let Some(node) = &notify {
                        diesel::sql_query("SELECT pg_notify('wa_outbox', $1)")
                            .bind::<diesel::sql_types::Text, _>(format!("{node} {id}"))
                            .execute(conn)?;
                    }
                    Ok(Some(id))
                })
                .map_err(FencedError::from)
            })
            .map(|id| {
                id.map(|id| StoredEvent {
                    id,
                    key: ev.key.clone(),
                    kind: ev.kind.to_owned(),
                    payload: ev.payload.clone(),
                    created_ms: ev.created_ms,
                    uid: uid.clone(),
                })
            })
        })
        .await
    }

    /// The newest `message` event stored for `key`: its WhatsApp timestamp (unix seconds, from
    /// the payload), for gap filling. `None` when the session recorded none.
    pub async fn last_message_ts(&self, key: &SessionKey) -> Result<Option<i64>, StoreError> {
        let key = key.clone();
        self.run(move |conn, ctx| {
            let payload: Option<String> = outbox_events::table
                .filter(outbox_events::user_id.eq(key.user_id().as_str()))
                .filter(outbox_events::slot.eq(slot_value(&key)))
                .filter(outbox_events::kind.eq(crate::events::MESSAGE))
                .order(outbox_events::id.desc())
                .select(outbox_events::payload)
                .first(conn)
                .optional()
                .map_err(|e| ctx.query(e))?;
            Ok(payload.and_then(|p| {
                serde_json::from_str::<serde_json::Value>(&p).ok()?["timestamp"].as_i64()
            }))
        })
        .await
    }

    /// The id of the newest event (0 when there is none).
    pub async fn latest_event_id(&self) -> Result<i64, StoreError> {
        self.run(|conn, ctx| {
            outbox_events::table
                .select(diesel::dsl::max(outbox_events::id))
                .first::<Option<i64>>(conn)
                .map(|id| id.unwrap_or(0))
                .map_err(|e| ctx.query(e))
        })
        .await
    }

    /// The event `id`, if it is still stored.
    pub async fn event_by_id(&self, id: i64) -> Result<Option<StoredEvent>, StoreError> {
        self.run(move |conn, ctx| {
            let record: Option<EventRecord> = outbox_events::table
                .filter(outbox_events::id.eq(id))
                .select(EventRecord::as_select())
                .first(conn)
                .optional()
                .map_err(|e| ctx.query(e))?;
            Ok(record.and_then(|r| event_of(ctx, r)))
        })
        .await
    }

    /// Events of `key` after the cursor `after`, oldest first, at most `limit`.
    pub async fn events_after(
        &self,
        key: &SessionKey,
        after: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let key = key.clone();
        self.run(move |conn, ctx| {
            let records: Vec<EventRecord> = outbox_events::table
                .filter(outbox_events::user_id.eq(key.user_id().as_str()))
                .filter(outbox_events::slot.eq(slot_value(&key)))
                .filter(outbox_events::id.gt(after))
                .order(outbox_events::id.asc())
                .limit(limit)
                .select(EventRecord::as_select())
                .load(conn)
                .map_err(|e| ctx.query(e))?;
            Ok(records
                .into_iter()
                .filter_map(|r| event_of(ctx, r))
                .collect())
        })
        .await
    }

    /// Every event of `user` after `after` (any slot), oldest first, at most `limit`.
    pub async fn user_events_after(
        &self,
        user: &UserId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let user = user.clone();
        self.run(move |conn, ctx| {
            let records: Vec<EventRecord> = outbox_events::table
                .filter(outbox_events::user_id.eq(user.as_str()))
                .filter(outbox_events::id.gt(after))
                .order(outbox_events::id.asc())
                .limit(limit)
                .select(EventRecord::as_select())
                .load(conn)
                .map_err(|e| ctx.query(e))?;
            Ok(records
                .into_iter()
                .filter_map(|r| event_of(ctx, r))
                .collect())
        })
        .await
    }

    /// Claims up to `limit` due deliveries (leasing them for `lease_ms`), with their events and
    /// the users' webhooks. `service`: this node delivers to the service webhook (it has
    /// `WEBHOOK_URL`); a node that cannot leaves those deliveries to one that can. `now` is
    /// [`Store::clock_ms`] in a cluster: leases of one node are read by the others.
    pub async fn claim_due(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
        service: bool,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        self.run(move |conn, ctx| {
            conn.transaction(|conn| {
                let ids = claim(conn, now, lease_ms, limit, service)?;
                let rows: Vec<(DeliveryRecord, EventRecord)> = deliveries::table
                    .inner_join(outbox_events::table.on(outbox_events::id.eq(deliveries::event_id)))
                    .filter(deliveries::id.eq_any(&ids))
                    .order(deliveries::id.asc())
                    .select((DeliveryRecord::as_select(), EventRecord::as_select()))
                    .load(conn)?;
                let mut due = Vec::with_capacity(rows.len());
                for (d, e) in rows {
                    let target = Target::parse(&d.target);
                    let webhook = match target {
                        Target::Service => None,
                        Target::User => webhooks::table
                            .filter(webhooks::user_id.eq(&d.user_id))
                            .select(WebhookRecord::as_select())
                            .first(conn)
                            .optional()?
                            .and_then(webhook_row),
                    };
                    if let Some(event) = event_of(ctx, e) {
                        due.push(DueDelivery {
                            id: d.id,
                            target,
                            attempts: u32::try_from(d.attempts).unwrap_or(0),
                            event,
                            webhook,
                        });
                    }
                }
                Ok(due)
            })
            .map_err(|e| ctx.query(e))
        })
        .await
    }

    /// Records an attempt's outcome.
    pub async fn record_attempt(
        &self,
        id: i64,
        attempts: u32,
        outcome: Outcome,
        now: i64,
    ) -> Result<(), StoreError> {
        self.run(move |conn, ctx| {
            let attempts = i32::try_from(attempts).unwrap_or(i32::MAX);
            let row = deliveries::table.filter(deliveries::id.eq(id));
            let done = match outcome {
                Outcome::Delivered { status } => diesel::update(row)
                    .set((
                        deliveries::status.eq("delivered"),
                        deliveries::attempts.eq(attempts),
                        deliveries::last_status.eq(Some(i32::from(status))),
                        deliveries::last_error.eq(None::<String>),
                        deliveries::updated_ms.eq(now),
                    ))
                    .execute(conn),
                Outcome::Retry {
                    next_ms,
                    status,
                    error,
                } => diesel::update(row)
                    .set((
                        deliveries::attempts.eq(attempts),
                        deliveries::next_attempt_ms.eq(next_ms),
                        deliveries::last_status.eq(status.map(i32::from)),
                        deliveries::last_error.eq(Some(error)),
                        deliveries::updated_ms.eq(now),
                    ))
                    .execute(conn),
                Outcome::Failed { status, error } => diesel::update(row)
                    .set((
                        deliveries::status.eq("failed"),
                        deliveries::attempts.eq(attempts),
                        deliveries::last_status.eq(status.map(i32::from)),
                        deliveries::last_error.eq(Some(error)),
                        deliveries::updated_ms.eq(now),
                    ))
                    .execute(conn),
            };
            done.map(drop).map_err(|e| ctx.query(e))
        })
        .await
    }

    /// When the next claimable delivery is due (`None`: nothing pending). Only the head of each
    /// (target, session) counts: a later delivery waits for the one before it, so its own time
    /// says nothing (and would make the dispatcher spin).
    pub async fn next_due_ms(&self, service: bool) -> Result<Option<i64>, StoreError> {
        self.run(move |conn, ctx| {
            #[derive(QueryableByName)]
            struct Next {
                #[diesel(sql_type = diesel::sql_types::Nullable<BigInt>)]
                at: Option<i64>,
            }
            diesel::sql_query(NEXT_DUE_SQL)
                .bind::<diesel::sql_types::Bool, _>(service)
                .get_result::<Next>(conn)
                .map(|n| n.at)
                .map_err(|e| ctx.query(e))
        })
        .await
    }

    /// Milliseconds since the epoch by the database's clock on PostgreSQL (every node of a
    /// cluster reads the same one: delivery leases and retry times are compared across nodes),
    /// by this host's on SQLite (one node).
    pub async fn clock_ms(&self) -> Result<i64, StoreError> {
        if self.backend != "postgres" {
            return Ok(super::now_ms());
        }
        self.run(|conn, ctx| {
            #[derive(QueryableByName)]
            struct Clock {
                #[diesel(sql_type = BigInt)]
                ms: i64,
            }
            diesel::sql_query("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms")
                .get_result::<Clock>(conn)
                .map(|c| c.ms)
                .map_err(|e| ctx.query(e))
        })
        .await
    }

    /// Creates or replaces `user`'s webhook (re-enabled, with this secret).
    pub async fn put_webhook(&self, hook: WebhookRow) -> Result<(), StoreError> {
        self.run(move |conn, ctx| {
            let user = hook.user.as_str().to_owned();
            let events = hook.events.join(",");
            conn.transaction(|conn| {
                let updated = diesel::update(webhooks::table.filter(webhooks::user_id.eq(&user)))
                    .set((
                        webhooks::url.eq(&hook.url),
                        webhooks::events.eq(&events),
                        webhooks::secret.eq(&hook.secret),
                        webhooks::disabled_reason.eq(None::<String>),
                        webhooks::updated_ms.eq(hook.updated_ms),
                    ))
                    .execute(conn)?;
                if updated == 0 {
                    diesel::insert_into(webhooks::table)
                        .values((
                            webhooks::user_id.eq(&user),
                            webhooks::url.eq(&hook.url),
                            webhooks::events.eq(&events),
                            webhooks::secret.eq(&hook.secret),
                            webhooks::created_ms.eq(hook.created_ms),
                            webhooks::updated_ms.eq(hook.updated_ms),
                        ))
                        .execute(conn)?;
                }
                Ok(())
            })
            .map_err(|e| ctx.query(e))
        })
        .await
    }

    pub async fn get_webhook(&self, user: &UserId) -> Result<Option<WebhookRow>, StoreError> {
        let user = user.clone();
        self.run(move |conn, ctx| {
            webhooks::table
                .filter(webhooks::user_id.eq(user.as_str()))
                .select(WebhookRecord::as_select())
                .first(conn)
                .optional()
                .map(|r| r.and_then(webhook_row))
                .map_err(|e| ctx.query(e))
        })
        .await
    }

    /// Deletes `user`'s webhook; its pending deliveries fail. `false` if there was none.
    pub async fn delete_webhook(&self, user: &UserId, now: i64) -> Result<bool, StoreError> {
        let user = user.clone();
        self.run(move |conn, ctx| {
            conn.transaction(|conn| {
                let n = diesel::delete(webhooks::table.filter(webhooks::user_id.eq(user.as_str())))
                    .execute(conn)?;
                diesel::update(
                    deliveries::table
                        .filter(deliveries::user_id.eq(user.as_str()))
                        .filter(deliveries::target.eq(Target::User.as_str()))
                        .filter(deliveries::status.eq("pending")),
                )
                .set((
                    deliveries::status.eq("failed"),
                    deliveries::last_error.eq(Some("webhook deleted")),
                    deliveries::updated_ms.eq(now),
                ))
                .execute(conn)?;
                Ok(n > 0)
            })
            .map_err(|e| ctx.query(e))
        })
        .await
    }

    /// The receiver said 410 Gone: no more deliveries to this webhook until it is put again.
    pub async fn disable_webhook(
        &self,
        user: &UserId,
        reason: String,
        now: i64,
    ) -> Result<(), StoreError> {
        let user = user.clone();
        self.run(move |conn, ctx| {
            diesel::update(webhooks::table.filter(webhooks::user_id.eq(user.as_str())))
                .set((
                    webhooks::disabled_reason.eq(Some(reason)),
                    webhooks::updated_ms.eq(now),
                ))
                .execute(conn)
                .map(drop)
                .map_err(|e| ctx.query(e))
        })
        .await
    }

    /// Targets that stopped recovering (docs/nothing-lost.md): a user's webhook with an owed
    /// delivery created before `cutoff_ms` and tried at least once is disabled (with `reason`)
    /// and all its owed deliveries fail; service deliveries like that fail. Failed deliveries
    /// are kept, and can be queued again (`POST …/deliveries/{id}/retry`, once the webhook is put
    /// again). Returns (webhooks disabled, deliveries failed).
    pub async fn expire_failing(
        &self,
        cutoff_ms: i64,
        reason: String,
        now: i64,
    ) -> Result<(usize, usize), StoreError> {
        self.run(move |conn, ctx| {
            conn.transaction(|conn| {
                let stale = deliveries::table
                    .filter(deliveries::status.eq("pending"))
                    .filter(deliveries::attempts.gt(0))
                    .filter(deliveries::created_ms.lt(cutoff_ms));
                let users: Vec<String> = stale
                    .filter(deliveries::target.eq(Target::User.as_str()))
                    .select(deliveries::user_id)
                    .distinct()
                    .load(conn)?;
                let disabled = diesel::update(
                    webhooks::table
                        .filter(webhooks::user_id.eq_any(&users))
                        .filter(webhooks::disabled_reason.is_null()),
                )
                .set((
                    webhooks::disabled_reason.eq(Some(&reason)),
                    webhooks::updated_ms.eq(now),
                ))
                .execute(conn)?;
                let failed_user = diesel::update(
                    deliveries::table
                        .filter(deliveries::status.eq("pending"))
                        .filter(deliveries::target.eq(Target::User.as_str()))
                        .filter(deliveries::user_id.eq_any(&users)),
                )
                .set((
                    deliveries::status.eq("failed"),
                    deliveries::last_error.eq(Some(format!("the webhook was disabled: {reason}"))),
                    deliveries::updated_ms.eq(now),
                ))
                .execute(conn)?;
                let failed_service = diesel::update(
                    deliveries::table
                        .filter(deliveries::status.eq("pending"))
                        .filter(deliveries::attempts.gt(0))
                        .filter(deliveries::created_ms.lt(cutoff_ms))
                        .filter(deliveries::target.eq(Target::Service.as_str())),
                )
                .set((
                    deliveries::status.eq("failed"),
                    deliveries::last_error.eq(Some(reason.clone())),
                    deliveries::updated_ms.eq(now),
                ))
                .execute(conn)?;
                Ok((disabled, failed_user + failed_service))
            })
            .map_err(|e| ctx.query(e))
        })
        .await
    }

    /// `user`'s webhook deliveries, newest first, at most `limit`; optionally of one status.
    pub async fn list_deliveries(
        &self,
        user: &UserId,
        status: Option<String>,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let user = user.clone();
        self.run(move |conn, ctx| {
            let mut query = deliveries::table
                .inner_join(outbox_events::table.on(outbox_events::id.eq(deliveries::event_id)))
                .filter(deliveries::user_id.eq(user.as_str()))
                .filter(deliveries::target.eq(Target::User.as_str()))
                .order(deliveries::id.desc())
                .limit(limit)
                .select((
                    DeliveryRecord::as_select(),
                    outbox_events::kind,
                    outbox_events::uid,
                ))
                .into_boxed();
            if let Some(status) = status {
                query = query.filter(deliveries::status.eq(status));
            }
            let rows: Vec<(DeliveryRecord, String, String)> =
                query.load(conn).map_err(|e| ctx.query(e))?;
            Ok(rows
                .into_iter()
                .filter_map(|(d, kind, uid)| {
                    Some(DeliveryRow {
                        key: ctx.key_of(Some(&d.user_id), Some(d.slot))?,
                        id: d.id,
                        event_id: d.event_id,
                        webhook_id: format!("evt_{uid}"),
                        kind,
                        target: Target::parse(&d.target),
                        status: d.status,
                        attempts: u32::try_from(d.attempts).unwrap_or(0),
                        next_attempt_ms: d.next_attempt_ms,
                        last_status: d.last_status.and_then(|s| u16::try_from(s).ok()),
                        last_error: d.last_error,
                        created_ms: d.created_ms,
                        updated_ms: d.updated_ms,
                    })
                })
                .collect())
        })
        .await
    }

    /// Queues `user`'s delivery `id` again (due now, attempts from zero). `false` if it is not
    /// theirs.
    pub async fn retry_delivery(
        &self,
        user: &UserId,
        id: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let user = user.clone();
        self.run(move |conn, ctx| {
            diesel::update(
                deliveries::table
                    .filter(deliveries::id.eq(id))
                    .filter(deliveries::user_id.eq(user.as_str()))
                    .filter(deliveries::target.eq(Target::User.as_str())),
            )
            .set((
                deliveries::status.eq("pending"),
                deliveries::attempts.eq(0),
                deliveries::next_attempt_ms.eq(now),
                deliveries::updated_ms.eq(now),
            ))
            .execute(conn)
            .map(|n| n > 0)
            .map_err(|e| ctx.query(e))
        })
        .await
    }

    /// Reserves an idempotency key of `key`'s sends for a send with `message_id` (keys older
    /// than `window_ms` are forgotten); what the key says if it was reserved before.
    pub async fn reserve_send(
        &self,
        key: &SessionKey,
        idem: String,
        message_id: String,
        now: i64,
        window_ms: i64,
        fence: Option<Fence>,
    ) -> Result<Reservation, StoreError> {
        let key = key.clone();
        self.run(move |conn, ctx| {
            let user = key.user_id().as_str().to_owned();
            let slot = slot_value(&key);
            fenced(conn, ctx, &key, fence, |conn| {
                conn.transaction::<_, diesel::result::Error, _>(|conn| {
                    let this = sent_messages::table
                        .filter(sent_messages::user_id.eq(&user))
                        .filter(sent_messages::slot.eq(slot))
                        .filter(sent_messages::idem_key.eq(&idem));
                    diesel::delete(this.filter(sent_messages::created_ms.lt(now - window_ms)))
                        .execute(conn)?;
                    let found: Option<KeyRecord> = this
                        .select((
                            sent_messages::result,
                            sent_messages::message_id,
                            sent_messages::unknown_ms,
                            sent_messages::created_ms,
                        ))
                        .first(conn)
                        .optional()?;
                    Ok(match found {
                        Some((Some(result), _, _, _)) => Reservation::Done(result),
                        Some((None, id, Some(_), _)) => Reservation::Unknown {
                            message_id: id.unwrap_or_default(),
                        },
                        Some((None, id, None, since_ms)) => Reservation::InFlight {
                            message_id: id.unwrap_or_default(),
                            since_ms,
                        },
                        None => {
                            diesel::insert_into(sent_messages::table)
                                .values((
                                    sent_messages::user_id.eq(&user),
                                    sent_messages::slot.eq(slot),
                                    sent_messages::idem_key.eq(&idem),
                                    sent_messages::created_ms.eq(now),
                                    sent_messages::message_id.eq(&message_id),
                                ))
                                .execute(conn)?;
                            Reservation::Reserved
                        }
                    })
                })
                .map_err(FencedError::from)
            })
        })
        .await
    }

    /// Records how a reserved send ended.
    pub async fn finish_send(
        &self,
        key: &SessionKey,
        idem: String,
        outcome: SendOutcome,
        fence: Option<Fence>,
    ) -> Result<(), StoreError> {
        let key = key.clone();
        self.run(move |conn, ctx| {
            fenced(conn, ctx, &key.clone(), fence, |conn| {
                let this = sent_messages::table
                    .filter(sent_messages::user_id.eq(key.user_id().as_str()))
                    .filter(sent_messages::slot.eq(slot_value(&key)))
                    .filter(sent_messages::idem_key.eq(&idem));
                match outcome {
                    SendOutcome::Sent(result) => diesel::update(this)
                        .set(sent_messages::result.eq(Some(result)))
                        .execute(conn),
                    SendOutcome::Unknown => diesel::update(this)
                        .set(sent_messages::unknown_ms.eq(Some(super::now_ms())))
                        .execute(conn),
                    SendOutcome::NotSent => diesel::delete(this).execute(conn),
                }
                .map(drop)
                .map_err(FencedError::from)
            })
        })
        .await
    }

    /// Drops events and audit entries older than `before_ms` (events with their finished
    /// deliveries), and idempotency keys older than `keys_before_ms`. Pending deliveries keep their
    /// events. Returns the events dropped.
    pub async fn prune(&self, before_ms: i64, keys_before_ms: i64) -> Result<usize, StoreError> {
        self.run(move |conn, ctx| {
            conn.transaction(|conn| {
                let old = outbox_events::table
                    .filter(outbox_events::created_ms.lt(before_ms))
                    .select(outbox_events::id);
                let owed = deliveries::table
                    .filter(deliveries::status.eq("pending"))
                    .select(deliveries::event_id);
                diesel::delete(
                    deliveries::table
                        .filter(deliveries::event_id.eq_any(old))
                        .filter(deliveries::status.ne("pending")),
                )
                .execute(conn)?;
                let n = diesel::delete(
                    outbox_events::table
                        .filter(outbox_events::created_ms.lt(before_ms))
                        .filter(outbox_events::id.ne_all(owed)),
                )
                .execute(conn)?;
                diesel::delete(
                    sent_messages::table.filter(sent_messages::created_ms.lt(keys_before_ms)),
                )
                .execute(conn)?;
                // The audit trail is kept as long as the events.
                diesel::delete(
                    super::schema::session_events::table
                        .filter(super::schema::session_events::at_ms.lt(before_ms)),
                )
                .execute(conn)?;
                Ok(n)
            })
            .map_err(|e| ctx.query(e))
        })
        .await
    }
}
