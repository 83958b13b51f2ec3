-- The daemon's tables on PostgreSQL.
--
-- whatsapp_bots belongs to the platform first: the bot backend and the Next.js site read
-- "userId", slot, "isConnected" and "connectedNumber", and an existing database may already hold
-- the table (written by the old Node backend) with rows that are live WhatsApp links. So this
-- migration ADOPTS whatever is there instead of assuming a fresh database: every step is
-- idempotent, nothing is dropped, no row is deleted. Columns or constraints it does not know
-- (e.g. a legacy "id serial primary key") are left alone.
-- diesel runs it in one transaction: it either adopts the table completely or changes nothing.

-- 1. Fresh database: the full table. On an existing table this is a no-op and the steps
--    below bring it to the same shape.
CREATE TABLE IF NOT EXISTS whatsapp_bots (
    "userId"          TEXT    NOT NULL,
    slot              INTEGER NOT NULL,
    "isConnected"     BOOLEAN NOT NULL DEFAULT false,
    "connectedNumber" TEXT    NULL
);

-- 2. The platform's columns, in case a legacy table lacks one of them.
ALTER TABLE whatsapp_bots ADD COLUMN IF NOT EXISTS "userId" TEXT;
ALTER TABLE whatsapp_bots ADD COLUMN IF NOT EXISTS slot INTEGER;
ALTER TABLE whatsapp_bots ADD COLUMN IF NOT EXISTS "isConnected" BOOLEAN;
ALTER TABLE whatsapp_bots ADD COLUMN IF NOT EXISTS "connectedNumber" TEXT;

-- 3. Column types the daemon reads and writes. The old backend may have declared "userId" as
--    uuid or varchar(n) and "connectedNumber" as varchar(n) or a number; the daemon binds TEXT
--    (a uuid column would refuse `"userId" = $1::text`, a varchar(n) could truncate-fail). slot
--    may be smallint/bigint. Only columns of another type are altered (ALTER TYPE rewrites the
--    table and takes an exclusive lock, so skip it when there is nothing to do). The casts keep
--    every value: uuid::text is the canonical lower-case form, which is a valid user id.
DO $$
BEGIN
    IF (SELECT data_type FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = 'whatsapp_bots'
          AND column_name = 'userId') <> 'text' THEN
        ALTER TABLE whatsapp_bots ALTER COLUMN "userId" TYPE TEXT USING "userId"::text;
    END IF;
    IF (SELECT data_type FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = 'whatsapp_bots'
          AND column_name = 'connectedNumber') <> 'text' THEN
        ALTER TABLE whatsapp_bots ALTER COLUMN "connectedNumber" TYPE TEXT USING "connectedNumber"::text;
    END IF;
    IF (SELECT data_type FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = 'whatsapp_bots'
          AND column_name = 'slot') <> 'integer' THEN
        ALTER TABLE whatsapp_bots ALTER COLUMN slot TYPE INTEGER USING slot::integer;
    END IF;
END
$$;

-- 4. "isConnected" may have been nullable: a NULL meant "not connected" to its readers. The
--    daemon reads it as a plain boolean, so fill the NULLs, then forbid new ones; the default
--    keeps inserts by other programs that omit the column working.
UPDATE whatsapp_bots SET "isConnected" = false WHERE "isConnected" IS NULL;
ALTER TABLE whatsapp_bots ALTER COLUMN "isConnected" SET DEFAULT false;
ALTER TABLE whatsapp_bots ALTER COLUMN "isConnected" SET NOT NULL;
-- "userId" and slot are deliberately NOT forced to NOT NULL: a legacy row with a NULL would make
-- this migration (and so the daemon's boot) fail. The daemon skips such rows with a warning.

-- 5. The daemon's own columns. The defaults give adopted rows values (adding a column with a
--    constant or stable default fills existing rows without a rewrite): state 'stopped' (no
--    browser runs yet), created/updated = the migration's time in epoch milliseconds. They stay
--    as defaults so other programs that insert rows without them keep working.
ALTER TABLE whatsapp_bots ADD COLUMN IF NOT EXISTS state TEXT NOT NULL DEFAULT 'stopped';
ALTER TABLE whatsapp_bots ADD COLUMN IF NOT EXISTS intent TEXT NOT NULL DEFAULT 'stopped';
ALTER TABLE whatsapp_bots ADD COLUMN IF NOT EXISTS restarts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE whatsapp_bots ADD COLUMN IF NOT EXISTS last_error TEXT NULL;
ALTER TABLE whatsapp_bots ADD COLUMN IF NOT EXISTS created_ms BIGINT NOT NULL
    DEFAULT (extract(epoch FROM now()) * 1000)::bigint;
ALTER TABLE whatsapp_bots ADD COLUMN IF NOT EXISTS updated_ms BIGINT NOT NULL
    DEFAULT (extract(epoch FROM now()) * 1000)::bigint;

-- 6. Rows that were connected under the old backend are live WhatsApp links: intent 'running'
--    makes the daemon's boot restore them from their profile folders (SPEC §7) instead of
--    leaving them stopped. This migration runs once, before the daemon ever wrote an intent, so
--    every row that exists here was adopted (on a fresh table there are none).
UPDATE whatsapp_bots SET intent = 'running' WHERE "isConnected";

-- 7. The one key of a session (SPEC §2). A legacy table without such a constraint could hold
--    duplicate keys; creating the index would then fail with a bare "could not create unique
--    index". Say what to do instead, and never pick a row to delete on the operator's behalf.
DO $$
DECLARE
    dupes bigint;
BEGIN
    SELECT count(*) INTO dupes FROM (
        SELECT 1 FROM whatsapp_bots
        WHERE "userId" IS NOT NULL AND slot IS NOT NULL
        GROUP BY "userId", slot HAVING count(*) > 1
    ) d;
    IF dupes > 0 THEN
        RAISE EXCEPTION 'whatsapp_bots has % ("userId", slot) pair(s) on more than one row; '
            'keep one row per pair (SELECT "userId", slot, count(*) FROM whatsapp_bots '
            'GROUP BY 1, 2 HAVING count(*) > 1) and restart', dupes;
    END IF;
END
$$;
-- IF NOT EXISTS: idempotent. A legacy unique constraint on the same columns under another name
-- is harmless next to it.
CREATE UNIQUE INDEX IF NOT EXISTS whatsapp_bots_user_slot_key ON whatsapp_bots ("userId", slot);

-- 8. The audit trail is the daemon's alone.
CREATE TABLE IF NOT EXISTS session_events (
    id       BIGSERIAL PRIMARY KEY,
    "userId" TEXT    NOT NULL,
    slot     INTEGER NOT NULL,
    at_ms    BIGINT  NOT NULL,
    kind     TEXT    NOT NULL,
    detail   TEXT    NULL,
    actor    TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS session_events_key_id ON session_events ("userId", slot, id);
