//! Nothing lost, nothing doubled, measured longer than the suite does: `cargo bench --bench soak`.
//!
//! 1. The soak of `tests/integration/support/soak.rs` for `SOAK_SECS` (300) seconds of blows:
//!    injected / recorded / delivered / lost / duplicated.
//! 2. Delivery lag of tenant B's messages (stand-in phone → B's webhook), p50 and p99, while
//!    tenant A's webhook answers at once, then while it takes 9 s to answer.

#[path = "../tests/integration/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::harness::{spawn_app, uuid_like, TestApp};
use support::receiver::{Received, Receiver};
use support::standin::StandInOptions;

const MESSAGES: usize = 60;

async fn lags(slow_a: bool) -> Vec<Duration> {
    let (a_hook, b_hook) = (Receiver::start().await, Receiver::start().await);
    if slow_a {
        a_hook.slow(Some(Duration::from_secs(9)));
    }
    let t: TestApp = spawn_app(
        StandInOptions {
            rotation: Duration::from_secs(60),
            ..Default::default()
        },
        &[
            "--webhook-allow-http",
            "--webhook-allow-networks",
            "127.0.0.0/8",
        ],
    )
    .await;
    let (a, b) = (uuid_like(0x5a), uuid_like(0x5b));
    let (pa, pb) = ("4915100050001", "4915100050002");
    for (user, hook, phone) in [(&a, &a_hook, pa), (&b, &b_hook, pb)] {
        let r = t
            .json(
                "PUT",
                &format!("/api/webhooks/{user}"),
                serde_json::json!({"url": hook.url("/hook"), "events": ["message"]}),
            )
            .await;
        assert_eq!(r.status, 200);
        t.start(user, 1).await;
        t.scan(user, 1, phone).await;
    }
    let mut sent = Vec::new();
    for i in 0..MESSAGES {
        t.standin
            .incoming(pa, "4915199990050", &format!("a {i}"))
            .unwrap();
        t.standin
            .incoming(pb, "4915199990051", &format!("b {i}"))
            .unwrap();
        sent.push((format!("b {i}"), Instant::now()));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let all = |got: &[Received]| {
        sent.iter().all(|(body, _)| {
            got.iter()
                .any(|r| r.json()["data"]["body"] == body.as_str())
        })
    };
    b_hook
        .wait(Duration::from_secs(120), "b's messages", all)
        .await;
    let mut lags: Vec<Duration> = sent
        .iter()
        .map(|(body, at)| {
            let r = b_hook
                .received()
                .into_iter()
                .find(|r| r.json()["data"]["body"] == body.as_str())
                .unwrap();
            r.at.saturating_duration_since(*at)
        })
        .collect();
    lags.sort();
    for u in [&a, &b] {
        t.stop(u, 1).await;
    }
    lags
}

fn pct(v: &[Duration], p: f64) -> Duration {
    v[((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

fn main() {
    actix_web::rt::System::new().block_on(async {
        let secs: u64 = std::env::var("SOAK_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300);
        let started = Instant::now();
        let r = support::soak::soak(Duration::from_secs(secs)).await;
        println!(
            "1. soak, {secs} s of blows ({:.0} s in all): injected {}, recorded once {}, delivered {}, lost {}, duplicated {}, delivered under two webhook-ids {}, redeliveries of one webhook-id {}, recorded by gap filling {}; blows: {} browser SIGKILLs, {} daemon SIGKILLs, {} database cuts of 3 s",
            started.elapsed().as_secs_f64(),
            r.injected, r.recorded, r.delivered, r.lost, r.duplicated, r.delivered_twice,
            r.redeliveries, r.backfilled, r.browser_kills, r.daemon_kills, r.db_cuts
        );
        for slow in [false, true] {
            let v = lags(slow).await;
            println!(
                "2. tenant B's delivery lag, {MESSAGES} messages, tenant A's webhook {}: p50 {} ms, p99 {} ms, max {} ms",
                if slow { "answering after 9 s" } else { "answering at once" },
                pct(&v, 50.0).as_millis(),
                pct(&v, 99.0).as_millis(),
                v.last().unwrap().as_millis()
            );
        }
    });
}
