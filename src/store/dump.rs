//! The daemon's rows as JSON lines, for a backup and its restore (docs/operations.md): every
//! table the daemon owns except the cluster's (leases, nodes, snapshots: they describe running
//! processes, not data). One typed row per table, so both backends read and write the same lines.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use super::connection::DbConnection;
use super::schema::{
    daemon_secrets, deliveries, media, outbox_events, sent_messages, session_events, webhooks,
    whatsapp_bots,
};
use super::{Store, StoreError};

/// The lines' format: bumped when a dumped table's columns change (a restore refuses a newer one).
pub const DUMP_VERSION: u32 = 1;

/// The tables, in the order they are written and loaded.
pub const TABLES: [&str; 8] = [
    "whatsapp_bots",
    "session_events",
    "outbox_events",
    "webhooks",
    "deliveries",
    "sent_messages",
    "media",
    "daemon_secrets",
];

/// Rows read per query while dumping a large table.
const PAGE: i64 = 5_000;

/// One table's lines in the spool file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDump {
    pub table: &'static str,
    pub offset: u64,
    pub len: u64,
    pub rows: u64,
}

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = whatsapp_bots)]
#[serde(deny_unknown_fields)]
struct BotLine {
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

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = session_events)]
#[serde(deny_unknown_fields)]
struct AuditLine {
    id: i64,
    user_id: String,
    slot: i32,
    at_ms: i64,
    kind: String,
    detail: Option<String>,
    actor: String,
}

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = outbox_events)]
#[serde(deny_unknown_fields)]
struct EventLine {
    id: i64,
    user_id: String,
    slot: i32,
    kind: String,
    payload: String,
    created_ms: i64,
    uid: String,
    dedupe: Option<String>,
}

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = webhooks)]
#[serde(deny_unknown_fields)]
struct WebhookLine {
    user_id: String,
    url: String,
    events: String,
    secret: String,
    disabled_reason: Option<String>,
    created_ms: i64,
    updated_ms: i64,
}

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = deliveries)]
#[serde(deny_unknown_fields)]
struct DeliveryLine {
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

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = sent_messages)]
#[serde(deny_unknown_fields)]
struct SentLine {
    user_id: String,
    slot: i32,
    idem_key: String,
    result: Option<String>,
    created_ms: i64,
    message_id: Option<String>,
    unknown_ms: Option<i64>,
}

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = media)]
#[serde(deny_unknown_fields)]
struct MediaLine {
    id: String,
    user_id: String,
    slot: i32,
    message_id: String,
    event_id: Option<i64>,
    state: String,
    sha256: Option<String>,
    size: Option<i64>,
    mimetype: Option<String>,
    filename: Option<String>,
    error: Option<String>,
    created_ms: i64,
    updated_ms: i64,
}

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = daemon_secrets)]
#[serde(deny_unknown_fields)]
struct SecretLine {
    name: String,
    value: String,
}

/// Why a dump or a load failed.
#[derive(Debug)]
enum DumpError {
    Db(diesel::result::Error),
    Io(std::io::Error),
    Line {
        table: String,
        line: u64,
        why: String,
    },
}

impl From<diesel::result::Error> for DumpError {
    fn from(e: diesel::result::Error) -> DumpError {
        DumpError::Db(e)
    }
}

impl From<std::io::Error> for DumpError {
    fn from(e: std::io::Error) -> DumpError {
        DumpError::Io(e)
    }
}

fn lines<R: Serialize>(out: &mut impl Write, rows: &[R]) -> std::io::Result<()> {
    for row in rows {
        serde_json::to_writer(&mut *out, row)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Writes one table; returns its row count.
fn dump_table(
    conn: &mut DbConnection,
    table: &str,
    out: &mut impl Write,
) -> Result<u64, DumpError> {
    macro_rules! whole {
        ($t:ident, $row:ty, $order:expr) => {{
            let rows: Vec<$row> = $t::table
                .order($order)
                .select(<$row>::as_select())
                .load(conn)?;
            lines(out, &rows)?;
            rows.len() as u64
        }};
    }
    macro_rules! paged {
        ($t:ident, $row:ty) => {{
            let mut after = i64::MIN;
            let mut n = 0u64;
            loop {
                let rows: Vec<$row> = $t::table
                    .filter($t::id.gt(after))
                    .order($t::id.asc())
                    .limit(PAGE)
                    .select(<$row>::as_select())
                    .load(conn)?;
                lines(out, &rows)?;
                n += rows.len() as u64;
                match rows.last() {
                    Some(last) if rows.len() as i64 == PAGE => after = last.id,
                    _ => break n,
                }
            }
        }};
    }
    Ok(match table {
        "whatsapp_bots" => whole!(
            whatsapp_bots,
            BotLine,
            (whatsapp_bots::user_id.asc(), whatsapp_bots::slot.asc())
        ),
        "session_events" => paged!(session_events, AuditLine),
        "outbox_events" => paged!(outbox_events, EventLine),
        "webhooks" => whole!(webhooks, WebhookLine, webhooks::user_id.asc()),
        "deliveries" => paged!(deliveries, DeliveryLine),
        "sent_messages" => whole!(
            sent_messages,
            SentLine,
            (
                sent_messages::user_id.asc(),
                sent_messages::slot.asc(),
                sent_messages::idem_key.asc()
            )
        ),
        "media" => whole!(media, MediaLine, media::id.asc()),
        "daemon_secrets" => whole!(daemon_secrets, SecretLine, daemon_secrets::name.asc()),
        other => {
            return Err(DumpError::Line {
                table: other.to_owned(),
                line: 0,
                why: "not a table of the daemon".to_owned(),
            })
        }
    })
}

/// Inserts one line of `table`.
fn load_line(conn: &mut DbConnection, table: &str, line: &str) -> Result<(), DumpError> {
    macro_rules! insert {
        ($t:ident, $row:ty) => {{
            let row: $row = serde_json::from_str(line).map_err(|e| DumpError::Line {
                table: table.to_owned(),
                line: 0,
                why: e.to_string(),
            })?;
            diesel::insert_into($t::table).values(&row).execute(conn)?;
        }};
    }
    match table {
        "whatsapp_bots" => insert!(whatsapp_bots, BotLine),
        "session_events" => insert!(session_events, AuditLine),
        "outbox_events" => insert!(outbox_events, EventLine),
        "webhooks" => insert!(webhooks, WebhookLine),
        "deliveries" => insert!(deliveries, DeliveryLine),
        "sent_messages" => insert!(sent_messages, SentLine),
        "media" => insert!(media, MediaLine),
        "daemon_secrets" => {
            // The links' key: the restored one replaces one made at the first open.
            let row: SecretLine = serde_json::from_str(line).map_err(|e| DumpError::Line {
                table: table.to_owned(),
                line: 0,
                why: e.to_string(),
            })?;
            diesel::delete(daemon_secrets::table.filter(daemon_secrets::name.eq(&row.name)))
                .execute(conn)?;
            diesel::insert_into(daemon_secrets::table)
                .values(&row)
                .execute(conn)?;
        }
        other => {
            return Err(DumpError::Line {
                table: other.to_owned(),
                line: 0,
                why: "not a table of the daemon".to_owned(),
            })
        }
    }
    Ok(())
}

impl Store {
    /// Writes every row of the daemon's tables to the file `out` (created 0600), all read in one
    /// read transaction (REPEATABLE READ on PostgreSQL; SQLite's read snapshot): a delivery and
    /// its event are both in it or both not. Returns where each table's lines are.
    pub async fn dump(&self, out: PathBuf) -> Result<Vec<TableDump>, StoreError> {
        self.run(move |conn, ctx| {
            let postgres = matches!(conn, DbConnection::Pg(_));
            let file = crate::files::open_no_follow(&out)
                .and_then(|f| f.set_len(0).map(|()| f))
                .map_err(|e| ctx.dump(DumpError::Io(e)))?;
            let mut out = std::io::BufWriter::new(file);
            let dumps = conn
                .transaction(|conn| -> Result<Vec<TableDump>, DumpError> {
                    if postgres {
                        conn.batch_execute(
                            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
                        )?;
                    }
                    let mut dumps = Vec::new();
                    let mut offset = 0u64;
                    for table in TABLES {
                        let mut counted = Counting(&mut out, 0);
                        let rows = dump_table(conn, table, &mut counted)?;
                        let len = counted.1;
                        dumps.push(TableDump {
                            table,
                            offset,
                            len,
                            rows,
                        });
                        offset += len;
                    }
                    Ok(dumps)
                })
                .map_err(|e| ctx.dump(e))?;
            out.into_inner()
                .map_err(|e| e.into_error())
                .and_then(|f| f.sync_all())
                .map_err(|e| ctx.dump(DumpError::Io(e)))?;
            Ok(dumps)
        })
        .await
    }

    /// The first of the daemon's tables that holds a row, if any (a restore needs them empty).
    pub async fn first_nonempty_table(&self) -> Result<Option<&'static str>, StoreError> {
        self.run(|conn, ctx| {
            for table in TABLES.into_iter().filter(|t| *t != "daemon_secrets") {
                let sql = format!("SELECT 1 AS one FROM {table} LIMIT 1");
                let found: Vec<One> = diesel::sql_query(sql)
                    .load(conn)
                    .map_err(|e| ctx.query(e))?;
                if !found.is_empty() {
                    return Ok(Some(table));
                }
            }
            Ok(None)
        })
        .await
    }

    /// Inserts the lines of each `(table, file)` in one transaction (ids kept; PostgreSQL's
    /// sequences are moved past them). Nothing is written when one line fails. Owed deliveries
    /// are due at `now` (a restore is the moment to try again, whatever their backoff said);
    /// media whose content is in `missing` are marked removed.
    pub async fn load(
        &self,
        files: Vec<(String, PathBuf)>,
        missing: Vec<String>,
        now: i64,
    ) -> Result<u64, StoreError> {
        self.run(move |conn, ctx| {
            let postgres = matches!(conn, DbConnection::Pg(_));
            conn.transaction(|conn| -> Result<u64, DumpError> {
                let mut n = 0;
                for (table, path) in &files {
                    let file = std::fs::File::open(path)?;
                    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
                        let line = line?;
                        load_line(conn, table, &line).map_err(|e| match e {
                            DumpError::Line { table, why, .. } => DumpError::Line {
                                table,
                                line: i as u64 + 1,
                                why,
                            },
                            e => e,
                        })?;
                        n += 1;
                    }
                }
                diesel::update(
                    media::table
                        .filter(media::state.eq("stored"))
                        .filter(media::sha256.eq_any(&missing)),
                )
                .set((media::state.eq("removed"), media::updated_ms.eq(now)))
                .execute(conn)?;
                diesel::update(
                    deliveries::table
                        .filter(deliveries::status.eq("pending"))
                        .filter(deliveries::next_attempt_ms.gt(now)),
                )
                .set(deliveries::next_attempt_ms.eq(now))
                .execute(conn)?;
                if postgres {
                    for table in ["session_events", "outbox_events", "deliveries"] {
                        conn.batch_execute(&format!(
                            "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                             COALESCE((SELECT max(id) FROM {table}), 0) + 1, false)"
                        ))?;
                    }
                }
                Ok(n)
            })
            .map_err(|e| ctx.dump(e))
        })
        .await
    }
}

#[derive(QueryableByName)]
struct One {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    #[allow(dead_code)]
    one: i32,
}

/// Counts the bytes written through it.
struct Counting<'a, W>(&'a mut W, u64);

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        self.1 += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl super::Ctx {
    fn dump(&self, e: DumpError) -> StoreError {
        match e {
            DumpError::Db(e) => self.query(e),
            DumpError::Io(e) => StoreError::Dump(e.to_string()),
            DumpError::Line { table, line, why } => {
                StoreError::Dump(format!("{table}, line {line}: {why}"))
            }
        }
    }
}
