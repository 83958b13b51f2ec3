//! The seed's operations for operators (docs/operations.md): `POST /admin/backup` streams a
//! backup, `POST /admin/purge` cleans up (a dry run unless asked), `DELETE /admin/users/{userId}`
//! deletes a user's everything. Admin token only.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::actors::registry::RegistryHandle;
use crate::auth::Principal;
use crate::cluster::Cluster;
use crate::http::extract::UserPath;
use crate::http::openapi::{Forbidden, Unauthorized, Unavailable};
use crate::http::ApiError;
use crate::ops::archive::{Encrypted, Recipient};
use crate::ops::backup::{Backup, Logins};
use crate::ops::purge::{PurgeError, PurgeReport, PurgeRequest};
use crate::ops::remove::{NodePart, RemoveError, UserDeletion};
use crate::ops::Ops;

crate::http::route_table! {
    post "/admin/backup" => backup,
    post "/admin/purge" => purge,
    delete "/admin/users/{userId}" => delete_user,
}

/// `POST /admin/backup`'s body (optional).
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupRequest {
    /// age recipients (`age1…`) to encrypt the backup to; none: plain.
    #[serde(default)]
    pub encrypt_to: Vec<String>,
}

/// An optional JSON body: empty is the default, anything else must parse (400 otherwise).
fn optional_body<T: Default + serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("the body: {e}")))
}

/// A backup of the whole daemon, streamed: each linked session's login taken from a closed
/// browser (one session at a time, each away about a second), the rows, the media, a manifest.
#[utoipa::path(
    post,
    path = "/admin/backup",
    tag = "admin",
    request_body(content = Option<BackupRequest>, description = "Optional: age recipients", content_type = "application/json"),
    security(("bearer" = []), ("stackAccessToken" = [])),
    responses(
        (status = 200, description = "The backup file (docs/operations.md), streamed as it is made; a cut stream is an incomplete file, which a restore refuses", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "`bad_request`: not an age recipient", body = crate::http::error::ErrorBody),
        (status = 409, description = "`backup_in_progress`", body = crate::http::error::ErrorBody),
        Unauthorized, Forbidden, Unavailable,
    ),
)]
async fn backup(
    who: Principal,
    body: web::Bytes,
    registry: web::Data<RegistryHandle>,
    ops: web::Data<Ops>,
    state: web::Data<crate::http::AppState>,
) -> Result<HttpResponse, ApiError> {
    who.authorize_admin()?;
    let request: BackupRequest = optional_body(&body)?;
    let recipients = request
        .encrypt_to
        .iter()
        .map(|r| r.parse::<Recipient>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::BadRequest)?;
    let guard = ops.try_backup().ok_or(ApiError::BackupInProgress)?;
    let job = Backup {
        store: registry.store().clone(),
        media: ops.media.clone(),
        data_dir: ops.data_dir.clone(),
        logins: Logins::Daemon(registry.get_ref().clone()),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<web::Bytes>>(8);
    let sink = tx.clone();
    let by = who.audit_name();
    let metrics = state.metrics.clone();
    actix_web::rt::spawn(async move {
        use std::sync::atomic::Ordering::Relaxed;
        let _one_at_a_time = guard;
        let written = if recipients.is_empty() {
            job.write(sink).await
        } else {
            match Encrypted::new(sink, &recipients) {
                Ok(sink) => job.write(sink).await,
                Err(source) => Err(crate::ops::backup::BackupError::Io {
                    what: "age".to_owned(),
                    source,
                }),
            }
        };
        match written {
            Ok(s) => {
                metrics.backups_ok.fetch_add(1, Relaxed);
                metrics
                    .backup_last_ok_secs
                    .store((crate::store::now_ms() / 1000) as u64, Relaxed);
                metrics.backup_last_bytes.store(s.bytes, Relaxed);
                log::info!(
                    "backup by {by}: {} sessions, {} logins, {} bytes in {} ms{}",
                    s.manifest.sessions.len(),
                    s.manifest
                        .sessions
                        .iter()
                        .filter(|x| x.login.is_some())
                        .count(),
                    s.bytes,
                    s.took.as_millis(),
                    if recipients.is_empty() {
                        ""
                    } else {
                        " (encrypted)"
                    }
                )
            }
            Err(e) => {
                metrics.backups_failed.fetch_add(1, Relaxed);
                let why = crate::chain(&e);
                log::error!("backup by {by} failed: {why}");
                // The response ends without its end: the receiver has an incomplete file.
                let _ = tx.send(Err(std::io::Error::other(why))).await;
            }
        }
    });
    let name = format!(
        "wa-supervisor-{}.backup",
        crate::actors::session::rfc3339(crate::store::now_ms()).replace([':', '.'], "-")
    );
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        ))
        .streaming(tokio_stream(rx)))
}

/// The receiver as a body stream.
fn tokio_stream(
    rx: tokio::sync::mpsc::Receiver<std::io::Result<web::Bytes>>,
) -> impl futures_util::Stream<Item = std::io::Result<web::Bytes>> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}

/// The clean-up: lists (and with `apply` removes) stopped or failed sessions without a number
/// unchanged for `idleDays`, sessions logged out on WhatsApp's side, rows whose folder is gone,
/// folders without a row, stale lock files; and the sessions named in `sessions`, whatever their
/// state (logged out first).
#[utoipa::path(
    post,
    path = "/admin/purge",
    tag = "admin",
    request_body(content = Option<PurgeRequest>, content_type = "application/json"),
    security(("bearer" = []), ("stackAccessToken" = [])),
    responses(
        (status = 200, description = "What is (or was) removed, why, and the bytes", body = PurgeReport),
        (status = 400, description = "`bad_request`: a malformed body or session name", body = crate::http::error::ErrorBody),
        (status = 404, description = "`unknown_session`: a named session has no row and no folder", body = crate::http::error::ErrorBody),
        Unauthorized, Forbidden, Unavailable,
    ),
)]
async fn purge(
    who: Principal,
    body: web::Bytes,
    registry: web::Data<RegistryHandle>,
    ops: web::Data<Ops>,
    state: web::Data<crate::http::AppState>,
) -> Result<HttpResponse, ApiError> {
    who.authorize_admin()?;
    let request: PurgeRequest = optional_body(&body)?;
    let _one_at_a_time = ops.removals.lock().await;
    let remover = ops.remover(registry.get_ref().clone());
    let report = crate::ops::purge::purge(&remover, &request, ops.max_slots, &who.audit_name())
        .await
        .map_err(|e| match e {
            PurgeError::BadSession(why) => ApiError::BadRequest(why),
            PurgeError::UnknownSession(_) => ApiError::UnknownSession,
            e => ApiError::internal(e),
        })?;
    let removed = report
        .items
        .iter()
        .filter(|i| i.removed.as_ref().is_some_and(|r| r.rows > 0) && i.error.is_none())
        .count();
    state
        .metrics
        .removed_purge
        .fetch_add(removed as u64, std::sync::atomic::Ordering::Relaxed);
    Ok(HttpResponse::Ok().json(report))
}

/// Deletes a user: each session logged out (unlinked on WhatsApp's side, a stopped linked one
/// started briefly for it), then rows, audit trail, events, deliveries, send keys, media, the
/// webhook, snapshots and profile folders — on every node. Idempotent.
#[utoipa::path(
    delete,
    path = "/admin/users/{userId}",
    tag = "admin",
    params(("userId" = String, Path, description = "The user's id")),
    security(("bearer" = []), ("stackAccessToken" = [])),
    responses(
        (status = 200, description = "What was removed (nothing, the second time)", body = UserDeletion),
        (status = 400, description = "`invalid_user_id`", body = crate::http::error::ErrorBody),
        Unauthorized, Forbidden, Unavailable,
    ),
)]
async fn delete_user(
    req: HttpRequest,
    who: Principal,
    UserPath(user): UserPath,
    registry: web::Data<RegistryHandle>,
    ops: web::Data<Ops>,
    cluster: web::Data<Option<Arc<Cluster>>>,
    state: web::Data<crate::http::AppState>,
) -> Result<HttpResponse, ApiError> {
    who.authorize_admin()?;
    let _one_at_a_time = ops.removals.lock().await;
    let by = who.audit_name();
    let mut remover = ops.remover(registry.get_ref().clone());
    let cluster = cluster.get_ref().clone();
    // Another node's call: its part here only (the sessions this node runs, its folders).
    let from_node = cluster
        .as_ref()
        .is_some_and(|c| crate::cluster::forward::from_node(c, req.headers()) == Some(true));
    remover.this_node_only = from_node;
    let mut nodes = Vec::new();
    let mut theirs = Vec::new();
    if let (Some(cluster), false) = (&cluster, from_node) {
        (nodes, theirs) = ask_the_others(cluster, &req, &user).await?;
    }
    let mut deletion = remover
        .delete_user(&user, &by)
        .await
        .map_err(|e: RemoveError| ApiError::internal(e))?;
    // What the other nodes did for a slot: the node that ran it told WhatsApp, and knew its number.
    for (slot, unlinked, number) in theirs {
        if let Some(s) = deletion.sessions.iter_mut().find(|s| s.slot.get() == slot) {
            s.unlinked_on_whats_app |= unlinked;
            if s.number.is_none() {
                s.number = number;
            }
        }
    }
    deletion.nodes = nodes;
    state
        .metrics
        .removed_deletion
        .fetch_add(deletion.removed.rows, std::sync::atomic::Ordering::Relaxed);
    Ok(HttpResponse::Ok().json(deletion))
}

/// Per slot, what another node's part of a deletion said: `(slot, unlinked, number)`.
type TheirPart = (u16, bool, Option<String>);

/// Cluster mode: every other live node logs out the user's sessions it runs and forgets its
/// part, before this node deletes the shared rows.
async fn ask_the_others(
    cluster: &Cluster,
    req: &HttpRequest,
    user: &crate::domain::UserId,
) -> Result<(Vec<NodePart>, Vec<TheirPart>), ApiError> {
    let nodes = cluster
        .store
        .nodes(cluster.ttl)
        .await
        .map_err(ApiError::internal)?;
    let mut parts = Vec::new();
    let mut theirs = Vec::new();
    for node in nodes.iter().filter(|n| n.alive && n.node != cluster.node) {
        let url = format!(
            "{}/admin/users/{}",
            node.url.trim_end_matches('/'),
            user.as_str()
        );
        let mut call = cluster
            .client
            .delete(&url)
            .timeout(std::time::Duration::from_secs(600))
            .header(
                crate::cluster::forward::TOKEN_HEADER,
                cluster.token.expose(),
            )
            .header(crate::cluster::forward::FROM_HEADER, cluster.node.as_str());
        for name in [header::AUTHORIZATION.as_str(), "x-stack-access-token"] {
            if let Some(value) = req.headers().get(name) {
                call = call.header(name, value.as_bytes());
            }
        }
        let outcome = match call.send().await {
            Ok(res) if res.status().is_success() => {
                let body = res.bytes().await.unwrap_or_default();
                let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                for s in answer["sessions"].as_array().into_iter().flatten() {
                    if let Some(slot) = s["slot"].as_u64().and_then(|n| u16::try_from(n).ok()) {
                        theirs.push((
                            slot,
                            s["unlinkedOnWhatsApp"] == true,
                            s["number"].as_str().map(str::to_owned),
                        ));
                    }
                }
                "ok".to_owned()
            }
            Ok(res) => format!("answered {}", res.status().as_u16()),
            Err(e) => format!("did not answer: {}", crate::chain(&e)),
        };
        if outcome != "ok" {
            log::warn!(
                "deleting {user}: node {} {outcome}; its folders stay until its own purge",
                node.node
            );
        }
        parts.push(NodePart {
            node: node.node.clone(),
            outcome,
        });
    }
    Ok((parts, theirs))
}
