//! `/actors`: every actor as operators see it; JSON, or an HTML table for a browser.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::actors::registry::{RegistryHandle, RegistryInfo};
use crate::auth::Principal;
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
) -> Result<HttpResponse, ApiError> {
    who.authorize_admin()?;
    let states = registry.count_states().await?;
    let browsers = registry.browser_memory().await;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render(&states, browsers)))
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
) -> Result<HttpResponse, ApiError> {
    who.authorize_admin()?;
    let info = registry.inspect().await?;
    let wants_html = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    Ok(if wants_html {
        HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body(html(&info))
    } else {
        HttpResponse::Ok().json(info)
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn html(info: &RegistryInfo) -> String {
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
<th>uptime</th><th>relaunch in</th><th>last error</th></tr>{rows}</table></body></html>",
        info.known_sessions, info.live_actors, info.running_browsers, info.max_sessions
    )
}
