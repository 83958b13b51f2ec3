//! The cluster's tables (PostgreSQL only; docs/several-hosts.md): nodes and their heartbeats,
//! one lease per session with its fencing epoch, and each session's newest snapshot.
//!
//! Every time comes from the database (`now()`), never from a node's clock. A claim bumps the
//! epoch; a node's writes for a session go through [`Store::fenced`], which locks the lease row
//! (`FOR SHARE`) and checks `node` and `epoch` in the same transaction: a takeover waits for a
//! write in flight, and a write after a takeover fails with [`StoreError::LeaseLost`].

use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Binary, Bool, Double, Integer, Nullable, Text};

use super::connection::DbConnection;
use super::{slot_value, Ctx, Store, StoreError};
use crate::domain::SessionKey;

/// A node's claim on one session: writes carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub epoch: i64,
}

/// Who holds a session's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: SessionKey,
    pub node: Option<String>,
    pub epoch: i64,
    /// Not expired (by the database's clock).
    pub live: bool,
    /// The holder's `NODE_URL`, when the holder is a known node.
    pub url: Option<String>,
}

/// One node as its last heartbeat left it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    pub node: String,
    pub url: String,
    pub capacity: i32,
    pub running: i32,
    pub draining: bool,
    /// Its heartbeat is recent (within the lease TTL).
    pub alive: bool,
    /// Live leases it holds.
    pub leases: i64,
    /// Milliseconds since its last heartbeat.
    pub seen_ms_ago: i64,
}

/// The process that holds a node's name, as [`Store::join`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHolder {
    pub instance: String,
    pub url: String,
    /// Its last heartbeat, as the database prints it.
    pub seen: String,
    pub seen_ms_ago: i64,
}

#[derive(QueryableByName)]
struct HolderRecord {
    #[diesel(sql_type = Text)]
    instance: String,
    #[diesel(sql_type = Text)]
    url: String,
    #[diesel(sql_type = Text)]
    seen: String,
    #[diesel(sql_type = BigInt)]
    seen_ms_ago: i64,
}

/// The newest snapshot of a session's login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub epoch: i64,
    pub node: String,
    pub taken_ms: i64,
    /// The login (a tar.gz); `None`: logged out at `epoch` — no node may launch an older one.
    pub bytes: Option<Vec<u8>>,
}

#[derive(QueryableByName)]
struct EpochRow {
    #[diesel(sql_type = BigInt)]
    epoch: i64,
}

#[derive(QueryableByName)]
struct LeaseRecord {
    #[diesel(sql_type = Text, column_name = "userId")]
    user_id: String,
    #[diesel(sql_type = Integer)]
    slot: i32,
    #[diesel(sql_type = Nullable<Text>)]
    node: Option<String>,
    #[diesel(sql_type = BigInt)]
    epoch: i64,
    #[diesel(sql_type = Bool)]
    live: bool,
    #[diesel(sql_type = Nullable<Text>)]
    url: Option<String>,
}

#[derive(QueryableByName)]
struct KeyRecord {
    #[diesel(sql_type = Text, column_name = "userId")]
    user_id: String,
    #[diesel(sql_type = Integer)]
    slot: i32,
    #[diesel(sql_type = BigInt)]
    epoch: i64,
}

#[derive(QueryableByName)]
struct NodeRecord {
    #[diesel(sql_type = Text)]
    node: String,
    #[diesel(sql_type = Text)]
    url: String,
    #[diesel(sql_type = Integer)]
    capacity: i32,
    #[diesel(sql_type = Integer)]
    running: i32,
    #[diesel(sql_type = Bool)]
    draining: bool,
    #[diesel(sql_type = Bool)]
    alive: bool,
    #[diesel(sql_type = BigInt)]
    leases: i64,
    #[diesel(sql_type = BigInt)]
    seen_ms_ago: i64,
}

#[derive(QueryableByName)]
struct SnapshotRecord {
    #[diesel(sql_type = BigInt)]
    epoch: i64,
    #[diesel(sql_type = Text)]
    node: String,
    #[diesel(sql_type = BigInt)]
    taken_ms: i64,
    #[diesel(sql_type = Nullable<Binary>)]
    bytes: Option<Vec<u8>>,
}

/// Claims a free or expired lease, or one left under this node's name by an earlier process
/// (the node row names this process: the earlier one is gone), bumping the epoch and naming this
/// process; no row when another node (or another process of this name) holds it.
const CLAIM_SQL: &str = r#"
INSERT INTO session_leases ("userId", slot, node, instance, epoch, expires_at)
VALUES ($1, $2, $3, $5, 1, now() + make_interval(secs => $4))
ON CONFLICT ("userId", slot) DO UPDATE
    SET node = EXCLUDED.node, instance = EXCLUDED.instance, epoch = session_leases.epoch + 1,
        expires_at = EXCLUDED.expires_at
    WHERE session_leases.node IS NULL OR session_leases.expires_at < now()
       OR session_leases.instance = EXCLUDED.instance
       OR (session_leases.node = EXCLUDED.node AND EXISTS (
            SELECT 1 FROM cluster_nodes n WHERE n.node = EXCLUDED.node AND n.instance = EXCLUDED.instance))
RETURNING epoch"#;

/// Renews the leases this process holds (a JSON list of {u, s, e}) that have not expired.
const RENEW_SQL: &str = r#"
UPDATE session_leases l SET expires_at = now() + make_interval(secs => $3)
FROM jsonb_to_recordset($2::jsonb) AS h(u text, s int, e bigint)
WHERE l."userId" = h.u AND l.slot = h.s AND l.epoch = h.e AND l.node = $1
  AND l.instance = $4 AND l.expires_at >= now()
RETURNING l."userId", l.slot, l.epoch"#;

const LEASE_SQL: &str = r#"
SELECT l."userId", l.slot, l.node, l.epoch, l.expires_at >= now() AS live, n.url
FROM session_leases l LEFT JOIN cluster_nodes n ON n.node = l.node"#;

/// Sessions that should run and that nobody holds (or that an earlier process of this node held).
const ORPHANS_SQL: &str = r#"
SELECT b."userId", b.slot, COALESCE(l.epoch, 0) AS epoch FROM whatsapp_bots b
LEFT JOIN session_leases l ON l."userId" = b."userId" AND l.slot = b.slot
WHERE b.intent = 'running' AND b."userId" IS NOT NULL AND b.slot IS NOT NULL
  AND (l.node IS NULL OR l.expires_at < now()
       OR (l.node = $1 AND l.instance IS DISTINCT FROM $3 AND EXISTS (
            SELECT 1 FROM cluster_nodes n WHERE n.node = $1 AND n.instance = $3)))
ORDER BY b.updated_ms
LIMIT $2"#;

/// This process's heartbeat (the row comes back if it was removed); no row when another
/// process holds this node's name now.
const HEARTBEAT_SQL: &str = r#"
INSERT INTO cluster_nodes (node, url, capacity, running, instance, seen_at)
VALUES ($1, $2, $3, $4, $5, now())
ON CONFLICT (node) DO UPDATE
    SET url = EXCLUDED.url, capacity = EXCLUDED.capacity, running = EXCLUDED.running,
        seen_at = now()
    WHERE cluster_nodes.instance = EXCLUDED.instance"#;

/// Takes this node's name for this process: a new node, a name given up (a graceful shutdown)
/// or unused for `$4` seconds, or the name held by `$6`, an earlier process whose heartbeat
/// stopped at `$7` (compared as text: it must not have beaten since). No row when another
/// process holds the name.
const JOIN_SQL: &str = r#"
INSERT INTO cluster_nodes (node, url, capacity, running, instance, started_at, seen_at)
VALUES ($1, $2, $3, 0, $5, now(), now())
ON CONFLICT (node) DO UPDATE
    SET url = CASE WHEN EXCLUDED.url = '' THEN cluster_nodes.url ELSE EXCLUDED.url END,
        capacity = EXCLUDED.capacity, running = 0, instance = EXCLUDED.instance,
        draining = false, started_at = now(), seen_at = now()
    WHERE cluster_nodes.instance = EXCLUDED.instance OR cluster_nodes.instance = ''
       OR cluster_nodes.seen_at < now() - make_interval(secs => $4)
       OR (cluster_nodes.instance = $6 AND cluster_nodes.seen_at::text = $7)"#;

/// Who holds a node's name: its process, address and last heartbeat.
const HOLDER_SQL: &str = r#"
SELECT instance, url, seen_at::text AS seen,
       (extract(epoch FROM now() - seen_at) * 1000)::bigint AS seen_ms_ago
FROM cluster_nodes WHERE node = $1"#;

const NODES_SQL: &str = r#"
SELECT n.node, n.url, n.capacity, n.running, n.draining,
       n.seen_at >= now() - make_interval(secs => $1) AS alive,
       (SELECT count(*) FROM session_leases l WHERE l.node = n.node AND l.expires_at >= now())
           AS leases,
       (extract(epoch FROM now() - n.seen_at) * 1000)::bigint AS seen_ms_ago
FROM cluster_nodes n ORDER BY n.node"#;

/// The fence check of a write: locks the lease row until the write's transaction ends.
const FENCE_SQL: &str = r#"
SELECT epoch FROM session_leases
WHERE "userId" = $1 AND slot = $2 AND node = $3 AND epoch = $4
FOR SHARE"#;

/// An error inside a fenced transaction: the database's, or the fence's.
pub(super) enum FencedError {
    Db(diesel::result::Error),
    Lost,
}

impl From<diesel::result::Error> for FencedError {
    fn from(e: diesel::result::Error) -> FencedError {
        FencedError::Db(e)
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Ctx {
    fn lost(&self, key: &SessionKey, fence: Fence) -> StoreError {
        StoreError::LeaseLost {
            key: key.to_string(),
            epoch: fence.epoch,
        }
    }

    fn node(&self) -> Result<Arc<str>, StoreError> {
        self.node.clone().ok_or(StoreError::NotClustered)
    }

    fn instance(&self) -> Result<Arc<str>, StoreError> {
        self.instance.clone().ok_or(StoreError::NotClustered)
    }
}

/// Runs `work` in a transaction that first checks (and share-locks) `key`'s lease under
/// `fence`; without a fence, `work` runs as it is (a single node).
pub(super) fn fenced<T>(
    conn: &mut DbConnection,
    ctx: &Ctx,
    key: &SessionKey,
    fence: Option<Fence>,
    work: impl FnOnce(&mut DbConnection) -> Result<T, FencedError>,
) -> Result<T, StoreError> {
    let result = match fence {
        None => work(conn),
        Some(fence) => {
            let node = ctx.node()?;
            conn.transaction(|conn| {
                let held: Vec<EpochRow> = diesel::sql_query(FENCE_SQL)
                    .bind::<Text, _>(key.user_id().as_str())
                    .bind::<Integer, _>(slot_value(key))
                    .bind::<Text, _>(&*node)
                    .bind::<BigInt, _>(fence.epoch)
                    .load(conn)?;
                if held.is_empty() {
                    return Err(FencedError::Lost);
                }
                work(conn)
            })
        }
    };
    result.map_err(|e| match e {
        FencedError::Db(e) => ctx.query(e),
        FencedError::Lost => ctx.lost(key, fence.unwrap_or(Fence { epoch: 0 })),
    })
}

impl Store {
    /// This store writes for the cluster node `node`, as its process `instance` (fences name
    /// the node, leases the process; events notify the others).
    pub fn for_node(mut self, node: &str, instance: &str) -> Store {
        self.node = Some(Arc::from(node));
        self.instance = Some(Arc::from(instance));
        self
    }

    /// The node this store writes for, in a cluster.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// Claims `key` for this node for `ttl`: the new epoch, or the lease as another node holds it.
    pub async fn claim_lease(
        &self,
        key: &SessionKey,
        ttl: Duration,
    ) -> Result<Result<Fence, Lease>, StoreError> {
        let key = key.clone();
        self.run_control(move |conn, ctx| {
            let (node, instance) = (ctx.node()?, ctx.instance()?);
            let won: Vec<EpochRow> = diesel::sql_query(CLAIM_SQL)
                .bind::<Text, _>(key.user_id().as_str())
                .bind::<Integer, _>(slot_value(&key))
                .bind::<Text, _>(&*node)
                .bind::<Double, _>(secs(ttl))
                .bind::<Text, _>(&*instance)
                .load(conn)
                .map_err(|e| ctx.query(e))?;
            if let Some(row) = won.first() {
                return Ok(Ok(Fence { epoch: row.epoch }));
            }
            let held = lease_of(conn, ctx, &key)?;
            Ok(Err(held.unwrap_or(Lease {
                key,
                node: None,
                epoch: 0,
                live: false,
                url: None,
            })))
        })
        .await
    }

    /// Renews this node's unexpired leases among `held`; returns the ones renewed.
    pub async fn renew_leases(
        &self,
        held: Vec<(SessionKey, Fence)>,
        ttl: Duration,
    ) -> Result<Vec<(SessionKey, Fence)>, StoreError> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<serde_json::Value> = held
            .iter()
            .map(|(k, f)| {
                serde_json::json!({"u": k.user_id().as_str(), "s": slot_value(k), "e": f.epoch})
            })
            .collect();
        let list = serde_json::Value::Array(list).to_string();
        self.run_control(move |conn, ctx| {
            let (node, instance) = (ctx.node()?, ctx.instance()?);
            let rows: Vec<KeyRecord> = diesel::sql_query(RENEW_SQL)
                .bind::<Text, _>(&*node)
                .bind::<Text, _>(&list)
                .bind::<Double, _>(secs(ttl))
                .bind::<Text, _>(&*instance)
                .load(conn)
                .map_err(|e| ctx.query(e))?;
            Ok(rows
                .into_iter()
                .filter_map(|r| {
                    let key = ctx.key_of(Some(&r.user_id), Some(r.slot))?;
                    Some((key, Fence { epoch: r.epoch }))
                })
                .collect())
        })
        .await
    }

    /// Gives `key`'s lease up (it may be claimed at once); false when it was no longer ours.
    pub async fn release_lease(&self, key: &SessionKey, fence: Fence) -> Result<bool, StoreError> {
        let key = key.clone();
        self.run_control(move |conn, ctx| {
            let node = ctx.node()?;
            let released = diesel::sql_query(
                r#"UPDATE session_leases SET node = NULL, expires_at = now()
                   WHERE "userId" = $1 AND slot = $2 AND node = $3 AND epoch = $4"#,
            )
            .bind::<Text, _>(key.user_id().as_str())
            .bind::<Integer, _>(slot_value(&key))
            .bind::<Text, _>(&*node)
            .bind::<BigInt, _>(fence.epoch)
            .execute(conn)
            .map_err(|e| ctx.query(e))?;
            // Wakes the other nodes' sweepers: the session is theirs to take.
            diesel::sql_query("SELECT pg_notify('wa_lease', '')")
                .execute(conn)
                .map_err(|e| ctx.query(e))?;
            Ok(released > 0)
        })
        .await
    }

    /// Who holds `key`, if anyone ever did.
    pub async fn lease(&self, key: &SessionKey) -> Result<Option<Lease>, StoreError> {
        let key = key.clone();
        self.run(move |conn, ctx| lease_of(conn, ctx, &key)).await
    }

    /// Every lease (for `/actors`), by key.
    pub async fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        self.run(move |conn, ctx| {
            let rows: Vec<LeaseRecord> = diesel::sql_query(LEASE_SQL)
                .load(conn)
                .map_err(|e| ctx.query(e))?;
            let mut leases: Vec<Lease> = rows.into_iter().filter_map(|r| lease(ctx, r)).collect();
            leases.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(leases)
        })
        .await
    }

    /// Sessions whose intent is `running` and whose lease is free, expired or left by an earlier
    /// run of this node, least recently updated first.
    pub async fn orphans(&self, limit: i64) -> Result<Vec<SessionKey>, StoreError> {
        self.run(move |conn, ctx| {
            let (node, instance) = (ctx.node()?, ctx.instance()?);
            let rows: Vec<KeyRecord> = diesel::sql_query(ORPHANS_SQL)
                .bind::<Text, _>(&*node)
                .bind::<BigInt, _>(limit)
                .bind::<Text, _>(&*instance)
                .load(conn)
                .map_err(|e| ctx.query(e))?;
            Ok(rows
                .into_iter()
                .filter_map(|r| ctx.key_of(Some(&r.user_id), Some(r.slot)))
                .collect())
        })
        .await
    }

    /// This node is alive, reachable at `url`, runs `running` of `capacity` browsers. False when
    /// another process holds this node's name now (this one was silent past the TTL and a
    /// process started with the same `NODE_ID` took it).
    pub async fn heartbeat(
        &self,
        url: String,
        capacity: u32,
        running: usize,
    ) -> Result<bool, StoreError> {
        self.run_control(move |conn, ctx| {
            let (node, instance) = (ctx.node()?, ctx.instance()?);
            let beat = diesel::sql_query(HEARTBEAT_SQL)
                .bind::<Text, _>(&*node)
                .bind::<Text, _>(&url)
                .bind::<Integer, _>(i32::try_from(capacity).unwrap_or(i32::MAX))
                .bind::<Integer, _>(i32::try_from(running).unwrap_or(i32::MAX))
                .bind::<Text, _>(&*instance)
                .execute(conn)
                .map_err(|e| ctx.query(e))?;
            Ok(beat > 0)
        })
        .await
    }

    /// Gives this node's name up (a graceful shutdown): the next process takes it at once.
    pub async fn leave(&self) -> Result<(), StoreError> {
        self.run_control(move |conn, ctx| {
            let (node, instance) = (ctx.node()?, ctx.instance()?);
            diesel::sql_query(
                "UPDATE cluster_nodes SET instance = '' WHERE node = $1 AND instance = $2",
            )
            .bind::<Text, _>(&*node)
            .bind::<Text, _>(&*instance)
            .execute(conn)
            .map(drop)
            .map_err(|e| ctx.query(e))
        })
        .await
    }

    /// Takes this node's name for this process (docs/several-hosts.md, "One owner per
    /// NODE_ID"): `Ok(None)` once it is ours, or who holds it now. `earlier` is a holder seen
    /// before (its instance and last heartbeat): the name is taken from it only if it has not
    /// beaten since.
    pub async fn join(
        &self,
        url: String,
        capacity: u32,
        ttl: Duration,
        earlier: Option<NodeHolder>,
    ) -> Result<Option<NodeHolder>, StoreError> {
        self.run_control(move |conn, ctx| {
            let (node, instance) = (ctx.node()?, ctx.instance()?);
            let (old_instance, old_seen) =
                earlier.map(|h| (h.instance, h.seen)).unwrap_or_default();
            let won = diesel::sql_query(JOIN_SQL)
                .bind::<Text, _>(&*node)
                .bind::<Text, _>(&url)
                .bind::<Integer, _>(i32::try_from(capacity).unwrap_or(i32::MAX))
                .bind::<Double, _>(secs(ttl))
                .bind::<Text, _>(&*instance)
                .bind::<Text, _>(&old_instance)
                .bind::<Text, _>(&old_seen)
                .execute(conn)
                .map_err(|e| ctx.query(e))?;
            if won > 0 {
                return Ok(None);
            }
            let holder: Vec<HolderRecord> = diesel::sql_query(HOLDER_SQL)
                .bind::<Text, _>(&*node)
                .load(conn)
                .map_err(|e| ctx.query(e))?;
            Ok(holder.into_iter().next().map(|h| NodeHolder {
                instance: h.instance,
                url: h.url,
                seen: h.seen,
                seen_ms_ago: h.seen_ms_ago,
            }))
        })
        .await
    }

    /// Every node that ever joined; `alive` when its heartbeat is younger than `ttl`.
    pub async fn nodes(&self, ttl: Duration) -> Result<Vec<NodeRow>, StoreError> {
        self.run(move |conn, ctx| {
            let rows: Vec<NodeRecord> = diesel::sql_query(NODES_SQL)
                .bind::<Double, _>(secs(ttl))
                .load(conn)
                .map_err(|e| ctx.query(e))?;
            Ok(rows
                .into_iter()
                .map(|r| NodeRow {
                    node: r.node,
                    url: r.url,
                    capacity: r.capacity,
                    running: r.running,
                    draining: r.draining,
                    alive: r.alive,
                    leases: r.leases,
                    seen_ms_ago: r.seen_ms_ago,
                })
                .collect())
        })
        .await
    }

    /// Nodes whose heartbeat is younger than `ttl` (a daemon outside the cluster refuses to run
    /// on a database a cluster uses).
    pub async fn live_nodes(&self, ttl: Duration) -> Result<Vec<String>, StoreError> {
        #[derive(QueryableByName)]
        struct Name {
            #[diesel(sql_type = Text)]
            node: String,
        }
        self.run(move |conn, ctx| {
            let rows: Vec<Name> = diesel::sql_query(
                "SELECT node FROM cluster_nodes WHERE seen_at >= now() - make_interval(secs => $1) ORDER BY node",
            )
            .bind::<Double, _>(secs(ttl))
            .load(conn)
            .map_err(|e| ctx.query(e))?;
            Ok(rows.into_iter().map(|r| r.node).collect())
        })
        .await
    }

    /// Marks `node` draining (no new sessions) or not; false when the node is unknown.
    pub async fn set_draining(&self, node: &str, draining: bool) -> Result<bool, StoreError> {
        let node = node.to_owned();
        self.run(move |conn, ctx| {
            diesel::sql_query("UPDATE cluster_nodes SET draining = $2 WHERE node = $1")
                .bind::<Text, _>(&node)
                .bind::<Bool, _>(draining)
                .execute(conn)
                .map(|n| n > 0)
                .map_err(|e| ctx.query(e))
        })
        .await
    }

    /// Stores the snapshot of `key`'s closed browser under `fence` (replacing the older one).
    /// The bytes are uploaded first, outside the lease's lock; only the short statement that
    /// makes them the session's newest is fenced, so a large snapshot never holds up a renewal
    /// (docs/several-hosts.md, "Renewals first").
    pub async fn put_snapshot(
        &self,
        key: &SessionKey,
        fence: Fence,
        taken_ms: i64,
        bytes: Vec<u8>,
    ) -> Result<(), StoreError> {
        let k = key.clone();
        let blob = self
            .run(move |conn, ctx| {
                #[derive(QueryableByName)]
                struct Id {
                    #[diesel(sql_type = BigInt)]
                    id: i64,
                }
                diesel::sql_query(
                    r#"INSERT INTO session_snapshot_blobs ("userId", slot, bytes)
                       VALUES ($1, $2, $3) RETURNING id"#,
                )
                .bind::<Text, _>(k.user_id().as_str())
                .bind::<Integer, _>(slot_value(&k))
                .bind::<Binary, _>(&bytes)
                .get_result::<Id>(conn)
                .map(|r| r.id)
                .map_err(|e| ctx.query(e))
            })
            .await?;
        let made = self.newest_snapshot(key, fence, taken_ms, Some(blob)).await;
        if made.is_err() {
            let k = key.clone();
            let dropped = self
                .run(move |conn, ctx| {
                    diesel::sql_query("DELETE FROM session_snapshot_blobs WHERE id = $1")
                        .bind::<BigInt, _>(blob)
                        .execute(conn)
                        .map(drop)
                        .map_err(|e| ctx.query(e))
                })
                .await;
            if let Err(e) = dropped {
                log::warn!("{k} snapshot upload not removed: {}", crate::chain(&e));
            }
        }
        made
    }

    /// A restore into a cluster (docs/operations.md): `bytes` become `key`'s newest snapshot,
    /// at epoch 0 — before any claim — so whichever node claims the session first restores it.
    pub async fn put_restored_snapshot(
        &self,
        key: &SessionKey,
        bytes: Vec<u8>,
    ) -> Result<(), StoreError> {
        let key = key.clone();
        self.run(move |conn, ctx| {
            conn.transaction(|conn| {
                #[derive(QueryableByName)]
                struct Id {
                    #[diesel(sql_type = BigInt)]
                    id: i64,
                }
                let blob = diesel::sql_query(
                    r#"INSERT INTO session_snapshot_blobs ("userId", slot, bytes)
                       VALUES ($1, $2, $3) RETURNING id"#,
                )
                .bind::<Text, _>(key.user_id().as_str())
                .bind::<Integer, _>(slot_value(&key))
                .bind::<Binary, _>(&bytes)
                .get_result::<Id>(conn)?
                .id;
                diesel::sql_query(
                    r#"INSERT INTO session_snapshots ("userId", slot, epoch, node, taken_ms, blob)
                       VALUES ($1, $2, 0, 'restore', $3, $4)"#,
                )
                .bind::<Text, _>(key.user_id().as_str())
                .bind::<Integer, _>(slot_value(&key))
                .bind::<BigInt, _>(super::now_ms())
                .bind::<BigInt, _>(blob)
                .execute(conn)
                .map(drop)
            })
            .map_err(|e| ctx.query(e))
        })
        .await
    }

    /// The newest snapshot of `key`, or its logout.
    pub async fn snapshot(&self, key: &SessionKey) -> Result<Option<Snapshot>, StoreError> {
        let key = key.clone();
        self.run(move |conn, ctx| {
            let rows: Vec<SnapshotRecord> = diesel::sql_query(
                r#"SELECT s.epoch, s.node, s.taken_ms, COALESCE(b.bytes, s.bytes) AS bytes
                   FROM session_snapshots s LEFT JOIN session_snapshot_blobs b ON b.id = s.blob
                   WHERE s."userId" = $1 AND s.slot = $2"#,
            )
            .bind::<Text, _>(key.user_id().as_str())
            .bind::<Integer, _>(slot_value(&key))
            .load(conn)
            .map_err(|e| ctx.query(e))?;
            Ok(rows.into_iter().next().map(|r| Snapshot {
                epoch: r.epoch,
                node: r.node,
                taken_ms: r.taken_ms,
                bytes: r.bytes,
            }))
        })
        .await
    }

    /// Logout: the login is gone everywhere. The snapshot becomes a logout stamped with
    /// `fence`'s epoch, which every node honours before a launch (a profile it kept from an
    /// earlier run is older: its login is removed, docs/several-hosts.md, "Logout is final").
    pub async fn forget_login(
        &self,
        key: &SessionKey,
        fence: Fence,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        self.newest_snapshot(key, fence, at_ms, None).await
    }

    /// Under `fence`: the session's newest snapshot is upload `blob` (`None`: a logout); every
    /// other upload of the session goes.
    async fn newest_snapshot(
        &self,
        key: &SessionKey,
        fence: Fence,
        taken_ms: i64,
        blob: Option<i64>,
    ) -> Result<(), StoreError> {
        let key = key.clone();
        self.run(move |conn, ctx| {
            let node = ctx.node()?;
            fenced(conn, ctx, &key, Some(fence), |conn| {
                diesel::sql_query(
                    r#"INSERT INTO session_snapshots ("userId", slot, epoch, node, taken_ms, blob)
                       VALUES ($1, $2, $3, $4, $5, $6)
                       ON CONFLICT ("userId", slot) DO UPDATE
                       SET epoch = EXCLUDED.epoch, node = EXCLUDED.node,
                           taken_ms = EXCLUDED.taken_ms, blob = EXCLUDED.blob, bytes = NULL"#,
                )
                .bind::<Text, _>(key.user_id().as_str())
                .bind::<Integer, _>(slot_value(&key))
                .bind::<BigInt, _>(fence.epoch)
                .bind::<Text, _>(&*node)
                .bind::<BigInt, _>(taken_ms)
                .bind::<Nullable<BigInt>, _>(blob)
                .execute(conn)?;
                diesel::sql_query(
                    r#"DELETE FROM session_snapshot_blobs
                       WHERE "userId" = $1 AND slot = $2 AND id IS DISTINCT FROM $3"#,
                )
                .bind::<Text, _>(key.user_id().as_str())
                .bind::<Integer, _>(slot_value(&key))
                .bind::<Nullable<BigInt>, _>(blob)
                .execute(conn)?;
                Ok(())
            })
        })
        .await
    }
}

fn lease_of(
    conn: &mut DbConnection,
    ctx: &Ctx,
    key: &SessionKey,
) -> Result<Option<Lease>, StoreError> {
    let rows: Vec<LeaseRecord> = diesel::sql_query(format!(
        r#"{LEASE_SQL} WHERE l."userId" = $1 AND l.slot = $2"#
    ))
    .bind::<Text, _>(key.user_id().as_str())
    .bind::<Integer, _>(slot_value(key))
    .load(conn)
    .map_err(|e| ctx.query(e))?;
    Ok(rows.into_iter().next().and_then(|r| lease(ctx, r)))
}

fn lease(ctx: &Ctx, r: LeaseRecord) -> Option<Lease> {
    Some(Lease {
        key: ctx.key_of(Some(&r.user_id), Some(r.slot))?,
        node: r.node,
        epoch: r.epoch,
        live: r.live,
        url: r.url,
    })
}
