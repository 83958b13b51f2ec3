//! Receiving media, measured (docs/media.md): `cargo bench --bench receiving`. The daemon binary
//! as a child process on the stand-in page (real Chromium, the shell engine by default).
//!
//! 1. One session: a text (the baseline), a 1 MiB image and a 30 MiB document from the phone,
//!    three each — the phone's send → the `message` event stored (with its media); the daemon's
//!    peak RSS and the session's browser tree's peak PSS during them, beside the levels before.
//! 2. Bytes on disk per incoming MiB: the same 30 MiB document sent three times more (by the
//!    same customer and by two others) is stored once.

mod common;
#[path = "../tests/integration/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use common::{median, ms, pss_mib, tree};
use support::daemon::{self, Daemon};
use support::harness::{uuid_like, ADMIN_TOKEN, SERVICE_TOKEN};
use support::standin::{StandIn, StandInOptions};
use wa_supervisor::procfs;

fn noise(n: usize) -> Vec<u8> {
    (0..n).map(|_| rand::random::<u8>()).collect()
}

/// Waits until message `id` is stored; how long that took from `since`.
async fn recorded(d: &Daemon, user: &str, id: &str, since: Instant) -> Duration {
    loop {
        let (_, page) = d
            .call(
                "GET",
                &format!("/api/messages/{user}/1?limit=500"),
                SERVICE_TOKEN,
            )
            .await;
        let found = page["events"].as_array().and_then(|e| {
            e.iter()
                .find(|e| e["type"] == "message" && e["data"]["id"] == id)
                .cloned()
        });
        if let Some(e) = found {
            let media = &e["data"]["media"];
            assert!(media.is_null() || media["sha256"].is_string(), "{e}");
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(120),
            "{id} never recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn stored_bytes(dir: &std::path::Path) -> u64 {
    let mut n = 0;
    for folder in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if folder.file_name().len() == 2 {
            for f in std::fs::read_dir(folder.path()).unwrap().flatten() {
                n += f.metadata().unwrap().len();
            }
        }
    }
    n
}

fn main() {
    actix_web::rt::System::new().block_on(async {
        let standin = StandIn::start(StandInOptions {
            rotation: Duration::from_secs(60),
            ..Default::default()
        })
        .await;
        let tmp = tempfile::tempdir().unwrap();
        let (wpp, sha) = support::wpp::install(tmp.path());
        let d = daemon::start(
            tmp.path(),
            &standin.url(),
            &["--wa-js-path", wpp.to_str().unwrap(), "--wa-js-sha256", &sha],
        )
        .await;
        let user = uuid_like(0x5e1);
        let phone = "4915300005100";
        common::link(&d, &standin, &user, phone).await;
        let browser = d.call("GET", "/actors", ADMIN_TOKEN).await.1["actors"][0]["browserPid"]
            .as_u64()
            .unwrap() as u32;
        let daemon_pid = d.pid() as u32;
        tokio::time::sleep(Duration::from_secs(3)).await;
        println!(
            "1. one session; before: daemon RSS {:.0} MiB, browser tree PSS {:.0} MiB",
            procfs::rss_bytes(daemon_pid) as f64 / 1048576.0,
            pss_mib(&tree(browser))
        );
        let from = "4915399990001";
        let mut base = None;
        let mut document = Vec::new();
        for (name, size) in [("text", 0usize), ("1 MiB image", 1 << 20), ("30 MiB document", 30 << 20)] {
            let peaks = common::Peaks::start(daemon_pid, browser);
            let mut times = Vec::new();
            for _ in 0..3 {
                let bytes = noise(size);
                let at = Instant::now();
                let id = match size {
                    0 => standin.incoming(phone, from, "the menu, please").unwrap(),
                    n if n < 2 << 20 => standin
                        .incoming_media(phone, from, "image", bytes.clone(), "image/jpeg", None, None)
                        .unwrap(),
                    _ => standin
                        .incoming_media(phone, from, "document", bytes.clone(), "application/pdf", Some("menu.pdf"), None)
                        .unwrap(),
                };
                times.push(recorded(&d, &user, &id, at).await);
                document = bytes;
            }
            let (rss, pss) = peaks.stop();
            let m = median(&times);
            let ratio = base.map_or(String::new(), |b: Duration| {
                format!(" ({:.1}× the text)", m.as_secs_f64() / b.as_secs_f64())
            });
            base.get_or_insert(m);
            println!(
                "   {name:>16}: phone → event stored median {}{ratio} (of {}); peak daemon RSS {rss:.0} MiB, peak browser tree PSS {pss:.0} MiB",
                ms(m),
                times.iter().map(|t| ms(*t)).collect::<Vec<_>>().join(", ")
            );
        }

        let media = tmp.path().join("data/media");
        let before = stored_bytes(&media);
        let mut incoming = 0u64;
        for from in ["4915399990001", "4915399990002", "4915399990003"] {
            let at = Instant::now();
            let id = standin
                .incoming_media(phone, from, "document", document.clone(), "application/pdf", Some("menu.pdf"), None)
                .unwrap();
            recorded(&d, &user, &id, at).await;
            incoming += document.len() as u64;
        }
        let added = stored_bytes(&media) - before;
        println!(
            "2. the last 30 MiB document three times more: {} MiB incoming, {} bytes more on disk ({:.3} bytes stored per incoming MiB); all media: {:.1} MiB on disk for {:.1} MiB received",
            incoming >> 20,
            added,
            added as f64 / (incoming as f64 / 1048576.0),
            stored_bytes(&media) as f64 / 1048576.0,
            (incoming + 3 * (1 << 20) + 3 * (30 << 20)) as f64 / 1048576.0,
        );
        d.call("POST", &format!("/api/stop/{user}/1"), SERVICE_TOKEN)
            .await;
    });
}
