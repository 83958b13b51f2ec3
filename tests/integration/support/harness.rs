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

pub const SERVICE_TOKEN: &str = "service-token-for-tests-0123456789";
pub const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

pub struct TestApp {
    pub port: u16,
    /// One client for every request of the test: connections are kept alive, as a real
    /// caller's are.
    pub client: reqwest::Client,
    pub standin: StandIn,
    pub app: Application,
    pub tmp: tempfile::TempDir,
    /// Off by default: the drop guard fails a test whose browsers outlive it.
    pub keep_browsers: bool,
}

pub async fn spawn_app(opts: StandInOptions, extra: &[&str]) -> TestApp {
    super::logs::captured();
    wa_supervisor::auth::install_crypto_provider();

    let standin = StandIn::start(opts).await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let sessions = tmp.path().join("sessions");
    let db = data.join("test.db");
    let url = standin.url();
    let mut args = vec![
        "wa-supervisor",
        "--api-token",
        SERVICE_TOKEN,
        "--admin-token",
        ADMIN_TOKEN,
        "--bind-addr",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
        "--sessions-dir",
        sessions.to_str().unwrap(),
    ];
    if !extra.contains(&"--database-url") {
        args.extend_from_slice(&["--database-url", db.to_str().unwrap()]);
    }
    if !extra.contains(&"--whatsapp-url") {
        args.extend_from_slice(&["--whatsapp-url", &url]);
    }
    // WA-JS: the stand-in `WPP` unless the test chose (another file, or none at all).
    let (wpp, wpp_sha) = super::wpp::install(tmp.path());
    let wpp = wpp.to_str().unwrap().to_owned();
    if !extra.contains(&"--wa-js-path") {
        args.extend_from_slice(&["--wa-js-path", &wpp, "--wa-js-sha256", &wpp_sha]);
    }
    args.extend_from_slice(extra);
    let settings = Settings::from_args(args).unwrap();
    let mut app = Application::build(settings).await.unwrap();
    app.spawn_server();
    TestApp {
        port: app.port(),
        client: super::keep_alive_client(),
        standin,
        app,
        tmp,
        keep_browsers: false,
    }
}

/// A reply: status and JSON body (`Null` when the body is not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub json: serde_json::Value,
    pub headers: reqwest::header::HeaderMap,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn call(&self, method: &str, path: &str, token: Option<&str>) -> Reply {
        let mut req = self.client.request(method.parse().unwrap(), self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.unwrap();
        Reply {
            status,
            json: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
            headers,
        }
    }

    /// Sends the request line exactly as given (no client-side normalisation of `..`, `%2e`…).
    pub async fn raw_call(&self, method: &str, path: &str, token: Option<&str>) -> Reply {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        sock.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        sock.read_to_end(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf);
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        Reply {
            status,
            json: serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
            headers: Default::default(),
        }
    }

    /// A request with a JSON body and the service token.
    pub async fn json(&self, method: &str, path: &str, body: serde_json::Value) -> Reply {
        self.json_as(method, path, SERVICE_TOKEN, body).await
    }

    /// A request with a JSON body and `token`.
    pub async fn json_as(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: serde_json::Value,
    ) -> Reply {
        let res = self
            .client
            .request(method.parse().unwrap(), self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let json = res.json().await.unwrap_or(serde_json::Value::Null);
        Reply {
            status,
            json,
            headers,
        }
    }

    /// `GET path`'s body as text (`/metrics`).
    pub async fn text(&self, path: &str, token: &str) -> String {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call("GET", path, Some(token)).await
    }

    pub async fn post(&self, path: &str, token: &str) -> Reply {
        self.call("POST", path, Some(token)).await
    }

    /// Polls `GET path` until `pred` holds on the JSON body; the panic shows the last reply.
    pub async fn wait_json(
        &self,
        path: &str,
        token: &str,
        limit: Duration,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let last = std::cell::RefCell::new(None);
        let found = tokio::time::timeout(
            limit,
            eventually(limit + Duration::from_secs(1), what, || async {
                let r = self.get(path, token).await;
                let ok = r.status == 200 && pred(&r.json);
                *last.borrow_mut() = Some(r);
                ok.then(|| last.borrow().as_ref().unwrap().json.clone())
            }),
        )
        .await;
        match found {
            Ok(v) => v,
            Err(_) => panic!(
                "{path}: timed out after {limit:?} waiting for {what}; last reply {:?}\n{}",
                last.borrow(),
                log_of(path)
            ),
        }
    }

    pub fn env(&self) -> Arc<SessionEnv> {
        self.app.sessions_env()
    }

    /// The app's store (rows and audit events, for assertions).
    pub fn store(&self) -> wa_supervisor::store::Store {
        self.env().store.clone()
    }

    /// `POST /api/start/{user}/{slot}` with the service token; the status code.
    pub async fn start(&self, user: &str, slot: u16) -> u16 {
        self.post(&format!("/api/start/{user}/{slot}"), SERVICE_TOKEN)
            .await
            .status
    }

    /// `POST /api/stop/{user}/{slot}` with the service token; the status code.
    pub async fn stop(&self, user: &str, slot: u16) -> u16 {
        self.post(&format!("/api/stop/{user}/{slot}"), SERVICE_TOKEN)
            .await
            .status
    }

    /// Waits until `GET /api/status/{user}/{slot}` shows `state`; returns that session.
    pub async fn wait_state(
        &self,
        user: &str,
        slot: u16,
        state: &str,
        limit: Duration,
    ) -> serde_json::Value {
        self.wait_json(
            &format!("/api/status/{user}/{slot}"),
            SERVICE_TOKEN,
            limit,
            state,
            |s| s["state"] == state,
        )
        .await
    }

    /// Waits for the session's QR code and scans it on the stand-in phone with `phone`, until
    /// the session is connected (a code that rotated under us is simply tried again).
    pub async fn scan(&self, user: &str, slot: u16, phone: &str) {
        eventually(
            LAUNCH,
            &format!("{user}:{slot} linked to {phone}"),
            || async {
                let s = self
                    .get(&format!("/api/status/{user}/{slot}"), SERVICE_TOKEN)
                    .await;
                if s.json["isConnected"] == true {
                    return Some(());
                }
                if let Some(payload) = s.json["qr"]["payload"].as_str() {
                    let _ = self.standin.scan(payload, phone).await;
                }
                None
            },
        )
        .await
    }

    /// Starts `user`'s slot, links it to `phone` by a scan and waits until WA-JS drives it (sends
    /// and WA-JS commands work from then on).
    pub async fn link(&self, user: &str, slot: u16, phone: &str) {
        assert_eq!(self.start(user, slot).await, 202);
        self.scan(user, slot, phone).await;
        self.wait_json(
            &format!("/api/status/{user}/{slot}"),
            SERVICE_TOKEN,
            LAUNCH,
            "the WA-JS bridge",
            |s| s["bridge"] == "wa-js",
        )
        .await;
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

/// The guard every test gets: a browser that outlives its test fails it (stop what you start).
/// `keep_browsers` switches it off for a test that hands its sessions on deliberately.
impl Drop for TestApp {
    fn drop(&mut self) {
        if std::thread::panicking() || self.keep_browsers {
            return;
        }
        let root = self.sessions_dir();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut left = wa_supervisor::browser::process::pids_using_profiles(&root);
        while !left.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            left = wa_supervisor::browser::process::pids_using_profiles(&root);
        }
        if !left.is_empty() {
            for pid in &left {
                // SAFETY: plain syscall; these are this test's browsers.
                unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
            }
            panic!("browsers outlived the test on {}: {left:?}", root.display());
        }
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

/// How long a browser may take to show its first QR code in these tests.
pub const LAUNCH: Duration = Duration::from_secs(30);

/// The one polling loop of the tests: calls `probe` every 20 ms until it yields a value, and
/// panics naming `what` after `limit`.
pub async fn eventually<T, F>(limit: Duration, what: &str, mut probe: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {limit:?} waiting for {what}\n{}",
                log_of(what)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The daemon's log lines about the user ids named in `text` (what it was doing).
pub fn log_of(text: &str) -> String {
    let users: Vec<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|t| t.len() >= 16 && t.contains('-'))
        .collect();
    let lines: Vec<String> = super::logs::captured()
        .text()
        .lines()
        .filter(|l| users.iter().any(|u| l.contains(u)) && !l.contains(" chromium: "))
        .map(str::to_owned)
        .collect();
    format!("--- log of {users:?} ---\n{}", lines.join("\n"))
}

/// Polls `cond` until it holds or `limit` passes.
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

/// Polls the actor until `pred` holds; panics after `limit`.
pub async fn wait_status(
    addr: &Addr<SessionActor>,
    key: &SessionKey,
    limit: Duration,
    what: &str,
    pred: impl Fn(&Session) -> bool,
) -> Session {
    eventually(limit, &format!("{key}: {what}"), || async {
        let s = addr
            .send(GetStatus { key: key.clone() })
            .await
            .unwrap()
            .unwrap();
        pred(&s).then_some(s)
    })
    .await
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// Live Chromium browsers on exactly `profile`: processes with that profile on their command line
/// that lead their own process group (a browser is launched as one) and were not forked by
/// another such process (a helper forked before its exec still carries the browser's command
/// line, e.g. the crash handler, which starts its own session).
pub fn browsers_on(profile: &Path) -> Vec<u32> {
    use wa_supervisor::procfs;
    let want = format!("--user-data-dir={}", profile.display());
    let matching: Vec<u32> = procfs::pids()
        .filter(|pid| {
            let args = procfs::cmdline(*pid);
            args.iter().any(|a| a == want.as_bytes())
                && !args.iter().any(|a| a.starts_with(b"--type="))
        })
        .collect();
    matching
        .iter()
        .copied()
        .filter(|pid| {
            procfs::alive(*pid)
                && procfs::pgrp(*pid) == Some(*pid)
                && !procfs::ppid(*pid).is_some_and(|p| matching.contains(&p))
        })
        .collect()
}

/// Every process with a profile under `root` on its command line.
pub fn pids_on_root(root: &Path) -> Vec<u32> {
    wa_supervisor::browser::process::pids_using_profiles(root)
}
