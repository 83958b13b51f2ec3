//! The registry actor: the only place a [`SessionKey`] becomes an actor address.
//!
//! Creates session actors on demand (supervised, on the sessions arbiter), forgets dead ones,
//! and answers listings from its own cache of every session's latest [`Session`] (fed by the
//! event bus), so a status call never waits on a browser. Enforces the host-wide limits that
//! need a global view: `MAX_SESSIONS` running browsers and the per-user start rate.

mod bulkhead;
mod handle;
mod messages;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actors::session::{Session, SessionActor, SessionEnv};
use crate::domain::{SessionKey, SessionState, Slot, UserId, MIN_SLOT, SLOT_CEILING};
use crate::store::SessionRow;

pub use handle::RegistryHandle;
pub use messages::*;

/// Per-user start budget: a token bucket.
#[derive(Debug, Clone, Copy)]
pub struct StartRate {
    pub burst: f64,
    pub per_minute: f64,
}

/// The host-wide and per-user limits the registry enforces on starts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_sessions: u32,
    pub max_pending_per_user: u32,
    pub start_rate: StartRate,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct Registry {
    env: Arc<SessionEnv>,
    sessions_arbiter: ArbiterHandle,
    actors: HashMap<SessionKey, Addr<SessionActor>>,
    /// Ordered by (user, slot): one user's sessions are one range.
    views: BTreeMap<SessionKey, Session>,
    /// Rows read at boot, handed to the actor created for that key.
    rows: HashMap<SessionKey, SessionRow>,
    max_sessions: u32,
    /// Browsers of one user not linked yet (QR or pairing pages) allowed at once.
    max_pending_per_user: u32,
    start_rate: StartRate,
    buckets: HashMap<UserId, Bucket>,
    /// Starts sent to an actor whose `starting` event has not reached the cache yet.
    pending_starts: std::collections::HashSet<SessionKey>,
    shutting_down: bool,
    /// Sessions being removed for good: their starts are refused (docs/operations.md).
    removing: std::collections::HashSet<SessionKey>,
    /// Each running browser's memory (PSS of its tree, bytes) at the last check (`/actors`).
    memory: HashMap<SessionKey, u64>,
    /// A memory check is reading `/proc` (the next one waits for it).
    memory_check_running: bool,
}

impl Registry {
    pub fn new(
        env: Arc<SessionEnv>,
        sessions_arbiter: ArbiterHandle,
        mut rows: Vec<SessionRow>,
        limits: Limits,
    ) -> Registry {
        if env.cluster.is_some() {
            // The rows of the whole cluster: none of them runs here yet.
            for row in &mut rows {
                row.state = row.state.at_boot();
                row.is_connected = false;
            }
        }
        let views = rows
            .iter()
            .map(|r| (r.key.clone(), Session::from_row(r)))
            .collect();
        Registry {
            env,
            sessions_arbiter,
            actors: HashMap::new(),
            views,
            rows: rows.into_iter().map(|r| (r.key.clone(), r)).collect(),
            max_sessions: limits.max_sessions,
            max_pending_per_user: limits.max_pending_per_user,
            start_rate: limits.start_rate,
            buckets: HashMap::new(),
            pending_starts: std::collections::HashSet::new(),
            shutting_down: false,
            removing: std::collections::HashSet::new(),
            memory: HashMap::new(),
            memory_check_running: false,
        }
    }

    /// The live actor of `key`, created when missing or dead.
    fn actor(&mut self, key: &SessionKey) -> Addr<SessionActor> {
        if let Some(addr) = self.actors.get(key).filter(|a| a.connected()) {
            return addr.clone();
        }
        let addr = SessionActor::start_supervised(
            key.clone(),
            self.env.clone(),
            self.rows.remove(key),
            &self.sessions_arbiter,
        );
        self.actors.insert(key.clone(), addr.clone());
        addr
    }

    /// Takes a stored row of a session this node has no actor for (cluster mode: another node
    /// created or ran it). Not running here, whatever the row says.
    fn learn(&mut self, mut row: SessionRow) {
        if self.actors.contains_key(&row.key) {
            return;
        }
        row.state = row.state.at_boot();
        row.is_connected = false;
        self.views.insert(row.key.clone(), Session::from_row(&row));
        self.rows.insert(row.key.clone(), row);
    }

    /// The actor of a known session (started at least once), without creating unknown ones.
    fn known_actor(&mut self, key: &SessionKey) -> Option<Addr<SessionActor>> {
        self.views.contains_key(key).then(|| self.actor(key))
    }

    /// Browsers running or about to: cached running states plus starts whose first event has
    /// not come back yet (two starts in a row must not both pass the limit).
    fn running_count(&self, except: &SessionKey) -> usize {
        let running = |k: &SessionKey| self.views.get(k).is_some_and(|v| v.state.is_running());
        let cached = self
            .views
            .keys()
            .filter(|k| *k != except && running(k))
            .count();
        let pending = self
            .pending_starts
            .iter()
            .filter(|k| *k != except && !running(k))
            .count();
        cached + pending
    }

    /// A session of `key`'s user that holds a browser not linked yet: starting, on a QR code,
    /// or restarting, unless its profile holds a login (a known number). Starts whose first
    /// event has not come back count too, by the same rule.
    fn pending_count(&self, except: &SessionKey) -> usize {
        let user = except.user_id();
        let pending = |k: &SessionKey| match self.views.get(k) {
            Some(v) if v.state.is_running() => {
                v.state == SessionState::Qr
                    || (v.state != SessionState::Connected && v.connected_number.is_none())
            }
            _ => self.pending_starts.contains(k) && !self.would_be_linked(k),
        };
        self.views_of(user)
            .map(|(k, _)| k)
            .chain(self.pending_starts.iter())
            .filter(|k| k.user_id() == user && *k != except)
            .collect::<std::collections::HashSet<_>>()
            .into_iter()
            .filter(|k| pending(k))
            .count()
    }

    /// The cached sessions of `user`, by slot.
    fn views_of(
        &self,
        user: &UserId,
    ) -> std::collections::btree_map::Range<'_, SessionKey, Session> {
        let slot = |n: u16| Slot::new(n.into(), SLOT_CEILING).expect("within the ceiling");
        let first = SessionKey::new(user.clone(), slot(MIN_SLOT));
        let last = SessionKey::new(user.clone(), slot(SLOT_CEILING));
        self.views.range(first..=last)
    }

    /// Starting `key` would come back linked: its profile holds a login (a known number).
    fn would_be_linked(&self, key: &SessionKey) -> bool {
        self.views
            .get(key)
            .is_some_and(|v| v.connected_number.is_some())
    }

    /// Takes one start from the user's bucket, or says how long to wait.
    fn take_start(&mut self, user: &UserId) -> Result<(), Duration> {
        let rate = self.start_rate;
        let now = Instant::now();
        let bucket = self.buckets.entry(user.clone()).or_insert(Bucket {
            tokens: rate.burst,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * rate.per_minute / 60.0;
        bucket.tokens = (bucket.tokens + refill).min(rate.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) * 60.0 / rate.per_minute;
            Err(Duration::from_secs_f64(wait.max(1.0)))
        }
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Subscribe first: the restored sessions' first events must reach the cache.
        let mut events = self.env.events.subscribe();
        let addr = ctx.address();
        actix::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(session) => addr.do_send(Changed(session)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        log::warn!("registry missed {n} session events; refreshing");
                        addr.do_send(Refresh);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        self.restore();
        self.watch_memory(ctx);
    }
}

impl Registry {
    /// Boot: sessions whose intent is `running` come back (without a new QR when the profile
    /// holds a login), up to `MAX_SESSIONS`, counted like any start; launch concurrency is
    /// bounded by the sessions' shared semaphore. The rest stay `stopped`, intent kept (the next
    /// boot tries again), with a `lastError` that says why.
    fn restore(&mut self) {
        if self.env.cluster.is_some() {
            // Each node's sweeper starts what it can claim (cluster/mod.rs).
            return;
        }
        let mut keys: Vec<SessionKey> = self
            .rows
            .values()
            .filter(|r| r.intent == crate::domain::Intent::Running)
            .map(|r| r.key.clone())
            .collect();
        keys.sort();
        let cap = self.max_sessions as usize;
        for key in keys.iter().skip(cap) {
            let reason = format!(
                "not restored at boot: MAX_SESSIONS ({cap}) browsers were restored first; start it when there is room"
            );
            log::warn!("{key} {reason}");
            if let Some(row) = self.rows.get_mut(key) {
                row.last_error = Some(reason);
                row.updated_ms = crate::store::now_ms();
                self.views.insert(key.clone(), Session::from_row(row));
                let (store, row, key) = (self.env.store.clone(), row.clone(), key.clone());
                actix::spawn(async move {
                    if let Err(e) = store.save_session(row, None).await {
                        log::error!(
                            "{key} could not write to the database: {}",
                            crate::chain(&e)
                        );
                    }
                });
            }
        }
        for key in keys.into_iter().take(cap) {
            log::info!("{key} restoring");
            self.pending_starts.insert(key.clone());
            self.actor(&key).do_send(crate::actors::session::Start {
                key: key.clone(),
                by: "system:restore".to_owned(),
            });
        }
    }
}

/// A session changed (from the event bus).

#[derive(Message)]
#[rtype(result = "()")]
struct Changed(Session);

impl Handler<Changed> for Registry {
    type Result = ();
    fn handle(&mut self, msg: Changed, _: &mut Context<Self>) {
        self.pending_starts.remove(&msg.0.key);
        self.views.insert(msg.0.key.clone(), msg.0);
    }
}

/// Re-reads every actor's state after the cache missed events.
#[derive(Message)]
#[rtype(result = "()")]
struct Refresh;

impl Handler<Refresh> for Registry {
    type Result = ();
    fn handle(&mut self, _: Refresh, ctx: &mut Context<Self>) {
        for (key, addr) in &self.actors {
            let request = addr.send(crate::actors::session::GetStatus { key: key.clone() });
            ctx.spawn(request.into_actor(self).map(|res, act, _| {
                if let Ok(Ok(session)) = res {
                    act.views.insert(session.key.clone(), session);
                }
            }));
        }
    }
}
