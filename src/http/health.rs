use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::http::openapi::{Liveness, Readiness};
use crate::startup::AppState;

super::route_table! {
    get "/healthz" => healthz,
    get "/readyz" => readyz,
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "The process answers", body = Liveness)),
)]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Readiness: the database answers and Chromium was found.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready: which part is not", body = Readiness,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ),
)]
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let database = state.store.ping().await.map_err(|e| {
        log::warn!("readiness: database: {e}");
        "unreachable"
    });
    let chromium = state.sessions.chromium.as_ref().map_err(|_| "not found");
    let body = json!({
        "database": database.err().unwrap_or("ok"),
        "chromium": chromium.err().unwrap_or("ok"),
    });
    if database.is_ok() && chromium.is_ok() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "5"))
            .json(body)
    }
}
