//! How the daemon scales on one host, each figure against a baseline in the same run: `cargo
//! bench --bench capacity`. The daemon is the real binary (a child process), on the stand-in
//! WhatsApp page on loopback.
//!
//! 4. Concurrency knee: N simultaneous starts (1, 5, 10, 20), one per user, under each
//!    `LAUNCH_CONCURRENCY` (1, 2, 4, 8): wall time until every QR is in the API, and peak PSS of
//!    the daemon and its browsers.
//! 5. The daemon's own memory with 0, 100 and 10 000 registered (stopped) sessions, and per
//!    running (linked) session.
//! 6. `GET /api/status/{userId}` and an idempotent `POST /api/start` with 1 000 users × 10 slots
//!    registered, under concurrent keep-alive clients, against an actix-web handler returning a
//!    constant body (this benchmark's own binary, started as a child process the same way).
//! 7. Idle CPU over 60 s of 10 linked sessions: the daemon process, and its browser trees
//!    against 10 bare browsers (the shell, like the daemon's) linked on the same page at once.
//! 8. 50 linked idle sessions on the default engine: their total PSS, the daemon's idle CPU
//!    over 60 s, and a daemon restart (SIGTERM, start) until all 50 are `connected` again.
//! 9. The largest number of linked idle sessions whose browsers fit in 20 GiB (PSS): sessions
//!    are added in steps of `CAPACITY_STEP` (50) up to `CAPACITY_MAX_N` (400) or the budget.
//!    Parts 8 and 9 use a stand-in page that polls its server once a second instead of every
//!    150 ms (with hundreds of pages, the 150 ms polling alone fills both cores).

mod common;
#[path = "../tests/integration/support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{cpu_of, mib, ms, percentile, pss_mib, tree, Bare, BareEngine};
use support::daemon::{self, Daemon};
use support::harness::{key, uuid_like, ADMIN_TOKEN, SERVICE_TOKEN};
use support::standin::{Refuse, StandIn, StandInOptions};
use wa_supervisor::domain::{Intent, SessionState};
use wa_supervisor::procfs;
use wa_supervisor::store::{now_ms, SessionRow, Store};

/// Set in the environment of this binary's child that serves the constant body.
const CONSTANT_SERVER: &str = "WA_BENCH_CONSTANT_SERVER";
const LOAD_CLIENTS: usize = 16;
const LOAD_TIME: Duration = Duration::from_secs(5);
const IDLE_SESSIONS: usize = 10;
const IDLE_TIME: Duration = Duration::from_secs(60);

fn main() {
    if std::env::var_os(CONSTANT_SERVER).is_some() {
        return constant_server();
    }
    actix_web::rt::System::new().block_on(async {
        let standin = StandIn::start(StandInOptions {
            rotation: Duration::from_secs(60),
            rotations: 6,
            // Part 7's bare baseline says it is headless.
            refuse: Refuse::Never,
            ..Default::default()
        })
        .await;
        let tmp = tempfile::tempdir().unwrap();
        let (wpp, sha) = support::wpp::install(tmp.path());
        let wa_js = [
            "--wa-js-path",
            wpp.to_str().unwrap(),
            "--wa-js-sha256",
            &sha,
        ];
        let url = standin.url();

        // CAPACITY_PARTS=4,7 runs only those figures.
        let parts = std::env::var("CAPACITY_PARTS").unwrap_or_else(|_| "4,5,6,7,8,9".into());
        let part = |n: &str| parts.split(',').any(|p| p.trim() == n);
        if part("4") {
            knee(&url, &wa_js, tmp.path()).await;
        }
        if part("5") {
            overhead(&url, &wa_js, tmp.path()).await;
        }
        if part("6") {
            api(&url, &wa_js, tmp.path()).await;
        }
        if part("7") {
            idle(&standin, &wa_js, tmp.path()).await;
        }
        if part("8") || part("9") {
            let quiet = StandIn::start(StandInOptions {
                rotation: Duration::from_secs(60),
                poll: Duration::from_secs(1),
                ..Default::default()
            })
            .await;
            if part("8") {
                fifty(&quiet, &wa_js, tmp.path()).await;
            }
            if part("9") {
                largest(&quiet, &wa_js, tmp.path()).await;
            }
        }
    });
}

/// Starts the daemon binary on its own folder under `root`.
async fn daemon(root: &Path, name: &str, url: &str, wa_js: &[&str], extra: &[&str]) -> Daemon {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let args: Vec<&str> = wa_js.iter().chain(extra).copied().collect();
    daemon::start(&dir, url, &args).await
}

async fn shut(mut d: Daemon) {
    d.signal(libc::SIGTERM);
    d.wait_exit(Duration::from_secs(30)).await;
}

/// `users` × `slots` stopped sessions in the database the daemon on `root/name` will open.
async fn register(root: &Path, name: &str, users: &[String], slots: u16) {
    let db = root.join(name).join("data").join("wa-supervisor.db");
    let url = wa_supervisor::store::DatabaseUrl::parse(db.to_str().unwrap()).unwrap();
    let store = Store::open(&url, 10).unwrap();
    for u in users {
        for slot in 1..=slots {
            store
                .save_session(
                    SessionRow {
                        key: key(u, slot),
                        state: SessionState::Stopped,
                        intent: Intent::Stopped,
                        is_connected: false,
                        connected_number: None,
                        restarts: 0,
                        last_error: None,
                        created_ms: now_ms(),
                        updated_ms: now_ms(),
                    },
                    None,
                )
                .await
                .unwrap();
        }
    }
}

async fn wait_all(d: &Daemon, users: &[String], state: &str) {
    for u in users {
        d.wait_state(u, 1, Duration::from_secs(120), |s| s["state"] == state)
            .await;
    }
}

/// 4: N simultaneous starts under each launch concurrency.
async fn knee(url: &str, wa_js: &[&str], root: &Path) {
    println!("4. N simultaneous starts until every QR is in the API (wall time; peak PSS of the daemon and its browsers):");
    println!(
        "   {:>3} | {:>22} | {:>22} | {:>22} | {:>22}",
        "N", "LAUNCH_CONCURRENCY=1", "2", "4", "8"
    );
    let sizes: Vec<usize> = std::env::var("CAPACITY_KNEE_N").map_or(vec![1, 5, 10, 20], |v| {
        v.split(',').map(|n| n.trim().parse().unwrap()).collect()
    });
    for n in sizes {
        let mut cells = Vec::new();
        for c in [1usize, 2, 4, 8] {
            if c > n && c != 1 && n == 1 {
                cells.push("same as 1".to_owned());
                continue;
            }
            let d = daemon(
                root,
                &format!("knee-{n}-{c}"),
                url,
                wa_js,
                &["--launch-concurrency", &c.to_string()],
            )
            .await;
            let users: Vec<String> = (0..n).map(|i| uuid_like(0xa000 + i as u32)).collect();
            // Sampled on a thread of its own: reading /proc of 150 processes takes a while.
            let peak = Arc::new(std::sync::Mutex::new(0.0f64));
            let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let sampler = {
                let (peak, done, pid) = (peak.clone(), done.clone(), d.pid() as u32);
                std::thread::spawn(move || {
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        let now = pss_mib(&tree(pid));
                        {
                            let mut p = peak.lock().unwrap();
                            *p = p.max(now);
                        }
                        std::thread::sleep(Duration::from_millis(250));
                    }
                })
            };
            let started = Instant::now();
            let paths: Vec<String> = users.iter().map(|u| format!("/api/start/{u}/1")).collect();
            futures_util::future::join_all(paths.iter().map(|p| d.call("POST", p, SERVICE_TOKEN)))
                .await;
            wait_all(&d, &users, "qr").await;
            let took = started.elapsed();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            sampler.join().unwrap();
            let peak = *peak.lock().unwrap();
            cells.push(format!("{:>6.1} s {:>7.0} MiB", took.as_secs_f64(), peak));
            shut(d).await;
        }
        println!(
            "   {n:>3} | {}",
            cells
                .iter()
                .map(|c| format!("{c:>22}"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
}

/// 5: the daemon's memory by registered sessions, and per linked session.
async fn overhead(url: &str, wa_js: &[&str], root: &Path) {
    println!("5. the daemon process alone (browsers excluded):");
    for registered in [0usize, 100, 10_000] {
        let name = format!("overhead-{registered}");
        let users: Vec<String> = (0..registered / 10)
            .map(|i| uuid_like(0xb000 + i as u32))
            .collect();
        if registered > 0 {
            // The daemon creates the database; register into it, then boot again.
            shut(daemon(root, &name, url, wa_js, &[]).await).await;
            register(root, &name, &users, 10).await;
        }
        let d = daemon(root, &name, url, wa_js, &[]).await;
        // Every user's status read once, so whatever the daemon keeps per session is there.
        for u in &users {
            let (code, _) = d
                .call("GET", &format!("/api/status/{u}"), SERVICE_TOKEN)
                .await;
            assert_eq!(code, 200);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let pid = d.pid() as u32;
        println!(
            "   {registered:>6} registered, stopped: RSS {:.1} MiB, PSS {:.1} MiB",
            mib(procfs::rss_bytes(pid)),
            pss_mib(&[pid])
        );
        shut(d).await;
    }
}

/// 6: status and idempotent start against a constant handler.
async fn api(url: &str, wa_js: &[&str], root: &Path) {
    let name = "api";
    let users: Vec<String> = (0..1000).map(|i| uuid_like(0xc000 + i as u32)).collect();
    shut(daemon(root, name, url, wa_js, &[]).await).await;
    register(root, name, &users, 10).await;
    let d = daemon(root, name, url, wa_js, &[]).await;
    // Two sessions running, for the idempotent start.
    let running = [users[0].clone(), users[1].clone()];
    for u in &running {
        d.call("POST", &format!("/api/start/{u}/1"), SERVICE_TOKEN)
            .await;
    }
    wait_all(&d, &running, "qr").await;

    let mut constant = tokio::process::Command::new(std::env::current_exe().unwrap())
        .env(CONSTANT_SERVER, "1")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut line = String::new();
    {
        use tokio::io::AsyncBufReadExt;
        let mut out = tokio::io::BufReader::new(constant.stdout.take().unwrap());
        out.read_line(&mut line).await.unwrap();
    }
    let constant_url = format!("http://127.0.0.1:{}/constant", line.trim());

    println!("6. API under {LOAD_CLIENTS} concurrent keep-alive clients, {} s each, 1 000 users × 10 slots registered:", LOAD_TIME.as_secs());
    let base = load("GET", Arc::new(move |_| constant_url.clone())).await;
    report("constant actix-web handler", &base, None);
    let status_users = Arc::new(users.clone());
    let status_url = d.url("/api/status/");
    let status = load(
        "GET",
        Arc::new(move |i| format!("{status_url}{}", status_users[i % status_users.len()])),
    )
    .await;
    report("GET /api/status/{userId}", &status, Some(&base));
    let start_url = d.url("/api/start/");
    let start = load(
        "POST",
        Arc::new(move |i| format!("{start_url}{}/1", running[i % 2])),
    )
    .await;
    report("POST /api/start (running)", &start, Some(&base));
    let (code, s) = d
        .call("GET", &format!("/api/status/{}/1", users[0]), SERVICE_TOKEN)
        .await;
    assert!(
        code == 200 && s["state"] == "qr",
        "the idempotent starts changed nothing: {s}"
    );
    shut(d).await;
}

/// Requests done and each one's latency.
struct Load {
    latencies: Vec<Duration>,
    errors: usize,
}

/// `LOAD_CLIENTS` clients, each with its own keep-alive connection, for `LOAD_TIME`; request `i`
/// of a client goes to `url(i)`. Runs on its own two-thread runtime.
async fn load(method: &'static str, url: Arc<dyn Fn(usize) -> String + Send + Sync>) -> Load {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let until = Instant::now() + LOAD_TIME;
                let tasks: Vec<_> = (0..LOAD_CLIENTS)
                    .map(|c| {
                        let url = url.clone();
                        tokio::spawn(async move {
                            let client = reqwest::Client::new();
                            let (mut lat, mut errors) = (Vec::new(), 0usize);
                            let mut i = c * 7919;
                            while Instant::now() < until {
                                let at = Instant::now();
                                let r = client
                                    .request(method.parse().unwrap(), url(i))
                                    .bearer_auth(SERVICE_TOKEN)
                                    .send()
                                    .await;
                                match r {
                                    Ok(r) if r.status().is_success() => {
                                        let _ = r.bytes().await;
                                        lat.push(at.elapsed());
                                    }
                                    _ => errors += 1,
                                }
                                i += 1;
                            }
                            (lat, errors)
                        })
                    })
                    .collect();
                let mut out = Load {
                    latencies: Vec::new(),
                    errors: 0,
                };
                for t in tasks {
                    let (l, e) = t.await.unwrap();
                    out.latencies.extend(l);
                    out.errors += e;
                }
                out
            })
    })
    .join()
    .unwrap()
}

fn report(what: &str, l: &Load, base: Option<&Load>) {
    let rate = l.latencies.len() as f64 / LOAD_TIME.as_secs_f64();
    let ratio = base.map_or(String::new(), |b| {
        format!(
            ", {:.2}× the constant handler",
            rate / (b.latencies.len() as f64 / LOAD_TIME.as_secs_f64())
        )
    });
    println!(
        "   {what:<28} {rate:>7.0} req/s, p50 {:.2} ms, p99 {:.2} ms, errors {}{ratio}",
        percentile(&l.latencies, 50.0).as_secs_f64() * 1000.0,
        percentile(&l.latencies, 99.0).as_secs_f64() * 1000.0,
        l.errors
    );
}

/// The baseline server: one route answering a constant JSON body, same worker count as the daemon.
fn constant_server() {
    actix_web::rt::System::new().block_on(async {
        let server = actix_web::HttpServer::new(|| {
            actix_web::App::new().route(
                "/constant",
                actix_web::web::get().to(|| async {
                    actix_web::HttpResponse::Ok()
                        .content_type("application/json")
                        .body(r#"{"userId":"constant","sessions":[]}"#)
                }),
            )
        })
        .workers(2)
        .bind("127.0.0.1:0")
        .unwrap();
        println!("{}", server.addrs()[0].port());
        server.run().await.unwrap();
    });
}

/// 7 (and the per-session part of 5): 10 linked idle sessions over 60 s, beside 10 bare ones.
async fn idle(standin: &StandIn, wa_js: &[&str], root: &Path) {
    let url = standin.url();
    let d = daemon(root, "idle", &url, wa_js, &[]).await;
    let pid = d.pid() as u32;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = procfs::rss_bytes(pid);
    let users: Vec<String> = (0..IDLE_SESSIONS)
        .map(|i| uuid_like(0xd000 + i as u32))
        .collect();
    for (i, u) in users.iter().enumerate() {
        d.call("POST", &format!("/api/start/{u}/1"), SERVICE_TOKEN)
            .await;
        // A user may have two browsers waiting for a scan; link each before the next.
        let s = d
            .wait_state(u, 1, Duration::from_secs(60), |s| {
                s["qr"]["payload"].is_string()
            })
            .await;
        standin
            .scan(
                s["qr"]["payload"].as_str().unwrap(),
                &format!("4915200000{i:02}"),
            )
            .await
            .unwrap();
        d.wait_state(u, 1, Duration::from_secs(60), |s| s["state"] == "connected")
            .await;
    }
    let mut bares = Vec::new();
    for i in 0..IDLE_SESSIONS {
        let (b, _) = Bare::to_qr(BareEngine::Shell, &url).await;
        standin
            .scan(&b.qr().await.unwrap(), &format!("4915200001{i:02}"))
            .await
            .unwrap();
        bares.push(b);
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss_linked = procfs::rss_bytes(pid);
    println!(
        "5. per linked session: daemon RSS {:.1} MiB with none running, {:.1} MiB with {IDLE_SESSIONS} linked: {:.0} KiB per session",
        mib(rss_before),
        mib(rss_linked),
        (rss_linked as f64 - rss_before as f64) / 1024.0 / IDLE_SESSIONS as f64
    );
    let r = d.call("GET", "/actors", ADMIN_TOKEN).await.1;
    let daemon_browsers: Vec<u32> = r["actors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["browserPid"].as_u64().map(|p| p as u32))
        .collect();
    assert_eq!(daemon_browsers.len(), IDLE_SESSIONS);
    let bare_pids: Vec<u32> = bares.iter_mut().map(|b| b.pid()).collect();
    let trees = |roots: &[u32]| roots.iter().flat_map(|r| tree(*r)).collect::<Vec<u32>>();
    let (d_trees, b_trees) = (trees(&daemon_browsers), trees(&bare_pids));
    let (d0, dt0, bt0) = (cpu_of(&[pid]), cpu_of(&d_trees), cpu_of(&b_trees));
    tokio::time::sleep(IDLE_TIME).await;
    let (d1, dt1, bt1) = (cpu_of(&[pid]), cpu_of(&d_trees), cpu_of(&b_trees));
    let per = |a: Duration, b: Duration, n: usize| {
        (b - a).as_secs_f64() / IDLE_TIME.as_secs_f64() * 100.0 / n as f64
    };
    println!(
        "7. idle CPU over {} s with {IDLE_SESSIONS} linked sessions (% of one core):",
        IDLE_TIME.as_secs()
    );
    println!(
        "   daemon process: {} in all ({:.2} %)",
        ms(d1 - d0),
        per(d0, d1, 1)
    );
    println!(
        "   per browser tree: daemon's {:.2} %, bare {:.2} %, ratio {:.2}",
        per(dt0, dt1, IDLE_SESSIONS),
        per(bt0, bt1, IDLE_SESSIONS),
        per(dt0, dt1, 1) / per(bt0, bt1, 1)
    );
    for b in bares {
        b.close().await;
    }
    shut(d).await;
}

/// Starts and links `users` (one slot each) on `d`, eight at a time (the daemon launches
/// `LAUNCH_CONCURRENCY` of them at once); phone numbers from `first_phone` on.
async fn link_all(d: &Daemon, standin: &StandIn, users: &[String], first_phone: u64) {
    use futures_util::StreamExt;
    let calls = users.iter().enumerate().map(|(i, u)| async move {
        d.call("POST", &format!("/api/start/{u}/1"), SERVICE_TOKEN)
            .await;
        let s = d
            .wait_state(u, 1, Duration::from_secs(600), |s| {
                s["qr"]["payload"].is_string()
            })
            .await;
        standin
            .scan(
                s["qr"]["payload"].as_str().unwrap(),
                &(first_phone + i as u64).to_string(),
            )
            .await
            .unwrap();
        d.wait_state(u, 1, Duration::from_secs(600), |s| {
            s["state"] == "connected"
        })
        .await;
    });
    futures_util::stream::iter(calls)
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
}

/// Every browser tree of the daemon `d`: (processes, PSS MiB).
async fn browsers_of(d: &Daemon) -> (usize, f64) {
    let r = d.call("GET", "/actors", ADMIN_TOKEN).await.1;
    let pids: Vec<u32> = r["actors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["browserPid"].as_u64().map(|p| p as u32))
        .flat_map(tree)
        .collect();
    (pids.len(), pss_mib(&pids))
}

const FIFTY: usize = 50;

/// 8: 50 linked idle sessions: memory, idle CPU, and a restart until all are back.
async fn fifty(standin: &StandIn, wa_js: &[&str], root: &Path) {
    let args = ["--max-sessions", "1000"];
    let mut d = daemon(root, "fifty", &standin.url(), wa_js, &args).await;
    let users: Vec<String> = (0..FIFTY).map(|i| uuid_like(0xe000 + i as u32)).collect();
    let started = Instant::now();
    link_all(&d, standin, &users, 4915300000000).await;
    println!(
        "8. {FIFTY} sessions started and linked in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(15)).await;
    let (procs, pss) = browsers_of(&d).await;
    let daemon_pss = pss_mib(&[d.pid() as u32]);
    println!(
        "   {FIFTY} linked idle sessions: browsers {pss:.0} MiB PSS ({:.1} MiB per session, {procs} processes), the daemon {daemon_pss:.1} MiB",
        pss / FIFTY as f64
    );
    let pid = d.pid() as u32;
    let c0 = cpu_of(&[pid]);
    tokio::time::sleep(IDLE_TIME).await;
    let c1 = cpu_of(&[pid]);
    println!(
        "   the daemon's CPU over {} s: {} ({:.2} % of one core)",
        IDLE_TIME.as_secs(),
        ms(c1 - c0),
        (c1 - c0).as_secs_f64() / IDLE_TIME.as_secs_f64() * 100.0
    );
    d.signal(libc::SIGTERM);
    let (code, took) = d.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(code, Some(0));
    let at = Instant::now();
    d = daemon(root, "fifty", &standin.url(), wa_js, &args).await;
    let mut last = Duration::ZERO;
    for u in &users {
        d.wait_state(u, 1, Duration::from_secs(300), |s| {
            s["state"] == "connected"
        })
        .await;
        last = at.elapsed();
    }
    println!(
        "   restart: SIGTERM closed all in {:.1} s; from the new daemon's start to the last of {FIFTY} connected again: {:.1} s (no scan: {} links in all)",
        took.as_secs_f64(),
        last.as_secs_f64(),
        standin.links()
    );
    shut(d).await;
}

const BUDGET_MIB: f64 = 20.0 * 1024.0;

/// 9: add linked sessions until their browsers' PSS passes 20 GiB (or `CAPACITY_MAX_N`).
async fn largest(standin: &StandIn, wa_js: &[&str], root: &Path) {
    let env_n = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (step, max_n) = (env_n("CAPACITY_STEP", 50), env_n("CAPACITY_MAX_N", 400));
    let d = daemon(
        root,
        "largest",
        &standin.url(),
        wa_js,
        &["--max-sessions", "10000"],
    )
    .await;
    println!("9. linked idle sessions added {step} at a time (browsers' PSS, 20 GiB budget):");
    let (mut n, mut per_session) = (0usize, 0.0);
    let started = Instant::now();
    while n < max_n {
        let users: Vec<String> = (n..n + step)
            .map(|i| uuid_like(0xf000 + i as u32))
            .collect();
        link_all(&d, standin, &users, 4915400000000 + n as u64).await;
        n += step;
        tokio::time::sleep(Duration::from_secs(15)).await;
        let (procs, pss) = browsers_of(&d).await;
        per_session = pss / n as f64;
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "   {n:>4} sessions: {pss:>7.0} MiB ({per_session:.1} per session, {procs} processes), load {} after {:.0} s",
            load.split_whitespace().next().unwrap_or("?"),
            started.elapsed().as_secs_f64()
        );
        if pss + step as f64 * per_session > BUDGET_MIB {
            break;
        }
    }
    println!(
        "   at {per_session:.1} MiB per session, 20 GiB holds {:.0} sessions",
        BUDGET_MIB / per_session
    );
    shut(d).await;
}
