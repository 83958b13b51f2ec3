//! The real `wa-supervisor` binary as a child process, for signal and boot tests.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::harness::{ADMIN_TOKEN, SERVICE_TOKEN};

pub struct Daemon {
    pub child: Child,
    /// One client for every call: connections are kept alive.
    pub client: reqwest::Client,
    pub port: u16,
    pub dir: PathBuf,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// Starts the daemon on `dir` (data, sessions and SQLite under it) and waits until it listens.
pub async fn start(dir: &Path, whatsapp_url: &str, extra: &[&str]) -> Daemon {
    start_with(dir, whatsapp_url, extra, &[], None).await
}

/// [`start`] with extra environment variables and, optionally, a umask for the daemon.
pub async fn start_with(
    dir: &Path,
    whatsapp_url: &str,
    extra: &[&str],
    envs: &[(&str, &str)],
    umask: Option<u32>,
) -> Daemon {
    wa_supervisor::auth::install_crypto_provider();

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wa-supervisor"));
    if let Some(mask) = umask {
        // SAFETY: umask is async-signal-safe and only affects the child.
        unsafe {
            cmd.pre_exec(move || {
                libc::umask(mask as libc::mode_t);
                Ok(())
            });
        }
    }
    let mut child = cmd
        .args([
            "--bind-addr",
            "127.0.0.1:0",
            "--data-dir",
            dir.join("data").to_str().unwrap(),
            "--sessions-dir",
            dir.join("sessions").to_str().unwrap(),
            "--whatsapp-url",
            whatsapp_url,
            "--api-token",
            SERVICE_TOKEN,
            "--admin-token",
            ADMIN_TOKEN,
            "--log",
            "info,chromiumoxide::handler=off",
        ])
        .args(extra)
        .env_remove("DATABASE_URL")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, rx) = tokio::sync::oneshot::channel();
    {
        let log = log.clone();
        tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(port) = line.split("listening on 127.0.0.1:").nth(1) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(port.trim().parse::<u16>().unwrap());
                    }
                }
                log.lock().unwrap().push(line);
            }
        });
    }
    let port = tokio::time::timeout(Duration::from_secs(20), rx)
        .await
        .expect("daemon listens within 20 s")
        .expect("daemon printed its port");
    Daemon {
        child,
        client: super::keep_alive_client(),
        port,
        dir: dir.to_path_buf(),
        log,
    }
}

impl Daemon {
    pub fn pid(&self) -> i32 {
        self.child.id().unwrap() as i32
    }

    pub fn sessions(&self) -> PathBuf {
        self.dir.join("sessions")
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain syscall on our own child.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Waits for the exit; returns its code and how long it took.
    pub async fn wait_exit(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let started = Instant::now();
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .expect("daemon exits in time")
            .unwrap();
        (status.code(), started.elapsed())
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn call(&self, method: &str, path: &str, token: &str) -> (u16, serde_json::Value) {
        let res = self
            .client
            .request(method.parse().unwrap(), self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{method} {path}: {e:?}\n--- daemon log ---\n{}",
                    self.log_text()
                )
            });
        let status = res.status().as_u16();
        let body = res.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Starts `user:slot`, scans its QR code on the stand-in phone `phone`, and waits until the
    /// session is connected.
    pub async fn link(
        &self,
        standin: &super::standin::StandIn,
        user: &str,
        slot: u16,
        phone: &str,
    ) {
        let limit = Duration::from_secs(30);
        let (status, body) = self
            .call("POST", &format!("/api/start/{user}/{slot}"), SERVICE_TOKEN)
            .await;
        assert_eq!(status, 202, "{body}");
        let s = self
            .wait_state(user, slot, limit, |s| s["state"] == "qr")
            .await;
        standin
            .scan(s["qr"]["payload"].as_str().unwrap(), phone)
            .await
            .unwrap();
        self.wait_state(user, slot, limit, |s| s["isConnected"] == true)
            .await;
    }

    pub async fn wait_state(
        &self,
        user: &str,
        slot: u16,
        limit: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        loop {
            let (status, body) = self
                .call("GET", &format!("/api/status/{user}/{slot}"), SERVICE_TOKEN)
                .await;
            if status == 200 && pred(&body) {
                return body;
            }
            if Instant::now() > deadline {
                panic!(
                    "{user}:{slot} timed out; last {status} {body}\n--- daemon log ---\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}
