DROP INDEX IF EXISTS session_events_at;
ALTER TABLE sent_messages DROP COLUMN IF EXISTS unknown_ms;
ALTER TABLE sent_messages DROP COLUMN IF EXISTS message_id;
DROP INDEX IF EXISTS outbox_events_key_type;
DROP INDEX IF EXISTS outbox_events_dedupe;
ALTER TABLE outbox_events DROP COLUMN IF EXISTS dedupe;
ALTER TABLE outbox_events DROP COLUMN IF EXISTS uid;
