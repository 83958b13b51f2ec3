//! Several real daemons as one cluster (docs/several-hosts.md): child processes sharing one
//! fresh PostgreSQL database, each in its own folder and with its own `NODE_ID`, optionally
//! behind a [`PgProxy`] so a test can cut one node off from the database.
//!
//! Drop the nodes before the database: declare the [`PgDatabase`] first.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl};
use serde_json::Value;

use super::daemon::{self, Daemon};
pub use super::harness::eventually;
use super::harness::{pids_on_root, ADMIN_TOKEN, SERVICE_TOKEN};
use super::pgproxy::{self, PgProxy};
use super::standin::StandIn;

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
    /// WA-JS file and its SHA-256 (the WPP stand-in), instead of the default.
    pub wa_js: Option<(String, String)>,
    /// More settings, as environment variables.
    pub env: Vec<(&'static str, String)>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            lease_ttl_secs: 6,
            snapshot_interval_secs: 3600,
            max_sessions: None,
            through_proxy: false,
            wa_js: None,
            env: Vec::new(),
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
    if let Some((path, sha)) = &opts.wa_js {
        envs.push(("WA_JS_PATH", path.as_str()));
        envs.push(("WA_JS_SHA256", sha.as_str()));
    }
    envs.extend(opts.env.iter().map(|(k, v)| (*k, v.as_str())));
    let node = daemon::start_with(dir, standin_url, &[], &envs, None).await;
    (node, proxy)
}

/// The lease TTL of test clusters.
pub const TTL_SECS: u64 = 6;

pub struct Node {
    pub name: String,
    pub daemon: Daemon,
    pub proxy: Option<PgProxy>,
    opts: NodeOptions,
    dir: tempfile::TempDir,
}

impl Node {
    pub async fn start(standin: &StandIn, db: &PgDatabase, name: &str, proxy: bool) -> Node {
        let opts = NodeOptions {
            lease_ttl_secs: TTL_SECS,
            through_proxy: proxy,
            ..NodeOptions::default()
        };
        Node::start_with(standin, db, name, &opts).await
    }

    pub async fn start_with(
        standin: &StandIn,
        db: &PgDatabase,
        name: &str,
        opts: &NodeOptions,
    ) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let (daemon, proxy) = start_node(dir.path(), &standin.url(), db, name, opts).await;
        Node {
            name: name.to_owned(),
            daemon,
            proxy,
            opts: opts.clone(),
            dir,
        }
    }

    /// kill -9 (returns once the process is gone).
    pub async fn kill(&mut self) {
        self.daemon.signal(libc::SIGKILL);
        self.daemon.wait_exit(Duration::from_secs(5)).await;
    }

    /// The same node (`NODE_ID`, folder, settings) started again after [`Node::kill`].
    pub async fn restart(&mut self, standin: &StandIn, db: &PgDatabase) {
        let (daemon, proxy) =
            start_node(self.dir.path(), &standin.url(), db, &self.name, &self.opts).await;
        self.daemon = daemon;
        self.proxy = proxy;
    }

    /// The command line of this node's daemon for another process (its own folder and port).
    pub fn twin(&self, db: &PgDatabase, dir: &Path) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wa-supervisor"));
        cmd.current_dir(dir)
            .env("BIND_ADDR", "127.0.0.1:0")
            .env("DATABASE_URL", db.url())
            .env("CLUSTER_TOKEN", CLUSTER_TOKEN)
            .env("NODE_ID", &self.name)
            .env("LEASE_TTL_SECS", self.opts.lease_ttl_secs.to_string())
            .kill_on_drop(true);
        cmd
    }

    pub async fn call(&self, method: &str, path: &str) -> (u16, Value) {
        self.daemon.call(method, path, SERVICE_TOKEN).await
    }

    pub fn browsers(&self) -> Vec<u32> {
        pids_on_root(&self.daemon.sessions())
    }
}

/// The three nodes, each seen alive by the others (heartbeats in `cluster_nodes`).
pub async fn cluster(standin: &StandIn, db: &PgDatabase, proxied: &[&str]) -> Vec<Node> {
    let mut nodes = Vec::new();
    for name in ["n1", "n2", "n3"] {
        nodes.push(Node::start(standin, db, name, proxied.contains(&name)).await);
    }
    let first = &nodes[0];
    eventually(Duration::from_secs(15), "three nodes alive", || async {
        let (status, body) = first.daemon.call("GET", "/admin/nodes", ADMIN_TOKEN).await;
        let alive = body["nodes"]
            .as_array()
            .map_or(0, |n| n.iter().filter(|n| n["alive"] == true).count());
        (status == 200 && alive == 3).then_some(())
    })
    .await;
    nodes
}

#[derive(QueryableByName)]
struct LeaseRow {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    node: Option<String>,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    epoch: i64,
}

/// `(node, epoch)` of a live lease on `user:slot`, straight from the database.
pub async fn lease(db: &PgDatabase, user: &str, slot: u16) -> Option<(String, i64)> {
    let url = db.url();
    let sql = format!(
        "SELECT node, epoch FROM session_leases WHERE \"userId\" = '{user}' AND slot = {slot} \
         AND expires_at >= now() AND node IS NOT NULL"
    );
    tokio::task::spawn_blocking(move || {
        let mut conn = PgConnection::establish(&url).unwrap();
        let rows: Vec<LeaseRow> = diesel::sql_query(sql).load(&mut conn).unwrap();
        rows.into_iter()
            .next()
            .and_then(|r| Some((r.node?, r.epoch)))
    })
    .await
    .unwrap()
}

/// The epoch of `user:slot`'s stored snapshot of a login (a logout's is none).
pub async fn snapshot_epoch(db: &PgDatabase, user: &str, slot: u16) -> Option<i64> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        epoch: i64,
    }
    let url = db.url();
    let sql = format!(
        "SELECT epoch FROM session_snapshots WHERE \"userId\" = '{user}' AND slot = {slot} \
         AND (blob IS NOT NULL OR bytes IS NOT NULL)"
    );
    tokio::task::spawn_blocking(move || {
        let mut conn = PgConnection::establish(&url).unwrap();
        let rows: Vec<Row> = diesel::sql_query(sql).load(&mut conn).unwrap();
        rows.into_iter().next().map(|r| r.epoch)
    })
    .await
    .unwrap()
}

/// Starts `user:slot` through `via`, scans its QR code for `phone`, and waits until the fresh
/// link has been snapshotted (stop, copy, start: the session is connected again after it).
pub async fn link(
    standin: &StandIn,
    db: &PgDatabase,
    via: &Node,
    user: &str,
    slot: u16,
    phone: &str,
) {
    let (status, body) = via.call("POST", &format!("/api/start/{user}/{slot}")).await;
    assert!(status == 200 || status == 202, "start: {status} {body}");
    eventually(
        Duration::from_secs(40),
        &format!("{user}:{slot} linked"),
        || async {
            let (status, s) = via.call("GET", &format!("/api/status/{user}/{slot}")).await;
            if status == 200 && s["isConnected"] == true {
                return Some(());
            }
            if let Some(payload) = s["qr"]["payload"].as_str() {
                let _ = standin.scan(payload, phone).await;
            }
            None
        },
    )
    .await;
    eventually(
        Duration::from_secs(40),
        &format!("{user}:{slot} snapshotted"),
        || async {
            let (node_epoch, snap) = (
                lease(db, user, slot).await,
                snapshot_epoch(db, user, slot).await,
            );
            let (status, s) = via.call("GET", &format!("/api/status/{user}/{slot}")).await;
            let connected = status == 200 && s["isConnected"] == true;
            (connected && snap.is_some() && node_epoch.is_some_and(|(_, e)| Some(e) == snap))
                .then_some(())
        },
    )
    .await;
}

/// Waits until `user:slot` is connected on a node other than `not`; how long it took from `since`.
pub async fn connected_elsewhere(
    db: &PgDatabase,
    via: &Node,
    user: &str,
    slot: u16,
    not: &str,
    since: Instant,
    limit: Duration,
) -> (String, Duration) {
    eventually(
        limit,
        &format!("{user}:{slot} connected off {not}"),
        || async {
            let owner = lease(db, user, slot).await?;
            if owner.0 == not {
                return None;
            }
            let (status, s) = via.call("GET", &format!("/api/status/{user}/{slot}")).await;
            (status == 200 && s["isConnected"] == true).then(|| (owner.0, since.elapsed()))
        },
    )
    .await
}

/// Every node's log, for a failure's message.
pub fn logs(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| format!("--- {} ---\n{}", n.name, n.daemon.log_text()))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}
