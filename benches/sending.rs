//! Sending media, measured (docs/messaging.md): `cargo bench --bench sending`. The daemon binary
//! as a child process on the stand-in page (real Chromium, the shell engine by default).
//!
//! 1. One session: a text (the baseline), a 10 MiB image and a 50 MiB document as base64,
//!    three each — request → 201; the daemon's peak RSS and the session's browser tree's peak
//!    PSS during the sends, beside the levels before; the tree's PSS 10 s after the last send.
//! 2. Small images (a 6 KiB PNG) per second: one session sending 60 back to back; ten sessions
//!    sending 20 each at the same time.

mod common;
#[path = "../tests/integration/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{median, ms, pss_mib, tree};
use serde_json::json;
use support::daemon::{self, Daemon};
use support::harness::{uuid_like, ADMIN_TOKEN, SERVICE_TOKEN};
use support::standin::{StandIn, StandInOptions};
use wa_supervisor::procfs;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `n` bytes that sniff as `magic`'s type (the stand-in phone does not decode them).
fn file(magic: &[u8], n: usize) -> Vec<u8> {
    let mut v = magic.to_vec();
    v.extend((0..n - magic.len()).map(|_| rand::random::<u8>()));
    v
}

fn small_png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(48, 48, |x, y| image::Rgb([x as u8 * 5, y as u8 * 5, 90]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

async fn send(d: &Daemon, user: &str, body: &serde_json::Value) -> (u16, Duration) {
    let at = Instant::now();
    let res = d
        .client
        .post(d.url(&format!("/api/messages/{user}/1")))
        .bearer_auth(SERVICE_TOKEN)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let _ = res.bytes().await;
    (status, at.elapsed())
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
            &[
                "--wa-js-path",
                wpp.to_str().unwrap(),
                "--wa-js-sha256",
                &sha,
                "--send-per-minute",
                "10000",
            ],
        )
        .await;
        let user = uuid_like(0x5e0);
        common::link(&d, &standin, &user, "4915300005000").await;
        let browser = d.call("GET", "/actors", ADMIN_TOKEN).await.1["actors"][0]["browserPid"]
            .as_u64()
            .unwrap() as u32;
        let daemon_pid = d.pid() as u32;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let level = (
            procfs::rss_bytes(daemon_pid) as f64 / 1048576.0,
            pss_mib(&tree(browser)),
        );
        println!(
            "1. one session; before: daemon RSS {:.0} MiB, browser tree PSS {:.0} MiB",
            level.0, level.1
        );
        let to = "4915399990000";
        let cases = [
            ("text", json!({"to": to, "text": "the menu follows"})),
            (
                "10 MiB image",
                json!({"type": "image", "to": to, "media": {"data": b64(&file(b"\x89PNG\r\n\x1a\n", 10 << 20))}}),
            ),
            (
                "50 MiB document",
                json!({"type": "document", "to": to, "media": {"data": b64(&file(b"%PDF-1.7\n", 50 << 20)), "filename": "catalogue.pdf"}}),
            ),
        ];
        let mut base = None;
        for (name, body) in &cases {
            let peaks = common::Peaks::start(daemon_pid, browser);
            let mut times = Vec::new();
            for _ in 0..3 {
                let (status, took) = send(&d, &user, body).await;
                assert_eq!(status, 201, "{name}");
                times.push(took);
            }
            let (rss, pss) = peaks.stop();
            let m = median(&times);
            let ratio = base.map_or(String::new(), |b: Duration| {
                format!(" ({:.1}× the text)", m.as_secs_f64() / b.as_secs_f64())
            });
            base.get_or_insert(m);
            println!(
                "   {name:>16}: request → 201 median {}{ratio} (of {}); peak daemon RSS {rss:.0} MiB, peak browser tree PSS {pss:.0} MiB",
                ms(m),
                times.iter().map(|t| ms(*t)).collect::<Vec<_>>().join(", ")
            );
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        println!(
            "   10 s after: daemon RSS {:.0} MiB, browser tree PSS {:.0} MiB (before: {:.0}, {:.0})",
            procfs::rss_bytes(daemon_pid) as f64 / 1048576.0,
            pss_mib(&tree(browser)),
            level.0,
            level.1
        );

        let png = json!({"type": "image", "to": to, "media": {"data": b64(&small_png())}});
        let at = Instant::now();
        for _ in 0..60 {
            assert_eq!(send(&d, &user, &png).await.0, 201);
        }
        let one = 60.0 / at.elapsed().as_secs_f64();
        let users: Vec<String> = (1..10).map(|i| uuid_like(0x5e0 + i)).collect();
        for (i, u) in users.iter().enumerate() {
            common::link(&d, &standin, u, &format!("43153000050{i:02}")).await;
        }
        let all: Vec<String> = std::iter::once(user.clone()).chain(users).collect();
        let at = Instant::now();
        let runs = all.iter().map(|u| {
            let (d, png) = (&d, &png);
            async move {
                for _ in 0..20 {
                    assert_eq!(send(d, u, png).await.0, 201);
                }
            }
        });
        futures_util::future::join_all(runs).await;
        let ten = 200.0 / at.elapsed().as_secs_f64();
        println!(
            "2. small images ({} bytes): one session {one:.1}/s back to back; ten sessions at once {ten:.1}/s in all",
            small_png().len()
        );
        let mut d = d;
        d.signal(libc::SIGTERM);
        d.wait_exit(Duration::from_secs(30)).await;
    });
}
