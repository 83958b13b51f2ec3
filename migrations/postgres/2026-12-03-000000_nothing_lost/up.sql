-- Nothing lost, nothing doubled (docs/nothing-lost.md).
-- uid: the event's webhook-id (evt_<uid>), unique for good: it survives a restore or a move to
-- another database, where the row id would repeat. (A volatile default: one value per row.)
ALTER TABLE outbox_events ADD COLUMN IF NOT EXISTS uid TEXT NOT NULL
    DEFAULT md5(random()::text || clock_timestamp()::text);
-- dedupe: one event per WhatsApp message id (msg:<id>) or ack (ack:<id>:<ack>) per session,
-- whatever path saw it; NULL for the others (NULLs are distinct in a unique index).
ALTER TABLE outbox_events ADD COLUMN IF NOT EXISTS dedupe TEXT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS outbox_events_dedupe ON outbox_events ("userId", slot, dedupe);
CREATE INDEX IF NOT EXISTS outbox_events_key_type ON outbox_events ("userId", slot, type, id);

ALTER TABLE sent_messages ADD COLUMN IF NOT EXISTS message_id TEXT NULL;
ALTER TABLE sent_messages ADD COLUMN IF NOT EXISTS unknown_ms BIGINT NULL;

CREATE INDEX IF NOT EXISTS session_events_at ON session_events (at_ms);
