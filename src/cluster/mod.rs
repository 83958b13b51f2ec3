//! Several nodes on one PostgreSQL (docs/several-hosts.md): who owns which session, and the
//! node's background work that keeps it so.
//!
//! A session runs on the node that holds its lease ([`crate::store::Fence`]: the epoch every
//! write of that node names). [`Cluster`] keeps this node's leases and the deadline it trusts
//! each one until: the start of its last successful renewal + TTL − [`TRUST_MARGIN`], on this
//! node's monotonic clock. [`spawn`] starts the tasks:
//! - renew (every TTL/3, one statement for all leases) and heartbeat;
//! - the watchdog: a lease past its deadline is given up at once (its session actor kills the
//!   browser), whether or not the database answers — so two browsers never run one session;
//! - the sweeper: sessions that should run and that nobody holds (a dead node's, a drained
//!   node's) are started here when this node has room, shared out by free capacity;
//! - the listener: `LISTEN wa_outbox` wakes this node's streams and webhook dispatcher for
//!   events other nodes wrote, and `LISTEN wa_lease` wakes the sweeper when a lease is let go.

pub mod drain;
pub mod forward;
pub mod snapshot;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use actix::Recipient;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::domain::SessionKey;
use crate::store::{Fence, Lease, Store};

/// A lease is trusted until the start of its last renewal + TTL minus this.
pub const TRUST_MARGIN: Duration = Duration::from_secs(2);

/// Told to a session actor whose lease is gone (expired untrusted, taken over, or a fenced
/// write failed): it kills its browser at once and writes nothing more for the session.
#[derive(actix::Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct LeaseLost {
    pub key: SessionKey,
    pub epoch: i64,
    pub why: String,
}

struct Held {
    fence: Fence,
    trusted_until: Instant,
    actor: Recipient<LeaseLost>,
}

/// This node in the cluster.
pub struct Cluster {
    pub node: String,
    /// This process, drawn at start: the node row and each lease claimed here name it.
    pub instance: String,
    pub token: crate::config::Token,
    pub ttl: Duration,
    pub snapshot_every: Duration,
    /// `NODE_URL`, or the bound address (known once the listener is bound).
    url: OnceLock<String>,
    held: Mutex<HashMap<SessionKey, Held>>,
    /// Woken when a lease is let go somewhere (the sweeper looks at once).
    sweep: Notify,
    pub(crate) store: Store,
    /// Passes requests on to other nodes.
    pub(crate) client: reqwest::Client,
    /// `MAX_SESSIONS`.
    pub capacity: u32,
    /// Shutting down: the name is given up, heartbeats stop.
    leaving: std::sync::atomic::AtomicBool,
}

impl Cluster {
    pub fn new(
        node: String,
        token: crate::config::Token,
        ttl: Duration,
        snapshot_every: Duration,
        store: Store,
        capacity: u32,
    ) -> Cluster {
        crate::auth::install_crypto_provider();
        let instance = format!("{:016x}", rand::random::<u64>());
        Cluster {
            store: store.for_node(&node, &instance),
            node,
            instance,
            token,
            ttl,
            snapshot_every,
            url: OnceLock::new(),
            held: Mutex::new(HashMap::new()),
            sweep: Notify::new(),
            client: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(3))
                .build()
                .expect("an HTTP client without TLS settings builds"),
            capacity,
            leaving: Default::default(),
        }
    }

    /// Takes this node's name for this process before it runs anything (docs/several-hosts.md,
    /// "One owner per NODE_ID"). A name another process holds is taken only once that process
    /// is seen dead: its heartbeat must not move for TTL/3 + 2 s (a run killed just before this
    /// one). A holder that beats meanwhile is a live twin: refused.
    pub async fn join(&self, url: &str) -> Result<(), JoinRefused> {
        let store = &self.store;
        let join = |earlier| store.join(url.to_owned(), self.capacity, self.ttl, earlier);
        let Some(first) = join(None).await? else {
            return Ok(());
        };
        log::info!(
            "cluster: NODE_ID {} is held by process {} at {} (heartbeat {} ms ago); waiting to see whether it is alive",
            self.node,
            first.instance,
            first.url,
            first.seen_ms_ago
        );
        let until = Instant::now() + self.ttl / 3 + Duration::from_secs(2);
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(250)).await;
            match join(None).await? {
                None => return Ok(()),
                Some(now) if now.seen != first.seen || now.instance != first.instance => {
                    return Err(JoinRefused::Live {
                        node: self.node.clone(),
                        url: now.url,
                    })
                }
                Some(_) => {}
            }
        }
        match join(Some(first)).await? {
            None => Ok(()),
            Some(now) => Err(JoinRefused::Live {
                node: self.node.clone(),
                url: now.url,
            }),
        }
    }

    /// A graceful shutdown, once every session is released: the name is free at once for
    /// the next process (a restart does not wait to see this one gone).
    pub async fn leave(&self) {
        self.leaving
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Err(e) = self.store.leave().await {
            log::warn!("cluster: {} not left: {}", self.node, crate::chain(&e));
        }
    }

    pub fn set_url(&self, url: String) {
        let _ = self.url.set(url);
    }

    pub fn url(&self) -> &str {
        self.url.get().map(String::as_str).unwrap_or_default()
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, Held>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Leases this node holds now, by key.
    pub fn leases(&self) -> Vec<(SessionKey, Fence)> {
        let mut v: Vec<_> = self
            .held()
            .iter()
            .map(|(k, h)| (k.clone(), h.fence))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    pub fn holds(&self, key: &SessionKey) -> Option<Fence> {
        self.held().get(key).map(|h| h.fence)
    }

    /// Claims `key` for this node; `actor` is told if the lease is lost later.
    pub async fn claim(
        &self,
        key: &SessionKey,
        actor: Recipient<LeaseLost>,
    ) -> Result<Result<Fence, Lease>, crate::store::StoreError> {
        let started = Instant::now();
        let claimed = self.store.claim_lease(key, self.ttl).await?;
        if let Ok(fence) = claimed {
            log::info!(
                "{key} lease claimed by {} (epoch {})",
                self.node,
                fence.epoch
            );
            self.held().insert(
                key.clone(),
                Held {
                    fence,
                    trusted_until: started + self.ttl.saturating_sub(TRUST_MARGIN),
                    actor,
                },
            );
        }
        Ok(claimed)
    }

    /// Lets `key` go (after its browser is closed and its last writes are done).
    pub async fn release(&self, key: &SessionKey, fence: Fence) {
        let mine = {
            let mut held = self.held();
            match held.get(key) {
                Some(h) if h.fence == fence => held.remove(key).is_some(),
                _ => false,
            }
        };
        if !mine {
            return;
        }
        match self.store.release_lease(key, fence).await {
            Ok(true) => log::info!(
                "{key} lease released by {} (epoch {})",
                self.node,
                fence.epoch
            ),
            Ok(false) => log::warn!("{key} lease was no longer ours to release"),
            Err(e) => log::warn!(
                "{key} lease not released (it expires): {}",
                crate::chain(&e)
            ),
        }
    }

    /// Gives `key`'s lease up locally and tells its actor (a fenced write failed, a renewal
    /// did not return it, or it is past its trusted deadline).
    pub fn lost(&self, key: &SessionKey, why: &str) {
        let held = self.held().remove(key);
        if let Some(h) = held {
            log::warn!("{key} lease lost (epoch {}): {why}", h.fence.epoch);
            h.actor.do_send(LeaseLost {
                key: key.clone(),
                epoch: h.fence.epoch,
                why: why.to_owned(),
            });
        }
    }

    /// Wakes the sweeper (a lease was let go).
    pub fn wake_sweeper(&self) {
        self.sweep.notify_one();
    }

    /// One renewal of every lease held: those returned are trusted again until
    /// `started + TTL − margin`; those not returned are lost.
    async fn renew(&self) {
        let started = Instant::now();
        let held = self.leases();
        if held.is_empty() {
            return;
        }
        let renewal = tokio::time::timeout(
            self.ttl / 3,
            self.store.renew_leases(held.clone(), self.ttl),
        );
        let renewed = match renewal.await {
            Ok(Ok(renewed)) => renewed,
            Ok(Err(e)) => {
                log::warn!("lease renewal failed: {}", crate::chain(&e));
                return;
            }
            Err(_) => {
                log::warn!(
                    "lease renewal took longer than {} ms",
                    (self.ttl / 3).as_millis()
                );
                return;
            }
        };
        let renewed: HashMap<SessionKey, Fence> = renewed.into_iter().collect();
        let until = started + self.ttl.saturating_sub(TRUST_MARGIN);
        let mut gone = Vec::new();
        {
            let mut map = self.held();
            for (key, fence) in held {
                match (renewed.get(&key), map.get_mut(&key)) {
                    (Some(f), Some(h)) if *f == fence && h.fence == fence => {
                        h.trusted_until = until
                    }
                    // Claimed again since the statement started: its own claim set its deadline.
                    (_, Some(h)) if h.fence != fence => {}
                    (None, Some(_)) => gone.push(key),
                    _ => {}
                }
            }
        }
        for key in gone {
            self.lost(
                &key,
                "the renewal did not return it (expired, or taken over)",
            );
        }
    }

    /// Another process holds this node's name now (this one was silent past the TTL, and one
    /// started with the same `NODE_ID` took it): every browser goes, and so does this process —
    /// it may not claim under a name that is not its own. A supervisor restarting it gets a
    /// refusal at start while the other one lives.
    async fn displaced(&self) {
        log::error!(
            "cluster: another process now holds NODE_ID {}: this one ({}) gives up its sessions and exits",
            self.node,
            self.instance
        );
        let keys: Vec<SessionKey> = self.held().keys().cloned().collect();
        for key in keys {
            self.lost(&key, "another process holds this node's name");
        }
        // Time for the session actors to kill their browsers.
        tokio::time::sleep(Duration::from_secs(2)).await;
        // SAFETY: ends the process at once, like main does (no exit handlers: see src/main.rs).
        unsafe { libc::_exit(1) }
    }

    /// Gives up every lease past its trusted deadline.
    fn watch(&self) {
        let now = Instant::now();
        let late: Vec<SessionKey> = self
            .held()
            .iter()
            .filter(|(_, h)| h.trusted_until <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in late {
            self.lost(&key, "not renewed in time (database unreachable?)");
        }
    }
}

/// Why this process may not run as its `NODE_ID`.
#[derive(Debug, thiserror::Error)]
pub enum JoinRefused {
    #[error("NODE_ID {node} is in use by a live process at {url}: give every node its own NODE_ID (docs/several-hosts.md)")]
    Live { node: String, url: String },
    #[error("cluster join")]
    Store(#[from] crate::store::StoreError),
}

/// Starts a session on this node (it claims the lease as it launches).
pub type Starter =
    Arc<dyn Fn(SessionKey) -> futures_util::future::BoxFuture<'static, ()> + Send + Sync>;

/// Starts the renewer, watchdog, heartbeat, sweeper and listener of this node.
pub fn spawn(cluster: Arc<Cluster>, starter: Starter, outbox: Arc<crate::events::Outbox>) {
    let every = cluster.ttl / 3;
    {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                cluster.renew().await;
            }
        });
    }
    {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                cluster.watch();
            }
        });
    }
    {
        // The heartbeat has a task of its own: a long sweep must not make this node look dead.
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if cluster.leaving.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let running = cluster.held().len();
                let beat =
                    cluster
                        .store
                        .heartbeat(cluster.url().to_owned(), cluster.capacity, running);
                match beat.await {
                    Ok(true) => {}
                    Ok(false) => cluster.displaced().await,
                    Err(e) => log::warn!("heartbeat failed: {}", crate::chain(&e)),
                }
            }
        });
    }
    {
        let cluster = cluster.clone();
        let starter = starter.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            log::info!(
                "cluster: {} joined at {} (process {})",
                cluster.node,
                cluster.url(),
                cluster.instance
            );
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = cluster.sweep.notified() => {}
                }
                sweep(&cluster, &starter).await;
            }
        });
    }
    listen(cluster, outbox);
}

/// Starts here the sessions nobody holds, this node's share of them by free capacity.
async fn sweep(cluster: &Cluster, starter: &Starter) {
    let nodes = match cluster.store.nodes(cluster.ttl).await {
        Ok(nodes) => nodes,
        Err(e) => return log::warn!("sweep: {}", crate::chain(&e)),
    };
    let free = |n: &crate::store::NodeRow| (n.capacity - n.running).max(0) as usize;
    let Some(me) = nodes.iter().find(|n| n.node == cluster.node) else {
        return;
    };
    if me.draining {
        return;
    }
    // This node's room now (its heartbeat, just written, says the same to the others).
    let mine = (cluster.capacity as usize).saturating_sub(cluster.held().len());
    if mine == 0 {
        return;
    }
    let total: usize = nodes
        .iter()
        .filter(|n| n.alive && !n.draining)
        .map(free)
        .sum();
    let mut orphans = match cluster.store.orphans(256).await {
        Ok(keys) => keys,
        Err(e) => return log::warn!("sweep: {}", crate::chain(&e)),
    };
    orphans.retain(|k| cluster.holds(k).is_none());
    if orphans.is_empty() {
        return;
    }
    // This node's share, in a random order: nodes sweeping at once rarely race for one key.
    let share = (orphans.len() * mine).div_ceil(total.max(1)).clamp(1, mine);
    use rand::seq::SliceRandom;
    orphans.shuffle(&mut rand::rng());
    for key in orphans.into_iter().take(share) {
        log::info!("{key} has no live owner: starting it on {}", cluster.node);
        starter(key).await;
    }
}

/// A dedicated PostgreSQL connection that `LISTEN`s; polled every 50 ms on a blocking thread
/// (reading the socket only: no query unless a notification came).
fn listen(cluster: Arc<Cluster>, outbox: Arc<crate::events::Outbox>) {
    let Some(url) = cluster.store.postgres_url() else {
        return;
    };
    // One task relays them, one at a time, in the order PostgreSQL delivered them (commit
    // order): a stream on this node sees each session's events in order.
    let (ids, mut next) = tokio::sync::mpsc::unbounded_channel::<i64>();
    tokio::spawn(async move {
        while let Some(id) = next.recv().await {
            outbox.relay(id).await;
        }
    });
    let relay = move |id| {
        let _ = ids.send(id);
    };
    std::thread::Builder::new()
        .name("cluster-listen".into())
        .spawn(move || loop {
            if let Err(e) = listen_once(&url, &cluster, &relay) {
                log::warn!("cluster listener: {e}; reconnecting in 1 s");
            }
            std::thread::sleep(Duration::from_secs(1));
        })
        .expect("a thread");
}

fn listen_once(url: &str, cluster: &Cluster, relay: &impl Fn(i64)) -> Result<(), String> {
    use diesel::{Connection, RunQueryDsl};
    let mut conn = diesel::pg::PgConnection::establish(url).map_err(|e| e.to_string())?;
    diesel::sql_query("LISTEN wa_outbox")
        .execute(&mut conn)
        .map_err(|e| e.to_string())?;
    diesel::sql_query("LISTEN wa_lease")
        .execute(&mut conn)
        .map_err(|e| e.to_string())?;
    let mut quiet = Instant::now();
    loop {
        let mut got = false;
        for n in conn.notifications_iter() {
            let n = n.map_err(|e| e.to_string())?;
            got = true;
            match n.channel.as_str() {
                "wa_outbox" => {
                    let (node, id) = n.payload.split_once(' ').unwrap_or_default();
                    if node != cluster.node {
                        if let Ok(id) = id.parse() {
                            relay(id);
                        }
                    }
                }
                "wa_lease" => cluster.wake_sweeper(),
                _ => {}
            }
        }
        if got {
            quiet = Instant::now();
        } else if quiet.elapsed() > Duration::from_secs(30) {
            // A broken connection shows on a query, not on reading nothing.
            diesel::sql_query("SELECT 1")
                .execute(&mut conn)
                .map_err(|e| e.to_string())?;
            quiet = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
