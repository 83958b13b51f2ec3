-- Several hosts under failure (docs/several-hosts.md).

-- One process per NODE_ID ("One owner per NODE_ID"): each daemon process draws an instance id
-- at start; the node row names the process that holds the name, and each lease names the process
-- that claimed it. A second process with a live node's NODE_ID is refused.
ALTER TABLE cluster_nodes ADD COLUMN IF NOT EXISTS instance TEXT NOT NULL DEFAULT '';
ALTER TABLE session_leases ADD COLUMN IF NOT EXISTS instance TEXT NULL;

-- Snapshots are uploaded first, outside the lease's lock, then made the session's newest in a
-- short fenced statement ("Renewals first"). A snapshot row without bytes and without a blob
-- is a logout: the login is gone on every node ("Logout is final").
CREATE TABLE IF NOT EXISTS session_snapshot_blobs (
    id         BIGSERIAL   PRIMARY KEY,
    "userId"   TEXT        NOT NULL,
    slot       INTEGER     NOT NULL,
    bytes      BYTEA       NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS session_snapshot_blobs_session
    ON session_snapshot_blobs ("userId", slot);
ALTER TABLE session_snapshots ADD COLUMN IF NOT EXISTS blob BIGINT NULL;
ALTER TABLE session_snapshots ALTER COLUMN bytes DROP NOT NULL;
