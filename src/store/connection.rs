//! The one connection type both backends go through, its pool and the embedded migrations.
//!
//! Queries are written once against [`DbConnection`] (diesel's `MultiConnection`). The variant is
//! chosen from the parsed URL here, not by `MultiConnection::establish` (which tries each backend
//! in turn, hides the real error and would open any string as a SQLite file). Migrations are the
//! only per-backend code.

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::r2d2::{self, CustomizeConnection, ManageConnection, R2D2Connection};
use diesel::sqlite::SqliteConnection;
use diesel::Connection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::url::DatabaseUrl;
use super::StoreError;

#[derive(diesel::MultiConnection)]
pub(crate) enum DbConnection {
    Pg(PgConnection),
    Sqlite(SqliteConnection),
}

const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// How long a SQLite writer waits for another one before `database is locked`.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 5_000;

/// Opens connections of the backend the URL names.
#[derive(Debug, Clone)]
pub(crate) struct Manager {
    /// libpq URL or SQLite file path, as diesel wants it.
    target: String,
    backend: &'static str,
    postgres: bool,
}

impl Manager {
    pub(crate) fn new(url: &DatabaseUrl) -> Result<Manager, StoreError> {
        Ok(match url {
            DatabaseUrl::Postgres(u) => Manager {
                target: u.clone(),
                backend: url.backend(),
                postgres: true,
            },
            DatabaseUrl::Sqlite(path) => Manager {
                target: path
                    .to_str()
                    .ok_or_else(|| StoreError::NotUtf8(path.clone()))?
                    .to_owned(),
                backend: url.backend(),
                postgres: false,
            },
        })
    }

    /// One connection of the URL's backend; the real driver error on failure.
    fn connect_raw(&self) -> Result<DbConnection, diesel::ConnectionError> {
        Ok(if self.postgres {
            DbConnection::Pg(PgConnection::establish(&self.target)?)
        } else {
            DbConnection::Sqlite(SqliteConnection::establish(&self.target)?)
        })
    }

    /// One connection with the session settings applied (the first connection at boot: its
    /// error is precise, where the pool would only report a timeout).
    pub(crate) fn establish(&self) -> Result<DbConnection, StoreError> {
        let mut conn = self.connect_raw().map_err(|e| StoreError::Connect {
            backend: self.backend,
            source: Box::new(e),
        })?;
        Settings
            .on_acquire(&mut conn)
            .map_err(|e| StoreError::Connect {
                backend: self.backend,
                source: Box::new(e),
            })?;
        Ok(conn)
    }
}

impl ManageConnection for Manager {
    type Connection = DbConnection;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<DbConnection, r2d2::Error> {
        self.connect_raw().map_err(r2d2::Error::ConnectionError)
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), r2d2::Error> {
        conn.ping().map_err(r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        conn.is_broken()
    }
}

/// Per-connection SQLite settings (PRAGMAs are per connection, so every pooled one needs them).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings;

impl CustomizeConnection<DbConnection, r2d2::Error> for Settings {
    fn on_acquire(&self, conn: &mut DbConnection) -> Result<(), r2d2::Error> {
        match conn {
            DbConnection::Pg(_) => Ok(()),
            // WAL: readers never block the writer; busy_timeout: a second writer waits instead of
            // failing; foreign_keys: off by default in SQLite; synchronous=NORMAL is safe with WAL.
            DbConnection::Sqlite(c) => c
                .batch_execute(&format!(
                    "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}; \
                     PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;"
                ))
                .map_err(r2d2::Error::QueryError),
        }
    }
}

/// Applies the embedded migrations of the connection's backend.
pub(crate) fn run_migrations(
    conn: &mut DbConnection,
    backend: &'static str,
) -> Result<(), StoreError> {
    let applied = match conn {
        DbConnection::Pg(c) => c.run_pending_migrations(PG_MIGRATIONS).map(|v| v.len()),
        DbConnection::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS).map(|v| v.len()),
    }
    .map_err(|source| StoreError::Migration { backend, source })?;
    if applied > 0 {
        log::info!("store: applied {applied} {backend} migration(s)");
    }
    Ok(())
}
