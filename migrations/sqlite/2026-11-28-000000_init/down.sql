DROP INDEX IF EXISTS session_events_key_id;
DROP TABLE IF EXISTS session_events;
DROP INDEX IF EXISTS whatsapp_bots_user_slot_key;
DROP TABLE IF EXISTS whatsapp_bots;
