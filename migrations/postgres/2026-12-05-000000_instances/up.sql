-- One process per NODE_ID (docs/several-hosts.md, "One owner per NODE_ID"): each daemon process
-- draws an instance id at start; the node row names the process that holds the name, and each
-- lease names the process that claimed it. A second process with a live node's NODE_ID is refused.
ALTER TABLE cluster_nodes ADD COLUMN IF NOT EXISTS instance TEXT NOT NULL DEFAULT '';
ALTER TABLE session_leases ADD COLUMN IF NOT EXISTS instance TEXT NULL;
