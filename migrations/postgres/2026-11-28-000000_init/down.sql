-- Undoes the daemon's part only. whatsapp_bots is the platform's table (it may have existed
-- before the daemon): it is kept with its rows and the platform's columns. Type conversions of
-- adoption ("userId"/"connectedNumber" to TEXT, "isConnected" NOT NULL) are not reverted: they
-- lost no information and the original types are not recorded.
DROP TABLE IF EXISTS session_events;
DROP INDEX IF EXISTS whatsapp_bots_user_slot_key;
ALTER TABLE whatsapp_bots
    DROP COLUMN IF EXISTS state,
    DROP COLUMN IF EXISTS intent,
    DROP COLUMN IF EXISTS restarts,
    DROP COLUMN IF EXISTS last_error,
    DROP COLUMN IF EXISTS created_ms,
    DROP COLUMN IF EXISTS updated_ms;
