//! Starts the real application in-process on port 0 with a temp data folder, next to a
//! stand-in WhatsApp Web page.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use wa_supervisor::actors::session::{GetStatus, Session, SessionActor, SessionEnv};
use wa_supervisor::config::Settings;
use wa_supervisor::domain::{SessionKey, Slot, UserId};
use wa_supervisor::startup::Application;

use super::standin::{StandIn, StandInOptions};

pub struct TestApp {
    pub port: u16,
    pub standin: StandIn,
    pub app: Application,
    pub tmp: tempfile::TempDir,
}

pub async fn spawn_app(opts: StandInOptions, extra: &[&str]) -> TestApp {
    let _ = env_logger::builder().is_test(true).try_init();
    let standin = StandIn::start(opts).await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let sessions = tmp.path().join("sessions");
    let db = data.join("test.db");
    let url = standin.url();
    let mut args = vec![
        "wa-supervisor",
        "--bind-addr",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
        "--sessions-dir",
        sessions.to_str().unwrap(),
        "--database-url",
        db.to_str().unwrap(),
        "--whatsapp-url",
        &url,
    ];
    args.extend_from_slice(extra);
    let settings = Settings::from_args(args).unwrap();
    let app = Application::build(settings).await.unwrap();
    TestApp {
        port: app.port(),
        standin,
        app,
        tmp,
    }
}

impl TestApp {
    pub fn env(&self) -> Arc<SessionEnv> {
        self.app.state().sessions.clone()
    }

    pub fn sessions_dir(&self) -> PathBuf {
        self.env().sessions.path().to_path_buf()
    }

    pub fn session(&self, key: &SessionKey) -> Addr<SessionActor> {
        SessionActor::start_supervised(key.clone(), self.env(), None, &self.app.sessions_arbiter())
    }

    /// Fails the test if any Chromium still runs on a profile of this app.
    pub async fn assert_no_browsers_left(&self) {
        let root = self.sessions_dir();
        wait_until(Duration::from_secs(10), || {
            wa_supervisor::browser::process::pids_using_profiles(&root).is_empty()
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "browsers left on {}: {:?}",
                root.display(),
                wa_supervisor::browser::process::pids_using_profiles(&root)
            )
        });
    }
}

pub fn key(user: &str, slot: u16) -> SessionKey {
    SessionKey::new(
        UserId::parse(user).unwrap(),
        Slot::new(slot.into(), 10).unwrap(),
    )
}

pub fn uuid_like(n: u32) -> String {
    format!(
        "{n:08x}-7d4a-4b9e-9a51-{:012x}",
        rand::random::<u64>() & 0xffff_ffff_ffff
    )
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
pub async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> Result<(), ()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if cond() {
        Ok(())
    } else {
        Err(())
    }
}

/// Polls the actor until `pred` holds; panics with the last status after `limit`.
pub async fn wait_status(
    addr: &Addr<SessionActor>,
    key: &SessionKey,
    limit: Duration,
    what: &str,
    pred: impl Fn(&Session) -> bool,
) -> Session {
    let deadline = Instant::now() + limit;
    loop {
        let s = addr
            .send(GetStatus { key: key.clone() })
            .await
            .unwrap()
            .unwrap();
        if pred(&s) {
            return s;
        }
        if Instant::now() > deadline {
            panic!("{key}: timed out waiting for {what}; last status {s:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
