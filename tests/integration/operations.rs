//! The seed's operations (docs/operations.md): backup and restore, the clean-up, deleting a
//! user — through the real binary's commands and the admin routes, with real Chromium on the
//! stand-in page, SQLite and PostgreSQL.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::daemon::{self, Daemon};
use crate::support::harness::{uuid_like, ADMIN_TOKEN, SERVICE_TOKEN};
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

    /// Runs `wa-supervisor <args>` with this place's settings: exit code, stdout, stderr.
    fn run(&self, args: &[&str]) -> (i32, String, String) {
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
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
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
    /// [`Place::run`] without blocking the test's thread (the stand-in serves on it).
    async fn run_async(&self, args: &[&str]) -> (i32, String, String) {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wa-supervisor"));
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
        let out = cmd.output().await.unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

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

/// Starts `user:slot` on `d` and scans its QR code with `phone`.
async fn link(d: &Daemon, standin: &StandIn, user: &str, slot: u16, phone: &str) {
    let (status, body) = d
        .call("POST", &format!("/api/start/{user}/{slot}"), SERVICE_TOKEN)
        .await;
    assert_eq!(status, 202, "{body}");
    let s = d
        .wait_state(user, slot, LAUNCH, |s| s["state"] == "qr")
        .await;
    standin
        .scan(s["qr"]["payload"].as_str().unwrap(), phone)
        .await
        .unwrap();
    d.wait_state(user, slot, LAUNCH, |s| {
        s["isConnected"] == true && s["bridge"] == "wa-js"
    })
    .await;
}

/// The manifest of a plain backup file.
fn manifest_of(file: &Path) -> Value {
    let stage = tempfile::tempdir().unwrap();
    let input = std::io::BufReader::new(std::fs::File::open(file).unwrap());
    let staged = wa_supervisor::ops::archive::read(input, stage.path(), |bytes| {
        let m: wa_supervisor::ops::backup::Manifest =
            serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        Ok(m.entries)
    })
    .unwrap();
    serde_json::from_slice(&std::fs::read(staged.manifest()).unwrap()).unwrap()
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

    // While the backup runs: never two sessions of one user away at once.
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
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
    let file = tmp.path().join("daemon.backup");
    let (code, out, err) = source
        .run_async(&["backup", "--out", file.to_str().unwrap()])
        .await;
    watching.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(code, 0, "{out}{err}\n{}", d.log_text());
    assert!(out.contains("by the daemon at"), "{out}");
    assert!(
        watcher.await.unwrap() <= 1,
        "two sessions of one user were away at once"
    );
    assert_eq!(mode(&file), 0o600);
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
    let never = manifest["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["userId"] == *a && s["slot"] == 2)
        .unwrap();
    assert!(never["login"].is_null(), "{never}");
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
    assert!(out.contains("4 sessions, 3 logins"), "{out}");
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
