//! `/actors`: every actor as operators see it; JSON, or an HTML table for a browser.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::actors::registry::{RegistryHandle, RegistryInfo};
use crate::auth::Principal;
use crate::cluster::Cluster;
use crate::http::openapi::{Forbidden, Unauthorized, Unavailable};
use crate::http::ApiError;
use crate::http::AppState;

crate::http::route_table! {
    get "/actors" => actors,
    get "/metrics" => metrics,
}

/// Prometheus text: sessions by state, browsers and their memory, requests by route.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "admin",
    security(("bearer" = []), ("stackAccessToken" = [])),
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String),
        Unauthorized, Forbidden, Unavailable,
    ),
)]
async fn metrics(
    who: Principal,
    registry: web::Data<RegistryHandle>,
    state: web::Data<AppState>,
    cluster: web::Data<Option<Arc<Cluster>>>,
    media: Option<web::Data<crate::media::Media>>,
) -> Result<HttpResponse, ApiError> {
    who.authorize_admin()?;
    let states = registry.count_states().await?;
    let browsers = registry.browser_memory().await;
    let mut text = state
        .metrics
        .render(&states, browsers, registry.browser().as_ref());
    if let Some(cluster) = cluster.get_ref() {
        text.push_str(&cluster_metrics(cluster).await?);
    }
    if let Some(media) = &media {
        text.push_str(&media_metrics(media).await?);
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text))
}

/// Stored media by state (docs/media.md); never per user.
async fn media_metrics(media: &crate::media::Media) -> Result<String, ApiError> {
    let m = media
        .store()
        .media_stats()
        .await
        .map_err(ApiError::internal)?;
    Ok(format!(
        "# HELP wa_media_bytes Bytes of stored incoming media: a delivery of its event still owed, or every delivery ended.\n\
         # TYPE wa_media_bytes gauge\n\
         wa_media_bytes{{state=\"owed\"}} {}\n\
         wa_media_bytes{{state=\"delivered\"}} {}\n\
         # HELP wa_media_items Incoming media by state.\n\
         # TYPE wa_media_items gauge\n\
         wa_media_items{{state=\"stored\"}} {}\n\
         wa_media_items{{state=\"failed\"}} {}\n\
         wa_media_items{{state=\"removed\"}} {}\n",
        m.owed_bytes, m.delivered_bytes, m.stored, m.failed, m.removed
    ))
}

/// The cluster as this node sees it: nodes alive, its leases and their epochs.
async fn cluster_metrics(cluster: &Cluster) -> Result<String, ApiError> {
    use std::fmt::Write as _;
    let nodes = cluster
        .store
        .nodes(cluster.ttl)
        .await
        .map_err(ApiError::internal)?;
    let held = cluster.leases();
    let node = &cluster.node;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP wa_cluster_nodes Nodes of the cluster, by heartbeat."
    );
    let _ = writeln!(out, "# TYPE wa_cluster_nodes gauge");
    let alive = nodes.iter().filter(|n| n.alive).count();
    let _ = writeln!(out, "wa_cluster_nodes{{alive=\"true\"}} {alive}");
    let _ = writeln!(
        out,
        "wa_cluster_nodes{{alive=\"false\"}} {}",
        nodes.len() - alive
    );
    let _ = writeln!(
        out,
        "# HELP wa_cluster_node_leases Live leases each node holds."
    );
    let _ = writeln!(out, "# TYPE wa_cluster_node_leases gauge");
    for n in &nodes {
        let _ = writeln!(
            out,
            "wa_cluster_node_leases{{node=\"{}\"}} {}",
            n.node, n.leases
        );
    }
    let _ = writeln!(
        out,
        "# HELP wa_cluster_lease_epoch The epoch of each lease this node holds."
    );
    let _ = writeln!(out, "# TYPE wa_cluster_lease_epoch gauge");
    for (key, fence) in held {
        let _ = writeln!(
            out,
            "wa_cluster_lease_epoch{{node=\"{node}\",user_id=\"{}\",slot=\"{}\"}} {}",
            key.user_id(),
            key.slot(),
            fence.epoch
        );
    }
    Ok(out)
}

/// Every actor: key, state, browser pid, profile path, restarts, uptime, last error.
#[utoipa::path(
    get,
    path = "/actors",
    tag = "admin",
    security(("bearer" = []), ("stackAccessToken" = [])),
    responses(
        (status = 200, description = "JSON, or an HTML table when `Accept` asks for text/html", content(
            (RegistryInfo = "application/json"),
            (String = "text/html"),
        )),
        Unauthorized, Forbidden, Unavailable,
    ),
)]
async fn actors(
    req: HttpRequest,
    who: Principal,
    registry: web::Data<RegistryHandle>,
    cluster: web::Data<Option<Arc<Cluster>>>,
) -> Result<HttpResponse, ApiError> {
    who.authorize_admin()?;
    let info = registry.inspect().await?;
    let cluster = match cluster.get_ref() {
        Some(c) => Some(super::nodes::view(c).await?),
        None => None,
    };
    let wants_html = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    Ok(if wants_html {
        HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body(html(&info, cluster.as_ref()))
    } else {
        let mut json = serde_json::to_value(&info).map_err(ApiError::internal)?;
        json["cluster"] = serde_json::to_value(&cluster).map_err(ApiError::internal)?;
        HttpResponse::Ok().json(json)
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn html(info: &RegistryInfo, cluster: Option<&super::nodes::ClusterView>) -> String {
    let nodes: String = cluster
        .map(|c| {
            let rows: String = c
                .nodes
                .iter()
                .map(|n| {
                    format!(
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}/{}</td><td>{}</td><td>{}</td></tr>",
                        esc(&n.node),
                        esc(&n.url),
                        if n.alive { "alive" } else { "silent" },
                        n.running,
                        n.capacity,
                        n.leases,
                        if n.draining { "draining" } else { "" },
                    )
                })
                .collect();
            format!(
                "<h2>Cluster (answered by {})</h2><table><tr><th>node</th><th>url</th><th>heartbeat</th>\
<th>running/capacity</th><th>leases</th><th></th></tr>{rows}</table>",
                esc(&c.node)
            )
        })
        .unwrap_or_default();
    let rows: String = info
        .actors
        .iter()
        .map(|a| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} s</td><td>{}</td><td>{}</td></tr>",
                esc(&a.key),
                a.session.state,
                a.session.connected_number.as_deref().map(esc).unwrap_or_default(),
                a.browser_pid.map(|p| p.to_string()).unwrap_or_default(),
                esc(&a.profile_path.display().to_string()),
                a.session.restarts,
                a.uptime_secs,
                a.restart_in_ms.map(|ms| format!("{ms} ms")).unwrap_or_default(),
                a.session.last_error.as_deref().map(esc).unwrap_or_default(),
            )
        })
        .collect();
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>wa-supervisor actors</title>\
<style>body{{font:14px system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}\
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}th{{background:#f4f4f4}}</style></head><body>\
<h1>Actors</h1><p>{} known sessions, {} live actors, {} running browsers (max {}).</p>\
<table><tr><th>key</th><th>state</th><th>number</th><th>browser pid</th><th>profile</th><th>restarts</th>\
<th>uptime</th><th>relaunch in</th><th>last error</th></tr>{rows}</table>{nodes}</body></html>",
        info.known_sessions, info.live_actors, info.running_browsers, info.max_sessions
    )
}
