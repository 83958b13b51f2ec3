//! Webhook figures for BENCHMARKS.md: `cargo bench --bench webhooks`.
//!
//! - message in → webhook received, p50 / p99, through real Chromium, the stand-in page and the
//!   stand-in WPP, to a receiver on loopback (service webhook);
//! - sustained deliveries per second to a fast receiver (the outbox and dispatcher alone);
//! - outbox rows and SQLite size after 10 000 events owed to a receiver that is down.

#[path = "../tests/integration/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::harness::{spawn_app, uuid_like, SERVICE_TOKEN};
use support::receiver::Receiver;
use support::standin::StandInOptions;
use wa_supervisor::domain::{SessionKey, Slot, UserId};
use wa_supervisor::events::Outbox;
use wa_supervisor::store::{DatabaseUrl, Store};
use wa_supervisor::webhooks::{Dispatcher, Guard, ServiceWebhook, SigningSecret};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Message in (the stand-in phone writes) → the service webhook has it.
async fn latency() {
    let receiver = Receiver::start().await;
    let url = receiver.url("/service");
    let t = spawn_app(
        StandInOptions::default(),
        &["--webhook-url", &url, "--webhook-secret", SECRET],
    )
    .await;
    let user = uuid_like(0xe01);
    let phone = "4915100000901";
    t.start(&user, 1).await;
    t.scan(&user, 1, phone).await;
    let mut lat = Vec::new();
    for i in 0..200 {
        let sent = Instant::now();
        let id = t
            .standin
            .incoming(phone, "4917600000901", &format!("m{i}"))
            .unwrap();
        receiver
            .wait(Duration::from_secs(10), "the message", |got| {
                got.iter().any(|r| r.body.contains(id.as_str()))
            })
            .await;
        let arrived = receiver
            .received()
            .iter()
            .find(|r| r.body.contains(id.as_str()))
            .map(|r| r.at)
            .unwrap();
        lat.push(arrived - sent);
    }
    lat.sort();
    println!(
        "message in -> webhook received (200 messages, one at a time): p50 {}, p99 {}, max {}",
        ms(pct(&lat, 0.5)),
        ms(pct(&lat, 0.99)),
        ms(*lat.last().unwrap())
    );
    t.post(&format!("/api/stop/{user}/1"), SERVICE_TOKEN).await;
}

fn key(n: u32) -> SessionKey {
    SessionKey::new(
        UserId::parse(&format!("bench-user-{n}")).unwrap(),
        Slot::new(1, 10).unwrap(),
    )
}

fn outbox_with_dispatcher(
    dir: &std::path::Path,
    url: &str,
    schedule: Vec<Duration>,
) -> (Arc<Outbox>, Store) {
    let store = Store::open(&DatabaseUrl::Sqlite(dir.join("bench.db")), 10).unwrap();
    let outbox = Arc::new(Outbox::new(store.clone(), true));
    Dispatcher::new(
        outbox.clone(),
        Some(ServiceWebhook {
            url: url.parse().unwrap(),
            secret: SigningSecret::parse(SECRET).unwrap(),
        }),
        Arc::new(Guard::default()),
    )
    .with_schedule(schedule)
    .spawn();
    (outbox, store)
}

/// Deliveries per second with a fast receiver: 5 000 events of 50 sessions.
async fn throughput() {
    let receiver = Receiver::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let (outbox, _) = outbox_with_dispatcher(
        tmp.path(),
        &receiver.url("/fast"),
        vec![Duration::from_secs(5)],
    );
    const N: usize = 5_000;
    let started = Instant::now();
    for i in 0..N {
        outbox
            .append(
                &key(i as u32 % 50),
                "message",
                &serde_json::json!({"n": i, "body": "hello"}),
                None,
                None,
            )
            .await
            .unwrap();
    }
    let appended = started.elapsed();
    receiver
        .wait(Duration::from_secs(300), "every delivery", |got| {
            got.len() >= N
        })
        .await;
    let all = started.elapsed();
    println!(
        "{N} events (50 sessions) appended in {:.2} s ({:.0}/s); all delivered after {:.2} s: {:.0} deliveries/s sustained",
        appended.as_secs_f64(),
        N as f64 / appended.as_secs_f64(),
        all.as_secs_f64(),
        N as f64 / all.as_secs_f64()
    );
}

/// 10 000 events owed to a receiver that is down: rows and database size.
async fn backlog() {
    let receiver = Receiver::start().await;
    receiver.always(Some(503));
    let tmp = tempfile::tempdir().unwrap();
    let (outbox, store) = outbox_with_dispatcher(
        tmp.path(),
        &receiver.url("/down"),
        vec![Duration::from_secs(3600)],
    );
    const N: usize = 10_000;
    for i in 0..N {
        outbox
            .append(&key(i as u32 % 100), "message", &serde_json::json!({"n": i, "body": "a message of ordinary length, about sixty characters"}), None, None)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let owed = store.next_due_ms(true).await.unwrap();
    let size: u64 = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    println!(
        "{N} undelivered events (100 sessions, receiver down): {N} outbox rows + {N} deliveries, database files {:.1} MiB, next retry due {}",
        size as f64 / (1024.0 * 1024.0),
        if owed.is_some() { "in an hour" } else { "never" }
    );
}

fn main() {
    wa_supervisor::auth::install_crypto_provider();
    actix_web::rt::System::new().block_on(async {
        throughput().await;
        backlog().await;
        latency().await;
    });
}
