DROP TABLE IF EXISTS session_snapshots;
DROP TABLE IF EXISTS session_leases;
DROP TABLE IF EXISTS cluster_nodes;
