ALTER TABLE session_leases DROP COLUMN IF EXISTS instance;
ALTER TABLE cluster_nodes DROP COLUMN IF EXISTS instance;
