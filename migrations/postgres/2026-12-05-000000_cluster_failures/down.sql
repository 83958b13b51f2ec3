DELETE FROM session_snapshots WHERE bytes IS NULL;
ALTER TABLE session_snapshots ALTER COLUMN bytes SET NOT NULL;
ALTER TABLE session_snapshots DROP COLUMN IF EXISTS blob;
DROP TABLE IF EXISTS session_snapshot_blobs;
ALTER TABLE session_leases DROP COLUMN IF EXISTS instance;
ALTER TABLE cluster_nodes DROP COLUMN IF EXISTS instance;
