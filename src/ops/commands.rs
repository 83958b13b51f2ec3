//! `wa-supervisor backup | restore | purge` (docs/operations.md). Each finds out first whether a
//! daemon answers at `BIND_ADDR`: if so, it asks it (with the admin token: `ADMIN_TOKEN`, or the
//! one stored in `DATA_DIR/credentials`), so the work is done where the browsers run; if not, it
//! takes `SESSIONS_DIR`'s lock (refused while another process holds it) and works alone.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::archive::{Encrypted, Recipient, Sink};
use super::backup::{Backup, Logins};
use super::purge::{PurgeReport, PurgeRequest};
use super::remove::Remover;
use crate::config::Settings;
use crate::startup::Ground;

/// A command's failure: `refused` before anything happened (exit 2), or failed (exit 1).
#[derive(Debug)]
pub struct Failure {
    pub refused: bool,
    pub message: String,
}

fn refused(message: impl Into<String>) -> Failure {
    Failure {
        refused: true,
        message: message.into(),
    }
}

fn failed(message: impl Into<String>) -> Failure {
    Failure {
        refused: false,
        message: message.into(),
    }
}

/// The daemon at `BIND_ADDR`, if one listens: its base URL and the admin token.
async fn daemon(settings: &Settings) -> Result<Option<(String, String)>, Failure> {
    let mut addr = settings.bind_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let connect = tokio::net::TcpStream::connect(addr);
    match tokio::time::timeout(Duration::from_secs(3), connect).await {
        Ok(Ok(_)) => {}
        _ => return Ok(None),
    }
    let token = crate::auth::admin_token(settings)
        .map_err(|e| refused(e.to_string()))?
        .ok_or_else(|| {
            refused(format!(
                "a daemon answers at {addr}, but no ADMIN_TOKEN is set and {} holds none",
                settings
                    .data_dir
                    .join(crate::auth::CREDENTIALS_FILE)
                    .display()
            ))
        })?;
    Ok(Some((format!("http://{addr}"), token)))
}

fn client() -> reqwest::Client {
    crate::auth::install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client builds")
}

/// An error answer's sentence.
async fn refusal(res: reqwest::Response) -> Failure {
    let status = res.status().as_u16();
    let body = res.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or(body);
    let text = format!("the daemon answered {status}: {message}");
    if status < 500 {
        refused(text)
    } else {
        failed(text)
    }
}

/// `FILE.partial`, 0600, empty.
fn partial(out: &Path) -> Result<(PathBuf, std::fs::File), Failure> {
    let path = PathBuf::from(format!("{}.partial", out.display()));
    let open = || -> std::io::Result<std::fs::File> {
        crate::files::private_file(&path)?;
        let file = crate::files::open_no_follow(&path)?;
        file.set_len(0)?;
        Ok(file)
    };
    open()
        .map(|f| (path.clone(), f))
        .map_err(|e| refused(format!("{}: {e}", path.display())))
}

/// `wa-supervisor backup`.
pub async fn backup(
    settings: &Settings,
    out: &Path,
    encrypt_to: &[String],
) -> Result<String, Failure> {
    let recipients = encrypt_to
        .iter()
        .map(|r| r.parse::<Recipient>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(refused)?;
    let started = Instant::now();
    let (path, file) = partial(out)?;
    let written = match daemon(settings).await? {
        Some((base, token)) => {
            from_daemon(&base, &token, encrypt_to, tokio::fs::File::from_std(file)).await
        }
        None => alone(settings, &recipients, tokio::fs::File::from_std(file)).await,
    };
    let summary = match written {
        Ok(summary) => summary,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
    };
    std::fs::rename(&path, out).map_err(|e| failed(format!("{}: {e}", out.display())))?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(format!(
        "backup written to {} ({bytes} bytes{}) in {:.1} s{summary}\n",
        out.display(),
        if recipients.is_empty() {
            ""
        } else {
            ", encrypted"
        },
        started.elapsed().as_secs_f64(),
    ))
}

/// Asks the running daemon; writes what it streams.
async fn from_daemon(
    base: &str,
    token: &str,
    encrypt_to: &[String],
    mut file: tokio::fs::File,
) -> Result<String, Failure> {
    let mut res = client()
        .post(format!("{base}/admin/backup"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(serde_json::json!({ "encryptTo": encrypt_to }).to_string())
        .send()
        .await
        .map_err(|e| failed(format!("{base}: {}", crate::chain(&e))))?;
    if !res.status().is_success() {
        return Err(refusal(res).await);
    }
    loop {
        match res.chunk().await {
            Ok(Some(piece)) => file
                .send(piece)
                .await
                .map_err(|e| failed(format!("writing the backup: {e}")))?,
            Ok(None) => break,
            Err(e) => {
                return Err(failed(format!(
                    "the daemon's backup was cut ({}); see its log",
                    crate::chain(&e)
                )))
            }
        }
    }
    file.close()
        .await
        .map_err(|e| failed(format!("writing the backup: {e}")))?;
    Ok(format!(" by the daemon at {base}"))
}

/// The daemon is stopped: this process holds `SESSIONS_DIR` and does the backup itself.
async fn alone(
    settings: &Settings,
    recipients: &[Recipient],
    file: tokio::fs::File,
) -> Result<String, Failure> {
    let ground = Ground::prepare(settings)
        .await
        .map_err(|e| refused(no_daemon_at(settings, &e)))?;
    let media = open_media(settings, &ground).await?;
    let logins = if settings.cluster_token.is_some() {
        Logins::Snapshots
    } else {
        Logins::Profiles(ground.sessions.clone())
    };
    let job = Backup {
        store: ground.store.clone(),
        media,
        data_dir: settings.data_dir.clone(),
        logins,
    };
    let summary = if recipients.is_empty() {
        job.write(file).await
    } else {
        let sink = Encrypted::new(file, recipients).map_err(|e| failed(e.to_string()))?;
        job.write(sink).await
    }
    .map_err(|e| failed(crate::chain(&e)))?;
    let logins = summary
        .manifest
        .sessions
        .iter()
        .filter(|s| s.login.is_some())
        .count();
    Ok(format!(
        " with the daemon stopped: {} sessions, {logins} logins",
        summary.manifest.sessions.len()
    ))
}

/// A start refused because `SESSIONS_DIR` is held: say that no daemon answered at `BIND_ADDR`.
fn no_daemon_at(settings: &Settings, e: &crate::startup::StartupError) -> String {
    match e {
        crate::startup::StartupError::Locked { .. } => format!(
            "{}; no daemon answers at BIND_ADDR {} (set BIND_ADDR to the running daemon's address)",
            crate::chain(e),
            settings.bind_addr
        ),
        e => crate::chain(e),
    }
}

async fn open_media(
    settings: &Settings,
    ground: &Ground,
) -> Result<Arc<crate::media::Media>, Failure> {
    let media = crate::media::Media::open(
        ground.store.clone(),
        crate::media::MediaSettings {
            dir: settings.data_dir.join("media"),
            in_database: settings.cluster_token.is_some() && ground.store.backend() == "postgres",
            base: None,
            ttl: Duration::from_secs(settings.media_url_ttl_secs),
            max_bytes: settings.media_max_bytes.0,
            quota: settings.media_quota_bytes_per_user.0,
            retention_days: settings.media_retention_days,
        },
    )
    .await
    .map_err(|e| failed(crate::chain(&e)))?;
    Ok(Arc::new(media))
}

/// `wa-supervisor restore`.
pub async fn restore(
    settings: &Settings,
    from: &Path,
    identity: Option<&Path>,
) -> Result<String, Failure> {
    if daemon(settings).await.ok().flatten().is_some() {
        return Err(refused(format!(
            "a daemon answers at BIND_ADDR {}: stop it before a restore",
            settings.bind_addr
        )));
    }
    let done = super::restore::restore(settings, from, identity)
        .await
        .map_err(|e| match e {
            e @ (super::restore::RestoreError::Refused(_)
            | super::restore::RestoreError::NotEmpty(_)) => refused(crate::chain(&e)),
            e => failed(crate::chain(&e)),
        })?;
    let m = &done.manifest;
    let mut text = format!(
        "restored the backup of {} (wa-supervisor {}, {}): {} sessions, {} logins, {} rows, {} media contents{}\n",
        m.created_at,
        m.daemon_version,
        m.backend,
        m.sessions.len(),
        done.logins,
        done.rows,
        done.media,
        if done.credentials {
            ", the generated credentials"
        } else {
            ""
        }
    );
    for s in &m.sessions {
        text.push_str(&format!(
            "  {}:{}  {}  intent {}  {}\n",
            s.user_id,
            s.slot,
            s.number.as_deref().unwrap_or("not linked"),
            s.intent,
            if s.login.is_some() {
                "login restored"
            } else {
                "no login"
            }
        ));
    }
    text.push_str("start the daemon: the sessions meant to run come back from their profiles, without a scan\n");
    Ok(text)
}

/// `wa-supervisor purge`.
pub async fn purge(settings: &Settings, request: PurgeRequest) -> Result<String, Failure> {
    let report: PurgeReport = match daemon(settings).await? {
        Some((base, token)) => {
            let body = serde_json::json!({
                "apply": request.apply,
                "idleDays": request.idle_days,
                "sessions": request.sessions,
            });
            let res = client()
                .post(format!("{base}/admin/purge"))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .map_err(|e| failed(format!("{base}: {}", crate::chain(&e))))?;
            if !res.status().is_success() {
                return Err(refusal(res).await);
            }
            let bytes = res
                .bytes()
                .await
                .map_err(|e| failed(format!("{base}: {}", crate::chain(&e))))?;
            serde_json::from_slice(&bytes)
                .map_err(|e| failed(format!("{base}: an unreadable answer: {e}")))?
        }
        None => {
            let ground = Ground::prepare(settings)
                .await
                .map_err(|e| refused(no_daemon_at(settings, &e)))?;
            let remover = Remover {
                store: ground.store.clone(),
                media: open_media(settings, &ground).await?,
                sessions: ground.sessions.clone(),
                registry: None,
                this_node_only: false,
            };
            super::purge::purge(&remover, &request, settings.max_slots, "cli")
                .await
                .map_err(|e| match e {
                    e @ (super::purge::PurgeError::BadSession(_)
                    | super::purge::PurgeError::UnknownSession(_)) => refused(e.to_string()),
                    e => failed(crate::chain(&e)),
                })?
        }
    };
    Ok(render(&report))
}

/// The report as lines: what, why, how much; and the total.
pub fn render(report: &PurgeReport) -> String {
    let mut text = String::new();
    for item in &report.items {
        let what = match (&item.session, &item.path) {
            (Some(s), Some(p)) => format!("{s} ({p})"),
            (Some(s), None) => s.clone(),
            (None, Some(p)) => p.clone(),
            (None, None) => String::new(),
        };
        let outcome = match (&item.error, &item.removed, item.unlinked_on_whats_app) {
            (Some(e), _, _) => format!("  NOT removed: {e}"),
            (None, Some(_), Some(true)) => "  removed (unlinked on WhatsApp)".to_owned(),
            (None, Some(_), Some(false)) => "  removed (WhatsApp not told)".to_owned(),
            (None, Some(_), None) => "  removed".to_owned(),
            (None, None, _) => String::new(),
        };
        let reason = serde_json::to_value(item.reason)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        text.push_str(&format!(
            "{reason:<24} {what}  {} bytes{outcome}\n",
            item.bytes
        ));
    }
    let n = report.items.len();
    if report.applied {
        let failed = report.items.iter().filter(|i| i.error.is_some()).count();
        text.push_str(&format!(
            "removed {} of {n} ({} bytes); idle days {}\n",
            n - failed,
            report.bytes,
            report.idle_days
        ));
    } else {
        text.push_str(&format!(
            "dry run: {n} to remove ({} bytes); idle days {}; nothing removed (--apply removes them)\n",
            report.bytes, report.idle_days
        ));
    }
    text
}
