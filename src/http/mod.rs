//! The HTTP facade: parses, authenticates, authorizes, sends one message to the registry, maps
//! the reply. Handlers never touch browsers, folders or the database.

/// One route table per resource module: registers the routes and lists them from the same
/// lines, so the list that `/openapi.json` is tested against is what `routes()` serves.
macro_rules! route_table {
    ($($method:ident $path:literal => $handler:expr),* $(,)?) => {
        /// The routes this module registers.
        pub const ROUTES: &[$crate::http::Route] = &[
            $($crate::http::Route { method: stringify!($method), path: $path }),*
        ];

        pub fn routes(cfg: &mut actix_web::web::ServiceConfig) {
            $(cfg.route($path, actix_web::web::$method().to($handler));)*
        }
    };
}
pub(crate) use route_table;

mod console;
pub mod error;
pub mod extract;
pub mod health;
mod openapi;
pub mod routes;
mod state;

use actix_cors::Cors;
use actix_web::{http::Method, web};

pub use error::ApiError;
pub use state::AppState;

/// A route the API serves: lower-case method (as OpenAPI spells it) and path pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
}

/// Every resource module: its registration and its route list, both from its `route_table!`.
type Resource = (fn(&mut web::ServiceConfig), &'static [Route]);
const RESOURCES: [Resource; 12] = [
    (health::routes, health::ROUTES),
    (routes::sessions::routes, routes::sessions::ROUTES),
    (routes::messages::routes, routes::messages::ROUTES),
    (routes::chats::routes, routes::chats::ROUTES),
    (routes::media::routes, routes::media::ROUTES),
    (routes::webhooks::routes, routes::webhooks::ROUTES),
    (routes::events::routes, routes::events::ROUTES),
    (routes::admin::routes, routes::admin::ROUTES),
    (routes::nodes::routes, routes::nodes::ROUTES),
    (routes::ops::routes, routes::ops::ROUTES),
    (openapi::routes, openapi::ROUTES),
    (console::routes, console::ROUTES),
];

/// Every route `routes()` registers (everything else is the default 404).
pub fn route_list() -> impl Iterator<Item = Route> {
    RESOURCES
        .into_iter()
        .flat_map(|(_, list)| list.iter().copied())
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::QueryConfig::default()
            .error_handler(|e, _| ApiError::BadRequest(e.to_string()).into()),
    )
    .app_data(
        web::JsonConfig::default().error_handler(|e, _| ApiError::BadRequest(e.to_string()).into()),
    )
    .default_service(web::to(|| async {
        Err::<actix_web::HttpResponse, _>(ApiError::NotFound)
    }));
    for (register, _) in RESOURCES {
        register(cfg);
    }
}

/// Headers every response carries unless its handler set its own: API answers are data, never
/// a document to run or frame (the console at `/` sends its own policy). The daemon owns this
/// header; the nginx site in `deploy/` adds none, since two policies would both be enforced.
pub fn default_headers() -> actix_web::middleware::DefaultHeaders {
    actix_web::middleware::DefaultHeaders::new()
        .add((
            "Content-Security-Policy",
            "default-src 'none'; frame-ancestors 'none'",
        ))
        .add(("X-Content-Type-Options", "nosniff"))
}

/// CORS for the configured origins only (the Next.js site calls the API from the browser).
pub fn cors(origins: &[String]) -> Cors {
    origins
        .iter()
        .filter(|o| !o.is_empty())
        .fold(Cors::default(), |cors, origin| cors.allowed_origin(origin))
        .allowed_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allowed_headers(["authorization", "x-stack-access-token", "content-type"])
        .max_age(600)
}

/// Counts every request by route pattern, method and status for `/metrics`.
pub async fn count_requests(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let metrics = req
        .app_data::<web::Data<crate::http::AppState>>()
        .map(|s| s.metrics.clone());
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    // A fixed set of labels: made-up methods must not add series (they are unauthenticated).
    const METHODS: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"];
    let method = METHODS
        .into_iter()
        .find(|m| *m == req.method().as_str())
        .unwrap_or("other");
    let res = next.call(req).await?;
    if let Some(metrics) = metrics {
        metrics.http_request(&route, method, res.status().as_u16());
    }
    Ok(res)
}
