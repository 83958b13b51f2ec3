-- The daemon's tables on SQLite. Same columns as on PostgreSQL: the platform's
-- "userId", slot, "isConnected", "connectedNumber" plus the daemon's own.
-- IF NOT EXISTS so a file created by hand (or by an older tool) is taken as it is.

CREATE TABLE IF NOT EXISTS whatsapp_bots (
    "userId"          TEXT    NOT NULL,
    slot              INTEGER NOT NULL,
    "isConnected"     BOOLEAN NOT NULL DEFAULT 0,
    "connectedNumber" TEXT    NULL,
    state             TEXT    NOT NULL DEFAULT 'stopped',
    intent            TEXT    NOT NULL DEFAULT 'stopped',
    restarts          INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT    NULL,
    -- Epoch milliseconds, also for rows inserted without them.
    created_ms        BIGINT  NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
    updated_ms        BIGINT  NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
);

-- The one key of a session (SPEC §2).
CREATE UNIQUE INDEX IF NOT EXISTS whatsapp_bots_user_slot_key ON whatsapp_bots ("userId", slot);

CREATE TABLE IF NOT EXISTS session_events (
    -- AUTOINCREMENT: ids are never reused, so "oldest first" by id stays true after deletes.
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    "userId" TEXT    NOT NULL,
    slot     INTEGER NOT NULL,
    at_ms    BIGINT  NOT NULL,
    kind     TEXT    NOT NULL,
    detail   TEXT    NULL,
    actor    TEXT    NOT NULL
);

CREATE INDEX IF NOT EXISTS session_events_key_id ON session_events ("userId", slot, id);
