-- Nothing lost, nothing doubled (docs/nothing-lost.md).
-- uid: the event's webhook-id (evt_<uid>), unique for good: it survives a restore or a move to
-- another database, where the row id would repeat.
ALTER TABLE outbox_events ADD COLUMN uid TEXT NOT NULL DEFAULT '';
UPDATE outbox_events SET uid = lower(hex(randomblob(16))) WHERE uid = '';
-- dedupe: one event per WhatsApp message id (msg:<id>) or ack (ack:<id>:<ack>) per session,
-- whatever path saw it; NULL for the others (NULLs are distinct in a unique index).
ALTER TABLE outbox_events ADD COLUMN dedupe TEXT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS outbox_events_dedupe ON outbox_events ("userId", slot, dedupe);
-- The newest message recorded per session, for gap filling.
CREATE INDEX IF NOT EXISTS outbox_events_key_type ON outbox_events ("userId", slot, type, id);

-- A send whose outcome is not known (timeout, crash mid-send): the message id the page was told
-- to use, and since when the outcome is unknown.
ALTER TABLE sent_messages ADD COLUMN message_id TEXT NULL;
ALTER TABLE sent_messages ADD COLUMN unknown_ms BIGINT NULL;

CREATE INDEX IF NOT EXISTS session_events_at ON session_events (at_ms);
