use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::startup::AppState;

/// Liveness: the process answers.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Readiness: the database answers and Chromium was found.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
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
