//! The soak of "nothing lost, nothing doubled" (docs/nothing-lost.md): messages arrive at a
//! steady rate into several users' linked sessions of a real daemon binary on PostgreSQL, while
//! browsers and the daemon are SIGKILLed at random and the database is cut off for seconds; then
//! every message id must be recorded once and delivered to the service webhook under one
//! webhook-id. The suite runs it for a bounded time; `cargo bench --bench soak` runs it longer.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::cluster::PgDatabase;
use super::daemon::{self, Daemon};
use super::harness::SERVICE_TOKEN;
use super::receiver::Receiver;
use super::standin::{StandIn, StandInOptions};

/// What a soak saw.
#[derive(Debug, Default)]
pub struct SoakReport {
    pub injected: usize,
    /// Injected ids with exactly one `message` event.
    pub recorded: usize,
    pub lost: usize,
    /// Injected ids with more than one event.
    pub duplicated: usize,
    /// Injected ids that reached the webhook.
    pub delivered: usize,
    /// Ids that reached the webhook under more than one webhook-id (a receiver would act twice).
    pub delivered_twice: usize,
    /// Requests that repeated a webhook-id already received (at-least-once: allowed).
    pub redeliveries: usize,
    pub browser_kills: usize,
    pub daemon_kills: usize,
    pub db_cuts: usize,
    /// Events recorded by gap filling.
    pub backfilled: usize,
}

const USERS: usize = 3;
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn user(i: usize) -> String {
    format!("0000{i:04x}-50a5-4b9e-9a51-000000000000")
}

fn phone(i: usize) -> String {
    format!("49151000300{i:02}")
}

async fn boot(dir: &Path, standin: &StandIn, db_url: &str, hook: &str, wpp: &[String]) -> Daemon {
    let mut args: Vec<&str> = vec![
        "--database-url",
        db_url,
        "--webhook-url",
        hook,
        "--webhook-secret",
        SECRET,
        "--webhook-retry-schedule",
        "300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms",
        "--restart-backoff-ms",
        "300",
        "--restart-backoff-max-secs",
        "2",
        "--max-crashes",
        "1000",
    ];
    args.extend(wpp.iter().map(String::as_str));
    daemon::start(dir, &standin.url(), &args).await
}

/// Every stored event of `user:1`, paged.
async fn events_of(d: &Daemon, user: &str) -> Vec<serde_json::Value> {
    let (mut out, mut after) = (Vec::new(), 0);
    loop {
        let (status, page) = d
            .call(
                "GET",
                &format!("/api/messages/{user}/1?after={after}&limit=500"),
                SERVICE_TOKEN,
            )
            .await;
        assert_eq!(status, 200, "{page}");
        let events = page["events"].as_array().cloned().unwrap_or_default();
        if events.is_empty() {
            return out;
        }
        after = page["next"].as_i64().unwrap();
        out.extend(events);
    }
}

/// Runs the soak for `length` of blows.
pub async fn soak(length: Duration) -> SoakReport {
    let standin = StandIn::start(StandInOptions {
        rotation: Duration::from_secs(60),
        ..Default::default()
    })
    .await;
    let db = PgDatabase::create().await;
    let proxy = super::pgproxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let db_url = db.url_via(proxy.port());
    let service = Receiver::start().await;
    let hook = service.url("/service");
    let tmp = tempfile::tempdir().unwrap();
    let (wpp_path, sha) = super::wpp::install(tmp.path());
    let wpp = vec![
        "--wa-js-path".to_owned(),
        wpp_path.to_str().unwrap().to_owned(),
        "--wa-js-sha256".to_owned(),
        sha,
    ];
    let dir = tmp.path().join("daemon");
    std::fs::create_dir_all(&dir).unwrap();
    let mut d = boot(&dir, &standin, &db_url, &hook, &wpp).await;
    for i in 0..USERS {
        let (status, _) = d
            .call("POST", &format!("/api/start/{}/1", user(i)), SERVICE_TOKEN)
            .await;
        assert_eq!(status, 202);
        let s = d
            .wait_state(&user(i), 1, Duration::from_secs(30), |s| s["state"] == "qr")
            .await;
        standin
            .scan(s["qr"]["payload"].as_str().unwrap(), &phone(i))
            .await
            .unwrap();
        d.wait_state(&user(i), 1, Duration::from_secs(30), |s| {
            s["isConnected"] == true
        })
        .await;
    }
    // The login must be on disk before the first kill (Chromium writes lazily).
    tokio::time::sleep(Duration::from_secs(8)).await;

    let mut report = SoakReport::default();
    let injected: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let injector = {
        let (injected, stop) = (injected.clone(), stop.clone());
        let standin = &standin;
        async move {
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let i = n % USERS;
                if let Ok(id) = standin.incoming(&phone(i), "4915199990099", &format!("soak {n}")) {
                    injected.lock().unwrap().push((i, id));
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(170)).await;
            }
        }
    };
    let sessions = dir.join("sessions");
    let blows = async {
        let end = Instant::now() + length;
        while Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(rand::random_range(2500..4500))).await;
            match rand::random_range(0..10) {
                0..=5 => {
                    let browsers = wa_supervisor::browser::process::browser_trees(&sessions);
                    if let Some(b) = browsers.get(rand::random_range(0..browsers.len().max(1))) {
                        // SAFETY: plain syscall on a browser of this test's daemon.
                        unsafe { libc::kill(b.leader as i32, libc::SIGKILL) };
                        report.browser_kills += 1;
                    }
                }
                6 | 7 => {
                    d.signal(libc::SIGKILL);
                    d.wait_exit(Duration::from_secs(10)).await;
                    report.daemon_kills += 1;
                    d = boot(&dir, &standin, &db_url, &hook, &wpp).await;
                }
                _ => {
                    proxy.cut();
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    proxy.heal();
                    report.db_cuts += 1;
                }
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    tokio::join!(injector, blows);

    // Everything settles: the pages stored what they were handed, and it is recorded.
    let injected = injected.lock().unwrap().clone();
    report.injected = injected.len();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut counts: HashMap<String, usize> = HashMap::new();
    loop {
        let pending: usize = (0..USERS).map(|i| standin.unstored(&phone(i))).sum();
        counts.clear();
        let mut backfilled = 0;
        for i in 0..USERS {
            for e in events_of(&d, &user(i)).await {
                if e["type"] == "message" {
                    *counts
                        .entry(e["data"]["id"].as_str().unwrap_or_default().to_owned())
                        .or_default() += 1;
                    backfilled += usize::from(e["data"]["backfill"] == true);
                }
            }
        }
        report.backfilled = backfilled;
        let missing = injected
            .iter()
            .filter(|(_, id)| !counts.contains_key(id))
            .count();
        if (pending == 0 && missing == 0) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    report.recorded = injected
        .iter()
        .filter(|(_, id)| counts.get(id) == Some(&1))
        .count();
    report.lost = injected
        .iter()
        .filter(|(_, id)| !counts.contains_key(id))
        .count();
    report.duplicated = injected
        .iter()
        .filter(|(_, id)| counts.get(id) > Some(&1))
        .count();

    let ids: HashSet<&String> = injected.iter().map(|(_, id)| id).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut per_message: HashMap<String, HashSet<String>> = HashMap::new();
        let mut seen = HashSet::new();
        report.redeliveries = 0;
        for r in service.received() {
            if !seen.insert(r.id.clone()) {
                report.redeliveries += 1;
            }
            let body = r.json();
            if body["type"] == "message" {
                let id = body["data"]["id"].as_str().unwrap_or_default().to_owned();
                per_message.entry(id).or_default().insert(r.id.clone());
            }
        }
        report.delivered = ids
            .iter()
            .filter(|id| per_message.contains_key(**id))
            .count();
        report.delivered_twice = per_message
            .iter()
            .filter(|(id, hooks)| ids.contains(id) && hooks.len() > 1)
            .count();
        if report.delivered >= report.recorded || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for i in 0..USERS {
        d.call("POST", &format!("/api/stop/{}/1", user(i)), SERVICE_TOKEN)
            .await;
    }
    d.signal(libc::SIGTERM);
    d.wait_exit(Duration::from_secs(30)).await;
    report
}
