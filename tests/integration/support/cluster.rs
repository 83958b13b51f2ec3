//! Several real daemons as one cluster (docs/several-hosts.md): child processes sharing one
//! fresh PostgreSQL database, each in its own folder and with its own `NODE_ID`, optionally
//! behind a [`PgProxy`] so a test can cut one node off from the database.
//!
//! Drop the nodes before the database: declare the [`PgDatabase`] first.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

use super::daemon::{self, Daemon};
use super::pgproxy::{self, PgProxy};

/// The secret every node of a test cluster shares.
pub const CLUSTER_TOKEN: &str = "cluster-test-token-0123456789abcdef";

/// The PostgreSQL server the tests use (trust authentication for `root`).
const PG_ADDR: &str = "127.0.0.1:5432";
const PG_USER: &str = "root";

/// A database created for one test; dropped (connections and all) with this value.
pub struct PgDatabase {
    pub name: String,
}

impl PgDatabase {
    /// Creates `wa_cluster_<pid>_<n>_<random>`; panics when the server is unreachable.
    pub async fn create() -> PgDatabase {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "wa_cluster_{}_{}_{:08x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        let sql = format!("CREATE DATABASE \"{name}\"");
        tokio::task::spawn_blocking(move || {
            admin()
                .unwrap_or_else(|e| panic!("PostgreSQL at {PG_ADDR} is required: {e}"))
                .batch_execute(&sql)
                .unwrap()
        })
        .await
        .unwrap();
        PgDatabase { name }
    }

    pub fn url(&self) -> String {
        format!("postgres://{PG_USER}@{PG_ADDR}/{}", self.name)
    }

    /// The database through a proxy listening on 127.0.0.1:`port`.
    pub fn url_via(&self, port: u16) -> String {
        format!("postgres://{PG_USER}@127.0.0.1:{port}/{}", self.name)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let dropped = admin().and_then(|mut a| a.batch_execute(&sql).map_err(Into::into));
        if let Err(e) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

fn admin() -> Result<PgConnection, Box<dyn std::error::Error>> {
    Ok(PgConnection::establish(&format!(
        "postgres://{PG_USER}@{PG_ADDR}/postgres"
    ))?)
}

/// The cluster settings of one node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub lease_ttl_secs: u64,
    pub snapshot_interval_secs: u64,
    pub max_sessions: Option<u32>,
    /// Reach PostgreSQL through a [`PgProxy`] of its own (returned by [`start_node`]).
    pub through_proxy: bool,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            lease_ttl_secs: 6,
            snapshot_interval_secs: 3600,
            max_sessions: None,
            through_proxy: false,
        }
    }
}

/// Starts node `node_id` of the cluster on `db`, in `dir` (its own, for data and sessions), and
/// waits until it listens. Its `NODE_URL` is its bound address. With `through_proxy`, the
/// proxy it reaches PostgreSQL through.
pub async fn start_node(
    dir: &Path,
    standin_url: &str,
    db: &PgDatabase,
    node_id: &str,
    opts: &NodeOptions,
) -> (Daemon, Option<PgProxy>) {
    let proxy = if opts.through_proxy {
        let target: SocketAddr = PG_ADDR.parse().unwrap();
        Some(pgproxy::start(target).await)
    } else {
        None
    };
    let url = match &proxy {
        Some(p) => db.url_via(p.port()),
        None => db.url(),
    };
    let ttl = opts.lease_ttl_secs.to_string();
    let snapshots = opts.snapshot_interval_secs.to_string();
    let max_sessions = opts.max_sessions.map(|n| n.to_string());
    let mut envs = vec![
        ("DATABASE_URL", url.as_str()),
        ("NODE_ID", node_id),
        ("CLUSTER_TOKEN", CLUSTER_TOKEN),
        ("LEASE_TTL_SECS", ttl.as_str()),
        ("SNAPSHOT_INTERVAL_SECS", snapshots.as_str()),
    ];
    if let Some(n) = &max_sessions {
        envs.push(("MAX_SESSIONS", n.as_str()));
    }
    let node = daemon::start_with(dir, standin_url, &[], &envs, None).await;
    (node, proxy)
}
