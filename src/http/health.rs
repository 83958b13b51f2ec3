use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use serde_json::json;
use tokio::sync::Mutex;

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

/// How long a database check answers `/readyz` (unauthenticated: at most one ping a second).
const DB_CHECK_TTL: Duration = Duration::from_secs(1);

/// The last database check, shared by every request.
#[derive(Default)]
pub struct DbCheck(Mutex<Option<(Instant, bool)>>);

impl DbCheck {
    /// The cached answer when fresh, else `ping()`'s (one ping at a time; others wait for it).
    pub async fn reachable<F>(&self, ping: impl FnOnce() -> F) -> bool
    where
        F: std::future::Future<Output = bool>,
    {
        let mut last = self.0.lock().await;
        match *last {
            Some((at, ok)) if at.elapsed() < DB_CHECK_TTL => ok,
            _ => {
                let ok = ping().await;
                *last = Some((Instant::now(), ok));
                ok
            }
        }
    }
}

/// Readiness: the database answers (checked at most once a second) and the Chromium binary
/// sessions launch is there and executable (checked on every request).
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
    let reachable = state
        .db_check
        .reachable(|| async {
            state
                .store
                .ping()
                .await
                .map_err(|e| log::warn!("readiness: database: {e}"))
                .is_ok()
        })
        .await;
    let database = if reachable {
        Ok(())
    } else {
        Err("unreachable")
    };
    let chromium = match &state.sessions.chromium {
        Ok(path) if crate::browser::is_executable(path) => Ok(()),
        _ => Err("not found"),
    };
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn the_database_is_pinged_at_most_once_a_second() {
        let check = DbCheck::default();
        let pings = AtomicUsize::new(0);
        let ping = || async {
            pings.fetch_add(1, Ordering::SeqCst);
            true
        };
        for _ in 0..100 {
            assert!(check.reachable(ping).await);
        }
        assert_eq!(pings.load(Ordering::SeqCst), 1);
        tokio::time::sleep(DB_CHECK_TTL + Duration::from_millis(50)).await;
        assert!(check.reachable(ping).await);
        assert_eq!(pings.load(Ordering::SeqCst), 2);
    }
}
