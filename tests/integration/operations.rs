//! The seed's operations (docs/operations.md): backup and restore, the clean-up, deleting a
//! user — through the real binary's commands and the admin routes, with real Chromium on the
//! stand-in page, SQLite and PostgreSQL.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::daemon::{self, Daemon};
use crate::support::harness::{uuid_like, ADMIN_TOKEN, SERVICE_TOKEN};
use crate::support::manifest_of;
use crate::support::receiver::Receiver;
use crate::support::standin::{StandIn, StandInOptions};
use wa_supervisor::domain::{Intent, SessionKey, SessionState, Slot, UserId};
use wa_supervisor::store::{DatabaseUrl, SessionRow, Store};

const LAUNCH: Duration = Duration::from_secs(30);
const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn opts() -> StandInOptions {
    StandInOptions {
        rotation: Duration::from_secs(60),
        rotations: 6,
        ..Default::default()
    }
}

fn key(user: &str, slot: u16) -> SessionKey {
    SessionKey::new(
        UserId::parse(user).unwrap(),
        Slot::new(slot.into(), 10).unwrap(),
    )
}

/// A port nobody listens on: a command given it finds no daemon.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The folders of one daemon, and the settings its commands take.
struct Place {
    dir: PathBuf,
    port: u16,
    database: Option<String>,
    env: Vec<(String, String)>,
}

impl Place {
    fn new(dir: &Path) -> Place {
        Place {
            dir: dir.to_path_buf(),
            port: free_port(),
            database: None,
            env: Vec::new(),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn sessions(&self) -> PathBuf {
        self.dir.join("sessions")
    }

    fn store(&self) -> Store {
        let url = match &self.database {
            Some(url) => DatabaseUrl::parse(url).unwrap(),
            None => DatabaseUrl::Sqlite(self.data().join("wa-supervisor.db")),
        };
        Store::open(&url, 10).unwrap()
    }

    /// `wa-supervisor <args>` with this place's settings.
    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wa-supervisor"));
        cmd.args(["--bind-addr", &format!("127.0.0.1:{}", self.port)])
            .arg("--data-dir")
            .arg(self.data())
            .arg("--sessions-dir")
            .arg(self.sessions())
            .args(["--admin-token", ADMIN_TOKEN, "--api-token", SERVICE_TOKEN])
            .args(["--log", "warn"])
            .env_remove("DATABASE_URL")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args(args);
        if let Some(url) = &self.database {
            cmd.env("DATABASE_URL", url);
        }
        cmd
    }

    /// Runs the command: exit code, stdout, stderr.
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        outcome(self.command(args).output().unwrap())
    }

    /// [`Place::run`] without blocking the test's thread (the stand-in serves on it).
    async fn run_async(&self, args: &[&str]) -> (i32, String, String) {
        let mut cmd = tokio::process::Command::from(self.command(args));
        outcome(cmd.output().await.unwrap())
    }
}

fn outcome(out: std::process::Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every path below `dir` (empty when it does not exist).
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            out.push(e.path());
            if e.file_type().unwrap().is_dir() {
                out.extend(tree(&e.path()));
            }
        }
    }
    out.sort();
    out
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The content of a media row whose file is gone.
const LOST: &str = "5555555555555555555555555555555555555555555555555555555555555555";

/// A daemon's data without running it: two users' rows (one linked, with a login in its
/// profile), events and an owed delivery.
async fn offline_data(place: &Place) -> String {
    let store = place.store();
    let (a, b) = (uuid_like(0xa1), uuid_like(0xb1));
    for (k, number) in [(key(&a, 1), Some("4915100000101")), (key(&b, 2), None)] {
        store
            .save_session(
                SessionRow {
                    key: k.clone(),
                    state: SessionState::Stopped,
                    intent: Intent::Running,
                    is_connected: false,
                    connected_number: number.map(str::to_owned),
                    restarts: 0,
                    last_error: None,
                    created_ms: 1_700_000_000_000,
                    updated_ms: 1_700_000_000_000,
                },
                None,
            )
            .await
            .unwrap();
        store
            .append_event(
                wa_supervisor::store::NewOutboxEvent {
                    key: k,
                    kind: "message",
                    payload: "{\"body\":\"hi\"}".into(),
                    created_ms: wa_supervisor::store::now_ms(),
                    dedupe: None,
                    media: None,
                },
                true,
                None,
            )
            .await
            .unwrap();
    }
    // A media message whose content is gone from the disk (deleted by hand).
    store
        .append_event(
            wa_supervisor::store::NewOutboxEvent {
                key: key(&a, 1),
                kind: "message",
                payload: "{\"type\":\"image\"}".into(),
                created_ms: wa_supervisor::store::now_ms(),
                dedupe: Some("msg:LOST".into()),
                media: Some(wa_supervisor::store::MediaRow {
                    id: wa_supervisor::media::Media::id_of(&key(&a, 1), "LOST"),
                    key: key(&a, 1),
                    message_id: "LOST".into(),
                    state: wa_supervisor::store::MediaState::Stored,
                    sha256: Some(LOST.into()),
                    size: Some(10),
                    mimetype: Some("image/jpeg".into()),
                    filename: None,
                    error: None,
                    created_ms: 1_000,
                    updated_ms: 1_000,
                }),
            },
            true,
            None,
        )
        .await
        .unwrap();
    let login = place
        .sessions()
        .join(format!("{a}-slot1/Default/Local Storage/leveldb"));
    std::fs::create_dir_all(&login).unwrap();
    std::fs::write(login.join("000003.log"), vec![7u8; 40_000]).unwrap();
    a
}

#[allow(deprecated)] // X25519: what Debian's age-keygen makes.
fn age_key(dir: &Path, name: &str) -> (PathBuf, String) {
    use age::secrecy::ExposeSecret;
    let key = age::x25519::Identity::generate();
    let path = dir.join(name);
    std::fs::write(&path, format!("{}\n", key.to_string().expose_secret())).unwrap();
    (path, key.to_public().to_string())
}

#[actix_web::test]
async fn a_damaged_truncated_tampered_or_wrongly_keyed_backup_is_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let source = Place::new(&tmp.path().join("source"));
    let a = offline_data(&source).await;
    let (key_file, recipient) = age_key(tmp.path(), "key.txt");
    let (other_key, _) = age_key(tmp.path(), "other.txt");

    // With the daemon stopped, the command takes the backup itself.
    let plain = tmp.path().join("plain.backup");
    let (code, out, err) = source.run(&["backup", "--out", plain.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("with the daemon stopped: 2 sessions, 1 logins"),
        "{out}"
    );
    assert_eq!(mode(&plain), 0o600);
    assert!(!tmp.path().join("plain.backup.partial").exists());
    let sealed = tmp.path().join("sealed.backup");
    let (code, out, err) = source.run(&[
        "backup",
        "--out",
        sealed.to_str().unwrap(),
        "--encrypt-to",
        &recipient,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(std::fs::read(&sealed)
        .unwrap()
        .starts_with(b"age-encryption.org/"));

    // GNU tar reads the plain one; the manifest lists every entry.
    let listing = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&plain)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains(&format!("logins/{a}-slot1.tar.gz")),
        "{listing}"
    );
    assert!(listing.contains("db/outbox_events.jsonl"), "{listing}");
    assert!(listing.ends_with("manifest.json\n"), "{listing}");

    // The missing content is left out and listed, not a failed backup.
    assert_eq!(manifest_of(&plain)["missingMedia"], json!([LOST]));
    let bytes = std::fs::read(&plain).unwrap();
    let target = Place::new(&tmp.path().join("target"));
    let refused = |file: &Path, extra: &[&str], words: &str| {
        let mut args = vec!["restore", "--from", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        let (code, out, err) = target.run(&args);
        assert_eq!(code, 2, "{words}: {out}{err}");
        eprintln!("refused ({words}): {}", err.trim());
        assert!(err.contains(words), "{words}: {err}");
        assert!(
            tree(&target.dir).is_empty(),
            "{words}: nothing written: {:?}",
            tree(&target.dir)
        );
    };
    // One byte changed in a login, in a table, in a header, in the manifest; cut short.
    let at = |needle: &str| {
        let pos = bytes
            .windows(needle.len())
            .position(|w| w == needle.as_bytes())
            .unwrap();
        pos
    };
    let cases = [
        (
            at("logins/") + 512 + 100,
            format!("logins/{a}-slot1.tar.gz"),
        ),
        (
            at("db/outbox_events.jsonl") + 512 + 20,
            "db/outbox_events.jsonl".into(),
        ),
        (at("db/webhooks.jsonl") + 101, "db/webhooks.jsonl".into()),
        (at("\"createdAt\"") + 16, "manifest.json".into()),
    ];
    for (i, (pos, entry)) in cases.iter().enumerate() {
        let mut bad = bytes.clone();
        bad[*pos] ^= 0x01;
        let file = tmp.path().join(format!("bad{i}.backup"));
        std::fs::write(&file, &bad).unwrap();
        refused(&file, &[], entry);
    }
    let cut = tmp.path().join("cut.backup");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    refused(&cut, &[], "truncated");
    let foreign = tmp.path().join("foreign.tar");
    let made = std::process::Command::new("tar")
        .arg("-cf")
        .arg(&foreign)
        .arg("-C")
        .arg(tmp.path())
        .arg("key.txt")
        .status()
        .unwrap();
    assert!(made.success());
    refused(&foreign, &[], "not a wa-supervisor backup");
    refused(&sealed, &[], "--identity");
    refused(
        &sealed,
        &["--identity", other_key.to_str().unwrap()],
        "another key",
    );
    let mut sealed_bytes = std::fs::read(&sealed).unwrap();
    let n = sealed_bytes.len();
    sealed_bytes[n - 100] ^= 0x01;
    let bad_sealed = tmp.path().join("bad-sealed.backup");
    std::fs::write(&bad_sealed, &sealed_bytes).unwrap();
    refused(
        &bad_sealed,
        &["--identity", key_file.to_str().unwrap()],
        "decryption failed",
    );

    // Another process holds SESSIONS_DIR (a daemon on another address): both commands refuse.
    let held = wa_supervisor::browser::FolderLock::acquire(&source.sessions()).unwrap();
    let (code, _, err) = source.run(&["backup", "--out", tmp.path().join("x").to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("in use by another process") && err.contains("BIND_ADDR"),
        "{err}"
    );
    drop(held);
    let held = wa_supervisor::browser::FolderLock::acquire(&target.sessions()).unwrap();
    let (code, _, err) = target.run(&["restore", "--from", plain.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("stop it first"), "{err}");
    drop(held);
    std::fs::remove_dir_all(&target.dir).unwrap();

    // The good ones restore: the plain one here, the encrypted one with its key elsewhere.
    let (code, out, err) = target.run(&["restore", "--from", plain.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 sessions, 1 logins"), "{out}");
    let restored = target.sessions().join(format!(
        "{a}-slot1/Default/Local Storage/leveldb/000003.log"
    ));
    assert_eq!(std::fs::read(&restored).unwrap(), vec![7u8; 40_000]);
    assert_eq!(mode(&restored), 0o600);
    let rows = target.store().list_sessions(None).await.unwrap();
    assert_eq!(rows.len(), 2);
    let lost = target
        .store()
        .media(
            &key(&a, 1),
            &wa_supervisor::media::Media::id_of(&key(&a, 1), "LOST"),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lost.state, wa_supervisor::store::MediaState::Removed);
    assert_eq!(rows[0].connected_number.as_deref(), Some("4915100000101"));
    // A second restore into what is not empty any more is refused.
    let (code, _, err) = target.run(&["restore", "--from", plain.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("empty"), "{err}");

    let third = Place::new(&tmp.path().join("third"));
    let (code, out, err) = third.run(&[
        "restore",
        "--from",
        sealed.to_str().unwrap(),
        "--identity",
        key_file.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(third.store().list_sessions(None).await.unwrap().len(), 2);
}

impl Place {
    /// The daemon on this place (its port is the place's), with the WPP stand-in.
    async fn start(&mut self, standin: &StandIn, wpp: &(PathBuf, String)) -> Daemon {
        let mut envs: Vec<(&str, &str)> = vec![
            ("WA_JS_PATH", wpp.0.to_str().unwrap()),
            ("WA_JS_SHA256", wpp.1.as_str()),
        ];
        envs.extend(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if let Some(url) = &self.database {
            envs.push(("DATABASE_URL", url.as_str()));
        }
        let d = daemon::start_with(&self.dir, &standin.url(), &[], &envs, None).await;
        self.port = d.port;
        d
    }
}

/// Links `user:slot` on `d` to `phone` and waits until WA-JS drives it.
async fn link(d: &Daemon, standin: &StandIn, user: &str, slot: u16, phone: &str) {
    d.link(standin, user, slot, phone).await;
    d.wait_state(user, slot, LAUNCH, |s| s["bridge"] == "wa-js")
        .await;
}

/// Backs up a running daemon with two users' linked sessions and deliveries it owes, restores
/// the file into a fresh place (`target_db`: its database), and starts a daemon there.
async fn backup_restore_round_trip(target_db: Option<String>) {
    let standin = StandIn::start(opts()).await;
    let receiver = Receiver::start().await;
    receiver.always(Some(503));
    let tmp = tempfile::tempdir().unwrap();
    let wpp = crate::support::wpp::install(tmp.path());
    let hooks = vec![
        ("WEBHOOK_URL".to_owned(), receiver.url("/hook")),
        ("WEBHOOK_SECRET".to_owned(), WEBHOOK_SECRET.to_owned()),
        ("WEBHOOK_RETRY_SCHEDULE".to_owned(), "1h".to_owned()),
    ];
    let mut source = Place::new(&tmp.path().join("source"));
    source.env = hooks.clone();
    let mut d = source.start(&standin, &wpp).await;
    let (a, b) = (uuid_like(0x1a), uuid_like(0x1b));
    let linked = [
        (&a, 1, "4915100001101"),
        (&b, 1, "4915100001201"),
        (&b, 2, "4915100001202"),
    ];
    for (user, slot, phone) in linked {
        link(&d, &standin, user, slot, phone).await;
    }
    // A session that never linked: a row without a login.
    d.call("POST", &format!("/api/start/{a}/2"), SERVICE_TOKEN)
        .await;
    d.wait_state(&a, 2, LAUNCH, |s| s["state"] == "qr").await;
    d.call("POST", &format!("/api/stop/{a}/2"), SERVICE_TOKEN)
        .await;
    // Messages whose deliveries are owed: the receiver refuses them, the next try is in an hour.
    let mut bodies = Vec::new();
    for (i, (_, _, phone)) in linked.iter().enumerate() {
        let body = format!("owed message {i}");
        standin.incoming(phone, "4917000000001", &body).unwrap();
        bodies.push(body);
    }
    // Stored, and owed: each session's first delivery was refused, the rest wait behind it.
    for (i, (user, slot, _)) in linked.iter().enumerate() {
        let path = format!("/api/messages/{user}/{slot}");
        crate::support::harness::eventually(LAUNCH, "the message stored", || async {
            let (_, page) = d.call("GET", &path, SERVICE_TOKEN).await;
            page.to_string().contains(&bodies[i]).then_some(())
        })
        .await;
    }
    receiver
        .wait(LAUNCH, "a refused attempt for each session", |got| {
            got.iter().filter(|r| r.status == 503).count() >= linked.len()
        })
        .await;
    // Settle: the links' keys are on disk before the copy (a real page writes them lazily).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let issued = standin.issued_payloads().len();

    // While the backup runs: never two sessions of one user away at once, and messages keep
    // coming to one of them (each recorded once, whether it came while its browser was away).
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let during = {
        let watching = watching.clone();
        let standin = &standin;
        async move {
            let mut ids = Vec::new();
            while watching.load(std::sync::atomic::Ordering::SeqCst) {
                let body = format!("during the copy {}", ids.len());
                ids.push(
                    standin
                        .incoming(linked[1].2, "4917000000003", &body)
                        .unwrap(),
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            ids
        }
    };
    let watcher = {
        let (client, url, watching) = (d.client.clone(), d.url("/actors"), watching.clone());
        let linked: Vec<String> = linked.iter().map(|(u, s, _)| format!("{u}:{s}")).collect();
        tokio::spawn(async move {
            let mut most = 0usize;
            while watching.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok(res) = client.get(&url).bearer_auth(ADMIN_TOKEN).send().await {
                    let info: Value = res.json().await.unwrap_or(Value::Null);
                    let away = |user: &str| {
                        info["actors"].as_array().map_or(0, |all| {
                            all.iter()
                                .filter(|x| {
                                    let k = x["key"].as_str().unwrap_or("");
                                    k.starts_with(user)
                                        && linked.iter().any(|l| l == k)
                                        && x["state"] != "connected"
                                })
                                .count()
                        })
                    };
                    most = most.max(away(&linked[1][..36]));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            most
        })
    };
    // Over HTTP: admin only, a bad recipient is a 400, one backup at a time.
    let post = |token: &'static str, body: &'static str| {
        d.client
            .post(d.url("/admin/backup"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_eq!(post(SERVICE_TOKEN, "").await.unwrap().status(), 403);
    let bad = post(ADMIN_TOKEN, r#"{"encryptTo": ["age1nope"]}"#)
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let (first, second) = tokio::join!(post(ADMIN_TOKEN, ""), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        post(ADMIN_TOKEN, "{}").await
    });
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first.status(), 200);
    assert_eq!(second.status(), 409);
    let streamed = first.bytes().await.unwrap();
    assert!(
        streamed.ends_with(b"\n") && streamed.len() > 10_000,
        "{}",
        streamed.len()
    );
    for (user, slot, _) in linked {
        d.wait_state(user, slot, LAUNCH, |s| s["isConnected"] == true)
            .await;
    }

    let file = tmp.path().join("daemon.backup");
    let ((code, out, err), sent_during) = tokio::join!(
        async {
            let done = source
                .run_async(&["backup", "--out", file.to_str().unwrap()])
                .await;
            watching.store(false, std::sync::atomic::Ordering::SeqCst);
            done
        },
        during
    );
    assert_eq!(code, 0, "{out}{err}\n{}", d.log_text());
    assert!(out.contains("by the daemon at"), "{out}");
    assert!(
        watcher.await.unwrap() <= 1,
        "two sessions of one user were away at once"
    );
    assert_eq!(mode(&file), 0o600);
    let metrics = d
        .client
        .get(d.url("/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("wa_backups_total{outcome=\"ok\"} 2"),
        "{metrics}"
    );
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(
        metrics.contains(&format!("wa_backup_last_bytes {size}")),
        "{metrics}"
    );
    assert!(sent_during.len() >= 10, "{}", sent_during.len());
    let path = format!("/api/messages/{b}/1?limit=500");
    let recorded =
        crate::support::harness::eventually(LAUNCH, "every message recorded", || async {
            let (_, page) = d.call("GET", &path, SERVICE_TOKEN).await;
            let ids: Vec<String> = page["events"]
                .as_array()?
                .iter()
                .filter(|e| e["type"] == "message")
                .filter_map(|e| e["data"]["id"].as_str().map(str::to_owned))
                .collect();
            sent_during.iter().all(|id| ids.contains(id)).then_some(ids)
        })
        .await;
    for id in &sent_during {
        assert_eq!(recorded.iter().filter(|r| *r == id).count(), 1, "{id} once");
    }
    let manifest = manifest_of(&file);
    for (user, slot, phone) in linked {
        let s = manifest["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["userId"] == *user && s["slot"] == slot)
            .unwrap();
        assert_eq!(s["number"], phone, "{s}");
        assert_eq!(s["loginFrom"], "closed_browser", "{s}");
        let away = s["awayMs"].as_u64().unwrap_or_else(|| panic!("{s}"));
        eprintln!("{user}:{slot} away {away} ms for the copy");
        d.wait_state(user, slot, LAUNCH, |s| s["isConnected"] == true)
            .await;
    }
    // Not running: its profile as it lies (a never linked one holds the page's data, no login).
    let never = manifest["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["userId"] == *a && s["slot"] == 2)
        .unwrap();
    assert!(
        never["number"].is_null() && never["awayMs"].is_null(),
        "{never}"
    );
    assert_eq!(
        standin.issued_payloads().len(),
        issued,
        "no new QR for the copies"
    );

    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(30)).await.0, Some(0));

    // A fresh place: the file restores, the daemon brings every linked session back connected
    // without a scan, and the owed deliveries go out.
    let mut target = Place::new(&tmp.path().join("target"));
    target.env = hooks;
    target.database = target_db;
    let (code, out, err) = target
        .run_async(&["restore", "--from", file.to_str().unwrap()])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("4 sessions, "), "{out}");
    receiver.always(None);
    let d2 = target.start(&standin, &wpp).await;
    for (user, slot, phone) in linked {
        let s = d2
            .wait_state(user, slot, LAUNCH, |s| s["isConnected"] == true)
            .await;
        assert_eq!(s["connectedNumber"], phone);
    }
    assert_eq!(
        standin.issued_payloads().len(),
        issued,
        "restored without a scan"
    );
    receiver
        .wait(LAUNCH, "the owed deliveries, delivered", |got| {
            bodies.iter().all(|b| {
                got.iter()
                    .any(|r| r.status == 200 && r.body.contains(b.as_str()))
            })
        })
        .await;
    let (status, page) = d2
        .call("GET", &format!("/api/messages/{a}/1"), SERVICE_TOKEN)
        .await;
    assert_eq!(status, 200);
    assert!(page.to_string().contains("owed message 0"), "{page}");
    drop(d2);
}

#[actix_web::test]
async fn a_running_daemon_s_backup_restores_on_a_fresh_folder_connected_without_a_scan() {
    backup_restore_round_trip(None).await;
}

#[actix_web::test]
#[cfg_attr(skip_postgres, ignore = "WA_TEST_SKIP_POSTGRES=1")]
async fn a_backup_taken_on_sqlite_restores_into_postgresql() {
    let db = crate::support::cluster::PgDatabase::create().await;
    backup_restore_round_trip(Some(db.url())).await;
}

fn noise(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).rotate_left(seed as u32) as u8)
        .collect()
}

/// The keys `user:slot` of a purge report with `reason`.
fn listed(report: &Value, reason: &str) -> Vec<String> {
    let mut keys: Vec<String> = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["reason"] == reason)
        .map(|i| i["session"].as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    keys
}

/// A mixed set: the dry run lists each candidate with its reason and removes nothing; `apply`
/// removes exactly those (folder, row, events, audited); a linked or running session is never
/// one unless named, and a named running one is unlinked on WhatsApp's side first.
#[actix_web::test]
async fn a_purge_lists_then_removes_a_mixed_set_and_leaves_linked_sessions_alone() {
    use crate::support::harness::spawn_app;
    let t = spawn_app(opts(), &[]).await;
    let [linked, resting, idle, remote, gone, stray] =
        [0x31, 0x32, 0x33, 0x34, 0x35, 0x36].map(uuid_like);
    let k = |u: &str, s: u16| format!("{u}:{s}");
    t.link(&linked, 1, "4915100003101").await;
    t.link(&resting, 1, "4915100003201").await;
    assert_eq!(t.stop(&resting, 1).await, 200);
    // Never linked, stopped 40 days ago.
    assert_eq!(t.start(&idle, 1).await, 202);
    t.wait_state(&idle, 1, "qr", LAUNCH).await;
    assert_eq!(t.stop(&idle, 1).await, 200);
    let store = t.store();
    let mut row = store.load_session(&key(&idle, 1)).await.unwrap().unwrap();
    row.updated_ms -= 40 * 86_400_000;
    store.save_session(row, None).await.unwrap();
    // Unlinked from the phone, then stopped.
    t.link(&remote, 1, "4915100003401").await;
    t.standin.unlink("4915100003401").await.unwrap();
    t.wait_state(&remote, 1, "qr", LAUNCH).await;
    assert_eq!(t.stop(&remote, 1).await, 200);
    // Logged out here: the row stays, the folder is gone.
    assert_eq!(t.start(&gone, 1).await, 202);
    t.wait_state(&gone, 1, "qr", LAUNCH).await;
    assert_eq!(
        t.post(&format!("/api/logout/{gone}/1"), SERVICE_TOKEN)
            .await
            .status,
        200
    );
    // A folder no row names, and stale locks in a linked profile that rests.
    let sessions = t.sessions_dir();
    let stray_dir = sessions.join(format!("{stray}-slot1/Default"));
    std::fs::create_dir_all(&stray_dir).unwrap();
    std::fs::write(stray_dir.join("Preferences"), vec![1u8; 5000]).unwrap();
    let resting_dir = sessions.join(format!("{resting}-slot1"));
    std::fs::write(resting_dir.join(".wa-supervisor.lock"), "4194399").unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    std::os::unix::fs::symlink(
        format!("{}-4194399", host.trim()),
        resting_dir.join("SingletonLock"),
    )
    .unwrap();

    // Refusals: not an admin, a bad body, a bad or unknown name.
    let purge = |body: Value| t.json_as("POST", "/admin/purge", ADMIN_TOKEN, body);
    assert_eq!(t.json("POST", "/admin/purge", json!({})).await.status, 403);
    assert_eq!(purge(json!({"apply": "yes"})).await.status, 400);
    assert_eq!(purge(json!({"sessions": ["nobody"]})).await.status, 400);
    let unknown = purge(json!({"sessions": [k(&uuid_like(0x3f), 1)]})).await;
    assert_eq!(unknown.status, 404, "{:?}", unknown.json);

    let dry = t.post("/admin/purge", ADMIN_TOKEN).await;
    assert_eq!(dry.status, 200, "{:?}", dry.json);
    let report = dry.json;
    assert_eq!(report["applied"], false);
    assert_eq!(listed(&report, "idle"), [k(&idle, 1)], "{report}");
    assert_eq!(
        listed(&report, "logged_out_on_whatsapp"),
        [k(&remote, 1)],
        "{report}"
    );
    assert_eq!(
        listed(&report, "row_without_folder"),
        [k(&gone, 1)],
        "{report}"
    );
    assert_eq!(
        listed(&report, "folder_without_row"),
        [k(&stray, 1)],
        "{report}"
    );
    assert_eq!(listed(&report, "stale_lock"), [k(&resting, 1)], "{report}");
    assert_eq!(report["items"].as_array().unwrap().len(), 5, "{report}");
    assert!(report["bytes"].as_u64().unwrap() >= 5000, "{report}");
    assert!(
        store.load_session(&key(&idle, 1)).await.unwrap().is_some(),
        "a dry run removes nothing"
    );
    assert!(sessions.join(format!("{stray}-slot1")).exists());
    assert!(resting_dir.join(".wa-supervisor.lock").exists());

    // The command asks the running daemon the same.
    let mut cli = Place::new(&t.tmp.path().join("cli"));
    cli.port = t.port;
    let (code, out, err) = cli.run_async(&["purge"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("dry run: 5 to remove"), "{out}");

    let done = purge(json!({"apply": true})).await;
    assert_eq!(done.status, 200, "{:?}", done.json);
    assert_eq!(done.json["applied"], true);
    for item in done.json["items"].as_array().unwrap() {
        assert!(item["error"].is_null(), "{item}");
    }
    for (user, status) in [(&idle, 404), (&remote, 404), (&gone, 404)] {
        let r = t.get(&format!("/api/status/{user}/1"), SERVICE_TOKEN).await;
        assert_eq!(r.status, status, "{user}: {:?}", r.json);
        assert!(store.load_session(&key(user, 1)).await.unwrap().is_none());
        assert!(!sessions.join(format!("{user}-slot1")).exists());
        let audit = store.events(&key(user, 1)).await.unwrap();
        let last = audit.last().unwrap();
        assert_eq!(
            (last.kind.as_str(), last.actor.as_str()),
            ("purged", "admin")
        );
    }
    assert!(!sessions.join(format!("{stray}-slot1")).exists());
    assert!(!resting_dir.join(".wa-supervisor.lock").exists());
    assert!(std::fs::symlink_metadata(resting_dir.join("SingletonLock")).is_err());
    // Linked sessions, running or not, are untouched.
    let s = t
        .get(&format!("/api/status/{linked}/1"), SERVICE_TOKEN)
        .await;
    assert_eq!(s.json["state"], "connected");
    let s = t
        .get(&format!("/api/status/{resting}/1"), SERVICE_TOKEN)
        .await;
    assert_eq!(s.json["connectedNumber"], "4915100003201");
    assert!(resting_dir.join("Default").is_dir());
    let again = t.post("/admin/purge", ADMIN_TOKEN).await;
    assert_eq!(
        again.json["items"].as_array().unwrap().len(),
        0,
        "{:?}",
        again.json
    );

    // Named, a running linked session goes too: unlinked on WhatsApp's side first.
    let named = purge(json!({"apply": true, "sessions": [k(&linked, 1)]})).await;
    assert_eq!(named.status, 200, "{:?}", named.json);
    let item = &named.json["items"][0];
    assert_eq!(
        (
            item["reason"].as_str(),
            item["unlinkedOnWhatsApp"].as_bool()
        ),
        (Some("named"), Some(true)),
        "{item}"
    );
    assert_eq!(
        t.get(&format!("/api/status/{linked}/1"), SERVICE_TOKEN)
            .await
            .status,
        404
    );
    assert!(!sessions.join(format!("{linked}-slot1")).exists());
    assert_eq!(t.standin.self_logouts().len(), 1);
    assert_eq!(
        t.start(&linked, 1).await,
        202,
        "the slot can be linked again"
    );
    t.wait_state(&linked, 1, "qr", LAUNCH).await;
    assert_eq!(t.stop(&linked, 1).await, 200);
}

/// The platform's account deletion: every session of the user is unlinked on WhatsApp's side
/// (a stopped linked one is started briefly for it) and everything of theirs goes; another
/// user's sessions, events and media — even a content both received — are untouched.
#[actix_web::test]
async fn deleting_a_user_unlinks_and_removes_everything_of_theirs_and_nothing_of_another() {
    use crate::support::harness::spawn_app;
    let t = spawn_app(opts(), &[]).await;
    let (alice, bob) = (uuid_like(0x41), uuid_like(0x42));
    t.link(&alice, 1, "4915100004101").await;
    t.link(&alice, 2, "4915100004102").await;
    assert_eq!(t.stop(&alice, 2).await, 200);
    t.link(&bob, 1, "4915100004201").await;
    let hook = t
        .json(
            "PUT",
            &format!("/api/webhooks/{alice}"),
            json!({"url": "https://hooks.example.com/alice"}),
        )
        .await;
    assert_eq!(hook.status, 200, "{:?}", hook.json);
    // The same photo to both: one content on disk, two media.
    let photo = noise(100 * 1024, 5);
    for phone in ["4915100004101", "4915100004201"] {
        t.standin
            .incoming_media(
                phone,
                "4917000000002",
                "image",
                photo.clone(),
                "image/jpeg",
                None,
                None,
            )
            .unwrap();
    }
    let media_of = |user: String| {
        let t = &t;
        async move {
            crate::support::harness::eventually(LAUNCH, "the photo stored", || async {
                let r = t
                    .get(&format!("/api/messages/{user}/1"), SERVICE_TOKEN)
                    .await;
                r.json["events"].as_array().and_then(|events| {
                    events
                        .iter()
                        .find(|e| e["data"]["media"]["url"].is_string())
                        .map(|e| e["data"]["media"].clone())
                })
            })
            .await
        }
    };
    media_of(alice.clone()).await;
    let bob_media = media_of(bob.clone()).await;

    assert_eq!(
        t.call(
            "DELETE",
            &format!("/admin/users/{alice}"),
            Some(SERVICE_TOKEN)
        )
        .await
        .status,
        403
    );
    assert_eq!(
        t.call("DELETE", "/admin/users/not%20a%20user", Some(ADMIN_TOKEN))
            .await
            .status,
        400
    );
    let r = t
        .call(
            "DELETE",
            &format!("/admin/users/{alice}"),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    let d = &r.json;
    assert_eq!(d["webhook"], true, "{d}");
    let slots: Vec<(u64, bool)> = d["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["slot"].as_u64().unwrap(),
                s["unlinkedOnWhatsApp"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        slots,
        [(1, true), (2, true)],
        "both unlinked, the stopped one too: {d}"
    );
    assert_eq!(d["removed"]["rows"], 2, "{d}");
    assert_eq!(d["removed"]["media"], 1, "{d}");
    assert_eq!(
        d["removed"]["mediaBytes"], 0,
        "bob still has the content: {d}"
    );
    assert!(d["removed"]["events"].as_u64().unwrap() >= 1, "{d}");
    assert_eq!(t.standin.self_logouts().len(), 2);

    let store = t.store();
    for slot in [1, 2] {
        assert_eq!(
            t.get(&format!("/api/status/{alice}/{slot}"), SERVICE_TOKEN)
                .await
                .status,
            404
        );
        assert!(!t
            .sessions_dir()
            .join(format!("{alice}-slot{slot}"))
            .exists());
        let audit = store.events(&key(&alice, slot)).await.unwrap();
        assert_eq!(
            audit.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
            ["deleted"],
            "the trail goes, one event says who deleted it"
        );
        let events = store
            .events_after(&key(&alice, slot), 0, 100)
            .await
            .unwrap();
        assert!(events.is_empty(), "{events:?}");
    }
    assert_eq!(
        t.get(&format!("/api/webhooks/{alice}"), SERVICE_TOKEN)
            .await
            .status,
        404
    );
    let metrics = t.text("/metrics", ADMIN_TOKEN).await;
    assert!(
        metrics.contains("wa_sessions_removed_total{by=\"user_deletion\"} 2"),
        "{metrics}"
    );
    // Her actors are gone, not idle: the registry and `/actors` know nothing of her.
    let actors = t.get("/actors", ADMIN_TOKEN).await.json;
    assert!(!actors.to_string().contains(&alice), "{actors}");
    assert_eq!(actors["liveActors"], 1, "{actors}");

    // Bob: connected, his events and his media (the same content) untouched.
    let s = t.get(&format!("/api/status/{bob}/1"), SERVICE_TOKEN).await;
    assert_eq!(s.json["state"], "connected");
    let fetched = t
        .client
        .get(t.url(bob_media["url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.bytes().await.unwrap().to_vec(), photo);

    // Idempotent: nothing left to remove.
    let again = t
        .call(
            "DELETE",
            &format!("/admin/users/{alice}"),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(
        again.json["sessions"].as_array().unwrap().len(),
        0,
        "{:?}",
        again.json
    );
    assert_eq!(again.json["webhook"], false);
    assert_eq!(t.stop(&bob, 1).await, 200);
}

/// The migration's first backup (docs/migrating-from-node.md): legacy profiles adopted by
/// `import-sessions` have no number yet; the command, with the daemon stopped, copies their
/// logins as they lie, and the restore on another folder comes back connected without a scan.
#[actix_web::test]
async fn the_first_backup_after_an_import_holds_the_adopted_logins() {
    let standin = StandIn::start(opts()).await;
    let tmp = tempfile::tempdir().unwrap();
    let wpp = crate::support::wpp::install(tmp.path());
    let mut old = Place::new(&tmp.path().join("old"));
    let user = uuid_like(0x51);
    // A profile linked by "the old backend": only the folder remains.
    let mut d = old.start(&standin, &wpp).await;
    link(&d, &standin, &user, 1, "4915100005101").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(30)).await.0, Some(0));
    std::fs::remove_file(old.data().join("wa-supervisor.db")).unwrap();
    let (code, out, err) = old.run_async(&["import-sessions"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let issued = standin.issued_payloads().len();

    let file = tmp.path().join("first.backup");
    let (code, out, err) = old
        .run_async(&["backup", "--out", file.to_str().unwrap()])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("with the daemon stopped: 1 sessions, 1 logins"),
        "{out}"
    );
    let manifest = manifest_of(&file);
    assert_eq!(
        manifest["sessions"][0]["loginFrom"], "profile_at_rest",
        "{manifest}"
    );
    assert!(manifest["sessions"][0]["number"].is_null());

    let mut new = Place::new(&tmp.path().join("new"));
    let (code, out, err) = new
        .run_async(&["restore", "--from", file.to_str().unwrap()])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    let d2 = new.start(&standin, &wpp).await;
    let s = d2
        .wait_state(&user, 1, LAUNCH, |s| s["isConnected"] == true)
        .await;
    assert_eq!(s["connectedNumber"], "4915100005101");
    assert_eq!(standin.issued_payloads().len(), issued, "no scan");
    drop(d2);
}

/// `POST /api/logout` of a stopped linked session unlinks it on WhatsApp's side too: the
/// session is started on its profile just long enough (it used to only forget the login here).
#[actix_web::test]
async fn a_logout_of_a_stopped_linked_session_unlinks_it_on_whatsapp_s_side() {
    use crate::support::harness::spawn_app;
    let t = spawn_app(opts(), &[]).await;
    let user = uuid_like(0x61);
    t.link(&user, 1, "4915100006101").await;
    assert_eq!(t.stop(&user, 1).await, 200);
    let out = t
        .post(&format!("/api/logout/{user}/1"), SERVICE_TOKEN)
        .await;
    assert_eq!(out.status, 200, "{:?}", out.json);
    assert_eq!(out.json["unlinkedOnWhatsApp"], true, "{:?}", out.json);
    assert_eq!(out.json["state"], "stopped");
    assert!(out.json["connectedNumber"].is_null());
    assert_eq!(t.standin.self_logouts().len(), 1);
    assert!(!t.sessions_dir().join(format!("{user}-slot1")).exists());
}

/// The daemon killed (kill -9) in the middle of a backup, while a session's browser is closed
/// for its copy: the command fails and leaves no file, and the daemon started again brings every
/// session back connected without a scan (a copy keeps the session's intent: it is a recycle).
#[actix_web::test]
async fn a_daemon_killed_mid_backup_loses_no_session_and_leaves_no_file() {
    let standin = StandIn::start(opts()).await;
    let tmp = tempfile::tempdir().unwrap();
    let wpp = crate::support::wpp::install(tmp.path());
    let mut place = Place::new(&tmp.path().join("daemon"));
    let mut d = place.start(&standin, &wpp).await;
    let (a, b) = (uuid_like(0x71), uuid_like(0x72));
    let linked = [
        (&a, 1, "4915100007101"),
        (&a, 2, "4915100007102"),
        (&b, 1, "4915100007201"),
    ];
    for (user, slot, phone) in linked {
        link(&d, &standin, user, slot, phone).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let issued = standin.issued_payloads().len();

    let file = tmp.path().join("cut.backup");
    let args = ["backup", "--out", file.to_str().unwrap()];
    let backup = place.run_async(&args);
    let kill = async {
        crate::support::harness::eventually(LAUNCH, "a session away for its copy", || async {
            let (_, info) = d.call("GET", "/actors", ADMIN_TOKEN).await;
            info["actors"]
                .as_array()?
                .iter()
                .any(|x| x["state"] == "restarting")
                .then_some(())
        })
        .await;
        d.signal(libc::SIGKILL);
    };
    let ((code, out, err), ()) = tokio::join!(backup, kill);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("cut") || err.contains("the daemon"), "{err}");
    assert!(!file.exists());
    assert!(!tmp.path().join("cut.backup.partial").exists());
    d.wait_exit(Duration::from_secs(10)).await;

    let d2 = place.start(&standin, &wpp).await;
    for (user, slot, phone) in linked {
        let s = d2
            .wait_state(user, slot, LAUNCH, |s| s["isConnected"] == true)
            .await;
        assert_eq!(s["connectedNumber"], phone);
    }
    assert_eq!(standin.issued_payloads().len(), issued, "no scan");
    drop(d2);
}
