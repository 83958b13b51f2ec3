-- Messages, state changes and their webhook deliveries (the durable outbox), per-user webhooks,
-- and the idempotency keys of sent messages.

CREATE TABLE IF NOT EXISTS outbox_events (
    -- The cursor of GET /api/messages (never reused: AUTOINCREMENT).
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    "userId"   TEXT    NOT NULL,
    slot       INTEGER NOT NULL,
    type       TEXT    NOT NULL,
    -- The event's `data` as JSON.
    payload    TEXT    NOT NULL,
    created_ms BIGINT  NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_events_key_id ON outbox_events ("userId", slot, id);
CREATE INDEX IF NOT EXISTS outbox_events_created ON outbox_events (created_ms);

CREATE TABLE IF NOT EXISTS webhooks (
    "userId"        TEXT    PRIMARY KEY,
    url             TEXT    NOT NULL,
    -- Comma-separated event types, or '*'.
    events          TEXT    NOT NULL,
    secret          TEXT    NOT NULL,
    -- Set when the receiver answered 410 Gone (no more deliveries until it is PUT again).
    disabled_reason TEXT    NULL,
    created_ms      BIGINT  NOT NULL,
    updated_ms      BIGINT  NOT NULL
);

CREATE TABLE IF NOT EXISTS deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        BIGINT  NOT NULL,
    -- 'service' (WEBHOOK_URL) or 'user' (the user's webhook).
    target          TEXT    NOT NULL,
    "userId"        TEXT    NOT NULL,
    slot            INTEGER NOT NULL,
    -- 'pending', 'delivered' or 'failed'.
    status          TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT  NOT NULL,
    last_status     INTEGER NULL,
    last_error      TEXT    NULL,
    created_ms      BIGINT  NOT NULL,
    updated_ms      BIGINT  NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (status, next_attempt_ms);
CREATE INDEX IF NOT EXISTS deliveries_order ON deliveries (target, "userId", slot, status, id);

CREATE TABLE IF NOT EXISTS sent_messages (
    "userId"   TEXT    NOT NULL,
    slot       INTEGER NOT NULL,
    idem_key   TEXT    NOT NULL,
    -- The send's answer as JSON once WhatsApp Web accepted it; NULL while in flight.
    result     TEXT    NULL,
    created_ms BIGINT  NOT NULL,
    PRIMARY KEY ("userId", slot, idem_key)
);
