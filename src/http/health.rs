use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::actors::registry::RegistryHandle;
use crate::http::openapi::{Liveness, Readiness};

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

/// Readiness: the database answers (checked at most once a second) and the browser binary
/// sessions launch is there and executable (checked on every request); which engine and version
/// it is, the WA-JS in use, and the ffmpeg voice notes are transcoded with (`null`: none).
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
async fn readyz(
    registry: web::Data<RegistryHandle>,
    intake: web::Data<crate::messaging::Intake>,
) -> HttpResponse {
    let ready = registry.readiness().await;
    let database = ready.database.map_err(|_| "unreachable");
    let chromium = ready.browser.map_err(|e| {
        log::warn!("readiness: browser: {e}");
        "not found"
    });
    let body = json!({
        "database": database.err().unwrap_or("ok"),
        "chromium": chromium.err().unwrap_or("ok"),
        "browser": ready.binary,
        "waJs": ready.wa_js,
        // Voice notes only: a missing ffmpeg does not make the daemon unready.
        "ffmpeg": match intake.ffmpeg() {
            Some(path) => json!({ "path": path }),
            None => json!(null),
        },
    });
    if database.is_ok() && chromium.is_ok() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "5"))
            .json(body)
    }
}
