//! The operator console at `/`: a static page, script and stylesheet embedded in the binary.
//! The page holds no data; it calls the API with the token the operator pastes. Its CSP allows
//! only this origin, plus `data:` images (the QR codes) and `blob:` images and audio (received
//! media, fetched with the console's own token); no inline script or style.

use actix_web::HttpResponse;

super::route_table! {
    get "/" => page,
    get "/console.js" => script,
    get "/console.css" => stylesheet,
}

const PAGE: &str = include_str!("console.html");
const SCRIPT: &str = include_str!("console.js");
const STYLESHEET: &str = include_str!("console.css");

const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; img-src 'self' data: blob:; media-src blob:; connect-src 'self'; base-uri 'none'; \
form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .insert_header(("Cache-Control", "no-cache"))
        .body(body)
}

/// The console page (no credentials needed: it holds no data).
#[utoipa::path(
    get,
    path = "/",
    tag = "console",
    responses((status = 200, description = "The console page", content_type = "text/html", body = String)),
)]
async fn page() -> HttpResponse {
    asset("text/html; charset=utf-8", PAGE)
}

/// The console's script.
#[utoipa::path(
    get,
    path = "/console.js",
    tag = "console",
    responses((status = 200, description = "The console's script", content_type = "text/javascript", body = String)),
)]
async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// The console's stylesheet.
#[utoipa::path(
    get,
    path = "/console.css",
    tag = "console",
    responses((status = 200, description = "The console's stylesheet", content_type = "text/css", body = String)),
)]
async fn stylesheet() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLESHEET)
}
