//! The session actor: one per `(userId, slot)`, supervised.
//!
//! Owns one Chromium ([`BrowserProcess`]), the open WhatsApp page ([`WaPage`]), an exclusive
//! lock on its profile folder, and the state machine of SPEC §5. Writes its `whatsapp_bots` row
//! and an audit event on every transition, in order, through its own writer task; publishes the
//! new [`Session`] on the event bus. Every message carries the key and is refused when it is not
//! this actor's own.
//!
//! Launches are tagged with a generation: stopping bumps it, so a launch, page signal or exit
//! notice from an older browser is recognised and ignored. A browser that dies unexpectedly
//! stops the actor's context; the [`actix::Supervisor`] restarts it and `restarting()` schedules
//! the relaunch after a backoff (or gives up: `failed`).

mod env;
mod error;
mod inspect;
mod logout;
mod qr;
mod shutdown;
mod start;
mod status;
mod stop;
mod view;

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::{mpsc, Mutex, OwnedMutexGuard};

use crate::browser::{BrowserError, BrowserProcess, FolderLock, LaunchSpec, Observation, WaPage};
use crate::domain::{Intent, SessionKey, SessionState};
use crate::store::{now_ms, NewEvent, SessionRow};

pub use env::{SessionEnv, Supervision};
pub use error::SessionError;
pub use inspect::{ActorInfo, Inspect};
pub use logout::Logout;
pub use qr::GetQr;
pub use shutdown::Shutdown;
pub use start::Start;
pub use status::GetStatus;
pub use stop::Stop;
pub use view::{rfc3339, QrView, Session};

/// Who asked for a change, for the audit trail (`system`, `service`, `admin`, `user:<sub>`).
pub type Initiator = String;
pub const SYSTEM: &str = "system";

/// Messages refused because they named another key (should stay 0; exported in metrics).
pub static MISROUTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A browser running for this session.
struct Running {
    page: WaPage,
    process: BrowserProcess,
    lock: FolderLock,
    /// Held while this browser may touch the profile; the next launch waits for it.
    gate: OwnedMutexGuard<()>,
}

impl Running {
    /// CDP close (flushes the profile), bounded wait, then kill the group. Returns the gate so
    /// the caller may still work on the profile before the next launch.
    async fn close(self, grace: Duration) -> OwnedMutexGuard<()> {
        let Running {
            page,
            process,
            lock,
            gate,
        } = self;
        page.close().await;
        process.finish(grace).await;
        drop(lock);
        gate
    }

    /// After an unexpected exit: kill whatever is left of the process group and wait until it
    /// is gone, and only then let go of the profile (the next launch waits for the gate).
    async fn discard(self) {
        let Running {
            page,
            process,
            lock,
            gate,
        } = self;
        drop(page);
        process.reap_group().await;
        drop((lock, gate));
    }
}

enum Write {
    Row(SessionRow),
    Event(NewEvent),
    /// Answered once every earlier write is done.
    Flush(tokio::sync::oneshot::Sender<()>),
}

pub struct SessionActor {
    key: SessionKey,
    env: Arc<SessionEnv>,
    state: SessionState,
    /// The state of the last transition logged, for "from -> to" lines.
    logged_state: SessionState,
    intent: Intent,
    number: Option<String>,
    qr: Option<Arc<QrView>>,
    restarts: u32,
    last_error: Option<String>,
    created_ms: i64,
    updated_ms: i64,
    generation: u64,
    run: Option<Running>,
    gate: Arc<Mutex<()>>,
    qr_deadline: Option<SpawnHandle>,
    crashes: VecDeque<Instant>,
    /// When the current browser was launched, until its first QR (start-to-QR metric).
    launched_at: Option<Instant>,
    /// When the first QR of the current browser was shown, until linked (QR-to-connected).
    qr_since: Option<Instant>,
    /// When the scheduled relaunch fires (shown in `/actors`).
    relaunch_at: Option<Instant>,
    born: Instant,
    writer: mpsc::UnboundedSender<Write>,
}

impl SessionActor {
    /// A stopped actor for `key`, continuing from its stored row when there is one.
    pub fn new(key: SessionKey, env: Arc<SessionEnv>, row: Option<SessionRow>) -> SessionActor {
        let (writer, mut rx) = mpsc::unbounded_channel();
        let store = env.store.clone();
        let log_key = key.to_string();
        tokio::spawn(async move {
            while let Some(write) = rx.recv().await {
                let result = match write {
                    Write::Row(row) => store.save_session(row).await,
                    Write::Event(ev) => store.record_event(ev).await,
                    Write::Flush(done) => {
                        let _ = done.send(());
                        Ok(())
                    }
                };
                if let Err(e) = result {
                    log::error!("{log_key} could not write to the database: {e}");
                }
            }
        });
        let now = now_ms();
        let row = row.filter(|r| r.key == key);
        SessionActor {
            state: SessionState::Stopped,
            logged_state: SessionState::Stopped,
            intent: row.as_ref().map_or(Intent::Stopped, |r| r.intent),
            number: row.as_ref().and_then(|r| r.connected_number.clone()),
            qr: None,
            restarts: row.as_ref().map_or(0, |r| r.restarts),
            last_error: row.as_ref().and_then(|r| r.last_error.clone()),
            created_ms: row.as_ref().map_or(now, |r| r.created_ms),
            updated_ms: now,
            generation: 0,
            run: None,
            gate: Arc::new(Mutex::new(())),
            qr_deadline: None,
            crashes: VecDeque::new(),
            relaunch_at: None,
            launched_at: None,
            qr_since: None,
            born: Instant::now(),
            writer,
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
            MISROUTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            log::error!("{} refused a message addressed to {key}", self.key);
            Err(SessionError::WrongKey {
                expected: self.key.clone(),
                got: key.clone(),
            })
        }
    }

    pub fn view(&self) -> Session {
        Session {
            key: self.key.clone(),
            user_id: self.key.user_id().clone(),
            slot: self.key.slot(),
            state: self.state,
            is_connected: self.state == SessionState::Connected,
            connected_number: self.number.clone(),
            qr: self.qr.clone(),
            restarts: self.restarts,
            last_error: self.last_error.clone(),
            updated_at: rfc3339(self.updated_ms),
        }
    }

    /// Records a change: row, audit event, log line, event bus.
    fn changed(&mut self, kind: &str, detail: Option<String>, by: &str) {
        self.updated_ms = now_ms();
        log::info!(
            "{} {} -> {} [{kind} by {by}]{}",
            self.key,
            self.logged_state,
            self.state,
            detail
                .as_deref()
                .map(|d| format!(" {d}"))
                .unwrap_or_default()
        );
        self.logged_state = self.state;
        let row = SessionRow {
            key: self.key.clone(),
            state: self.state,
            intent: self.intent,
            is_connected: self.state == SessionState::Connected,
            connected_number: self.number.clone(),
            restarts: self.restarts,
            last_error: self.last_error.clone(),
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
        };
        let event = NewEvent {
            key: self.key.clone(),
            at_ms: self.updated_ms,
            kind: kind.to_owned(),
            detail,
            actor: by.to_owned(),
        };
        let _ = self.writer.send(Write::Row(row));
        let _ = self.writer.send(Write::Event(event));
        let _ = self.env.events.send(self.view());
    }

    /// Resolves when every write queued so far has reached the database.
    fn flushed(&self) -> impl std::future::Future<Output = ()> + 'static {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = self.writer.send(Write::Flush(tx));
        async move {
            let _ = rx.await;
        }
    }

    /// Starts a browser (new generation); its outcome arrives in [`Self::launched`].
    fn launch(&mut self, ctx: &mut Context<Self>) {
        self.generation += 1;
        let generation = self.generation;
        self.qr = None;
        self.state = SessionState::Starting;
        self.env.metrics.launches.fetch_add(1, Relaxed);
        self.launched_at = Some(Instant::now());
        self.qr_since = None;
        self.changed("starting", None, SYSTEM);

        let env = self.env.clone();
        let gate = self.gate.clone();
        let profile = env.sessions.profile_dir(&self.key);
        let log_key = self.key.to_string();
        let addr = ctx.address();
        let fut = async move {
            // The previous browser of this session must be gone before the next touches the profile.
            let gate = gate.lock_owned().await;
            let executable = env.chromium.clone().map_err(BrowserError::NotFound)?;
            let lock =
                FolderLock::acquire(&profile).map_err(|e| BrowserError::Profile(e.to_string()))?;
            crate::browser::profile::clear_stale_singleton(&profile)
                .map_err(BrowserError::Profile)?;
            // Bounded launch concurrency: a boot restoring 50 sessions does not start 50 at once.
            let _permit = env
                .launches
                .acquire()
                .await
                .expect("the launch semaphore is never closed");

            let spec = LaunchSpec {
                executable,
                profile_dir: profile,
                log_key,
                startup_timeout: env.launch_timeout,
            };
            let (process, page) =
                crate::browser::launch(&spec, env.page.clone(), move |observation| {
                    addr.do_send(PageChanged {
                        generation,
                        observation,
                    })
                })
                .await?;
            Ok(Running {
                page,
                process,
                lock,
                gate,
            })
        };
        ctx.spawn(
            fut.into_actor(self)
                .map(move |result, act, ctx| act.launched(generation, result, ctx)),
        );
    }

    fn launched(
        &mut self,
        generation: u64,
        result: Result<Running, BrowserError>,
        ctx: &mut Context<Self>,
    ) {
        if generation != self.generation {
            // Stopped while launching: close what came up.
            if let Ok(run) = result {
                let grace = self.env.close_grace;
                actix::spawn(async move {
                    run.close(grace).await;
                });
            }
            return;
        }
        match result {
            Ok(run) => {
                log::info!("{} browser pid {} up", self.key, run.process.pid());
                // A page that never shows a QR code or the chats (site unreachable, changed
                // beyond our selectors) is handled like a crash: relaunch with backoff, then fail.
                let limit = self.env.page_ready_timeout;
                ctx.run_later(limit, move |act, ctx| {
                    if act.generation == generation && act.state == SessionState::Starting {
                        act.crashed(
                            format!(
                                "the page showed neither a QR code nor the chats within {} s",
                                limit.as_secs()
                            ),
                            ctx,
                        );
                    }
                });
                ctx.spawn(
                    run.process
                        .exited()
                        .into_actor(self)
                        .map(move |report, act, ctx| act.browser_exited(generation, report, ctx)),
                );
                self.run = Some(run);
            }
            Err(e @ (BrowserError::NotFound(_) | BrowserError::Profile(_))) => {
                self.fail(e.to_string());
            }
            Err(e @ BrowserError::Navigation { .. }) => self.crashed(e.to_string(), ctx),
            Err(e) => self.crashed(format!("launch failed: {e}"), ctx),
        }
    }

    /// Gives up: no more automatic restarts, and none at the next boot either (intent stopped).
    fn fail(&mut self, reason: String) {
        self.generation += 1;
        self.discard_browser();
        self.intent = Intent::Stopped;
        self.qr = None;
        self.state = SessionState::Failed;
        self.last_error = Some(reason.clone());
        self.changed("failed", Some(reason), SYSTEM);
    }

    fn page_changed(&mut self, generation: u64, observation: Observation, ctx: &mut Context<Self>) {
        if generation != self.generation || self.run.is_none() {
            return;
        }
        match observation {
            Observation::Loading => {}
            Observation::Qr(payload) => {
                if self.qr.as_ref().is_some_and(|q| q.payload == payload) {
                    return;
                }
                let data_url = match crate::qr::Qr::new(&payload).and_then(|q| q.data_url()) {
                    Ok(url) => url,
                    Err(e) => {
                        log::warn!("{} unrenderable QR payload: {e}", self.key);
                        return;
                    }
                };
                if let Some(launched) = self.launched_at.take() {
                    self.env.metrics.start_to_qr.observe(launched.elapsed());
                }
                self.qr_since.get_or_insert_with(Instant::now);
                let unlinked = self.state == SessionState::Connected;
                self.qr = Some(Arc::new(QrView { payload, data_url }));
                self.state = SessionState::Qr;
                if unlinked {
                    let number = self.number.take();
                    self.changed("unlinked", number, SYSTEM);
                } else {
                    self.changed("qr", None, SYSTEM);
                }
                if self.qr_deadline.is_none() {
                    self.qr_deadline = Some(ctx.run_later(self.env.qr_timeout, move |act, ctx| {
                        act.qr_timed_out(generation, ctx)
                    }));
                }
            }
            Observation::QrExpired => {
                // The page stopped offering codes: the one shown is dead, say so at once (back to
                // `starting` until a new one comes), and ask for new ones until the QR timeout.
                if self.qr.take().is_some() {
                    self.state = SessionState::Starting;
                    self.changed("qr_expired", None, SYSTEM);
                }
                if let Some(run) = &self.run {
                    let probe = run.page.probe();
                    let key = self.key.clone();
                    actix::spawn(async move {
                        if let Err(e) = probe.click_reload().await {
                            log::warn!("{key} could not click the QR reload button: {e}");
                        }
                    });
                }
            }
            Observation::Connected(number) => {
                if let Some(handle) = self.qr_deadline.take() {
                    ctx.cancel_future(handle);
                }
                if self.state == SessionState::Connected && self.number.as_ref() == Some(&number) {
                    return;
                }
                if let Some(since) = self.qr_since.take() {
                    self.env.metrics.qr_to_connected.observe(since.elapsed());
                }
                self.launched_at = None;
                self.qr = None;
                self.state = SessionState::Connected;
                self.last_error = None;
                self.number = Some(number.clone());
                self.changed("connected", Some(number), SYSTEM);
            }
        }
    }

    fn qr_timed_out(&mut self, generation: u64, ctx: &mut Context<Self>) {
        self.qr_deadline = None;
        if generation == self.generation && self.state != SessionState::Connected {
            self.last_error = Some("qr_timeout".to_owned());
            let closing = self.shut_down("qr_timeout", SYSTEM, Intent::Stopped, ctx);
            actix::spawn(async move {
                closing.await;
            });
        }
    }

    /// Closes the browser (if any) and settles in `stopped`; resolves when the browser is gone,
    /// holding the profile gate.
    fn shut_down(
        &mut self,
        kind: &str,
        by: &str,
        intent: Intent,
        ctx: &mut Context<Self>,
    ) -> impl std::future::Future<Output = OwnedMutexGuard<()>> + 'static {
        self.generation += 1;
        self.intent = intent;
        if let Some(handle) = self.qr_deadline.take() {
            ctx.cancel_future(handle);
        }
        self.qr = None;
        self.state = SessionState::Stopped;
        self.changed(kind, None, by);
        let run = self.run.take();
        let grace = self.env.close_grace;
        let gate = self.gate.clone();
        async move {
            match run {
                Some(run) => run.close(grace).await,
                None => gate.lock_owned().await,
            }
        }
    }

    fn browser_exited(&mut self, generation: u64, report: String, ctx: &mut Context<Self>) {
        if generation == self.generation && self.run.is_some() {
            self.crashed(format!("browser exited unexpectedly ({report})"), ctx);
        }
    }

    /// An unexpected end of the browser: count it, then let the supervisor restart us.
    fn crashed(&mut self, reason: String, ctx: &mut Context<Self>) {
        log::warn!("{} {reason}", self.key);
        self.env.metrics.crashes.fetch_add(1, Relaxed);
        self.discard_browser();
        self.qr = None;
        self.restarts += 1;
        self.last_error = Some(reason.clone());
        let now = Instant::now();
        let window = self.env.supervision.crash_window;
        self.crashes.push_back(now);
        while self
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.crashes.pop_front();
        }
        if self.crashes.len() > self.env.supervision.max_crashes {
            self.fail(format!(
                "gave up after {} crashes within {} s; last: {reason}",
                self.crashes.len(),
                window.as_secs()
            ));
            return;
        }
        self.state = SessionState::Restarting;
        self.changed("crashed", Some(reason), SYSTEM);
        ctx.stop();
    }

    /// Takes the browser of a crash or a failure away: its group is killed and reaped in the
    /// background, and the profile gate opens only once it is gone.
    fn discard_browser(&mut self) {
        if let Some(run) = self.run.take() {
            actix::spawn(run.discard());
        }
    }

    /// First ~1 s, doubling per recent crash, ±20 % jitter, capped.
    fn backoff(&self) -> Duration {
        let s = &self.env.supervision;
        let doublings = self.crashes.len().saturating_sub(1).min(16) as u32;
        let base = s
            .backoff_first
            .saturating_mul(1 << doublings)
            .min(s.backoff_max);
        let jitter = rand::random_range(0.8..1.2);
        base.mul_f64(jitter).min(s.backoff_max)
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        let Some(run) = &self.run else { return };
        let probe = run.page.probe();
        let generation = self.generation;
        ctx.spawn(async move { probe.observe().await }.into_actor(self).map(
            move |result, act, ctx| match result {
                Ok(observation) => act.page_changed(generation, observation, ctx),
                Err(e) => log::debug!("{} poll: {e}", act.key),
            },
        ));
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.env.poll_every, |act, ctx| act.poll(ctx));
    }
}

impl Supervised for SessionActor {
    fn restarting(&mut self, ctx: &mut Context<Self>) {
        // Timers and futures of the old context are gone; so is the browser.
        self.run = None;
        self.qr_deadline = None;
        if self.state != SessionState::Restarting {
            return;
        }
        let delay = self.backoff();
        self.relaunch_at = Some(Instant::now() + delay);
        log::info!("{} relaunching in {} ms", self.key, delay.as_millis());
        ctx.run_later(delay, |act, ctx| {
            if act.state == SessionState::Restarting {
                act.env.metrics.restarts.fetch_add(1, Relaxed);
                act.launch(ctx);
            }
        });
    }
}

/// From the page watcher: the page changed.
#[derive(Message)]
#[rtype(result = "()")]
struct PageChanged {
    generation: u64,
    observation: Observation,
}

impl Handler<PageChanged> for SessionActor {
    type Result = ();
    fn handle(&mut self, msg: PageChanged, ctx: &mut Context<Self>) {
        self.page_changed(msg.generation, msg.observation, ctx);
    }
}
