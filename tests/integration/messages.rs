//! Messages and webhooks with real Chromium on the stand-in page: bots send through their
//! sessions and hear every message, ack and state change — written first, then on the user's
//! stream, in `GET /api/messages` and at the webhooks (signed, verified with `openssl`), in order,
//! at least once, across receiver outages and daemon kills; never another user's.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::daemon;
use crate::support::harness::{spawn_app, uuid_like, Reply, TestApp, LAUNCH, SERVICE_TOKEN};
use crate::support::receiver::{verify_with_openssl, Receiver};
use crate::support::standin::{StandIn, StandInOptions};
use crate::support::wpp;

const QUICK: Duration = Duration::from_secs(10);
const SERVICE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn slow() -> StandInOptions {
    StandInOptions {
        rotation: Duration::from_secs(20),
        rotations: 6,
        ..Default::default()
    }
}

async fn send(t: &TestApp, user: &str, to: &str, text: &str, key: Option<&str>) -> Reply {
    let mut body = json!({"to": to, "text": text});
    if let Some(k) = key {
        body["idempotencyKey"] = json!(k);
    }
    t.json("POST", &format!("/api/messages/{user}/1"), body)
        .await
}

/// The stored events of `user:1` of one type.
async fn stored(t: &TestApp, user: &str, kind: &str) -> Vec<Value> {
    let r = t
        .get(&format!("/api/messages/{user}/1?limit=500"), SERVICE_TOKEN)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    r.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == kind)
        .cloned()
        .collect()
}

/// Linked users with their own webhooks on `hooks`, and the service webhook on `service`.
async fn app_with_webhooks(service: &Receiver, extra: &[&str]) -> TestApp {
    let url = service.url("/service");
    let mut args = vec![
        "--webhook-url",
        &url,
        "--webhook-secret",
        SERVICE_SECRET,
        "--webhook-allow-http",
        "--webhook-allow-networks",
        "127.0.0.0/8",
        "--webhook-retry-schedule",
        "300ms,300ms,300ms,300ms,300ms",
    ];
    args.extend_from_slice(extra);
    spawn_app(slow(), &args).await
}

async fn put_webhook(t: &TestApp, user: &str, url: &str) -> String {
    let r = t
        .json("PUT", &format!("/api/webhooks/{user}"), json!({"url": url}))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    r.json["secret"].as_str().unwrap().to_owned()
}

#[actix_web::test]
async fn a_bot_sends_and_hears_through_its_session_and_only_its_own() {
    let service = Receiver::start().await;
    let hooks = Receiver::start().await;
    let t = app_with_webhooks(&service, &[]).await;
    let (a, b) = (uuid_like(0xc01), uuid_like(0xc02));
    let (phone_a, phone_b) = ("4915100000201", "4915100000202");
    let secret_a = put_webhook(&t, &a, &hooks.url(&format!("/{a}"))).await;
    let secret_b = put_webhook(&t, &b, &hooks.url(&format!("/{b}"))).await;
    for (user, phone) in [(&a, phone_a), (&b, phone_b)] {
        t.start(user, 1).await;
        t.scan(user, 1, phone).await;
    }
    let ticket = t
        .post(&format!("/api/events/{a}/ticket"), SERVICE_TOKEN)
        .await;
    let mut stream = reqwest::Client::new()
        .get(t.url(ticket.json["url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();

    // Send: 201 once WhatsApp Web took it; the recipient got it; acks follow.
    let r = send(&t, &a, "+4917600000001", "Hello from the bot", None).await;
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.json["id"].as_str().unwrap().to_owned();
    assert_eq!(r.json["to"], "4917600000001@c.us");
    assert!(r.json["timestamp"].as_i64().unwrap() > 1_700_000_000);
    let sent = t.standin.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].to.as_str(), sent[0].body.as_str()),
        ("4917600000001@c.us", "Hello from the bot")
    );
    assert_eq!(sent[0].from.as_deref(), Some(phone_a));
    t.standin.read(phone_a, &id);

    // Receive: a contact writes to A.
    let incoming = t
        .standin
        .incoming(phone_a, "4917600000002", "Hi bot!")
        .unwrap();
    crate::support::harness::eventually(QUICK, "stored message and acks", || async {
        let msgs = stored(&t, &a, "message").await;
        let acks = stored(&t, &a, "message.ack").await;
        let read = acks
            .iter()
            .any(|e| e["data"]["id"] == id.as_str() && e["data"]["ack"] == "read");
        (msgs.iter().any(|e| e["data"]["id"] == incoming.as_str()) && read).then_some(())
    })
    .await;
    let msgs = stored(&t, &a, "message").await;
    let got = msgs
        .iter()
        .find(|e| e["data"]["id"] == incoming.as_str())
        .unwrap();
    assert_eq!(got["data"]["body"], "Hi bot!");
    assert_eq!(got["data"]["from"], "4917600000002@c.us");
    assert_eq!(got["data"]["chatId"], "4917600000002@c.us");
    assert_eq!(
        (
            got["data"]["fromMe"].as_bool(),
            got["data"]["isGroup"].as_bool()
        ),
        (Some(false), Some(false))
    );
    assert_eq!(
        (got["data"]["userId"].as_str(), got["data"]["slot"].as_u64()),
        (Some(a.as_str()), Some(1))
    );
    // Our own send shows up as a message from us.
    assert!(msgs
        .iter()
        .any(|e| e["data"]["id"] == id.as_str() && e["data"]["fromMe"] == true));
    let acks: Vec<Value> = stored(&t, &a, "message.ack")
        .await
        .iter()
        .filter(|e| e["data"]["id"] == id.as_str())
        .map(|e| e["data"]["ack"].clone())
        .collect();
    assert_eq!(acks, [json!("server"), json!("device"), json!("read")]);

    // The same on A's stream, with event ids; nothing of B.
    let mut text = String::new();
    while !text.contains("Hi bot!") || !text.contains("\"read\"") {
        let chunk = tokio::time::timeout(QUICK, stream.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(text.contains("event: message\nid: "), "{text}");
    assert!(text.contains("event: message.ack\nid: "), "{text}");
    assert!(!text.contains(&b) && !text.contains(phone_b), "{text}");

    // The webhooks: A's events at A's URL only, signed with A's secret; everything at the
    // service webhook, signed with its secret.
    hooks
        .wait(QUICK, "A's message at A's webhook", |got| {
            got.iter().any(|r| r.body.contains("Hi bot!"))
        })
        .await;
    service
        .wait(QUICK, "A's message at the service webhook", |got| {
            got.iter().any(|r| r.body.contains("Hi bot!"))
        })
        .await;
    let hits = hooks.received();
    for r in &hits {
        let user = r.json()["data"]["userId"].as_str().map(str::to_owned);
        let secret = if user.as_deref() == Some(a.as_str()) {
            &secret_a
        } else {
            &secret_b
        };
        assert!(verify_with_openssl(secret, r), "signature of {}", r.id);
        assert!(!verify_with_openssl(
            if secret == &secret_a {
                &secret_b
            } else {
                &secret_a
            },
            r
        ));
        assert!(r.id.starts_with("evt_"));
    }
    assert!(hits
        .iter()
        .filter(|r| r.body.contains(&a))
        .all(|r| !r.body.contains(&b)));
    let message = hits
        .iter()
        .find(|r| r.body.contains("Hi bot!"))
        .unwrap()
        .json();
    assert_eq!(message["type"], "message");
    assert!(message["timestamp"].as_str().unwrap().ends_with('Z'));
    for r in service.received() {
        assert!(
            verify_with_openssl(SERVICE_SECRET, &r),
            "service signature of {}",
            r.id
        );
    }
    // Events of both users reached the service webhook, each with its user.
    let service_users: std::collections::BTreeSet<String> = service
        .received()
        .iter()
        .filter_map(|r| r.json()["data"]["userId"].as_str().map(str::to_owned))
        .collect();
    assert!(service_users.contains(&a) && service_users.contains(&b));

    // Deliveries are listed per user.
    let list = t
        .get(
            &format!("/api/webhooks/{a}/deliveries?status=delivered"),
            SERVICE_TOKEN,
        )
        .await;
    assert_eq!(list.status, 200);
    assert!(list.json.as_array().unwrap().len() >= 3);
    let webhook = t.get(&format!("/api/webhooks/{a}"), SERVICE_TOKEN).await;
    assert_eq!(webhook.json["state"], "active");
    assert_eq!(webhook.json["secret"], Value::Null, "never shown again");

    for user in [&a, &b] {
        t.stop(user, 1).await;
    }
}

#[actix_web::test]
async fn sends_are_checked_limited_and_idempotent() {
    let t = spawn_app(slow(), &["--send-per-minute", "3"]).await;
    let user = uuid_like(0xc03);
    // Not linked yet.
    t.start(&user, 1).await;
    t.wait_state(&user, 1, "qr", LAUNCH).await;
    let r = send(&t, &user, "4917600000003", "hi", None).await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (409, Some("not_connected")),
        "{r:?}"
    );
    t.scan(&user, 1, "4915100000203").await;
    // Bad input: 400, nothing sent.
    for body in [
        json!({"to": "12", "text": "hi"}),
        json!({"to": "abc@c.us", "text": "hi"}),
        json!({"to": "4917600000003", "text": ""}),
        json!({"to": "4917600000003", "text": "   "}),
        json!({"to": "4917600000003", "text": "x".repeat(65_537)}),
        json!({"to": "4917600000003", "text": "hi", "idempotencyKey": "k".repeat(129)}),
        json!({"to": "4917600000003"}),
        json!({"to": "4917600000003", "text": "hi", "extra": 1}),
    ] {
        let r = t
            .json("POST", &format!("/api/messages/{user}/1"), body.clone())
            .await;
        assert_eq!(r.status, 400, "{body}: {r:?}");
    }
    assert!(t.standin.sent().is_empty());
    // The same key twice: one message, the first answer.
    let first = send(&t, &user, "4917600000003", "once", Some("order-17")).await;
    assert_eq!(first.status, 201, "{first:?}");
    let again = send(&t, &user, "4917600000003", "once", Some("order-17")).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.json, first.json);
    assert_eq!(t.standin.sent().len(), 1);
    // The replay did not spend the budget: two more sends pass, the next is refused.
    assert_eq!(
        send(&t, &user, "4917600000003", "two", None).await.status,
        201
    );
    assert_eq!(
        send(&t, &user, "4917600000003", "three", None).await.status,
        201
    );
    let r = send(&t, &user, "4917600000003", "four", None).await;
    assert_eq!(r.status, 429, "{r:?}");
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(t.standin.sent().len(), 3);
    t.stop(&user, 1).await;
    // Stopped: not connected.
    let r = send(&t, &user, "4917600000003", "hi", Some("order-18")).await;
    assert_eq!(r.status, 409);
}

#[actix_web::test]
async fn without_wa_js_sending_is_unavailable() {
    let t = spawn_app(slow(), &["--wa-js-path", "/nonexistent/wa.js"]).await;
    let user = uuid_like(0xc04);
    t.start(&user, 1).await;
    t.scan(&user, 1, "4915100000204").await;
    let r = send(&t, &user, "4917600000004", "hi", None).await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (409, Some("bridge_unavailable")),
        "{r:?}"
    );
    t.stop(&user, 1).await;
}

/// A receiver down through several attempts, then back: every event arrives, each webhook-id
/// once after dedupe, in order per session; a receiver that stays down ends `failed`; 410 Gone
/// disables the webhook; a failed delivery can be re-queued.
#[actix_web::test]
async fn deliveries_survive_a_receiver_outage_in_order() {
    let service = Receiver::start().await;
    let hooks = Receiver::start().await;
    let t = app_with_webhooks(&service, &[]).await;
    let user = uuid_like(0xc05);
    let phone = "4915100000205";
    put_webhook(&t, &user, &hooks.url("/bot")).await;
    t.start(&user, 1).await;
    t.scan(&user, 1, phone).await;
    hooks.fail_next(4, 503);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            t.standin
                .incoming(phone, "4917600000005", &format!("m{i}"))
                .unwrap(),
        );
    }
    hooks
        .wait(
            Duration::from_secs(20),
            "every message after the outage",
            |got| {
                ids.iter()
                    .all(|id| got.iter().any(|r| r.body.contains(id.as_str())))
            },
        )
        .await;
    // Dedupe by webhook-id as a receiver would: each once, in the order they happened.
    let mut seen = std::collections::HashSet::new();
    let firsts: Vec<String> = hooks
        .received()
        .into_iter()
        .filter(|r| seen.insert(r.id.clone()))
        .map(|r| r.body)
        .collect();
    let order: Vec<usize> = ids
        .iter()
        .map(|id| firsts.iter().position(|b| b.contains(id.as_str())).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "in order: {order:?}");
    // Each event keeps its webhook-id across retries; the ids of first arrivals never repeat.
    let stored: Vec<Value> = t
        .get(&format!("/api/messages/{user}/1?limit=500"), SERVICE_TOKEN)
        .await
        .json["events"]
        .as_array()
        .unwrap()
        .clone();
    let all_ids: Vec<i64> = hooks
        .received()
        .iter()
        .map(|r| {
            stored
                .iter()
                .find(|e| e["webhookId"] == r.id.as_str())
                .unwrap_or_else(|| panic!("{} is a stored event's webhook-id", r.id))["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    let mut sorted = all_ids.clone();
    sorted.dedup();
    assert!(
        sorted.windows(2).all(|w| w[0] <= w[1]),
        "event ids never go back: {all_ids:?}"
    );
    assert!(hooks.received().len() > seen.len(), "some were retried");

    // Down for good: the delivery ends failed (5 short retries), kept and listed.
    hooks.always(Some(500));
    let late = t
        .standin
        .incoming(phone, "4917600000005", "during a long outage")
        .unwrap();
    let failed = crate::support::harness::eventually(
        Duration::from_secs(20),
        "a failed delivery",
        || async {
            let r = t
                .get(
                    &format!("/api/webhooks/{user}/deliveries?status=failed"),
                    SERVICE_TOKEN,
                )
                .await;
            r.json.as_array().and_then(|l| l.first().cloned())
        },
    )
    .await;
    assert_eq!(failed["attempts"], 6, "{failed}");
    assert_eq!(failed["lastStatus"], 500);
    // Back up; re-queued by API: delivered.
    hooks.always(None);
    let id = failed["id"].as_i64().unwrap();
    let r = t
        .post(
            &format!("/api/webhooks/{user}/deliveries/{id}/retry"),
            SERVICE_TOKEN,
        )
        .await;
    assert_eq!(r.status, 202);
    hooks
        .wait(QUICK, "the re-queued delivery", |got| {
            got.iter()
                .filter(|r| r.body.contains(late.as_str()))
                .count()
                >= 7
        })
        .await;
    let other = t
        .post(
            &format!("/api/webhooks/{}/deliveries/{id}/retry", uuid_like(0xc06)),
            SERVICE_TOKEN,
        )
        .await;
    assert_eq!(other.status, 404, "not another user's");

    // 410 Gone disables the webhook.
    hooks.always(Some(410));
    t.standin.incoming(phone, "4917600000005", "gone").unwrap();
    crate::support::harness::eventually(QUICK, "disabled", || async {
        let r = t.get(&format!("/api/webhooks/{user}"), SERVICE_TOKEN).await;
        (r.json["state"] == "disabled").then_some(())
    })
    .await;
    t.stop(&user, 1).await;
}

/// Per-user URLs cannot reach the host's network: names that resolve to loopback are refused at
/// every delivery, plain http is refused without WEBHOOK_ALLOW_HTTP, redirects are not followed.
#[actix_web::test]
async fn per_user_webhooks_cannot_reach_the_hosts_network() {
    let hooks = Receiver::start().await;
    let t = spawn_app(
        slow(),
        &[
            "--webhook-allow-http",
            "--webhook-retry-schedule",
            "100ms,100ms",
        ],
    )
    .await;
    let user = uuid_like(0xc07);
    for url in [
        "http://127.0.0.1:9/x".to_owned(),
        "https://169.254.169.254/latest/meta-data".to_owned(),
        "https://[::1]/x".to_owned(),
        "ftp://example.com/".to_owned(),
        "https://user:pw@example.com/".to_owned(),
    ] {
        let r = t
            .json("PUT", &format!("/api/webhooks/{user}"), json!({"url": url}))
            .await;
        assert_eq!(
            (r.status, r.json["error"].as_str()),
            (400, Some("invalid_webhook_url")),
            "{url}: {r:?}"
        );
    }
    // A name: accepted when saved, refused when it resolves to loopback at delivery time.
    put_webhook(&t, &user, &format!("http://localhost:{}/x", hooks.port)).await;
    t.start(&user, 1).await;
    t.wait_state(&user, 1, "qr", LAUNCH).await;
    let failed = crate::support::harness::eventually(QUICK, "the refused delivery", || async {
        let r = t
            .get(
                &format!("/api/webhooks/{user}/deliveries?status=failed"),
                SERVICE_TOKEN,
            )
            .await;
        r.json.as_array().and_then(|l| l.first().cloned())
    })
    .await;
    assert!(
        failed["lastError"]
            .as_str()
            .unwrap()
            .contains("not a public address"),
        "{failed}"
    );
    assert!(
        hooks.received().is_empty(),
        "nothing reached the loopback receiver"
    );
    t.stop(&user, 1).await;

    // Redirects are not followed: a receiver that answers 307 to somewhere else gets retries,
    // the place it points at gets nothing.
    let service = Receiver::start().await;
    let elsewhere = Receiver::start().await;
    service.redirect(Some(elsewhere.url("/stolen")));
    let redirected = app_with_webhooks(&service, &[]).await;
    let other = uuid_like(0xc0a);
    redirected.start(&other, 1).await;
    redirected.wait_state(&other, 1, "qr", LAUNCH).await;
    service
        .wait(QUICK, "the retries", |got| {
            got.iter().filter(|r| r.status == 307).count() >= 3
        })
        .await;
    assert!(
        elsewhere.received().is_empty(),
        "the redirect was not followed"
    );
    redirected.stop(&other, 1).await;

    // Without WEBHOOK_ALLOW_HTTP: https only.
    let strict = spawn_app(slow(), &[]).await;
    let r = strict
        .json(
            "PUT",
            &format!("/api/webhooks/{user}"),
            json!({"url": "http://example.com/x"}),
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
}

/// The daemon SIGKILLed while deliveries are owed: after the restart every event arrives.
#[actix_web::test]
async fn deliveries_owed_at_a_sigkill_arrive_after_the_restart() {
    let standin = StandIn::start(slow()).await;
    let service = Receiver::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let (wpp_path, wpp_sha) = wpp::install(tmp.path());
    let url = service.url("/service");
    let args = [
        "--wa-js-path",
        wpp_path.to_str().unwrap(),
        "--wa-js-sha256",
        &wpp_sha,
        "--webhook-url",
        &url,
        "--webhook-secret",
        SERVICE_SECRET,
        "--webhook-retry-schedule",
        "200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms",
    ];
    let mut d = daemon::start(tmp.path(), &standin.url(), &args).await;
    let user = uuid_like(0xc08);
    let phone = "4915100000208";
    d.call("POST", &format!("/api/start/{user}/1"), SERVICE_TOKEN)
        .await;
    let s = d.wait_state(&user, 1, LAUNCH, |s| s["state"] == "qr").await;
    standin
        .scan(s["qr"]["payload"].as_str().unwrap(), phone)
        .await
        .unwrap();
    d.wait_state(&user, 1, LAUNCH, |s| s["isConnected"] == true)
        .await;
    // A send with an idempotency key, answered before the kill.
    let send_body =
        json!({"to": "4917600000080", "text": "exactly once", "idempotencyKey": "restart-1"});
    let first = reqwest::Client::new()
        .post(d.url(&format!("/api/messages/{user}/1")))
        .bearer_auth(SERVICE_TOKEN)
        .json(&send_body)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    // The receiver is down; messages arrive and are stored; then the daemon dies.
    service.always(Some(503));
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            standin
                .incoming(phone, "4917600000008", &format!("k{i}"))
                .unwrap(),
        );
    }
    crate::support::harness::eventually(QUICK, "all five stored", || async {
        let (_, page) = d
            .call(
                "GET",
                &format!("/api/messages/{user}/1?limit=500"),
                SERVICE_TOKEN,
            )
            .await;
        let n = page["events"].as_array().map_or(0, |e| {
            e.iter()
                .filter(|e| e["type"] == "message" && e["data"]["fromMe"] == false)
                .count()
        });
        (n == 5).then_some(())
    })
    .await;
    d.signal(libc::SIGKILL);
    d.wait_exit(QUICK).await;
    service.always(None);
    let d2 = daemon::start(tmp.path(), &standin.url(), &args).await;
    service
        .wait(
            Duration::from_secs(20),
            "every owed message after the restart",
            |got| {
                ids.iter().all(|id| {
                    got.iter()
                        .any(|r| r.status == 200 && r.body.contains(id.as_str()))
                })
            },
        )
        .await;
    // The same key after the restart: the first answer, nothing sent again.
    let again = reqwest::Client::new()
        .post(d2.url(&format!("/api/messages/{user}/1")))
        .bearer_auth(SERVICE_TOKEN)
        .json(&send_body)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert_eq!(standin.sent().len(), 1, "sent once across the restart");
    d2.call("POST", &format!("/api/stop/{user}/1"), SERVICE_TOKEN)
        .await;
}

/// A burst of incoming messages while the database is briefly locked: all stored, in order.
#[actix_web::test]
async fn a_burst_while_the_database_is_slow_loses_nothing() {
    let t = spawn_app(slow(), &[]).await;
    let user = uuid_like(0xc09);
    let phone = "4915100000209";
    t.start(&user, 1).await;
    t.scan(&user, 1, phone).await;
    // Another writer holds SQLite's write lock for two seconds.
    let db = t.tmp.path().join("data/test.db");
    let locker = std::thread::spawn(move || {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        let mut c = diesel::SqliteConnection::establish(db.to_str().unwrap()).unwrap();
        c.batch_execute("BEGIN IMMEDIATE").unwrap();
        std::thread::sleep(Duration::from_secs(2));
        c.batch_execute("COMMIT").unwrap();
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(
            t.standin
                .incoming(phone, "4917600000009", &format!("b{i}"))
                .unwrap(),
        );
    }
    locker.join().unwrap();
    let msgs = crate::support::harness::eventually(QUICK, "the burst stored", || async {
        let msgs = stored(&t, &user, "message").await;
        (msgs.len() >= 30).then_some(msgs)
    })
    .await;
    let got: Vec<&str> = msgs
        .iter()
        .map(|e| e["data"]["id"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(got, want, "every message, in order");
    t.stop(&user, 1).await;
}

/// Isolation under load: three linked users, messages flowing both ways at once; each user's
/// events reach that user's stream, store and webhook only.
#[actix_web::test]
async fn messages_of_many_users_at_once_never_cross() {
    let service = Receiver::start().await;
    let hooks = Receiver::start().await;
    let t = app_with_webhooks(&service, &["--send-per-minute", "1000"]).await;
    let users: Vec<(String, String)> = (0..3)
        .map(|i| (uuid_like(0xc10 + i), format!("49151000003{i:02}")))
        .collect();
    let mut streams = Vec::new();
    for (user, phone) in &users {
        put_webhook(&t, user, &hooks.url(&format!("/{user}"))).await;
        t.start(user, 1).await;
        t.scan(user, 1, phone).await;
        let ticket = t
            .post(&format!("/api/events/{user}/ticket"), SERVICE_TOKEN)
            .await;
        streams.push(
            reqwest::Client::new()
                .get(t.url(ticket.json["url"].as_str().unwrap()))
                .send()
                .await
                .unwrap(),
        );
    }
    const EACH: usize = 10;
    let work = users.iter().map(|(user, phone)| {
        let t = &t;
        async move {
            for i in 0..EACH {
                let text = format!("out {user} {i}");
                let idem = format!("{user}-{i}");
                let (sent, incoming) =
                    tokio::join!(send(t, user, "4917600000099", &text, Some(&idem)), async {
                        t.standin
                            .incoming(phone, "4917600000099", &format!("in {user} {i}"))
                    });
                assert_eq!(sent.status, 201, "{sent:?}");
                incoming.unwrap();
                let status = t.get(&format!("/api/status/{user}/1"), SERVICE_TOKEN).await;
                assert_eq!(status.json["connectedNumber"], phone.as_str());
            }
        }
    });
    futures_util::future::join_all(work).await;

    for (user, _) in &users {
        let mine = crate::support::harness::eventually(QUICK, "every message stored", || async {
            let msgs = stored(&t, user, "message").await;
            (msgs.len() >= 2 * EACH).then_some(msgs)
        })
        .await;
        for e in &mine {
            assert_eq!(e["data"]["userId"], user.as_str());
            assert!(
                e["data"]["body"].as_str().unwrap().contains(user.as_str()),
                "{e}"
            );
        }
    }
    hooks
        .wait(QUICK, "every message at its webhook", |got| {
            got.iter().filter(|r| r.json()["type"] == "message").count() >= users.len() * 2 * EACH
        })
        .await;
    // Each webhook call carries its own user's event only (the path names the user).
    for (user, _) in &users {
        let at_mine: Vec<Value> = hooks
            .received()
            .iter()
            .map(|r| r.json())
            .filter(|j| j["data"]["userId"] == user.as_str())
            .collect();
        assert!(at_mine.len() >= 2 * EACH);
    }
    for r in hooks.received() {
        let body = r.json();
        let user = body["data"]["userId"].as_str().unwrap().to_owned();
        for (other, _) in users.iter().filter(|(u, _)| *u != user) {
            assert!(
                !r.body.contains(other.as_str()),
                "{} leaked into {user}'s webhook",
                other
            );
        }
    }
    // Each stream: its user's messages, nobody else's.
    for ((user, _), stream) in users.iter().zip(streams.iter_mut()) {
        let mut text = String::new();
        while text.matches("event: message\n").count() < 2 * EACH {
            let chunk = tokio::time::timeout(QUICK, stream.chunk())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        for (other, _) in users.iter().filter(|(u, _)| u != user) {
            assert!(
                !text.contains(other.as_str()),
                "{other} leaked into {user}'s stream"
            );
        }
    }
    assert_eq!(t.standin.sent().len(), users.len() * EACH);
    for (user, _) in &users {
        t.stop(user, 1).await;
    }
}
