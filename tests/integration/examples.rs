//! The examples, run for real: `examples/bot-backend` (Node, `standardwebhooks`) as the user's
//! webhook of a daemon on the stand-in page. Every incoming message gets exactly one reply on the
//! stand-in phone, also when the receiver is SIGKILLed between its send and its dedupe record,
//! and when it is SIGKILLed from outside in the middle of a burst; forged requests get 401. Media
//! from the phone is answered with the size and SHA-256 of the bytes the bot fetched through the
//! event's signed link, a failed download with its reason.
//!
//! Needs `node` (18+) and the example's `node_modules` (`npm ci --prefix examples/bot-backend`,
//! which scripts/test.sh runs): without them the test fails and says so.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use wa_supervisor::webhooks::SigningSecret;

use crate::support::harness::{eventually, spawn_app, uuid_like, TestApp, SERVICE_TOKEN};
use crate::support::standin::StandInOptions;

/// How long every reply may take to reach the phone, restarts included.
const REPLIES: Duration = Duration::from_secs(30);
/// How long the receiver may take to start listening.
const BOOT: Duration = Duration::from_secs(15);

fn example_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/bot-backend")
}

/// Fails (never skips) when Node or the example's packages are missing.
fn require_node() {
    let version = std::process::Command::new("node")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| {
            panic!("`node` cannot be run ({e}): install Node.js 18+ (scripts/setup.sh installs npm, which brings it)")
        });
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 18,
        "examples/bot-backend needs Node.js 18+, found {version:?}"
    );
    let package = example_dir().join("node_modules/standardwebhooks/package.json");
    assert!(
        package.is_file(),
        "{} is missing: run `npm ci --prefix examples/bot-backend` (scripts/test.sh does)",
        package.display()
    );
}

/// Loaded with `node --import` into the receiver: SIGKILLs it right after its `n`th send was
/// answered, before it can record the webhook-id — the worst moment for a crash.
const CRASH_AFTER_SEND: &str = r#"
const n = Number(process.env.CRASH_AFTER_SENDS);
const realFetch = globalThis.fetch;
let sends = 0;
globalThis.fetch = async (url, init) => {
  const res = await realFetch(url, init);
  if (res.status === 201 && ++sends === n) {
    const key = JSON.parse(init.body).idempotencyKey;
    process.stderr.write(`crash-after-send: SIGKILL after send ${n} (${key})\n`);
    process.kill(process.pid, "SIGKILL");
    await new Promise(() => {});
  }
  return res;
};
"#;

/// The example receiver as a child process.
struct Bot {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

struct BotConfig<'a> {
    port: u16,
    secret: &'a str,
    api_url: String,
    dedupe_file: &'a Path,
    /// `(hook file, n)`: crash after the `n`th send.
    crash_after: Option<(&'a Path, u32)>,
}

impl Bot {
    async fn start(cfg: &BotConfig<'_>) -> Bot {
        let mut cmd = Command::new("node");
        if let Some((hook, n)) = cfg.crash_after {
            cmd.arg("--import")
                .arg(format!("file://{}", hook.display()))
                .env("CRASH_AFTER_SENDS", n.to_string());
        }
        let mut child = cmd
            .arg("server.mjs")
            .current_dir(example_dir())
            .env("WEBHOOK_SECRET", cfg.secret)
            .env("WA_API_URL", &cfg.api_url)
            .env("WA_API_TOKEN", SERVICE_TOKEN)
            .env("PORT", cfg.port.to_string())
            .env("HOST", "127.0.0.1")
            .env("DEDUPE_FILE", cfg.dedupe_file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().unwrap(), log.clone());
        collect(child.stderr.take().unwrap(), log.clone());
        let bot = Bot { child, log };
        eventually(BOOT, "the bot backend listening", || async {
            bot.lines()
                .iter()
                .any(|l| l.contains("bot-backend listening on"))
                .then_some(())
        })
        .await;
        bot
    }

    fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn kill(&mut self) {
        let pid = self.child.id().expect("the bot is running") as i32;
        // SAFETY: plain syscall on our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }

    /// Waits for the exit; the signal that ended it.
    async fn wait_killed(&mut self, limit: Duration) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the bot did not exit:\n{}", self.lines().join("\n")))
            .unwrap();
        status.signal()
    }
}

/// Copies a child's output into `log`, line by line (and to the test's output).
fn collect(out: impl AsyncRead + Unpin + Send + 'static, log: Arc<Mutex<Vec<String>>>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(out).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[bot] {line}");
            log.lock().unwrap().push(line);
        }
    });
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn put_webhook(t: &TestApp, user: &str, url: &str) -> String {
    let res = reqwest::Client::new()
        .put(t.url(&format!("/api/webhooks/{user}")))
        .bearer_auth(SERVICE_TOKEN)
        .json(&json!({ "url": url }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["secret"].as_str().unwrap().to_owned()
}

/// The texts the phone received, with how often each.
fn echoes(t: &TestApp) -> HashMap<String, usize> {
    let mut n = HashMap::new();
    for m in t.standin.sent() {
        *n.entry(m.body).or_default() += 1;
    }
    n
}

/// Waits until each of `texts` was echoed to the phone.
async fn wait_echoed(t: &TestApp, texts: &[String], what: &str) {
    eventually(REPLIES, what, || async {
        let got = echoes(t);
        texts
            .iter()
            .all(|text| got.contains_key(&format!("echo: {text}")))
            .then_some(())
    })
    .await
}

/// The deliveries to `user`'s webhook with this status.
async fn deliveries(t: &TestApp, user: &str, status: &str) -> Vec<Value> {
    let r = t
        .get(
            &format!("/api/webhooks/{user}/deliveries?status={status}"),
            SERVICE_TOKEN,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    r.json.as_array().unwrap().clone()
}

/// Posts a webhook to the bot as the daemon would; the status it answers.
async fn post_to_bot(
    port: u16,
    id: &str,
    timestamp: i64,
    signature: Option<&str>,
    body: &str,
) -> u16 {
    let mut req = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/webhook"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(sig) = signature {
        req = req
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", sig);
    }
    req.send().await.unwrap().status().as_u16()
}

#[actix_web::test]
async fn the_bot_backend_answers_each_message_exactly_once_across_restarts() {
    let began = Instant::now();
    require_node();
    let t = spawn_app(
        StandInOptions::default(),
        &[
            "--webhook-allow-http",
            "--webhook-allow-networks",
            "127.0.0.0/8",
            // Quick redelivery while the receiver is down; 40 × 250 ms outlasts any restart.
            "--webhook-retry-schedule",
            &["250ms"; 40].join(","),
        ],
    )
    .await;
    let user = uuid_like(0xe01);
    let (phone, contact) = ("4915100000401", "4917600000401");
    let port = free_port();
    let secret = put_webhook(&t, &user, &format!("http://127.0.0.1:{port}/webhook")).await;
    let hook = t.tmp.path().join("crash-after-send.mjs");
    std::fs::write(&hook, CRASH_AFTER_SEND).unwrap();
    let dedupe_file = t.tmp.path().join("bot-seen-webhook-ids.log");
    let mut cfg = BotConfig {
        port,
        secret: &secret,
        api_url: t.url(""),
        dedupe_file: &dedupe_file,
        crash_after: Some((&hook, 2)),
    };
    let mut bot = Bot::start(&cfg).await;
    t.start(&user, 1).await;
    t.scan(&user, 1, phone).await;

    let texts: Vec<String> = (1..=12)
        .map(|i| match i {
            3 => "grüße 👋 #3".to_owned(),
            i => format!("question #{i}"),
        })
        .collect();
    let mut ids = Vec::new();
    let mut incoming = |range: std::ops::Range<usize>| {
        for text in &texts[range] {
            ids.push(t.standin.incoming(phone, contact, text).unwrap());
        }
    };

    // 1. The receiver dies right after its second reply was sent, before recording the event:
    // the daemon redelivers it, the same idempotency key answers without sending again.
    incoming(0..4);
    assert_eq!(
        bot.wait_killed(REPLIES).await,
        Some(libc::SIGKILL),
        "the crash hook killed the bot"
    );
    let crash = eventually(BOOT, "the crash hook's line", || async {
        bot.lines()
            .into_iter()
            .find(|l| l.starts_with("crash-after-send:"))
    })
    .await;
    cfg.crash_after = None;
    bot = Bot::start(&cfg).await;
    let after_crash = bot.log.clone();
    wait_echoed(&t, &texts[0..4], "the first four replies").await;

    // 2. SIGKILLed from outside in the middle of a burst.
    incoming(4..9);
    wait_echoed(&t, &texts[4..5], "the burst under way").await;
    bot.kill();
    assert_eq!(bot.wait_killed(REPLIES).await, Some(libc::SIGKILL));
    bot = Bot::start(&cfg).await;

    // 3. More after the restarts.
    incoming(9..12);
    wait_echoed(&t, &texts, "every reply").await;
    // Nothing owed any more: every redelivery that could duplicate a reply has happened.
    eventually(REPLIES, "no delivery pending", || async {
        deliveries(&t, &user, "pending")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    assert_eq!(deliveries(&t, &user, "failed").await, Vec::<Value>::new());

    // Exactly one reply per incoming message, to its sender, from the linked number.
    let got = echoes(&t);
    for text in &texts {
        assert_eq!(
            got.get(&format!("echo: {text}")),
            Some(&1),
            "{text}: {got:?}"
        );
    }
    let sent = t.standin.sent();
    assert_eq!(sent.len(), texts.len(), "{sent:?}");
    for m in &sent {
        assert_eq!(m.to, format!("{contact}@c.us"));
        assert_eq!(m.from.as_deref(), Some(phone));
    }
    // The crash was after a send whose redelivery the restarted receiver answered.
    let crashed_on = crash.split("(reply-").nth(1).unwrap().trim_end_matches(')');
    assert!(ids.iter().any(|id| id == crashed_on), "{crash}");
    let replayed = format!("message {crashed_on}: replied");
    assert!(
        after_crash
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(&replayed)),
        "the restarted bot answered the redelivery of {crashed_on}"
    );

    // 4. The dedupe record survives restarts: an event re-queued on the daemon is not handled
    // again by the restarted receiver.
    let page = t
        .get(&format!("/api/messages/{user}/1?limit=500"), SERVICE_TOKEN)
        .await;
    let first = page.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "message" && e["data"]["id"] == ids[0].as_str())
        .unwrap()
        .clone();
    let first_event = first["id"].as_i64().unwrap();
    let delivery = deliveries(&t, &user, "delivered")
        .await
        .into_iter()
        .find(|d| d["eventId"] == first_event)
        .unwrap();
    let r = t
        .post(
            &format!("/api/webhooks/{user}/deliveries/{}/retry", delivery["id"]),
            SERVICE_TOKEN,
        )
        .await;
    assert_eq!(r.status, 202);
    let duplicate = format!("{} message duplicate", first["webhookId"].as_str().unwrap());
    eventually(
        REPLIES,
        "the re-queued event seen as a duplicate",
        || async {
            bot.lines()
                .iter()
                .any(|l| l.ends_with(&duplicate))
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        t.standin.sent().len(),
        texts.len(),
        "no reply for a duplicate"
    );

    // 5. Forged requests: 401, nothing sent. A control signed with the right secret is answered.
    let forged = |text: &str, id: &str| {
        json!({"type": "message", "timestamp": "2026-01-01T00:00:00Z", "data": {
            "userId": user, "slot": 1, "id": id, "chatId": format!("{contact}@c.us"),
            "from": format!("{contact}@c.us"), "to": format!("{phone}@c.us"), "fromMe": false,
            "type": "chat", "body": text, "timestamp": 1_700_000_000, "isGroup": false,
            "author": null}})
        .to_string()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let right = SigningSecret::parse(&secret).unwrap();
    let (wrong, _) = SigningSecret::generate();
    let body = forged("forged", &format!("false_{contact}@c.us_F0R6ED"));
    let cases = [
        (
            "another secret",
            now,
            Some(wrong.sign("evt_900001", now, body.as_bytes())),
        ),
        ("no signature", now, None),
        (
            "ten minutes old",
            now - 600,
            Some(right.sign("evt_900001", now - 600, body.as_bytes())),
        ),
        (
            "another body",
            now,
            Some(right.sign("evt_900001", now, b"{}")),
        ),
    ];
    for (why, ts, sig) in &cases {
        assert_eq!(
            post_to_bot(port, "evt_900001", *ts, sig.as_deref(), &body).await,
            401,
            "{why}"
        );
    }
    assert_eq!(
        t.standin.sent().len(),
        texts.len(),
        "nothing sent for forgeries"
    );
    let control = forged(
        "signed by the test",
        &format!("false_{contact}@c.us_C0N7R01"),
    );
    let sig = right.sign("evt_900002", now, control.as_bytes());
    assert_eq!(
        post_to_bot(port, "evt_900002", now, Some(&sig), &control).await,
        204
    );
    let got = echoes(&t);
    assert_eq!(got.get("echo: signed by the test"), Some(&1), "{got:?}");
    assert!(!got.keys().any(|k| k.contains("forged")), "{got:?}");

    // The receiver's record: each webhook-id once, whatever was redelivered.
    let record = std::fs::read_to_string(&dedupe_file).unwrap();
    let recorded: Vec<&str> = record.lines().filter(|l| !l.is_empty()).collect();
    let unique: std::collections::HashSet<&str> = recorded.iter().copied().collect();
    assert_eq!(unique.len(), recorded.len(), "{recorded:?}");
    assert!(
        recorded.iter().all(|id| id.starts_with("evt_")),
        "{recorded:?}"
    );

    bot.kill();
    bot.wait_killed(REPLIES).await;
    t.stop(&user, 1).await;
    eprintln!(
        "examples: the bot backend test took {:.1} s",
        began.elapsed().as_secs_f64()
    );
}

/// A small real PNG (`w`×`h`).
fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x as u8).wrapping_mul(9), (y as u8).wrapping_mul(7), 42])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// The texts the phone received that start with `prefix`.
fn replies_starting(t: &TestApp, prefix: &str) -> Vec<String> {
    t.standin
        .sent()
        .into_iter()
        .map(|m| m.body)
        .filter(|b| b.starts_with(prefix))
        .collect()
}

/// Media from the phone: the bot fetches each file through the event's signed link and answers
/// with the size and SHA-256 of what it got, which are those of the bytes the phone sent; a
/// media the daemon could not download is answered with why. One reply per message.
#[actix_web::test]
async fn the_bot_backend_answers_media_with_the_hash_of_the_fetched_bytes() {
    use wa_supervisor::browser::wajs::sha256_hex;
    require_node();
    let t = spawn_app(
        StandInOptions::default(),
        &[
            "--webhook-allow-http",
            "--webhook-allow-networks",
            "127.0.0.0/8",
            "--webhook-retry-schedule",
            &["250ms"; 40].join(","),
        ],
    )
    .await;
    let user = uuid_like(0xe02);
    let (phone, contact) = ("4915100000402", "4917600000402");
    let port = free_port();
    let secret = put_webhook(&t, &user, &format!("http://127.0.0.1:{port}/webhook")).await;
    let dedupe_file = t.tmp.path().join("bot-media-seen-webhook-ids.log");
    let mut bot = Bot::start(&BotConfig {
        port,
        secret: &secret,
        api_url: t.url(""),
        dedupe_file: &dedupe_file,
        crash_after: None,
    })
    .await;
    t.link(&user, 1, phone).await;

    // A photo with a caption: the reply is about the file (the caption is not echoed).
    let photo = png(40, 30);
    t.standin
        .incoming_media(
            phone,
            contact,
            "image",
            photo.clone(),
            "image/png",
            None,
            Some("our menu"),
        )
        .unwrap();
    let want = format!(
        "got your image: {} bytes, sha256 {}",
        photo.len(),
        sha256_hex(&photo)
    );
    eventually(REPLIES, "the reply to the photo", || async {
        replies_starting(&t, "got your image").into_iter().next()
    })
    .await;
    assert_eq!(replies_starting(&t, "got your image"), vec![want.clone()]);

    // A voice note of 300 KiB (the link streams it in more than one piece).
    let voice: Vec<u8> = (0..300 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    t.standin
        .incoming_media(
            phone,
            contact,
            "ptt",
            voice.clone(),
            "audio/ogg; codecs=opus",
            None,
            None,
        )
        .unwrap();
    let want_voice = format!(
        "got your voice note: {} bytes, sha256 {}",
        voice.len(),
        sha256_hex(&voice)
    );
    eventually(REPLIES, "the reply to the voice note", || async {
        replies_starting(&t, "got your voice note")
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(
        replies_starting(&t, "got your voice note"),
        vec![want_voice]
    );

    // WhatsApp's media servers fail the download: the reply says why.
    t.standin.fail_downloads(1);
    t.standin
        .incoming_media(
            phone,
            contact,
            "document",
            b"%PDF-1.7\nnot really".to_vec(),
            "application/pdf",
            Some("offer.pdf"),
            None,
        )
        .unwrap();
    let failed = eventually(REPLIES, "the reply to the failed download", || async {
        replies_starting(&t, "could not get your document: ")
            .into_iter()
            .next()
    })
    .await;
    assert!(failed.contains("download failed"), "{failed}");

    // The bot checks what it fetched against the announced hash: the photo's event (with a
    // fresh link) announcing another hash, signed as the daemon would sign it, is answered
    // with the hash of the bytes and that they do not match.
    let page = t
        .get(&format!("/api/messages/{user}/1?limit=500"), SERVICE_TOKEN)
        .await;
    let mut data = page.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "message" && e["data"]["type"] == "image")
        .unwrap_or_else(|| panic!("{}", page.json))["data"]
        .clone();
    let announced = "0".repeat(64);
    data["id"] = json!(format!("false_{contact}@c.us_7A3PERED"));
    data["media"]["sha256"] = json!(announced);
    let body =
        json!({"type": "message", "timestamp": "2026-01-01T00:00:00Z", "data": data}).to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let sig = SigningSecret::parse(&secret)
        .unwrap()
        .sign("evt_900101", now, body.as_bytes());
    assert_eq!(
        post_to_bot(port, "evt_900101", now, Some(&sig), &body).await,
        204
    );
    let mismatch = format!("{want} (does NOT match the sha256 {announced} the daemon announced)");
    assert_eq!(
        replies_starting(&t, "got your image"),
        vec![want.clone(), mismatch]
    );

    // A text still gets its echo.
    t.standin.incoming(phone, contact, "and a text").unwrap();
    wait_echoed(&t, &["and a text".to_owned()], "the echo after the media").await;

    // Every delivery ended; exactly one reply per message, to the sender, and the caption
    // never echoed.
    eventually(REPLIES, "no delivery pending", || async {
        deliveries(&t, &user, "pending")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    assert_eq!(deliveries(&t, &user, "failed").await, Vec::<Value>::new());
    let sent = t.standin.sent();
    let bodies: Vec<&str> = sent.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies.len(), 5, "{bodies:?}");
    assert_eq!(
        bodies.iter().filter(|b| **b == want).count(),
        1,
        "{bodies:?}"
    );
    assert!(!bodies.iter().any(|b| b.contains("our menu")), "{bodies:?}");
    for m in &sent {
        assert_eq!(m.to, format!("{contact}@c.us"));
        assert_eq!(m.from.as_deref(), Some(phone));
    }

    bot.kill();
    bot.wait_killed(REPLIES).await;
    t.stop(&user, 1).await;
}
