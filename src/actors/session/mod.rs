//! The session actor: one per `(userId, slot)`, supervised.
//!
//! Owns one browser (behind the [`Launcher`](crate::browser::Launcher) seam), the gate that keeps
//! two browsers off one profile, and the session's [`Machine`]. [`SessionActor::transition`] is
//! the only code that changes the state: it applies a [`Cause`] to the machine (which refuses
//! edges outside the table), arms or disarms the timers, and publishes the change (row and audit
//! event through the [`Writer`], a log line, the event bus). Every message carries the key and
//! is refused when it is not this actor's own.
//!
//! Launches are tagged with a generation: every launch and every end of a browser bumps it, so a
//! launch result, page signal or exit notice of an older browser is recognised and ignored. A
//! browser that dies unexpectedly stops the actor's context; the [`actix::Supervisor`] restarts
//! it and `restarting()` schedules the relaunch after a backoff ([`supervision`]), or the
//! session fails. docs/ARCHITECTURE.md describes the whole.

mod backfill;
mod backup;
mod env;
mod error;
pub mod handover;
mod inspect;
mod logout;
pub mod machine;
mod pair;
mod qr;
mod recycle;
mod send;
mod shutdown;
mod start;
mod status;
mod stop;
pub mod supervision;
mod view;
mod writer;

#[cfg(test)]
mod tests;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio::time::Instant;

use crate::browser::{Browser, BrowserError, Command, Observation, Source};
use crate::chain;
use crate::cluster::LeaseLost;
use crate::domain::{Intent, SessionKey, SessionState};
use crate::store::{now_ms, Fence, NewEvent, SessionRow};

use crate::media::intake::Intake;
pub use backup::{CopyLogin, LoginCopy, Retire};
pub use env::{MemoryLimit, SessionEnv};
pub use error::SessionError;
pub use handover::HandOver;
pub use inspect::{ActorInfo, Inspect};
pub use logout::Logout;
pub use machine::{Cause, Machine, StopKind};
pub use pair::{Pair, PAIR_WAIT};
pub use qr::GetQr;
pub use recycle::OverMemory;
pub use send::{RecordMedia, Send, SendJob, SentMessage, UsePage, IDEMPOTENCY_WINDOW_MS};
pub use shutdown::Shutdown;
pub use start::Start;
pub use status::GetStatus;
pub use stop::Stop;
pub use supervision::Supervision;
pub use view::{rfc3339, QrView, Session};
pub use writer::Writer;

/// Who asked for a change, for the audit trail (`system`, `service`, `admin`, `user:<sub>`).
pub type Initiator = String;
pub const SYSTEM: &str = "system";

/// How often a linked session's page is polled (the safety net; changes are pushed).
pub const LINKED_POLL_EVERY: Duration = Duration::from_secs(30);

/// Cluster mode: a fresh link is snapshotted this long after it (the page has written its keys).
pub const LINK_SNAPSHOT_DELAY: Duration = Duration::from_secs(10);

/// Which of the page's watchers the session believes (docs/ARCHITECTURE.md, "The page").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bridge {
    /// No browser.
    None,
    /// WA-JS was injected; waiting (up to `PAGE_READY_TIMEOUT_SECS`) for it to become ready.
    Waiting,
    /// WA-JS is ready: its events and functions drive the session.
    WaJs,
    /// The DOM signals (selectors, storage keys): WA-JS is missing or never became ready.
    Dom,
}

impl Bridge {
    /// The watcher whose signals count, if decided.
    fn source(self) -> Option<Source> {
        match self {
            Bridge::WaJs => Some(Source::Bridge),
            Bridge::Dom => Some(Source::Dom),
            Bridge::None | Bridge::Waiting => None,
        }
    }
}

/// A browser running for this session, with its hold on the profile gate.
struct Running {
    browser: Box<dyn Browser>,
    /// Held while this browser may touch the profile; the next launch waits for it.
    gate: OwnedMutexGuard<()>,
}

impl Running {
    /// Orderly close, bounded wait, then kill. Returns the gate so the caller may still work on
    /// the profile before the next launch.
    async fn close(self, grace: Duration) -> OwnedMutexGuard<()> {
        self.browser.close(grace).await;
        self.gate
    }

    /// After an unexpected end: whatever is left of the browser is killed and gone before the
    /// gate opens for the next launch.
    async fn discard(self) {
        self.browser.discard().await;
        drop(self.gate);
    }
}

pub struct SessionActor {
    /// The one key this actor serves; a message naming another is refused.
    key: SessionKey,
    /// Configuration and shared services (launcher, store, event bus, metrics).
    env: Arc<SessionEnv>,
    /// The state and everything that must agree with it; changed only by `transition`.
    machine: Machine,
    /// When the row was first written (kept across updates).
    created_ms: i64,
    /// When the session last changed.
    updated_ms: i64,
    /// Bumped at every launch and every end of a browser: older signals are ignored.
    generation: u64,
    /// The browser while one runs.
    run: Option<Running>,
    /// Which watcher of the current browser's page the session believes.
    bridge: Bridge,
    /// The DOM watcher's latest observation while WA-JS is awaited (used if it never comes).
    dom_while_waiting: Option<Observation>,
    /// The phone number a pairing code was asked for, until linked or stopped.
    pairing_phone: Option<String>,
    /// Callers of `Pair` waiting for the code.
    pair_waiters: Vec<tokio::sync::oneshot::Sender<()>>,
    /// Sends left this minute (`SEND_PER_MINUTE`).
    send_budget: send::SendBudget,
    /// One browser per profile at a time: a launch waits for the previous browser to be gone.
    gate: Arc<Mutex<()>>,
    /// The QR timeout, armed at the first code of a launch, disarmed when linked or stopped.
    qr_deadline: Option<SpawnHandle>,
    /// Recent crashes, for the intensity limit and the backoff.
    crashes: supervision::Crashes,
    /// When the current browser was launched, until its first QR (start-to-QR metric).
    launched_at: Option<Instant>,
    /// When the first QR of the current browser was shown, until linked (QR-to-connected).
    qr_since: Option<Instant>,
    /// The current (or last closed) browser reached `connected`: only its profile holds a
    /// login worth a snapshot (a browser that came up on a QR page does not, number or not).
    connected_in_run: bool,
    /// When the scheduled relaunch fires (shown in `/actors`).
    relaunch_at: Option<Instant>,
    /// When this actor was created (uptime in `/actors`).
    born: Instant,
    /// Rows and audit events, written in order off the actor's thread.
    writer: Writer,
    /// Messages and what happens to them, in order, their media stored first.
    intake: Intake,
    /// Cluster mode: this node's lease on the session while it holds one.
    fence: Option<Fence>,
    /// The WA-JS version the current browser's page reported (`/actors`).
    wa_js_version: Option<String>,
    /// Browsers recycled for their memory since this actor was created.
    recycles: u32,
    /// When the page was last polled.
    polled_at: Instant,
    /// A gap-filling pass is running.
    backfilling: bool,
    /// Where gap filling starts for the current browser (read as it launched).
    backfill_since: Option<i64>,
}

impl SessionActor {
    /// A stopped actor for `key`, continuing from its stored row when there is one.
    pub fn new(key: SessionKey, env: Arc<SessionEnv>, row: Option<SessionRow>) -> SessionActor {
        let writer = Writer::spawn(env.outbox.clone(), key.clone(), env.cluster.clone());
        let intake = Intake::spawn(env.media.clone(), writer.clone(), key.clone());
        let now = now_ms();
        let row = row.filter(|r| r.key == key);
        let mut machine = Machine::stopped(
            row.as_ref().map_or(Intent::Stopped, |r| r.intent),
            row.as_ref().and_then(|r| r.connected_number.clone()),
            row.as_ref().map_or(0, |r| r.restarts),
        );
        machine.last_error = row.as_ref().and_then(|r| r.last_error.clone());
        SessionActor {
            machine,
            created_ms: row.as_ref().map_or(now, |r| r.created_ms),
            updated_ms: now,
            generation: 0,
            run: None,
            bridge: Bridge::None,
            dom_while_waiting: None,
            pairing_phone: None,
            pair_waiters: Vec::new(),
            send_budget: send::SendBudget::new(env.send_per_minute),
            gate: Arc::new(Mutex::new(())),
            qr_deadline: None,
            crashes: Default::default(),
            relaunch_at: None,
            launched_at: None,
            qr_since: None,
            connected_in_run: false,
            born: Instant::now(),
            writer,
            intake,
            fence: None,
            wa_js_version: None,
            recycles: 0,
            polled_at: Instant::now(),
            backfilling: false,
            backfill_since: None,
            key,
            env,
        }
    }

    /// Starts the actor under supervision on `arbiter` (a long-lived thread: see `browser::process`).
    pub fn start_supervised(
        key: SessionKey,
        env: Arc<SessionEnv>,
        row: Option<SessionRow>,
        arbiter: &ArbiterHandle,
    ) -> Addr<SessionActor> {
        Supervisor::start_in_arbiter(arbiter, move |_| SessionActor::new(key, env, row))
    }

    pub fn key(&self) -> &SessionKey {
        &self.key
    }

    fn check_key(&self, key: &SessionKey) -> Result<(), SessionError> {
        if *key == self.key {
            Ok(())
        } else {
            self.env.metrics.misrouted.fetch_add(1, Relaxed);
            log::error!("{} refused a message addressed to {key}", self.key);
            Err(SessionError::WrongKey {
                expected: self.key.clone(),
                got: key.clone(),
            })
        }
    }

    /// The fence writes name: `None` on a single node; refused in a cluster when this node
    /// holds no lease on the session (it runs elsewhere, or nowhere).
    fn write_fence(&self) -> Result<Option<Fence>, SessionError> {
        match (&self.env.cluster, self.fence) {
            (None, _) => Ok(None),
            (Some(_), Some(fence)) => Ok(Some(fence)),
            (Some(_), None) => Err(SessionError::NotConnected),
        }
    }

    pub fn view(&self) -> Session {
        let m = &self.machine;
        Session {
            key: self.key.clone(),
            user_id: self.key.user_id().clone(),
            slot: self.key.slot(),
            state: m.state,
            is_connected: m.is_connected(),
            connected_number: m.number.clone(),
            qr: m.qr.clone(),
            pairing_code: m.pairing_code.clone(),
            online: m.online,
            bridge: self.bridge.source(),
            restarts: m.restarts,
            last_error: m.last_error.clone(),
            updated_at: rfc3339(self.updated_ms),
            unlinked_on_whats_app: None,
        }
    }

    /// The only way the state changes: applies `cause` (refused unless its edge is in the
    /// table), arms or disarms the QR timeout, ends the current generation when the browser
    /// goes, and publishes the change (log line, row, audit event, event bus).
    fn transition(&mut self, cause: Cause, by: &str, ctx: &mut Context<Self>) -> bool {
        let change = match self.machine.apply(cause) {
            Ok(change) => change,
            Err(refused) => {
                log::error!("{} refused a state change: {refused}", self.key);
                return false;
            }
        };
        match change.to {
            SessionState::Qr | SessionState::Pairing => {
                if self.qr_deadline.is_none() {
                    let generation = self.generation;
                    self.qr_deadline = Some(ctx.run_later(self.env.qr_timeout, move |act, ctx| {
                        act.qr_timed_out(generation, ctx)
                    }));
                }
            }
            SessionState::Starting => {}
            SessionState::Connected
            | SessionState::Restarting
            | SessionState::Stopped
            | SessionState::Failed => {
                if let Some(handle) = self.qr_deadline.take() {
                    ctx.cancel_future(handle);
                }
            }
        }
        if !change.to.is_running() || change.to == SessionState::Restarting {
            self.generation += 1;
            self.bridge = Bridge::None;
            self.dom_while_waiting = None;
            self.wa_js_version = None;
        }
        if change.to != SessionState::Pairing {
            self.pairing_phone = None;
        }
        if change.to == SessionState::Connected {
            self.connected_in_run = true;
        }
        // Cluster mode: a fresh link is snapshotted, so the session can move without a new scan.
        if change.to == SessionState::Connected
            && matches!(change.from, SessionState::Qr | SessionState::Pairing)
            && self.env.cluster.is_some()
        {
            let generation = self.generation;
            ctx.run_later(LINK_SNAPSHOT_DELAY, move |act, ctx| {
                if act.generation == generation {
                    act.snapshot_cycle(ctx);
                }
            });
        }
        if self.machine.pairing_code.is_some() || change.to != SessionState::Pairing {
            for waiter in self.pair_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }

        self.updated_ms = now_ms();
        log::info!(
            "{} {} -> {} [{} by {by}]{}",
            self.key,
            change.from,
            change.to,
            change.kind,
            change
                .detail
                .as_deref()
                .map(|d| format!(" {d}"))
                .unwrap_or_default()
        );
        self.writer.row(self.row());
        self.writer.audit(NewEvent {
            key: self.key.clone(),
            at_ms: self.updated_ms,
            kind: change.kind.to_owned(),
            detail: change.detail,
            actor: by.to_owned(),
        });
        // The registry's cache follows the actor at once; streams and webhooks get the change
        // from the outbox once it is written.
        let view = self.view();
        let _ = self.env.events.send(view.clone());
        self.writer.publish(view);
        true
    }

    /// Cluster mode: which node ran the session under which epoch, in the audit trail.
    fn lease_audit(&self, kind: &str, fence: Fence) {
        let node = self.env.cluster.as_ref().map_or("", |c| c.node.as_str());
        self.writer.audit(NewEvent {
            key: self.key.clone(),
            at_ms: now_ms(),
            kind: kind.to_owned(),
            detail: Some(format!("{node} epoch {}", fence.epoch)),
            actor: SYSTEM.to_owned(),
        });
    }

    /// The row as it should be stored now.
    fn row(&self) -> SessionRow {
        let m = &self.machine;
        SessionRow {
            key: self.key.clone(),
            state: m.state,
            intent: m.intent,
            is_connected: m.is_connected(),
            connected_number: m.number.clone(),
            restarts: m.restarts,
            last_error: m.last_error.clone(),
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
        }
    }

    /// Starts a browser (`Start` or `Relaunch`, a new generation); its outcome arrives in
    /// [`Self::launched`].
    fn launch(&mut self, cause: Cause, by: &str, ctx: &mut Context<Self>) {
        if !self.transition(cause, by, ctx) {
            return;
        }
        self.generation += 1;
        let generation = self.generation;
        // Decided now: the page may report before the launch's result is handled here.
        self.bridge = if self.env.launcher.has_bridge() {
            Bridge::Waiting
        } else {
            Bridge::Dom
        };
        self.env.metrics.launches.fetch_add(1, Relaxed);
        self.launched_at = Some(Instant::now());
        self.qr_since = None;
        self.connected_in_run = false;
        self.note_backfill_start(generation, ctx);

        let env = self.env.clone();
        let gate = self.gate.clone();
        let profile = env.sessions.profile_dir(&self.key);
        let log_key = self.key.to_string();
        let addr = ctx.address();
        let on_change = Box::new(move |source, observation| {
            addr.do_send(PageChanged {
                generation,
                source,
                observation,
            })
        });
        // Cluster mode: the lease first (a node that cannot claim it launches nothing).
        let claim = match (&self.env.cluster, self.fence) {
            (Some(cluster), None) => Some((cluster.clone(), ctx.address().recipient())),
            _ => None,
        };
        let key = self.key.clone();
        let fut = async move {
            let fence = match claim {
                None => None,
                Some((cluster, actor)) => match cluster.claim(&key, actor).await {
                    Ok(Ok(fence)) => Some(fence),
                    Ok(Err(lease)) => return (None, Err(Launch::OwnedElsewhere(lease))),
                    Err(e) => return (None, Err(Launch::Lease(e))),
                },
            };
            // The previous browser of this session must be gone before the next touches the profile.
            let gate = gate.lock_owned().await;
            if let Some(fence) = fence {
                let restored = handover::restore_newer(&env.store, &key, profile.clone(), fence);
                if let Err(why) = restored.await {
                    return (Some(fence), Err(Launch::Restore(why)));
                }
            }
            // Bounded launch concurrency: a boot restoring 50 sessions does not start 50 at once.
            let _permit = env
                .launches
                .acquire()
                .await
                .expect("the launch semaphore is never closed");
            let launched = env.launcher.launch(profile, log_key, on_change).await;
            (
                fence,
                launched
                    .map(|browser| Running { browser, gate })
                    .map_err(Launch::Browser),
            )
        };
        ctx.spawn(
            fut.into_actor(self)
                .map(move |(fence, result), act, ctx| act.launched(generation, fence, result, ctx)),
        );
    }

    fn launched(
        &mut self,
        generation: u64,
        claimed: Option<Fence>,
        result: Result<Running, Launch>,
        ctx: &mut Context<Self>,
    ) {
        if generation != self.generation {
            // Stopped while launching: close what came up, and give back a lease claimed for it.
            let run = result.ok();
            let grace = self.env.close_grace;
            let release = claimed
                .filter(|_| self.fence.is_none() && !self.machine.state.is_running())
                .zip(self.env.cluster.clone());
            let key = self.key.clone();
            actix::spawn(async move {
                if let Some(run) = run {
                    run.close(grace).await;
                }
                if let Some((fence, cluster)) = release {
                    cluster.release(&key, fence).await;
                }
            });
            return;
        }
        if let Some(fence) = claimed {
            // Lost while launching (its `LeaseLost` named a fence this actor did not hold yet):
            // whatever came up goes at once.
            let held = self.env.cluster.as_ref().and_then(|c| c.holds(&self.key));
            if held != Some(fence) {
                if let Ok(run) = result {
                    actix::spawn(run.discard());
                }
                log::warn!("{} lease lost while launching: not started here", self.key);
                self.transition(Cause::Stop(StopKind::LeaseLost), SYSTEM, ctx);
                return;
            }
            // From now on this node writes for the session: the state it is in first.
            self.fence = Some(fence);
            self.writer.fence(Some(fence));
            self.writer.row(self.row());
            self.writer.publish(self.view());
            self.lease_audit("lease_claimed", fence);
        }
        let result = match result {
            Ok(run) => Ok(run),
            Err(Launch::Browser(e)) => Err(e),
            Err(Launch::OwnedElsewhere(lease)) => {
                let owner = lease.node.unwrap_or_else(|| "another node".to_owned());
                log::info!(
                    "{} runs on {owner} (epoch {}): not launched here",
                    self.key,
                    lease.epoch
                );
                self.transition(Cause::Stop(StopKind::LeaseLost), SYSTEM, ctx);
                return;
            }
            Err(Launch::Restore(why)) => {
                self.crash(why, ctx);
                return;
            }
            Err(Launch::Lease(e)) => {
                self.crash(
                    format!("could not claim the session's lease: {}", chain(&e)),
                    ctx,
                );
                return;
            }
        };
        match result {
            Ok(run) => {
                if let Some(pid) = run.browser.pid() {
                    log::info!("{} browser pid {pid} up", self.key);
                }
                // WA-JS that is not ready by now will not be: the DOM signals take over. A page
                // that still shows neither a QR code nor the chats (changed beyond our
                // selectors, stuck) is then handled like a crash: relaunch with backoff, fail.
                let limit = self.env.page_ready_timeout;
                ctx.run_later(limit, move |act, ctx| {
                    if act.generation != generation {
                        return;
                    }
                    if act.bridge == Bridge::Waiting {
                        act.fall_back_to_dom(generation, ctx);
                    }
                    if act.generation == generation && act.machine.state == SessionState::Starting {
                        act.crash(
                            format!(
                                "the page showed neither a QR code nor the chats within {} s",
                                limit.as_secs()
                            ),
                            ctx,
                        );
                    }
                });
                ctx.spawn(
                    run.browser
                        .exited()
                        .into_actor(self)
                        .map(move |report, act, ctx| act.browser_exited(generation, report, ctx)),
                );
                self.run = Some(run);
                // WA-JS may have become ready before this result was handled.
                self.request_pairing_code(ctx);
            }
            Err(e) if e.is_permanent() => self.fail(chain(&e), false, ctx),
            Err(e @ BrowserError::Navigation { .. }) => self.crash(e.to_string(), ctx),
            Err(e) => self.crash(format!("launch failed: {}", chain(&e)), ctx),
        }
    }

    /// A signal of the current browser's page: counted when it comes from the watcher the
    /// session believes (WA-JS once ready, else the DOM).
    fn page_changed(
        &mut self,
        generation: u64,
        source: Source,
        observation: Observation,
        ctx: &mut Context<Self>,
    ) {
        // Messages and acks are data nobody sends again: recorded whichever browser of this
        // session saw them (one closing, one still starting), whichever watcher the session
        // believes, in any state. The store keeps one event per message id
        // (docs/nothing-lost.md). Only state signals are the current browser's alone.
        let observation = match observation {
            Observation::Message(message) => {
                let page = self.page_of(generation);
                return self.record_message(*message, page);
            }
            Observation::Ack { ack, ids } => return self.record_acks(ack, ids),
            Observation::Change(change) => {
                let (kind, dedupe, data) = change.event(&self.key);
                return self.intake.event(kind, dedupe, data);
            }
            other => other,
        };
        // (Signals of the current browser may come before its launch result is handled.)
        if generation != self.generation {
            return;
        }
        log::debug!(
            "{} page ({source:?}, bridge {:?}): {observation:?}",
            self.key,
            self.bridge
        );
        // A refusal comes from the DOM watcher whatever the bridge (WA-JS never gets ready on
        // that page): reported at once, not by the page-ready timeout.
        if let Observation::Unsupported(words) = observation {
            self.unsupported(&words, ctx);
            return;
        }
        match (self.bridge, source) {
            (Bridge::Waiting, Source::Bridge) => {
                if let Observation::BridgeReady { version } = observation {
                    log::info!(
                        "{} WA-JS {version} ready: the page bridge drives the session",
                        self.key
                    );
                    *self.env.wa_js_reported.lock().expect("not poisoned") = Some(version.clone());
                    self.wa_js_version = Some(version);
                    self.bridge = Bridge::WaJs;
                    self.dom_while_waiting = None;
                    self.request_pairing_code(ctx);
                }
            }
            (Bridge::Waiting, Source::Dom) => self.dom_while_waiting = Some(observation),
            (Bridge::WaJs, Source::Bridge) | (Bridge::Dom, Source::Dom) => {
                self.observed(source, observation, ctx)
            }
            // WA-JS ready after the fallback (a slow page): it drives the session from now on,
            // so sends, pairing codes and its events work for the rest of this browser's life.
            (Bridge::Dom, Source::Bridge) => {
                if let Observation::BridgeReady { version } = observation {
                    log::info!(
                        "{} WA-JS {version} ready after the DOM fallback: the page bridge drives the session",
                        self.key
                    );
                    *self.env.wa_js_reported.lock().expect("not poisoned") = Some(version.clone());
                    self.wa_js_version = Some(version);
                    self.bridge = Bridge::WaJs;
                    self.poll(ctx);
                    if self.machine.is_connected() {
                        self.backfill("WA-JS ready after the fallback", ctx);
                    }
                }
            }
            // The DOM watcher beside a ready bridge: not believed.
            _ => {}
        }
    }

    /// WhatsApp Web refuses this browser. No relaunch can help: the session stops with
    /// `unsupported_browser: …` and keeps its intent, so once the operator switches engines
    /// (`BROWSER=chromium`) and restarts the daemon it comes back on its profile.
    fn unsupported(&mut self, words: &str, ctx: &mut Context<Self>) {
        let engine = self
            .env
            .browser
            .as_ref()
            .map_or_else(|| "this browser".to_owned(), |b| b.describe());
        let reason = format!(
            "unsupported_browser: WhatsApp Web refused {engine} (\"{words}\"); set BROWSER=chromium (README, \"The browser engine\")"
        );
        log::error!("{} {reason}", self.key);
        let closing = self.shut_down(StopKind::Unsupported(reason), SYSTEM, ctx);
        actix::spawn(async move {
            drop(closing.await);
        });
    }

    /// WA-JS did not become ready in time: the DOM signals drive this browser from now on.
    fn fall_back_to_dom(&mut self, generation: u64, ctx: &mut Context<Self>) {
        log::warn!(
            "{} WA-JS not ready within {} s: falling back to the DOM signals",
            self.key,
            self.env.page_ready_timeout.as_secs()
        );
        self.bridge = Bridge::Dom;
        if self.machine.state == SessionState::Pairing {
            let why =
                "linking by phone number needs WA-JS, which did not become ready; scan the QR code";
            self.transition(Cause::PairingFailed(why.to_owned()), SYSTEM, ctx);
        }
        if let Some(observation) = self.dom_while_waiting.take() {
            self.page_changed(generation, Source::Dom, observation, ctx);
        }
    }

    /// An observation of the believed watcher.
    fn observed(&mut self, source: Source, observation: Observation, ctx: &mut Context<Self>) {
        let state = self.machine.state;
        match observation {
            Observation::Loading | Observation::BridgeReady { .. } => {}
            Observation::Qr(payload) => {
                // While linking by phone number the page may still rotate QR codes: not shown.
                if state == SessionState::Pairing
                    || self.machine.qr.as_ref().is_some_and(|q| q.payload == payload)
                {
                    return;
                }
                let data_url = match crate::qr::Qr::new(&payload).and_then(|q| q.data_url()) {
                    Ok(url) => url,
                    Err(e) => {
                        log::warn!("{} unrenderable QR payload: {}", self.key, chain(&e));
                        return;
                    }
                };
                if let Some(launched) = self.launched_at.take() {
                    self.env.metrics.start_to_qr.observe(launched.elapsed());
                }
                self.qr_since.get_or_insert_with(Instant::now);
                self.transition(
                    Cause::Qr(Arc::new(QrView { payload, data_url })),
                    SYSTEM,
                    ctx,
                );
            }
            Observation::QrExpired => {
                // The code shown is dead: withdraw it at once, and ask the page for new ones
                // until the QR timeout.
                if state == SessionState::Qr {
                    self.transition(Cause::QrExpired, SYSTEM, ctx);
                }
                if let Some(run) = &self.run {
                    let refresh = run.browser.refresh_qr(source);
                    let key = self.key.clone();
                    actix::spawn(async move {
                        if let Err(e) = refresh.await {
                            log::warn!("{key} could not ask for a new QR code: {}", chain(&e));
                        }
                    });
                }
            }
            Observation::Connected(number) => {
                if self.machine.is_connected() && self.machine.number.as_ref() == Some(&number) {
                    return;
                }
                if let Some(since) = self.qr_since.take() {
                    self.env.metrics.qr_to_connected.observe(since.elapsed());
                }
                self.launched_at = None;
                if self.transition(Cause::Linked(number), SYSTEM, ctx) {
                    self.backfill("the page is linked", ctx);
                }
            }
            Observation::OfflineDeliveryEnd => self.backfill("offline delivery ended", ctx),
            Observation::PairingCode(code) => {
                if state == SessionState::Pairing
                    && self.machine.pairing_code.as_deref() != Some(code.as_str())
                {
                    self.transition(Cause::Pairing { code: Some(code) }, SYSTEM, ctx);
                }
            }
            Observation::LoggedOut { reason } => {
                if state == SessionState::Connected {
                    self.transition(Cause::RemoteLogout { reason }, SYSTEM, ctx);
                }
            }
            Observation::Unsupported(_) => {}
            Observation::NeedsUpdate => self.fail(
                "WhatsApp Web asks for a newer browser (needs update): upgrade the chromium package"
                    .to_owned(),
                false,
                ctx,
            ),
            Observation::Online(online) => {
                if state == SessionState::Connected && self.machine.online != Some(online) {
                    self.transition(Cause::Online(online), SYSTEM, ctx);
                }
            }
            // Recorded before any state check (`page_changed`).
            Observation::Message(_) | Observation::Ack { .. } | Observation::Change(_) => {}
        }
    }

    /// A message the page saw: written first (once per message id), then streamed and
    /// delivered.
    fn record_message(
        &mut self,
        message: crate::events::PageMessage,
        page: Option<crate::browser::PageHandle>,
    ) {
        let media = message.media.clone();
        let event = crate::events::MessageEvent::new(&self.key, message);
        self.intake.message(event, media, page);
    }

    /// The page of browser `generation` while it is the current one (its media is downloaded
    /// through it).
    fn page_of(&self, generation: u64) -> Option<crate::browser::PageHandle> {
        self.run
            .as_ref()
            .filter(|_| generation == self.generation)
            .map(|run| run.browser.page())
    }

    fn record_acks(&mut self, ack: i64, ids: Vec<String>) {
        for id in ids {
            let event = crate::events::AckEvent {
                user_id: self.key.user_id().clone(),
                slot: self.key.slot(),
                id,
                ack: crate::events::Ack::from_wa(ack),
            };
            let dedupe = event.dedupe();
            self.writer
                .event(crate::events::MESSAGE_ACK, &event, Some(dedupe));
        }
    }

    /// Asks WA-JS for a linking code for `pairing_phone`, once the bridge is ready; the code
    /// arrives as a `pairing` transition (and again whenever it rotates).
    fn request_pairing_code(&mut self, ctx: &mut Context<Self>) {
        let (Some(phone), Some(run), Bridge::WaJs) =
            (self.pairing_phone.clone(), &self.run, self.bridge)
        else {
            return;
        };
        let command = run.browser.command(Command::PairingCode { phone });
        let generation = self.generation;
        ctx.spawn(command.into_actor(self).map(move |result, act, ctx| {
            if generation != act.generation || act.machine.state != SessionState::Pairing {
                return;
            }
            let why = match result {
                Ok(serde_json::Value::String(code)) => {
                    if act.machine.pairing_code.as_deref() != Some(code.as_str()) {
                        act.transition(Cause::Pairing { code: Some(code) }, SYSTEM, ctx);
                    }
                    return;
                }
                Ok(other) => format!("WA-JS answered {other} instead of a code"),
                Err(e) => chain(&e),
            };
            log::warn!("{} no linking code: {why}", act.key);
            act.transition(
                Cause::PairingFailed(format!("could not get a linking code: {why}")),
                SYSTEM,
                ctx,
            );
        }));
    }

    fn qr_timed_out(&mut self, generation: u64, ctx: &mut Context<Self>) {
        self.qr_deadline = None;
        if generation == self.generation && !self.machine.is_connected() {
            let closing = self.shut_down(StopKind::QrTimeout, SYSTEM, ctx);
            actix::spawn(async move {
                closing.await;
            });
        }
    }

    /// Closes the browser (if any) and settles in `stopped`; resolves when the browser is gone
    /// (and, in a cluster, its login handed over), holding the profile gate.
    fn shut_down(
        &mut self,
        kind: StopKind,
        by: &str,
        ctx: &mut Context<Self>,
    ) -> impl std::future::Future<Output = OwnedMutexGuard<()>> + 'static {
        self.transition(Cause::Stop(kind.clone()), by, ctx);
        let run = self.run.take();
        let grace = self.env.close_grace;
        let gate = self.gate.clone();
        let hand_over = self.hand_over(kind, run.is_some());
        async move {
            let gate = match run {
                Some(run) => run.close(grace).await,
                None => gate.lock_owned().await,
            };
            if let Some(hand_over) = hand_over {
                hand_over.await;
            }
            gate
        }
    }

    /// Cluster mode, after a close: snapshot the login (or forget it, on logout), flush the last
    /// writes, then release the lease (not for a snapshot cycle: the browser comes back at once).
    /// Only a browser this node just closed (`ran`) that reached `connected` and is still linked
    /// is snapshotted: a profile that did not run here may be older than the stored snapshot, and
    /// one that came up on a QR page holds no login (the number is kept through `starting` and
    /// `qr`, so it says nothing).
    fn hand_over(
        &mut self,
        kind: StopKind,
        ran: bool,
    ) -> Option<impl std::future::Future<Output = ()> + 'static> {
        let cluster = self.env.cluster.clone()?;
        let fence = self.fence?;
        let release = kind != StopKind::Snapshot;
        let linked = ran && self.connected_in_run && self.machine.number.is_some();
        let flushed = if release {
            self.unfence(fence)
        } else {
            Box::pin(self.writer.flushed())
        };
        let (store, key) = (self.env.store.clone(), self.key.clone());
        let profile = self.env.sessions.profile_dir(&self.key);
        Some(async move {
            match kind {
                StopKind::LoggedOut => {
                    if let Err(e) = store.forget_login(&key, fence, now_ms()).await {
                        log::warn!(
                            "{key} logout not recorded for the other nodes: {}",
                            chain(&e)
                        );
                    }
                }
                StopKind::QrTimeout | StopKind::LeaseLost | StopKind::Unsupported(_) => {}
                _ if linked => handover::take(&store, &key, profile, fence).await,
                _ => {}
            }
            flushed.await;
            if release {
                cluster.release(&key, fence).await;
            }
        })
    }

    /// Cluster mode: before a stop or logout of a session no node runs, this node claims its
    /// lease, so the change is written (the intent, the number) and a logout forgets the
    /// snapshot; the lease is released after. `None` when there is nothing to claim: the
    /// change then happens at once, in the handler.
    fn lease_for_write(
        &mut self,
        ctx: &mut Context<Self>,
    ) -> Option<impl ActorFuture<Self, Output = ()> + 'static> {
        let (cluster, actor) = match (&self.env.cluster, self.fence, self.run.is_some()) {
            (Some(cluster), None, false) => (cluster.clone(), ctx.address().recipient()),
            _ => return None,
        };
        let key = self.key.clone();
        let claim = async move {
            match cluster.claim(&key, actor).await {
                Ok(Ok(fence)) => Some(fence),
                Ok(Err(lease)) => {
                    log::warn!(
                        "{key} is held by {:?}: this node writes nothing for it",
                        lease.node
                    );
                    None
                }
                Err(e) => {
                    log::warn!("{key} lease not claimed: {}", chain(&e));
                    None
                }
            }
        };
        Some(claim.into_actor(self).map(|fence, act, _| {
            let held = act.env.cluster.as_ref().and_then(|c| c.holds(&act.key));
            if let (Some(fence), None, true) = (fence, act.fence, held == fence) {
                act.fence = Some(fence);
                act.writer.fence(Some(fence));
            }
        }))
    }

    /// Cluster mode: stop, snapshot the closed browser's login, start again (on a fresh link
    /// and every `SNAPSHOT_INTERVAL_SECS` while linked).
    fn snapshot_cycle(&mut self, ctx: &mut Context<Self>) {
        if !(self.machine.is_connected() && self.fence.is_some() && self.run.is_some()) {
            return;
        }
        let closing = self.shut_down(StopKind::Snapshot, SYSTEM, ctx);
        let generation = self.generation;
        ctx.spawn(
            async move {
                drop(closing.await);
            }
            .into_actor(self)
            .map(move |(), act, ctx| {
                // Unless something else happened meanwhile (a stop, a lost lease).
                if act.generation == generation
                    && act.machine.state == SessionState::Stopped
                    && act.fence.is_some()
                {
                    act.launch(Cause::Relaunch, SYSTEM, ctx);
                }
            }),
        );
    }

    fn browser_exited(&mut self, generation: u64, report: String, ctx: &mut Context<Self>) {
        if generation == self.generation && self.run.is_some() {
            self.crash(format!("browser exited unexpectedly ({report})"), ctx);
        }
    }

    /// An unexpected end of the browser: count it, then let the supervisor restart us (or give
    /// up when crashes come too often).
    fn crash(&mut self, reason: String, ctx: &mut Context<Self>) {
        log::warn!("{} {reason}", self.key);
        self.env.metrics.crashes.fetch_add(1, Relaxed);
        let window = self.env.supervision.crash_window;
        let recent = self.crashes.record(Instant::now(), window);
        if recent > self.env.supervision.max_crashes {
            let reason = format!(
                "gave up after {recent} crashes within {} s; last: {reason}",
                window.as_secs()
            );
            self.fail(reason, true, ctx);
            return;
        }
        self.transition(Cause::Crashed(reason), SYSTEM, ctx);
        self.discard_browser();
        ctx.stop();
    }

    /// Gives up: no more automatic restarts, and none at the next boot either.
    fn fail(&mut self, reason: String, crash: bool, ctx: &mut Context<Self>) {
        self.transition(Cause::Failed { reason, crash }, SYSTEM, ctx);
        self.discard_browser();
        self.give_lease_back();
    }

    /// Cluster mode: this node stops writing for the session (audited); the lease may be released
    /// once the returned future (the writes queued before) is done.
    fn unfence(&mut self, fence: Fence) -> futures_util::future::BoxFuture<'static, ()> {
        self.lease_audit("lease_released", fence);
        let flushed = Box::pin(self.writer.flushed());
        self.fence = None;
        self.writer.fence(None);
        flushed
    }

    /// Cluster mode, a session that ended here for good (failed; its intent is `stopped`): the
    /// lease goes back once the browser is gone and the last writes are done, so it holds no
    /// capacity of this node any more.
    fn give_lease_back(&mut self) {
        let (Some(cluster), Some(fence)) = (self.env.cluster.clone(), self.fence) else {
            return;
        };
        let flushed = self.unfence(fence);
        let (gate, key) = (self.gate.clone(), self.key.clone());
        actix::spawn(async move {
            drop(gate.lock_owned().await);
            flushed.await;
            cluster.release(&key, fence).await;
        });
    }

    /// Takes the browser of a crash or a failure away: killed and reaped in the background; the
    /// profile gate opens only once all of it is gone.
    fn discard_browser(&mut self) {
        if let Some(run) = self.run.take() {
            actix::spawn(run.discard());
        }
    }

    /// The safety net beside the page's pushed observations: every `poll_every` while the page
    /// is expected to change (starting, QR, pairing), every [`LINKED_POLL_EVERY`] while linked —
    /// most sessions of a host are linked and idle, and each poll is a DevTools round trip.
    fn poll(&mut self, ctx: &mut Context<Self>) {
        let Some(run) = &self.run else { return };
        if self.machine.is_connected() && self.polled_at.elapsed() < LINKED_POLL_EVERY {
            return;
        }
        self.polled_at = Instant::now();
        // While WA-JS is awaited, keep the DOM's latest view for a fallback.
        let source = self.bridge.source().unwrap_or(Source::Dom);
        let observe = run.browser.observe(source);
        let generation = self.generation;
        ctx.spawn(
            observe
                .into_actor(self)
                .map(move |result, act, ctx| match result {
                    Ok(observation) => act.page_changed(generation, source, observation, ctx),
                    Err(e) => log::debug!("{} poll: {}", act.key, chain(&e)),
                }),
        );
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.env.poll_every, |act, ctx| act.poll(ctx));
        if let Some(cluster) = &self.env.cluster {
            ctx.run_interval(cluster.snapshot_every, |act, ctx| act.snapshot_cycle(ctx));
        }
    }
}

impl Supervised for SessionActor {
    fn restarting(&mut self, ctx: &mut Context<Self>) {
        // Timers and futures of the old context are gone; so is the browser.
        self.qr_deadline = None;
        if self.machine.state != SessionState::Restarting {
            return;
        }
        let recent = self
            .crashes
            .recent(Instant::now(), self.env.supervision.crash_window);
        let delay = self.env.supervision.backoff(recent);
        self.relaunch_at = Some(Instant::now() + delay);
        log::info!("{} relaunching in {} ms", self.key, delay.as_millis());
        ctx.run_later(delay, |act, ctx| {
            if act.machine.state == SessionState::Restarting {
                act.env.metrics.restarts.fetch_add(1, Relaxed);
                act.launch(Cause::Relaunch, SYSTEM, ctx);
            }
        });
    }
}

/// Why a launch did not give a browser.
enum Launch {
    Browser(BrowserError),
    /// Cluster mode: another node holds the session's lease.
    OwnedElsewhere(crate::store::Lease),
    /// Cluster mode: the lease could not be claimed (the database failed).
    Lease(crate::store::StoreError),
    /// Cluster mode: the newer login snapshot could not be read or unpacked; nothing launched.
    Restore(String),
}

impl Handler<LeaseLost> for SessionActor {
    type Result = ();

    /// The lease is gone: kill the browser now (another node may launch it once the lease
    /// expires) and write nothing more; the session runs wherever its new owner is.
    fn handle(&mut self, msg: LeaseLost, ctx: &mut Context<Self>) {
        if msg.key != self.key || self.fence.map(|f| f.epoch) != Some(msg.epoch) {
            return;
        }
        self.fence = None;
        self.writer.fence(None);
        if let Some(run) = self.run.take() {
            log::warn!("{} browser killed: {}", self.key, msg.why);
            actix::spawn(run.discard());
        }
        self.transition(Cause::Stop(StopKind::LeaseLost), SYSTEM, ctx);
    }
}

/// From the page watcher: the page changed.
#[derive(Message)]
#[rtype(result = "()")]
struct PageChanged {
    generation: u64,
    source: Source,
    observation: Observation,
}

impl Handler<PageChanged> for SessionActor {
    type Result = ();
    fn handle(&mut self, msg: PageChanged, ctx: &mut Context<Self>) {
        self.page_changed(msg.generation, msg.source, msg.observation, ctx);
    }
}
