//! Any node answers: a request for a session another node owns is passed to that node.
//!
//! A middleware in front of every route. For the session routes (`/api/{verb}/{userId}/{slot}`)
//! it looks the session's lease up; when another live node holds it, the request goes there
//! unchanged (the owner authenticates and authorizes it again), with `x-wa-cluster-token`
//! proving it comes from a node. A start or pairing of a session nobody holds goes to the node
//! with the most free capacity. `POST /admin/nodes/{node}/drain` goes to that node. A request
//! that carries a valid cluster token is always served
//! where it lands, so a request is forwarded at most once. Reads of stored events
//! (`GET /api/messages/…`) come from the shared database and are served anywhere.

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};

use super::Cluster;
use crate::domain::{SessionKey, Slot, UserId};
use crate::http::ApiError;

/// Carries `CLUSTER_TOKEN` on node-to-node calls.
pub const TOKEN_HEADER: &str = "x-wa-cluster-token";
/// The node a forwarded request came through (for the logs and the loop guard).
pub const FROM_HEADER: &str = "x-wa-forwarded-by";
/// How long a forwarded call may take (a stop waits for the browser to close).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(60);
/// A drain answers once every session of the node has moved.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3600);
/// The largest body passed on when the app has no send intake (its tests): the routes' own.
const MAX_BODY: usize = 2 * 1024 * 1024;

/// A request is a node's when it carries the cluster token: compared in constant time.
pub fn from_node(cluster: &Cluster, headers: &header::HeaderMap) -> Option<bool> {
    let got = headers.get(TOKEN_HEADER)?.as_bytes();
    Some(crate::auth::constant_time_eq(
        got,
        cluster.token.expose().as_bytes(),
    ))
}

/// The session a path names, for the routes that act on one session's browser. Segments are
/// percent-decoded first, as the router decodes them before it matches (`/api/start/%6Bim/1`
/// is kim's slot 1 there, so it is here).
fn session_of(method: &Method, path: &str, max_slots: u16) -> Option<SessionKey> {
    let segments: Vec<String> = path
        .strip_prefix("/api/")?
        .split('/')
        .map(decoded)
        .collect::<Option<_>>()?;
    let (verb, user, slot) = match segments.as_slice() {
        [verb, user, slot, ..] => (verb.as_str(), user, slot),
        _ => return None,
    };
    let deeper = segments.len() > 3;
    let ours = match deeper {
        false => matches!(
            (method.as_str(), verb),
            ("POST", "start" | "pair" | "stop" | "logout" | "messages")
                | ("GET", "status" | "qr" | "chats")
        ),
        // A chat's messages, read and presence; a number check; a media download tried again:
        // the session's page answers. (Media itself is served by any node: it is in PostgreSQL.)
        true => {
            matches!(verb, "chats" | "contacts")
                || (verb == "media" && segments.last().is_some_and(|s| s == "retry"))
        }
    };
    if !ours {
        return None;
    }
    let user = UserId::parse(user).ok()?;
    let slot = Slot::parse(slot, max_slots).ok()?;
    Some(SessionKey::new(user, slot))
}

/// One path segment, percent-decoded; `None` when that is not UTF-8.
fn decoded(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The node a path names (`/admin/nodes/{node}/drain`).
fn node_of<'a>(method: &Method, path: &'a str) -> Option<&'a str> {
    let node = path.strip_prefix("/admin/nodes/")?.strip_suffix("/drain")?;
    (method == Method::POST && !node.is_empty() && !node.contains('/')).then_some(node)
}

/// Where a request for `key` should be served: `None` here, else the owner's URL.
async fn owner(
    cluster: &Cluster,
    key: &SessionKey,
    starts: bool,
) -> Result<Option<String>, ApiError> {
    if cluster.holds(key).is_some() {
        return Ok(None);
    }
    let lease = cluster.store.lease(key).await.map_err(ApiError::internal)?;
    match lease {
        Some(l) if l.live && l.node.as_deref().is_some_and(|n| n != cluster.node) => {
            Ok(l.url.filter(|u| !u.is_empty()))
        }
        _ if starts => placement(cluster).await,
        _ => Ok(None),
    }
}

/// The URL of the live node `node` (an unknown or dead one is answered here: 404 or 409).
async fn node_url(cluster: &Cluster, node: &str) -> Result<Option<String>, ApiError> {
    let nodes = cluster
        .store
        .nodes(cluster.ttl)
        .await
        .map_err(ApiError::internal)?;
    Ok(nodes
        .into_iter()
        .find(|n| n.node == node && n.alive)
        .map(|n| n.url))
}

/// The live, not draining node with the most free browsers (this one on a tie).
async fn placement(cluster: &Cluster) -> Result<Option<String>, ApiError> {
    let nodes = cluster
        .store
        .nodes(cluster.ttl)
        .await
        .map_err(ApiError::internal)?;
    let free = |n: &crate::store::NodeRow| n.capacity - n.running;
    let mine = nodes.iter().find(|n| n.node == cluster.node);
    let best = nodes
        .iter()
        .filter(|n| n.alive && !n.draining && free(n) > 0)
        .max_by_key(|n| (free(n), n.node == cluster.node));
    Ok(match (best, mine) {
        (Some(best), Some(me))
            if best.node != me.node && (me.draining || free(best) > free(me)) =>
        {
            Some(best.url.clone())
        }
        (Some(best), None) => Some(best.url.clone()),
        _ => None,
    })
}

/// The middleware (installed only in cluster mode).
pub async fn route(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let cluster = req
        .app_data::<web::Data<Option<Arc<Cluster>>>>()
        .and_then(|c| c.get_ref().clone());
    let max_slots = req
        .app_data::<web::Data<crate::http::AppState>>()
        .map_or(crate::domain::DEFAULT_MAX_SLOTS, |s| s.max_slots);
    let Some(cluster) = cluster else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    match from_node(&cluster, req.headers()) {
        Some(true) => return Ok(next.call(req).await?.map_into_boxed_body()),
        Some(false) => {
            return Ok(req
                .error_response(ApiError::Unauthorized)
                .map_into_boxed_body());
        }
        None => {}
    }
    let key = session_of(req.method(), req.path(), max_slots);
    let node = node_of(req.method(), req.path())
        .filter(|n| *n != cluster.node)
        .map(str::to_owned);
    if key.is_none() && node.is_none() {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    // Only authenticated callers cost a lookup and a hop; the others get the route's own 401.
    let auth = req.app_data::<web::Data<crate::auth::Auth>>().cloned();
    let authenticated = match &auth {
        Some(auth) => auth.authenticate(req.headers()).await.is_ok(),
        None => false,
    };
    if !authenticated {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let starts = req.method() == Method::POST
        && (req.path().starts_with("/api/start/") || req.path().starts_with("/api/pair/"));
    let target = match (key, node) {
        (Some(key), _) => owner(&cluster, &key, starts).await,
        (None, Some(node)) => node_url(&cluster, &node).await,
        (None, None) => Ok(None),
    };
    let target = match target {
        Ok(Some(url)) => url,
        Ok(None) => return Ok(next.call(req).await?.map_into_boxed_body()),
        Err(e) => return Ok(req.error_response(e).map_into_boxed_body()),
    };
    // As large as the owner takes: a send's media (base64) is, whatever node it lands on.
    let intake = req
        .app_data::<web::Data<crate::messaging::Intake>>()
        .cloned();
    let limit = intake
        .as_ref()
        .map_or(MAX_BODY, |i| i.body_limit().max(MAX_BODY));
    let payload = match req.extract::<web::Payload>().await {
        Ok(payload) => payload,
        Err(e) => return Ok(req.error_response(e).map_into_boxed_body()),
    };
    let body = match payload.to_bytes_limited(limit).await {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => {
            let e = ApiError::BadRequest(format!("the body could not be read: {e}"));
            return Ok(req.error_response(e).map_into_boxed_body());
        }
        Err(_) => {
            let e = match intake {
                Some(i) => ApiError::MediaTooLarge { max: i.max_bytes },
                None => ApiError::BadRequest("the body is too large".into()),
            };
            return Ok(req.error_response(e).map_into_boxed_body());
        }
    };
    let response = forward(&cluster, &req, &target, body).await;
    Ok(req.into_response(response))
}

/// Sends the request to `base` and answers what it answered (a 502 when it cannot be reached).
async fn forward(
    cluster: &Cluster,
    req: &ServiceRequest,
    base: &str,
    body: web::Bytes,
) -> HttpResponse {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let Ok(method) = reqwest::Method::from_bytes(req.method().as_str().as_bytes()) else {
        return HttpResponse::MethodNotAllowed().finish();
    };
    let mut out = cluster
        .client
        .request(method, &url)
        .timeout(if path.ends_with("/drain") {
            DRAIN_TIMEOUT
        } else {
            FORWARD_TIMEOUT
        });
    for (name, value) in req.headers() {
        if !is_hop_by_hop(name.as_str()) {
            out = out.header(name.as_str(), value.as_bytes());
        }
    }
    out = out
        .header(TOKEN_HEADER, cluster.token.expose())
        .header(FROM_HEADER, cluster.node.as_str())
        .body(body.to_vec());
    log::debug!("forwarding {} {path} to {base}", req.method());
    match out.send().await {
        Ok(res) => {
            let status =
                StatusCode::from_u16(res.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut answer = HttpResponse::build(status);
            for (name, value) in res.headers() {
                if !is_hop_by_hop(name.as_str()) {
                    answer.insert_header((name.as_str(), value.as_bytes()));
                }
            }
            match res.bytes().await {
                Ok(bytes) => answer.body(bytes.to_vec()),
                Err(e) => bad_gateway(base, &e),
            }
        }
        Err(e) => bad_gateway(base, &e),
    }
}

fn bad_gateway(base: &str, e: &reqwest::Error) -> HttpResponse {
    log::warn!("forwarding to {base} failed: {}", crate::chain(e));
    actix_web::ResponseError::error_response(&ApiError::OwnerUnreachable)
}

fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "content-length"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-connection"
            | TOKEN_HEADER
            | FROM_HEADER
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_routes_of_one_session_browser_are_forwarded() {
        let key = |m: Method, p: &str| session_of(&m, p, 10).map(|k| k.to_string());
        assert!(key(Method::POST, "/api/start/u1/1").is_some());
        assert!(key(Method::POST, "/api/messages/u1/1").is_some());
        assert!(key(Method::GET, "/api/qr/u1/3").is_some());
        assert!(key(Method::GET, "/api/status/u1/3").is_some());
        // Around the conversation: the session's page answers.
        assert!(key(Method::GET, "/api/chats/u1/1").is_some());
        assert!(key(Method::POST, "/api/chats/u1/1/49151@c.us/read").is_some());
        assert!(key(Method::GET, "/api/chats/u1/1/49151@c.us/messages").is_some());
        assert!(key(Method::GET, "/api/contacts/u1/1/4915112345678").is_some());
        // Stored events, a user's list, bad slots and other routes are served where they land.
        assert!(key(Method::GET, "/api/messages/u1/1").is_none());
        assert!(key(Method::GET, "/api/status/u1").is_none());
        assert!(key(Method::POST, "/api/start/u1/11").is_none());
        assert!(key(Method::POST, "/api/start/u1/1/x").is_none());
        assert!(key(Method::GET, "/actors").is_none());
        // Percent-encoded segments name what the router matches.
        assert_eq!(
            key(Method::POST, "/api/st%61rt/%6Bim/%31"),
            key(Method::POST, "/api/start/kim/1")
        );
        assert!(key(Method::POST, "/api/start/kim/1").is_some());
        assert!(key(Method::POST, "/api/media/kim/1/abc/retr%79").is_some());
        assert!(key(Method::POST, "/api/start/k%2Fim/1").is_none());
        assert!(key(Method::POST, "/api/start/k%FFim/1").is_none());
        assert_eq!(node_of(&Method::POST, "/admin/nodes/n2/drain"), Some("n2"));
        assert_eq!(node_of(&Method::GET, "/admin/nodes/n2/drain"), None);
        assert_eq!(node_of(&Method::POST, "/admin/nodes/a/b/drain"), None);
    }
}
