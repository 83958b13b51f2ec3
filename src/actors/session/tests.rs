//! Supervision logic against a scripted fake browser, on tokio's paused clock: a 60 s backoff or
//! a 180 s QR timeout takes microseconds, and every launch, crash and page signal happens exactly
//! when the test says. What only Chromium can show (process groups, parent death, the page
//! protocol) is tested with real Chromium in `tests/`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::*;
use crate::browser::{
    BoxFuture, Browser, BrowserError, Command, Launcher, Observation, ObservationSink, Source,
};
use crate::domain::{SessionKey, SessionsRoot, Slot, UserId};

const FIRST_BACKOFF: Duration = Duration::from_millis(1000);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
const QR_TIMEOUT: Duration = Duration::from_secs(180);
const PAGE_READY: Duration = Duration::from_secs(90);
const MAX_CRASHES: usize = 3;

/// What the next launch does.
enum Plan {
    /// Comes up at once.
    Up,
    /// Comes up when the test sends on the channel.
    UpWhen(oneshot::Receiver<()>),
    /// Fails with this error.
    Refuse(BrowserError),
}

/// The test's side of one launched fake browser.
struct Handle {
    /// Whether this browser's page has WA-JS (signals then come from the bridge watcher).
    bridge: bool,
    sink: ObservationSink,
    current: Arc<Mutex<Observation>>,
    /// The DOM watcher's view when the page also has a bridge.
    dom: Arc<Mutex<Observation>>,
    exit: watch::Sender<Option<String>>,
    /// How it ended: "closed" (orderly) or "discarded" (after a crash).
    ended: watch::Receiver<Option<&'static str>>,
    reloads: Arc<Mutex<usize>>,
    /// The WA-JS commands the session ran on this browser.
    commands: Arc<Mutex<Vec<Command>>>,
}

impl Handle {
    fn show(&self, observation: Observation) {
        *self.current.lock().unwrap() = observation.clone();
        let source = if self.bridge {
            Source::Bridge
        } else {
            Source::Dom
        };
        (self.sink)(source, observation);
    }

    /// What the DOM watcher sees (besides a bridge).
    fn show_dom(&self, observation: Observation) {
        *self.dom.lock().unwrap() = observation.clone();
        (self.sink)(Source::Dom, observation);
    }

    fn crash(&self) {
        let _ = self.exit.send(Some("signal: 9 (SIGKILL)".into()));
    }

    fn ended(&self) -> Option<&'static str> {
        *self.ended.borrow()
    }
}

/// Fake pids: numbers above any real `pid_max`, so nothing real is ever named.
static NEXT_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(5_000_000);

struct FakeBrowser {
    pid: u32,
    bridge: bool,
    commands: Arc<Mutex<Vec<Command>>>,
    current: Arc<Mutex<Observation>>,
    dom: Arc<Mutex<Observation>>,
    exit: watch::Receiver<Option<String>>,
    ended: watch::Sender<Option<&'static str>>,
    reloads: Arc<Mutex<usize>>,
}

impl Browser for FakeBrowser {
    fn pid(&self) -> Option<u32> {
        Some(self.pid)
    }

    fn exited(&self) -> BoxFuture<String> {
        let mut exit = self.exit.clone();
        Box::pin(async move {
            let report = match exit.wait_for(Option::is_some).await {
                Ok(report) => report.clone(),
                Err(_) => None,
            };
            match report {
                Some(report) => report,
                None => std::future::pending().await,
            }
        })
    }

    fn observe(&self, source: Source) -> BoxFuture<Result<Observation, BrowserError>> {
        let now = match (self.bridge, source) {
            (true, Source::Dom) => self.dom.lock().unwrap().clone(),
            _ => self.current.lock().unwrap().clone(),
        };
        Box::pin(async move { Ok(now) })
    }

    fn refresh_qr(&self, _: Source) -> BoxFuture<Result<(), BrowserError>> {
        *self.reloads.lock().unwrap() += 1;
        Box::pin(async { Ok(()) })
    }

    fn page(&self) -> crate::browser::PageHandle {
        let commands = self.commands.clone();
        std::sync::Arc::new(move |command: Command| {
            let commands = commands.clone();
            Box::pin(async move {
                commands.lock().unwrap().push(command.clone());
                Ok(match command {
                    Command::PairingCode { .. } => serde_json::json!("FAKE-CODE"),
                    Command::Logout => serde_json::json!(true),
                    Command::RefreshQr | Command::CollectGarbage => serde_json::Value::Null,
                    // A send job: started, then collected done.
                    Command::Call { body, .. } if body.contains("pending") => serde_json::json!(
                        {"done": {"id": "true_4915100000001@c.us_FAKE", "ack": 0, "to": "4915100000001@c.us"}}
                    ),
                    Command::Call { body, .. } if body.contains("getMessageById") => {
                        serde_json::Value::Null
                    }
                    Command::Call { .. } => serde_json::json!(true),
                    Command::RecentMessages { .. } => serde_json::json!([]),
                })
            })
        })
    }

    fn close(self: Box<Self>, _: Duration) -> BoxFuture<()> {
        let _ = self.ended.send(Some("closed"));
        Box::pin(async {})
    }

    fn discard(self: Box<Self>) -> BoxFuture<()> {
        let _ = self.ended.send(Some("discarded"));
        Box::pin(async {})
    }
}

struct FakeLauncher {
    /// Whether the pages get WA-JS.
    bridge: bool,
    plans: Mutex<VecDeque<Plan>>,
    launched: mpsc::UnboundedSender<(Instant, Handle)>,
}

impl Launcher for FakeLauncher {
    fn launch(
        &self,
        _profile: std::path::PathBuf,
        _log_key: String,
        on_change: ObservationSink,
    ) -> BoxFuture<Result<Box<dyn Browser>, BrowserError>> {
        let plan = self.plans.lock().unwrap().pop_front().unwrap_or(Plan::Up);
        let launched = self.launched.clone();
        let bridge = self.bridge;
        Box::pin(async move {
            match plan {
                Plan::Up => {}
                Plan::UpWhen(rx) => {
                    let _ = rx.await;
                }
                Plan::Refuse(e) => return Err(e),
            }
            let current = Arc::new(Mutex::new(Observation::Loading));
            let commands = Arc::new(Mutex::new(Vec::new()));
            let dom = Arc::new(Mutex::new(Observation::Loading));
            let (exit_tx, exit_rx) = watch::channel(None);
            let (ended_tx, ended_rx) = watch::channel(None);
            let reloads = Arc::new(Mutex::new(0));
            let _ = launched.send((
                Instant::now(),
                Handle {
                    bridge,
                    commands: commands.clone(),
                    sink: on_change,
                    current: current.clone(),
                    dom: dom.clone(),
                    exit: exit_tx,
                    ended: ended_rx,
                    reloads: reloads.clone(),
                },
            ));
            Ok(Box::new(FakeBrowser {
                pid: NEXT_PID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                bridge,
                commands,
                current,
                dom,
                exit: exit_rx,
                ended: ended_tx,
                reloads,
            }) as Box<dyn Browser>)
        })
    }

    fn ready(&self) -> Result<(), String> {
        Ok(())
    }

    fn has_bridge(&self) -> bool {
        self.bridge
    }
}

struct Fixture {
    addr: Addr<SessionActor>,
    key: SessionKey,
    env: Arc<SessionEnv>,
    launcher: Arc<FakeLauncher>,
    launches: mpsc::UnboundedReceiver<(Instant, Handle)>,
    _tmp: tempfile::TempDir,
}

impl Fixture {
    /// Pages without WA-JS (the DOM signals).
    fn new() -> Fixture {
        Fixture::with_bridge(false)
    }

    /// `bridge`: whether the pages get WA-JS.
    fn with_bridge(bridge: bool) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(
            &crate::store::DatabaseUrl::Sqlite(tmp.path().join("db")),
            10,
        )
        .unwrap();
        let (tx, launches) = mpsc::unbounded_channel();
        let launcher = Arc::new(FakeLauncher {
            bridge,
            plans: Mutex::new(VecDeque::new()),
            launched: tx,
        });
        let env = Arc::new(SessionEnv {
            sessions: SessionsRoot::create(&tmp.path().join("sessions")).unwrap(),
            launcher: launcher.clone(),
            browser: None,
            wa_js: None,
            wa_js_reported: Default::default(),
            memory: MemoryLimit {
                max_bytes: 1 << 30,
                check_every: Duration::from_secs(30),
            },
            qr_timeout: QR_TIMEOUT,
            page_ready_timeout: PAGE_READY,
            close_grace: Duration::from_secs(5),
            poll_every: Duration::from_secs(5),
            supervision: Supervision {
                backoff_first: FIRST_BACKOFF,
                backoff_max: MAX_BACKOFF,
                max_crashes: MAX_CRASHES,
                crash_window: Duration::from_secs(600),
            },
            launches: tokio::sync::Semaphore::new(4),
            launch_concurrency: 4,
            metrics: Default::default(),
            outbox: Arc::new(crate::events::Outbox::new(store.clone(), false)),
            store,
            events: tokio::sync::broadcast::channel(64).0,
            send_per_minute: 60,
            cluster: None,
            media: None,
        });
        let key = SessionKey::new(UserId::parse("alice").unwrap(), Slot::new(1, 10).unwrap());
        let addr =
            SessionActor::start_supervised(key.clone(), env.clone(), None, &Arbiter::current());
        Fixture {
            addr,
            key,
            env,
            launcher,
            launches,
            _tmp: tmp,
        }
    }

    /// The stored row once it shows `state` (the writer works off the actor's thread).
    async fn row_in(&self, state: SessionState) -> crate::store::SessionRow {
        for _ in 0..1000 {
            let row = self.env.store.load_session(&self.key).await.unwrap();
            if let Some(row) = row.filter(|r| r.state == state) {
                return row;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("the row never showed {state}");
    }

    fn plan(&self, plan: Plan) {
        self.launcher.plans.lock().unwrap().push_back(plan);
    }

    async fn status(&self) -> Session {
        self.addr
            .send(GetStatus {
                key: self.key.clone(),
            })
            .await
            .unwrap()
            .unwrap()
    }

    async fn start(&self) {
        self.addr
            .send(Start {
                key: self.key.clone(),
                by: "test".into(),
            })
            .await
            .unwrap()
            .unwrap();
    }

    async fn stop(&self) -> Session {
        self.addr
            .send(Stop {
                key: self.key.clone(),
                by: "test".into(),
            })
            .await
            .unwrap()
            .unwrap()
    }

    /// Starts the session, lets its browser come up and show the QR code `2@<payload>`.
    async fn start_showing_qr(&mut self, payload: &str) -> Handle {
        self.start().await;
        let (_, browser) = self.next_launch(Duration::from_secs(1)).await.unwrap();
        browser.show(qr(payload));
        self.state(SessionState::Qr, Duration::from_secs(1)).await;
        browser
    }

    /// The next launch, or `None` if none comes within `limit` (of paused time).
    async fn next_launch(&mut self, limit: Duration) -> Option<(Instant, Handle)> {
        tokio::time::timeout(limit, self.launches.recv())
            .await
            .ok()
            .flatten()
    }

    /// Waits (paused time) until the session is in `state`; panics after `limit`.
    async fn state(&self, state: SessionState, limit: Duration) -> Session {
        let deadline = Instant::now() + limit;
        loop {
            let s = self.status().await;
            if s.state == state {
                return s;
            }
            assert!(Instant::now() < deadline, "never {state}: {s:?}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

fn qr(payload: &str) -> Observation {
    Observation::Qr(format!("2@{payload}"))
}

/// Runs `test` in an actix system on a paused clock.
fn paused<F: std::future::Future<Output = ()>>(test: impl FnOnce() -> F) {
    let wall = std::time::Instant::now();
    actix::System::new().block_on(async move {
        tokio::time::pause();
        test().await;
    });
    eprintln!("wall time {:?}", wall.elapsed());
}

#[test]
fn crashes_back_off_exponentially_with_jitter_then_fail() {
    paused(|| async {
        let mut f = Fixture::new();
        f.start().await;
        let (_, mut browser) = f.next_launch(Duration::from_secs(1)).await.unwrap();
        browser.show(qr("a"));
        f.state(SessionState::Qr, Duration::from_secs(1)).await;

        for crash in 1..=MAX_CRASHES {
            let crashed_at = Instant::now();
            browser.crash();
            let s = f
                .state(SessionState::Restarting, Duration::from_secs(1))
                .await;
            assert_eq!(s.restarts, crash as u32);
            assert!(s.last_error.unwrap().contains("exited unexpectedly"));
            assert!(s.qr.is_none());
            let (at, next) = f.next_launch(MAX_BACKOFF * 2).await.expect("a relaunch");
            let waited = at - crashed_at;
            let nominal = FIRST_BACKOFF * (1 << (crash - 1));
            assert!(
                waited >= nominal.mul_f64(1.0 - supervision::JITTER)
                    && waited
                        <= nominal.mul_f64(1.0 + supervision::JITTER) + Duration::from_millis(5),
                "crash {crash}: relaunched after {waited:?}, nominal {nominal:?}"
            );
            assert_eq!(
                browser.ended(),
                Some("discarded"),
                "the crashed browser was discarded"
            );
            browser = next;
            browser.show(qr(&format!("c{crash}")));
            f.state(SessionState::Qr, Duration::from_secs(1)).await;
        }

        // One crash too many within the window: failed, intent stopped, no relaunch ever.
        browser.crash();
        let s = f.state(SessionState::Failed, Duration::from_secs(1)).await;
        assert!(s
            .last_error
            .unwrap()
            .starts_with("gave up after 4 crashes within 600 s"));
        assert_eq!(s.restarts, 4);
        assert!(f.next_launch(Duration::from_secs(3600)).await.is_none());

        // An explicit start is a fresh chance.
        f.start().await;
        let (_, browser) = f.next_launch(Duration::from_secs(1)).await.unwrap();
        let s = f.status().await;
        assert_eq!((s.state, s.last_error), (SessionState::Starting, None));
        browser.show(qr("again"));
        f.state(SessionState::Qr, Duration::from_secs(1)).await;
    });
}

#[test]
fn crashes_spread_over_more_than_the_window_never_fail() {
    paused(|| async {
        let mut f = Fixture::new();
        f.start().await;
        for round in 0..(MAX_CRASHES * 3) {
            let (_, browser) = f.next_launch(MAX_BACKOFF * 2).await.unwrap();
            browser.show(qr(&format!("r{round}")));
            f.state(SessionState::Qr, Duration::from_secs(1)).await;
            // Healthy for a while: only the crashes within the last 10 minutes count.
            tokio::time::sleep(Duration::from_secs(250)).await;
            let s = f.status().await;
            if s.state != SessionState::Qr {
                // The QR timeout closed it; start again.
                f.start().await;
                continue;
            }
            browser.crash();
            f.state(SessionState::Restarting, Duration::from_secs(1))
                .await;
        }
        assert_ne!(f.status().await.state, SessionState::Failed);
    });
}

#[test]
fn an_unscanned_qr_closes_the_browser_at_the_timeout_and_not_before() {
    paused(|| async {
        let mut f = Fixture::new();
        let browser = f.start_showing_qr("a").await;
        let shown = Instant::now();
        // Rotation does not re-arm the timeout.
        tokio::time::sleep(Duration::from_secs(100)).await;
        browser.show(qr("b"));
        tokio::time::sleep(QR_TIMEOUT - Duration::from_secs(100) - Duration::from_millis(10)).await;
        assert_eq!(f.status().await.state, SessionState::Qr);
        let s = f
            .state(SessionState::Stopped, Duration::from_millis(100))
            .await;
        let after = Instant::now() - shown;
        assert!(
            after >= QR_TIMEOUT && after < QR_TIMEOUT + Duration::from_millis(50),
            "{after:?}"
        );
        assert_eq!(s.last_error.as_deref(), Some("qr_timeout"));
        assert!(s.qr.is_none());
        assert_eq!(browser.ended(), Some("closed"));
        assert!(f.next_launch(Duration::from_secs(3600)).await.is_none());
    });
}

#[test]
fn linking_disarms_the_qr_timeout() {
    paused(|| async {
        let mut f = Fixture::new();
        let browser = f.start_showing_qr("a").await;
        browser.show(Observation::Connected("4915100000001".into()));
        f.state(SessionState::Connected, Duration::from_secs(1))
            .await;
        tokio::time::sleep(QR_TIMEOUT * 3).await;
        let s = f.status().await;
        assert_eq!(s.state, SessionState::Connected);
        assert_eq!(s.connected_number.as_deref(), Some("4915100000001"));
        assert_eq!(browser.ended(), None);
    });
}

#[test]
fn a_page_that_never_becomes_ready_counts_as_a_crash() {
    paused(|| async {
        let mut f = Fixture::new();
        f.start().await;
        let (up, browser) = f.next_launch(Duration::from_secs(1)).await.unwrap();
        let s = f.state(SessionState::Restarting, PAGE_READY * 2).await;
        assert!(Instant::now() - up >= PAGE_READY);
        assert!(s
            .last_error
            .unwrap()
            .contains("neither a QR code nor the chats within 90 s"));
        assert_eq!(browser.ended(), Some("discarded"));
        assert!(f.next_launch(MAX_BACKOFF).await.is_some(), "relaunched");
    });
}

#[test]
fn an_expired_qr_is_withdrawn_and_the_page_asked_for_a_new_one() {
    paused(|| async {
        let mut f = Fixture::new();
        let browser = f.start_showing_qr("a").await;
        browser.show(Observation::QrExpired);
        let s = f
            .state(SessionState::Starting, Duration::from_secs(1))
            .await;
        assert!(s.qr.is_none());
        assert_eq!(*browser.reloads.lock().unwrap(), 1);
        browser.show(qr("b"));
        let s = f.state(SessionState::Qr, Duration::from_secs(1)).await;
        assert_eq!(s.qr.unwrap().payload, "2@b");
    });
}

#[test]
fn a_stop_while_launching_closes_the_browser_that_comes_up_late() {
    paused(|| async {
        let mut f = Fixture::new();
        let (release, gate) = oneshot::channel();
        f.plan(Plan::UpWhen(gate));
        f.start().await;
        assert_eq!(f.status().await.state, SessionState::Starting);
        // The stop is answered once the browser is gone, so it waits for the launch to end.
        let stopping = f.addr.send(Stop {
            key: f.key.clone(),
            by: "test".into(),
        });
        assert_eq!(
            f.status().await.state,
            SessionState::Stopped,
            "stopped at once"
        );
        release.send(()).unwrap();
        let (_, late) = f.next_launch(Duration::from_secs(1)).await.unwrap();
        assert_eq!(
            stopping.await.unwrap().unwrap().state,
            SessionState::Stopped
        );
        // Its signals are from an old generation: ignored; it is closed.
        late.show(qr("late"));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(late.ended(), Some("closed"));
        let s = f.status().await;
        assert_eq!((s.state, s.qr), (SessionState::Stopped, None));
    });
}

#[test]
fn signals_of_an_old_browser_are_ignored_after_a_relaunch() {
    paused(|| async {
        let mut f = Fixture::new();
        f.start().await;
        let (_, old) = f.next_launch(Duration::from_secs(1)).await.unwrap();
        old.show(qr("old"));
        f.state(SessionState::Qr, Duration::from_secs(1)).await;
        old.crash();
        let (_, new) = f.next_launch(MAX_BACKOFF).await.unwrap();
        // The old page still talks (its watcher raced the crash): nothing happens.
        old.show(Observation::Connected("4915100000009".into()));
        old.show(qr("stale"));
        tokio::time::sleep(Duration::from_millis(10)).await;
        let s = f.status().await;
        assert_eq!(
            (s.state, s.connected_number.clone()),
            (SessionState::Starting, None)
        );
        new.show(qr("new"));
        let s = f.state(SessionState::Qr, Duration::from_secs(1)).await;
        assert_eq!(s.qr.unwrap().payload, "2@new");
        // An exit notice of a browser that was stopped on purpose is no crash.
        let stopped = f.stop().await;
        new.crash();
        tokio::time::sleep(MAX_BACKOFF * 2).await;
        assert_eq!(f.status().await.restarts, stopped.restarts);
        assert!(f.next_launch(Duration::from_secs(1)).await.is_none());
    });
}

#[test]
fn a_browser_that_cannot_start_fails_or_retries_by_the_kind_of_error() {
    paused(|| async {
        let mut f = Fixture::new();
        f.plan(Plan::Refuse(BrowserError::NotFound(
            "/nowhere/chromium".into(),
        )));
        f.start().await;
        let s = f.state(SessionState::Failed, Duration::from_secs(1)).await;
        assert!(s.last_error.unwrap().contains("/nowhere/chromium"));
        assert_eq!(s.restarts, 0, "not a crash");
        assert!(f.next_launch(Duration::from_secs(3600)).await.is_none());

        f.plan(Plan::Refuse(BrowserError::ExitedEarly(
            "exit status: 21".into(),
        )));
        f.start().await;
        let s = f
            .state(SessionState::Restarting, Duration::from_secs(1))
            .await;
        assert!(s
            .last_error
            .unwrap()
            .starts_with("launch failed: Chromium exited during start-up"));
        assert_eq!(s.restarts, 1);
        assert!(
            f.next_launch(MAX_BACKOFF).await.is_some(),
            "retried with backoff"
        );
    });
}

#[test]
fn unlinked_from_the_phone_goes_back_to_qr_and_forgets_the_number() {
    paused(|| async {
        let mut f = Fixture::new();
        f.start().await;
        let (_, browser) = f.next_launch(Duration::from_secs(1)).await.unwrap();
        browser.show(Observation::Connected("4915100000001".into()));
        f.state(SessionState::Connected, Duration::from_secs(1))
            .await;
        browser.show(qr("again"));
        let s = f.state(SessionState::Qr, Duration::from_secs(1)).await;
        assert_eq!(s.connected_number, None);
        assert!(!s.is_connected);
    });
}

// ---- The page bridge (WA-JS) ----------------------------------------------------------------

impl Fixture {
    async fn pair(&self, phone: &str) -> Result<Session, SessionError> {
        self.addr
            .send(Pair {
                key: self.key.clone(),
                phone: crate::domain::PhoneNumber::parse(phone).unwrap(),
                by: "test".into(),
            })
            .await
            .unwrap()
    }
}

fn ready() -> Observation {
    Observation::BridgeReady {
        version: "4.6.0".into(),
    }
}

#[test]
fn wa_js_drives_the_session_once_ready_and_the_dom_is_ignored() {
    paused(|| async {
        let mut f = Fixture::with_bridge(true);
        f.start().await;
        let (_, browser) = f.next_launch(Duration::from_secs(1)).await.unwrap();
        browser.show_dom(qr("dom"));
        tokio::time::sleep(Duration::from_millis(10)).await;
        let s = f.status().await;
        assert_eq!(
            (s.state, s.bridge),
            (SessionState::Starting, None),
            "waiting for WA-JS"
        );
        browser.show(ready());
        browser.show(qr("wajs"));
        let s = f.state(SessionState::Qr, Duration::from_secs(1)).await;
        assert_eq!(s.qr.unwrap().payload, "2@wajs");
        assert_eq!(s.bridge, Some(Source::Bridge));
        browser.show_dom(qr("dom2"));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            f.status().await.qr.unwrap().payload,
            "2@wajs",
            "DOM not believed"
        );
        // An expired code is refreshed through WA-JS.
        browser.show(Observation::QrExpired);
        f.state(SessionState::Starting, Duration::from_secs(1))
            .await;
        assert_eq!(*browser.reloads.lock().unwrap(), 1);
    });
}

#[test]
fn without_wa_js_ready_in_time_the_dom_signals_take_over() {
    paused(|| async {
        let mut f = Fixture::with_bridge(true);
        f.start().await;
        let (up, browser) = f.next_launch(Duration::from_secs(1)).await.unwrap();
        browser.show_dom(qr("dom"));
        let s = f.state(SessionState::Qr, PAGE_READY * 2).await;
        assert!(Instant::now() - up >= PAGE_READY);
        assert_eq!(
            (s.qr.unwrap().payload.as_str(), s.bridge),
            ("2@dom", Some(Source::Dom))
        );
        assert_eq!(s.restarts, 0, "a page with a QR code is no crash");
        // Pairing needs WA-JS.
        assert!(matches!(
            f.pair("4915100000001").await,
            Err(SessionError::BridgeUnavailable)
        ));
        // WA-JS turning up late takes over: its events drive the session from now on (sends and
        // its messages work), the DOM watcher is no longer believed.
        browser.show(ready());
        browser.show(Observation::Connected("4915100000001".into()));
        let s = f
            .state(SessionState::Connected, Duration::from_secs(1))
            .await;
        assert_eq!(s.bridge, Some(Source::Bridge));
        browser.show_dom(qr("dom-late"));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(f.status().await.state, SessionState::Connected);
    });
}

#[test]
fn pairing_waits_for_wa_js_then_shows_the_code_and_links() {
    paused(|| async {
        let mut f = Fixture::with_bridge(true);
        f.start().await;
        let (_, browser) = f.next_launch(Duration::from_secs(1)).await.unwrap();
        // Asked before WA-JS is ready: pairing, no code yet (the reply waits a bounded time).
        let asked = Instant::now();
        let s = f.pair("+4915100000002").await.unwrap();
        assert_eq!((s.state, s.pairing_code), (SessionState::Pairing, None));
        assert!(Instant::now() - asked >= PAIR_WAIT);
        browser.show(ready());
        let s = f.state(SessionState::Pairing, Duration::from_secs(1)).await;
        let s = if s.pairing_code.is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
            f.status().await
        } else {
            s
        };
        assert_eq!(s.pairing_code.as_deref(), Some("FAKE-CODE"));
        assert_eq!(
            *browser.commands.lock().unwrap(),
            [Command::PairingCode {
                phone: "4915100000002".into()
            }]
        );
        // QR codes the page still rotates are not shown while pairing; a new code is.
        browser.show(qr("ignored"));
        browser.show(Observation::PairingCode("NEW1-CODE".into()));
        tokio::time::sleep(Duration::from_millis(10)).await;
        let s = f.status().await;
        assert_eq!((s.qr, s.pairing_code.as_deref()), (None, Some("NEW1-CODE")));
        // Asking again answers at once with the code.
        assert_eq!(
            f.pair("4915100000002")
                .await
                .unwrap()
                .pairing_code
                .as_deref(),
            Some("NEW1-CODE")
        );
        browser.show(Observation::Connected("4915100000002".into()));
        let s = f
            .state(SessionState::Connected, Duration::from_secs(1))
            .await;
        assert_eq!(s.pairing_code, None);
        assert!(matches!(
            f.pair("4915100000002").await,
            Err(SessionError::AlreadyConnected)
        ));
    });
}

#[test]
fn an_unused_pairing_code_times_out_like_a_qr_code() {
    paused(|| async {
        let mut f = Fixture::with_bridge(true);
        f.start().await;
        let (_, browser) = f.next_launch(Duration::from_secs(1)).await.unwrap();
        browser.show(ready());
        f.pair("4915100000003").await.unwrap();
        let s = f.state(SessionState::Stopped, QR_TIMEOUT * 2).await;
        assert_eq!(s.last_error.as_deref(), Some("qr_timeout"));
        assert_eq!(browser.ended(), Some("closed"));
    });
}

#[test]
fn a_pairing_without_wa_js_in_time_falls_back_to_the_qr_code() {
    paused(|| async {
        let mut f = Fixture::with_bridge(true);
        f.start().await;
        let (_, browser) = f.next_launch(Duration::from_secs(1)).await.unwrap();
        browser.show_dom(qr("dom"));
        f.pair("4915100000004").await.unwrap();
        let s = f.state(SessionState::Qr, PAGE_READY * 2).await;
        assert!(s.last_error.unwrap().contains("needs WA-JS"));
        assert_eq!(s.bridge, Some(Source::Dom));
    });
}

#[test]
fn what_wa_js_knows_reaches_the_session() {
    paused(|| async {
        let mut f = Fixture::with_bridge(true);
        f.start().await;
        let (_, browser) = f.next_launch(Duration::from_secs(1)).await.unwrap();
        browser.show(ready());
        browser.show(Observation::Connected("4915100000005".into()));
        f.state(SessionState::Connected, Duration::from_secs(1))
            .await;
        // The phone goes offline: still connected, `online: false`.
        browser.show(Observation::Online(false));
        tokio::time::sleep(Duration::from_millis(10)).await;
        let s = f.status().await;
        assert_eq!((s.state, s.online), (SessionState::Connected, Some(false)));
        browser.show(Observation::Online(true));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(f.status().await.online, Some(true));
        // Logged out from the phone, with WhatsApp's reason.
        browser.show(Observation::LoggedOut {
            reason: Some("user_initiated".into()),
        });
        let s = f
            .state(SessionState::Starting, Duration::from_secs(1))
            .await;
        assert_eq!(s.connected_number, None);
        assert_eq!(s.online, None);
        assert!(s.last_error.unwrap().contains("user_initiated"));
        // WhatsApp asks for a newer browser: no relaunch can help.
        browser.show(Observation::NeedsUpdate);
        let s = f.state(SessionState::Failed, Duration::from_secs(1)).await;
        assert!(s.last_error.unwrap().contains("newer browser"));
        assert!(f.next_launch(Duration::from_secs(3600)).await.is_none());
    });
}

#[test]
fn logout_unlinks_on_whatsapps_side_first() {
    paused(|| async {
        let mut f = Fixture::with_bridge(true);
        f.start().await;
        let (_, browser) = f.next_launch(Duration::from_secs(1)).await.unwrap();
        browser.show(ready());
        browser.show(Observation::Connected("4915100000006".into()));
        f.state(SessionState::Connected, Duration::from_secs(1))
            .await;
        let s = f
            .addr
            .send(Logout {
                key: f.key.clone(),
                by: "test".into(),
                wake: false,
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!((s.state, s.connected_number), (SessionState::Stopped, None));
        assert_eq!(*browser.commands.lock().unwrap(), [Command::Logout]);
        assert_eq!(browser.ended(), Some("closed"));
    });
}

/// The memory bulkhead: a browser over the limit is closed in order (not discarded) and launched
/// again at once on its profile; no crash is counted; a report naming an older browser is ignored.
#[test]
fn a_browser_over_its_memory_is_recycled_without_a_crash() {
    paused(|| async {
        let mut f = Fixture::new();
        f.start().await;
        let (_, browser) = f.next_launch(Duration::from_secs(1)).await.unwrap();
        browser.show(Observation::Connected("4915100000001".into()));
        f.state(SessionState::Connected, Duration::from_secs(1))
            .await;
        let info = f.addr.send(Inspect).await.unwrap();
        let pid = info.browser_pid.unwrap();

        // A report about some other browser changes nothing.
        f.addr.do_send(OverMemory {
            key: f.key.clone(),
            pid: pid + 1_000,
            bytes: 2 << 30,
        });
        assert!(f.next_launch(Duration::from_secs(5)).await.is_none());

        let at = Instant::now();
        f.addr.do_send(OverMemory {
            key: f.key.clone(),
            pid,
            bytes: 2 << 30,
        });
        let (relaunched_at, next) = f
            .next_launch(Duration::from_secs(1))
            .await
            .expect("a relaunch");
        assert!(
            relaunched_at - at < Duration::from_millis(50),
            "at once, no backoff"
        );
        assert_eq!(
            browser.ended(),
            Some("closed"),
            "closed in order: the profile is flushed"
        );
        next.show(Observation::Connected("4915100000001".into()));
        let s = f
            .state(SessionState::Connected, Duration::from_secs(1))
            .await;
        assert_eq!((s.restarts, s.last_error), (0, None), "no crash counted");
        let info = f.addr.send(Inspect).await.unwrap();
        assert_eq!(info.recycles, 1);
        assert_ne!(info.browser_pid, Some(pid));
    });
}

/// WhatsApp's refusal page stops the session at once, with `unsupported_browser`, keeping its
/// intent (the next boot, on another engine, brings it back) — also while WA-JS is still awaited.
#[test]
fn a_refused_browser_stops_the_session_at_once_keeping_its_intent() {
    paused(|| async {
        let mut f = Fixture::with_bridge(true);
        f.start().await;
        let (_, browser) = f.next_launch(Duration::from_secs(1)).await.unwrap();
        browser.show_dom(Observation::Unsupported(
            "WhatsApp works with Google Chrome 60+".into(),
        ));
        let s = f.state(SessionState::Stopped, Duration::from_secs(1)).await;
        let error = s.last_error.unwrap();
        assert!(error.starts_with("unsupported_browser: "), "{error}");
        assert!(error.contains("BROWSER=chromium"), "{error}");
        assert_eq!(browser.ended(), Some("closed"));
        assert!(
            f.next_launch(Duration::from_secs(600)).await.is_none(),
            "no crash loop"
        );
        let row = f.row_in(SessionState::Stopped).await;
        assert_eq!(row.intent, crate::domain::Intent::Running);
    });
}

fn message(id: &str) -> Observation {
    Observation::Message(Box::new(crate::events::PageMessage {
        id: id.to_owned(),
        chat_id: "4915199990000@c.us".into(),
        from: Some("4915199990000@c.us".into()),
        to: Some("4915100000001@c.us".into()),
        from_me: false,
        kind: "chat".into(),
        body: Some(format!("body of {id}")),
        timestamp: 1_700_000_000,
        is_group: false,
        author: None,
        phone: None,
        backfill: false,
        ..Default::default()
    }))
}

impl Fixture {
    /// The ids of the `message` events stored for the session, once there are `n` of them.
    async fn stored_messages(&self, n: usize) -> Vec<String> {
        for _ in 0..1000 {
            let events = self
                .env
                .store
                .events_after(&self.key, 0, 1000)
                .await
                .unwrap();
            let ids: Vec<String> = events
                .iter()
                .filter(|e| e.kind == crate::events::MESSAGE)
                .map(|e| {
                    let v: serde_json::Value = serde_json::from_str(&e.payload).unwrap();
                    v["id"].as_str().unwrap().to_owned()
                })
                .collect();
            if ids.len() >= n {
                return ids;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("fewer than {n} messages stored");
    }
}

/// Messages are recorded whatever the session's state or the browser's generation: before the
/// session is `connected`, while WA-JS is still awaited, and from a browser that is closing after
/// a stop — and a message reported twice is stored once.
#[test]
fn every_message_the_page_reports_is_recorded_once() {
    paused(|| async {
        let mut f = Fixture::with_bridge(true);
        f.start().await;
        let (_, browser) = f.next_launch(Duration::from_secs(1)).await.unwrap();
        // Offline delivery before the page says it is linked, and before WA-JS is ready.
        browser.show(message("before-ready"));
        browser.show(ready());
        browser.show(message("before-connected"));
        browser.show(Observation::Connected("4915100000001".into()));
        f.state(SessionState::Connected, Duration::from_secs(1))
            .await;
        browser.show(message("connected"));
        browser.show(message("connected"));
        f.stop().await;
        // The closing browser still reports what it received.
        browser.show(message("while-closing"));
        let ids = f.stored_messages(4).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let again = f.stored_messages(4).await;
        assert_eq!(ids, again);
        assert_eq!(
            ids,
            [
                "before-ready",
                "before-connected",
                "connected",
                "while-closing"
            ]
        );
    });
}

#[test]
fn a_login_copy_recycles_a_linked_browser_is_asked_again_during_a_launch_and_skips_a_qr_page() {
    paused(|| async {
        let mut f = Fixture::new();
        let copy = |f: &Fixture| f.addr.send(CopyLogin { key: f.key.clone() });
        let (up, when) = oneshot::channel();
        f.plan(Plan::UpWhen(when));
        f.start().await;
        // The browser is being launched (it will hold the profile): ask again later.
        let during = tokio::time::timeout(Duration::from_secs(5), copy(&f))
            .await
            .expect("answered at once, not stuck behind the launch's hold on the profile")
            .unwrap();
        assert!(
            matches!(during, Err(SessionError::Restarting)),
            "{during:?}"
        );
        up.send(()).unwrap();
        let (_, browser) = f.next_launch(Duration::from_secs(1)).await.unwrap();
        browser.show(qr("a"));
        f.state(SessionState::Qr, Duration::from_secs(1)).await;
        let on_qr = copy(&f).await.unwrap().unwrap();
        assert!(on_qr.login.is_none() && !on_qr.relaunched, "{on_qr:?}");
        assert_eq!(browser.ended(), None, "a QR page is not closed for a copy");

        browser.show(Observation::Connected("4915100000009".into()));
        f.state(SessionState::Connected, Duration::from_secs(1))
            .await;
        let linked = copy(&f).await.unwrap().unwrap();
        assert!(linked.relaunched, "{linked:?}");
        assert_eq!(
            browser.ended(),
            Some("closed"),
            "closed gracefully, not killed"
        );
        let (_, again) = f
            .next_launch(Duration::from_secs(1))
            .await
            .expect("relaunched");
        again.show(Observation::Connected("4915100000009".into()));
        let s = f
            .state(SessionState::Connected, Duration::from_secs(1))
            .await;
        assert_eq!(s.restarts, 0, "no crash counted");

        f.stop().await;
        let at_rest = copy(&f).await.unwrap().unwrap();
        assert!(!at_rest.relaunched, "{at_rest:?}");
        assert!(f.next_launch(Duration::from_secs(5)).await.is_none());
    });
}
