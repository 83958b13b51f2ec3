//! Backup and restore, measured (docs/operations.md): `cargo bench --bench operations`. The
//! daemon binary as a child process on the stand-in page (real Chromium, the shell by default),
//! 10 linked sessions (5 users × 2 slots; `BENCH_SESSIONS` changes it), SQLite.
//!
//! Side by side on the same sessions:
//! - **ours**: `wa-supervisor backup` against the running daemon (3 runs): wall time, file size,
//!   each session's time away (from its browser's close to `connected` again, from the
//!   manifest), the most sessions away at once; then `wa-supervisor restore` into a fresh folder
//!   and a start until every session is connected again.
//! - **the seed's way** (its deploy notes): stop the daemon, `tar -czf` of `DATA_DIR` (database,
//!   profiles), start it again; every session is away from the stop until it is connected again.
//!   Then its restore: untar into a fresh folder and start.

mod common;
#[path = "../tests/integration/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{median, ms};
use support::daemon::{self, Daemon};
use support::harness::{uuid_like, ADMIN_TOKEN, SERVICE_TOKEN};
use support::standin::{StandIn, StandInOptions};

const LAUNCH: Duration = Duration::from_secs(60);

async fn start(dir: &Path, standin: &StandIn, wpp: &(PathBuf, String)) -> Daemon {
    daemon::start_with(
        dir,
        &standin.url(),
        &["--launch-concurrency", "4"],
        &[
            ("WA_JS_PATH", wpp.0.to_str().unwrap()),
            ("WA_JS_SHA256", wpp.1.as_str()),
        ],
        None,
    )
    .await
}

/// Runs the binary with `d`'s settings (its folders, its port).
async fn command(dir: &Path, port: u16, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_wa-supervisor"))
        .args(["--bind-addr", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--sessions-dir")
        .arg(dir.join("sessions"))
        .args(["--admin-token", ADMIN_TOKEN, "--api-token", SERVICE_TOKEN])
        .args(["--log", "warn"])
        .env_remove("DATABASE_URL")
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// How many of `keys` are connected on `d` now.
async fn connected(d: &Daemon, keys: &[(String, u16)]) -> usize {
    let (_, info) = d.call("GET", "/actors", ADMIN_TOKEN).await;
    let all = info["actors"].as_array().cloned().unwrap_or_default();
    keys.iter()
        .filter(|(u, s)| {
            all.iter()
                .any(|a| a["key"] == format!("{u}:{s}") && a["state"] == "connected")
        })
        .count()
}

/// Waits until every one of `keys` is connected on `d`; how long from `since`.
async fn all_connected(d: &Daemon, keys: &[(String, u16)], since: Instant) -> Duration {
    while connected(d, keys).await < keys.len() {
        assert!(
            since.elapsed() < LAUNCH,
            "not all connected\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    since.elapsed()
}

/// The most of `keys` not connected at once while `running` holds, polled every 20 ms.
fn watch_away(
    d: &Daemon,
    keys: Vec<(String, u16)>,
    running: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    let (client, url) = (d.client.clone(), d.url("/actors"));
    tokio::spawn(async move {
        let mut most = 0;
        while running.load(Ordering::SeqCst) {
            if let Ok(res) = client.get(&url).bearer_auth(ADMIN_TOKEN).send().await {
                let info: serde_json::Value = res.json().await.unwrap_or_default();
                let all = info["actors"].as_array().cloned().unwrap_or_default();
                let up = keys
                    .iter()
                    .filter(|(u, s)| {
                        all.iter()
                            .any(|a| a["key"] == format!("{u}:{s}") && a["state"] == "connected")
                    })
                    .count();
                most = most.max(keys.len() - up);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        most
    })
}

fn kib(bytes: u64) -> String {
    format!("{:.0} KiB", bytes as f64 / 1024.0)
}

fn main() {
    actix_web::rt::System::new().block_on(async {
        let n: usize = std::env::var("BENCH_SESSIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10);
        let standin = StandIn::start(StandInOptions {
            rotation: Duration::from_secs(60),
            ..Default::default()
        })
        .await;
        let tmp = tempfile::tempdir().unwrap();
        let wpp = support::wpp::install(tmp.path());
        let place = tmp.path().join("live");
        let mut d = start(&place, &standin, &wpp).await;
        let keys: Vec<(String, u16)> = (0..n)
            .map(|i| (uuid_like(0x700 + (i / 2) as u32), (i % 2 + 1) as u16))
            .collect();
        // Users are made once per index pair: the two slots of one user share the id.
        let keys: Vec<(String, u16)> = keys
            .chunks(2)
            .flat_map(|pair| {
                let user = pair[0].0.clone();
                pair.iter().map(move |(_, s)| (user.clone(), *s))
            })
            .collect();
        for (i, (user, slot)) in keys.iter().enumerate() {
            let (status, _) = d
                .call("POST", &format!("/api/start/{user}/{slot}"), SERVICE_TOKEN)
                .await;
            assert_eq!(status, 202);
            let s = d.wait_state(user, *slot, LAUNCH, |s| s["state"] == "qr").await;
            standin
                .scan(s["qr"]["payload"].as_str().unwrap(), &format!("49151000077{i:02}"))
                .await
                .unwrap();
            d.wait_state(user, *slot, LAUNCH, |s| s["isConnected"] == true)
                .await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let issued = standin.issued_payloads().len();
        println!("{n} linked sessions ({} users), shell engine, SQLite", n.div_ceil(2));

        // Ours: three backups of the running daemon.
        let mut walls = Vec::new();
        let mut aways = Vec::new();
        let mut sizes = Vec::new();
        let mut most_away = 0;
        let mut file = PathBuf::new();
        for run in 0..3 {
            file = tmp.path().join(format!("ours-{run}.backup"));
            let running = Arc::new(AtomicBool::new(true));
            let watcher = watch_away(&d, keys.clone(), running.clone());
            let started = Instant::now();
            let (ok, out) = command(&place, d.port, &["backup", "--out", file.to_str().unwrap()]).await;
            walls.push(started.elapsed());
            running.store(false, Ordering::SeqCst);
            most_away = most_away.max(watcher.await.unwrap());
            assert!(ok, "{out}\n{}", d.log_text());
            sizes.push(std::fs::metadata(&file).unwrap().len());
            let m = support::manifest_of(&file);
            for s in m["sessions"].as_array().unwrap() {
                aways.push(Duration::from_millis(s["awayMs"].as_u64().expect("away")));
            }
            all_connected(&d, &keys, Instant::now()).await;
        }
        assert_eq!(standin.issued_payloads().len(), issued, "no scan");
        aways.sort();
        println!(
            "ours: backup of the running daemon: wall median {} ({}); file {} ({} bytes); \
             each session away median {}, p90 {}, max {} ({} copies); at most {most_away} away at once",
            ms(median(&walls)),
            walls.iter().map(|w| ms(*w)).collect::<Vec<_>>().join(", "),
            kib(sizes[2]),
            sizes[2],
            ms(median(&aways)),
            ms(aways[aways.len() * 9 / 10]),
            ms(*aways.last().unwrap()),
            aways.len(),
        );
        // Ours: restore into a fresh folder, then start until all connected.
        let fresh = tmp.path().join("restored");
        let started = Instant::now();
        let (ok, out) = command(&fresh, 1, &["restore", "--from", file.to_str().unwrap()]).await;
        let restore = started.elapsed();
        assert!(ok, "{out}");

        // The seed's way: stop, tar -czf the data folder, start; every session away throughout.
        let seed_file = tmp.path().join("seed.tar.gz");
        let stopped = Instant::now();
        d.signal(libc::SIGTERM);
        d.wait_exit(Duration::from_secs(60)).await;
        let tar = std::process::Command::new("tar")
            .arg("-C")
            .arg(tmp.path())
            .arg("-czf")
            .arg(&seed_file)
            .arg("live")
            .status()
            .unwrap();
        assert!(tar.success());
        let copied = stopped.elapsed();
        d = start(&place, &standin, &wpp).await;
        let seed_away = all_connected(&d, &keys, stopped).await;
        let seed_size = std::fs::metadata(&seed_file).unwrap().len();
        println!(
            "seed: stop + tar -czf + start: {} until all {n} connected again (tar done at {}); \
             file {} ({seed_size} bytes); every session away {}, all {n} at once",
            ms(seed_away),
            ms(copied),
            kib(seed_size),
            ms(seed_away),
        );
        d.signal(libc::SIGTERM);
        d.wait_exit(Duration::from_secs(60)).await;

        let since = Instant::now();
        let d2 = start(&fresh, &standin, &wpp).await;
        let ours_up = all_connected(&d2, &keys, since).await;
        drop(d2);
        let seed_place = tmp.path().join("seed-restored");
        std::fs::create_dir(&seed_place).unwrap();
        let untarred = Instant::now();
        let tar = std::process::Command::new("tar")
            .arg("-C")
            .arg(&seed_place)
            .arg("-xzf")
            .arg(&seed_file)
            .status()
            .unwrap();
        assert!(tar.success());
        let untar = untarred.elapsed();
        let since = Instant::now();
        let d3 = start(&seed_place.join("live"), &standin, &wpp).await;
        let seed_up = all_connected(&d3, &keys, since).await;
        drop(d3);
        assert_eq!(standin.issued_payloads().len(), issued, "no scan after either restore");
        println!(
            "restore: ours {} (checked whole) + start to all connected {}; \
             seed untar {} + start to all connected {}",
            ms(restore),
            ms(ours_up),
            ms(untar),
            ms(seed_up),
        );
        println!(
            "ratios: time a session is away {:.3}x the seed's (median copy / seed's stop-to-connected); file {:.3}x",
            median(&aways).as_secs_f64() / seed_away.as_secs_f64(),
            sizes[2] as f64 / seed_size as f64,
        );
    });
}
