//! Persistence: the `whatsapp_bots` row of every session key and the `session_events`
//! audit trail, on SQLite (default, embedded) or PostgreSQL (`DATABASE_URL=postgres://…`).
//!
//! Owns the diesel schema, the connection pool and the embedded migrations (run by
//! [`Store::open`]). Every query is written once against one `MultiConnection` type; only the
//! migrations differ per backend. Async methods run the blocking diesel work on
//! `tokio::task::spawn_blocking`, never on the async threads.

mod cluster;
mod connection;
mod dump;
mod media;
mod outbox;
mod removal;
mod schema;
mod url;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::Pool;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use crate::domain::{Intent, SessionKey, SessionState, Slot, UserId};
use cluster::{fenced, FencedError};
use connection::{DbConnection, Manager, Settings};
use schema::{session_events, whatsapp_bots};

pub use cluster::{Fence, Lease, NodeHolder, NodeRow, Snapshot};
pub use dump::{TableDump, DUMP_VERSION, TABLES};
pub use media::{MediaRow, MediaState, MediaStats, BLOB_PART_BYTES};
pub use outbox::{
    DeliveryRow, DueDelivery, NewOutboxEvent, Outcome, Reservation, SendOutcome, StoredEvent,
    Target, WebhookRow,
};
pub use removal::{LinkMarks, Removed};
pub use url::DatabaseUrl;

/// Pooled connections per store (the daemon's writers are ~one per session, and short).
const POOL_MAX_SIZE: u32 = 8;
/// How long a caller waits for a pooled connection before giving up (readiness must answer).
const POOL_CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);
/// PostgreSQL connections kept for lease renewals, claims, releases and heartbeats.
const CONTROL_POOL_SIZE: u32 = 2;

/// Store failures. Messages name the backend and never carry credentials.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("could not create the {backend} database file or its folder {path}")]
    CreateDir {
        backend: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not connect to the {backend} database")]
    Connect {
        backend: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the SQLite path {0} is not valid UTF-8")]
    NotUtf8(std::path::PathBuf),
    #[error("no {backend} connection available")]
    Pool {
        backend: &'static str,
        #[source]
        source: diesel::r2d2::PoolError,
    },
    #[error("{backend} migrations failed")]
    Migration {
        backend: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{backend} query failed")]
    Query {
        backend: &'static str,
        #[source]
        source: DieselError,
    },
    /// A stored value the daemon cannot read back (e.g. an unknown state string).
    #[error("{backend} row {key} has an unreadable {column}: {value:?}")]
    Corrupt {
        backend: &'static str,
        key: String,
        column: &'static str,
        value: String,
    },
    /// A write of a session this node no longer owns (another node took it over).
    #[error("the lease on {key} (epoch {epoch}) is lost: another node owns the session")]
    LeaseLost { key: String, epoch: i64 },
    /// A backup's rows could not be written or read back (docs/operations.md).
    #[error("{0}")]
    Dump(String),
    #[error("this store is not a cluster node's (no NODE_ID)")]
    NotClustered,
    #[error("{backend} store task did not finish")]
    Task {
        backend: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// The persisted view of one session (`whatsapp_bots` row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub key: SessionKey,
    pub state: SessionState,
    pub intent: Intent,
    pub is_connected: bool,
    pub connected_number: Option<String>,
    pub restarts: u32,
    pub last_error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// An audit event to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub key: SessionKey,
    pub at_ms: i64,
    pub kind: String,
    pub detail: Option<String>,
    pub actor: String,
}

/// A stored audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub id: i64,
    pub key: SessionKey,
    pub at_ms: i64,
    pub kind: String,
    pub detail: Option<String>,
    pub actor: String,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Handle to the database. Cheap to clone (a pool inside).
#[derive(Clone)]
pub struct Store {
    pool: Pool<Manager>,
    /// PostgreSQL: connections kept for the cluster's leases and heartbeats, so a flood of
    /// reads, writers or a large snapshot cannot make a renewal wait for a connection
    /// (docs/several-hosts.md, "Renewals first"). Opened when first used.
    control: Option<Pool<Manager>>,
    backend: &'static str,
    max_slots: u16,
    /// The cluster node this store writes for (`None`: a single node).
    node: Option<std::sync::Arc<str>>,
    /// This process's instance id in the cluster (leases and the node row name it).
    instance: Option<std::sync::Arc<str>>,
    /// The PostgreSQL URL (a cluster node's listener opens its own connection); never shown.
    postgres_url: Option<std::sync::Arc<str>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .field("max_slots", &self.max_slots)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// A `whatsapp_bots` row as stored.
#[derive(Queryable, Selectable)]
#[diesel(table_name = whatsapp_bots)]
struct BotRecord {
    user_id: Option<String>,
    slot: Option<i32>,
    is_connected: bool,
    connected_number: Option<String>,
    state: String,
    intent: String,
    restarts: i32,
    last_error: Option<String>,
    created_ms: i64,
    updated_ms: i64,
}

/// A `session_events` row as stored.
#[derive(Queryable, Selectable)]
#[diesel(table_name = session_events)]
struct EventRecord {
    id: i64,
    at_ms: i64,
    kind: String,
    detail: Option<String>,
    actor: String,
}

fn slot_value(key: &SessionKey) -> i32 {
    i32::from(key.slot().get())
}

impl Store {
    /// Opens the database: creates the SQLite file's parent folders, builds the pool (SQLite:
    /// WAL, busy_timeout, foreign_keys on every connection) and runs the embedded migrations of
    /// that backend. Blocking: call at startup, before the runtime serves.
    ///
    /// `max_slots` is used to read stored slots back into [`Slot`].
    pub fn open(url: &DatabaseUrl, max_slots: u16) -> Result<Store, StoreError> {
        let backend = url.backend();
        if let DatabaseUrl::Sqlite(path) = url {
            // Phone numbers live here: a new folder 0700, the file 0600 (SQLite gives its -wal
            // and -shm files the database file's mode).
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                crate::files::create_dir(parent).map_err(|source| StoreError::CreateDir {
                    backend,
                    path: parent.to_owned(),
                    source,
                })?;
            }
            crate::files::private_file(path).map_err(|source| StoreError::CreateDir {
                backend,
                path: path.to_owned(),
                source,
            })?;
        }
        let manager = Manager::new(url)?;
        // One direct connection first: a precise error when the server is down or the file
        // cannot be opened (the pool only reports a timeout), and the migrations run on it.
        let mut conn = manager.establish()?;
        connection::run_migrations(&mut conn, backend)?;
        drop(conn);
        let control = match url {
            DatabaseUrl::Postgres(_) => Some(
                Pool::builder()
                    .max_size(CONTROL_POOL_SIZE)
                    .min_idle(Some(0))
                    .connection_timeout(POOL_CHECKOUT_TIMEOUT)
                    .connection_customizer(Box::new(Settings))
                    .build_unchecked(Manager::new(url)?),
            ),
            DatabaseUrl::Sqlite(_) => None,
        };
        let pool = Pool::builder()
            .max_size(POOL_MAX_SIZE)
            .min_idle(Some(1))
            .connection_timeout(POOL_CHECKOUT_TIMEOUT)
            .connection_customizer(Box::new(Settings))
            .build(manager)
            .map_err(|source| StoreError::Pool { backend, source })?;
        log::info!("store: {backend} database {url} ready");
        Ok(Store {
            pool,
            control,
            backend,
            max_slots,
            node: None,
            instance: None,
            postgres_url: match url {
                DatabaseUrl::Postgres(u) => Some(std::sync::Arc::from(u.as_str())),
                DatabaseUrl::Sqlite(_) => None,
            },
        })
    }

    /// The PostgreSQL URL, for a connection of its own (`LISTEN`); `None` on SQLite.
    pub fn postgres_url(&self) -> Option<String> {
        self.postgres_url.as_deref().map(str::to_owned)
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Runs `work` with a pooled connection on the blocking thread pool.
    async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection, &Ctx) -> Result<T, StoreError> + Send + 'static,
    {
        self.run_on(self.pool.clone(), work).await
    }

    /// [`Store::run`] on the connections kept for leases and heartbeats (the main pool on
    /// SQLite, which has no cluster).
    async fn run_control<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection, &Ctx) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.control.clone().unwrap_or_else(|| self.pool.clone());
        self.run_on(pool, work).await
    }

    async fn run_on<T, F>(&self, pool: Pool<Manager>, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection, &Ctx) -> Result<T, StoreError> + Send + 'static,
    {
        let ctx = Ctx {
            backend: self.backend,
            max_slots: self.max_slots,
            node: self.node.clone(),
            instance: self.instance.clone(),
        };
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get().map_err(|source| StoreError::Pool {
                backend: ctx.backend,
                source,
            })?;
            work(&mut conn, &ctx)
        })
        .await
        .map_err(|source| StoreError::Task {
            backend: self.backend,
            source,
        })?
    }

    /// `SELECT 1` (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run(|conn, ctx| conn.batch_execute("SELECT 1").map_err(|e| ctx.query(e)))
            .await
    }

    /// Upserts the row of `row.key`: update, else insert, in one transaction. `created_ms` of an
    /// existing row is kept. With a fence, only while this node holds the session's lease.
    pub async fn save_session(
        &self,
        row: SessionRow,
        fence: Option<Fence>,
    ) -> Result<(), StoreError> {
        self.run(move |conn, ctx| {
            fenced(conn, ctx, &row.key.clone(), fence, |conn| {
                match upsert(conn, &row) {
                    // Two writers inserting the same new key at once: the loser's insert hits
                    // the unique index; by now the row exists, so the retry updates it.
                    Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                        upsert(conn, &row)
                    }
                    other => other,
                }
                .map_err(FencedError::from)
            })
        })
        .await
    }

    /// The row of `key`, if any.
    pub async fn load_session(&self, key: &SessionKey) -> Result<Option<SessionRow>, StoreError> {
        let key = key.clone();
        self.run(move |conn, ctx| {
            let record = whatsapp_bots::table
                .filter(whatsapp_bots::user_id.eq(key.user_id().as_str()))
                .filter(whatsapp_bots::slot.eq(slot_value(&key)))
                .select(BotRecord::as_select())
                .first(conn)
                .optional()
                .map_err(|e| ctx.query(e))?;
            record.map(|r| ctx.session_row(key, r)).transpose()
        })
        .await
    }

    /// Every row (or `user`'s rows), ordered by user id then slot. Rows whose `userId` or `slot`
    /// is not a valid key (e.g. written by another program) are skipped with a warning.
    pub async fn list_sessions(
        &self,
        user: Option<&UserId>,
    ) -> Result<Vec<SessionRow>, StoreError> {
        let user = user.cloned();
        self.run(move |conn, ctx| {
            let mut query = whatsapp_bots::table
                .select(BotRecord::as_select())
                .into_boxed();
            if let Some(user) = &user {
                query = query.filter(whatsapp_bots::user_id.eq(user.as_str().to_owned()));
            }
            let records = query.load(conn).map_err(|e| ctx.query(e))?;
            let mut rows = Vec::with_capacity(records.len());
            for r in records {
                let Some(key) = ctx.key_of(r.user_id.as_deref(), r.slot) else {
                    continue;
                };
                rows.push(ctx.session_row(key, r)?);
            }
            // In Rust, not SQL: PostgreSQL's text order depends on the database collation.
            rows.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(rows)
        })
        .await
    }

    /// Appends an audit event (with a fence: only while this node holds the lease).
    pub async fn record_event(&self, ev: NewEvent, fence: Option<Fence>) -> Result<(), StoreError> {
        self.run(move |conn, ctx| {
            fenced(conn, ctx, &ev.key.clone(), fence, |conn| {
                diesel::insert_into(session_events::table)
                    .values((
                        session_events::user_id.eq(ev.key.user_id().as_str()),
                        session_events::slot.eq(slot_value(&ev.key)),
                        session_events::at_ms.eq(ev.at_ms),
                        session_events::kind.eq(&ev.kind),
                        session_events::detail.eq(ev.detail.as_deref()),
                        session_events::actor.eq(&ev.actor),
                    ))
                    .execute(conn)
                    .map(drop)
                    .map_err(FencedError::from)
            })
        })
        .await
    }

    /// The events of `key`, oldest first.
    pub async fn events(&self, key: &SessionKey) -> Result<Vec<EventRow>, StoreError> {
        let key = key.clone();
        self.run(move |conn, ctx| {
            let records: Vec<EventRecord> = session_events::table
                .filter(session_events::user_id.eq(key.user_id().as_str()))
                .filter(session_events::slot.eq(slot_value(&key)))
                .order(session_events::id.asc())
                .select(EventRecord::as_select())
                .load(conn)
                .map_err(|e| ctx.query(e))?;
            Ok(records
                .into_iter()
                .map(|r| EventRow {
                    id: r.id,
                    key: key.clone(),
                    at_ms: r.at_ms,
                    kind: r.kind,
                    detail: r.detail,
                    actor: r.actor,
                })
                .collect())
        })
        .await
    }
}

/// Update-then-insert in one transaction (`ON CONFLICT` is not available through
/// `MultiConnection`).
fn upsert(conn: &mut DbConnection, row: &SessionRow) -> QueryResult<()> {
    let user = row.key.user_id().as_str();
    let slot = slot_value(&row.key);
    let restarts = i32::try_from(row.restarts).unwrap_or(i32::MAX);
    // The columns an update writes; an insert writes them plus the key and `created_ms`.
    let changes = (
        whatsapp_bots::is_connected.eq(row.is_connected),
        whatsapp_bots::connected_number.eq(row.connected_number.as_deref()),
        whatsapp_bots::state.eq(row.state.as_str()),
        whatsapp_bots::intent.eq(row.intent.as_str()),
        whatsapp_bots::restarts.eq(restarts),
        whatsapp_bots::last_error.eq(row.last_error.as_deref()),
        whatsapp_bots::updated_ms.eq(row.updated_ms),
    );
    conn.transaction(|conn| {
        let updated = diesel::update(
            whatsapp_bots::table
                .filter(whatsapp_bots::user_id.eq(user))
                .filter(whatsapp_bots::slot.eq(slot)),
        )
        .set(changes)
        .execute(conn)?;
        if updated == 0 {
            diesel::insert_into(whatsapp_bots::table)
                .values((
                    whatsapp_bots::user_id.eq(user),
                    whatsapp_bots::slot.eq(slot),
                    whatsapp_bots::created_ms.eq(row.created_ms),
                    changes,
                ))
                .execute(conn)?;
        }
        Ok(())
    })
}

/// What a blocking task needs to turn records into domain values and errors.
struct Ctx {
    backend: &'static str,
    max_slots: u16,
    node: Option<std::sync::Arc<str>>,
    instance: Option<std::sync::Arc<str>>,
}

impl Ctx {
    fn query(&self, source: DieselError) -> StoreError {
        StoreError::Query {
            backend: self.backend,
            source,
        }
    }

    /// Parses a stored `(userId, slot)`; `None` (with a warning) when it is not a valid key.
    fn key_of(&self, user: Option<&str>, slot: Option<i32>) -> Option<SessionKey> {
        let parsed = user
            .and_then(|u| UserId::parse(u).ok())
            .zip(slot.and_then(|s| Slot::new(s.into(), self.max_slots).ok()));
        match parsed {
            Some((user, slot)) => Some(SessionKey::new(user, slot)),
            None => {
                log::warn!(
                    "store: skipping {} whatsapp_bots row with userId {user:?} and slot {slot:?}: not a valid session key",
                    self.backend
                );
                None
            }
        }
    }

    fn session_row(&self, key: SessionKey, r: BotRecord) -> Result<SessionRow, StoreError> {
        let corrupt = |column, value: &str| StoreError::Corrupt {
            backend: self.backend,
            key: key.to_string(),
            column,
            value: value.to_owned(),
        };
        let state = r.state.parse().map_err(|_| corrupt("state", &r.state))?;
        let intent = r.intent.parse().map_err(|_| corrupt("intent", &r.intent))?;
        let restarts =
            u32::try_from(r.restarts).map_err(|_| corrupt("restarts", &r.restarts.to_string()))?;
        Ok(SessionRow {
            key,
            state,
            intent,
            is_connected: r.is_connected,
            connected_number: r.connected_number,
            restarts,
            last_error: r.last_error,
            created_ms: r.created_ms,
            updated_ms: r.updated_ms,
        })
    }
}
