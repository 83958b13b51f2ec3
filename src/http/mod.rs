//! The HTTP facade: parses, authenticates, authorizes, sends one message to the registry, maps
//! the reply. Handlers never touch browsers, folders or the database.

pub mod auth;
mod error;
pub mod extract;
mod health;
pub mod routes;

use actix_cors::Cors;
use actix_web::{http::Method, web};

pub use error::ApiError;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::QueryConfig::default()
            .error_handler(|e, _| ApiError::BadRequest(e.to_string()).into()),
    )
    .app_data(
        web::JsonConfig::default().error_handler(|e, _| ApiError::BadRequest(e.to_string()).into()),
    )
    .route("/healthz", web::get().to(health::healthz))
    .route("/readyz", web::get().to(health::readyz))
    .configure(routes::sessions::routes)
    .configure(routes::events::routes)
    .configure(routes::admin::routes)
    .default_service(web::to(|| async {
        Err::<actix_web::HttpResponse, _>(ApiError::NotFound)
    }));
}

/// CORS for the configured origins only (the Next.js site calls the API from the browser).
pub fn cors(origins: &[String]) -> Cors {
    origins
        .iter()
        .filter(|o| !o.is_empty())
        .fold(Cors::default(), |cors, origin| cors.allowed_origin(origin))
        .allowed_methods([Method::GET, Method::POST])
        .allowed_headers(["authorization", "x-stack-access-token", "content-type"])
        .max_age(600)
}

/// Counts every request by route pattern, method and status for `/metrics`.
pub async fn count_requests(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let metrics = req
        .app_data::<web::Data<crate::startup::AppState>>()
        .map(|s| s.metrics.clone());
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().to_string();
    let res = next.call(req).await?;
    if let Some(metrics) = metrics {
        metrics.http_request(&route, &method, res.status().as_u16());
    }
    Ok(res)
}
