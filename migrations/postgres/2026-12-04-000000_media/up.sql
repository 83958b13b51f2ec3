-- Incoming media (docs/media.md): one row per media message of a session; the bytes are stored
-- once per content (sha256) under DATA_DIR/media.
CREATE TABLE IF NOT EXISTS media (
    -- The media id of the links: derived from the session and the message id.
    id          TEXT    PRIMARY KEY,
    "userId"    TEXT    NOT NULL,
    slot        INTEGER NOT NULL,
    message_id  TEXT    NOT NULL,
    -- The event that announced it (the message, or message.media after a retry): the media is
    -- kept at least until every delivery of it ended.
    event_id    BIGINT  NULL,
    -- 'stored', 'failed' (error says why; a retry may store it) or 'removed' (retention, quota).
    state       TEXT    NOT NULL,
    sha256      TEXT    NULL,
    size        BIGINT  NULL,
    mimetype    TEXT    NULL,
    filename    TEXT    NULL,
    error       TEXT    NULL,
    created_ms  BIGINT  NOT NULL,
    updated_ms  BIGINT  NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS media_message ON media ("userId", slot, message_id);
CREATE INDEX IF NOT EXISTS media_user_state ON media ("userId", state, updated_ms);
CREATE INDEX IF NOT EXISTS media_sha256 ON media (sha256);

-- Bytes of media in cluster mode (a store every node reaches); one node keeps them in files.
CREATE TABLE IF NOT EXISTS media_blobs (
    sha256 TEXT    NOT NULL,
    part   INTEGER NOT NULL,
    data   BYTEA   NOT NULL,
    -- When the content was last put (a new message carrying it): the clean-up leaves contents
    -- put within the hour alone, as their row may still be on its way from another node.
    stored_ms BIGINT NOT NULL,
    PRIMARY KEY (sha256, part)
);

-- The daemon's own secrets (the key that signs media links), the same for every node.
CREATE TABLE IF NOT EXISTS daemon_secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
