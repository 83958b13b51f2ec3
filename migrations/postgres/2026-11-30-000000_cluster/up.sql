-- Several nodes on one PostgreSQL (docs/several-hosts.md): the nodes, one lease per session with
-- its fencing epoch, and the newest snapshot of each session's login. Times are the database's
-- (now()), never a node's clock.

CREATE TABLE IF NOT EXISTS cluster_nodes (
    node       TEXT        PRIMARY KEY,
    -- How the other nodes reach this one (NODE_URL).
    url        TEXT        NOT NULL,
    -- MAX_SESSIONS of the node, and the browsers it runs (from its last heartbeat).
    capacity   INTEGER     NOT NULL,
    running    INTEGER     NOT NULL DEFAULT 0,
    -- A draining node takes no new sessions and hands its own away.
    draining   BOOLEAN     NOT NULL DEFAULT false,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    seen_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS session_leases (
    "userId"   TEXT        NOT NULL,
    slot       INTEGER     NOT NULL,
    -- The owner; NULL once released.
    node       TEXT        NULL,
    -- The fencing token: bumped by every claim; every write of the owner names it.
    epoch      BIGINT      NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY ("userId", slot)
);
CREATE INDEX IF NOT EXISTS session_leases_node ON session_leases (node);

CREATE TABLE IF NOT EXISTS session_snapshots (
    "userId" TEXT    NOT NULL,
    slot     INTEGER NOT NULL,
    -- The lease epoch it was taken under, and by which node.
    epoch    BIGINT  NOT NULL,
    node     TEXT    NOT NULL,
    taken_ms BIGINT  NOT NULL,
    -- Default/IndexedDB and Default/Local Storage of the closed browser, as a tar.gz.
    bytes    BYTEA   NOT NULL,
    PRIMARY KEY ("userId", slot)
);
