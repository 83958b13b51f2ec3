//! The cluster, for operators: `GET /admin/nodes` lists the nodes and the leases;
//! `POST /admin/nodes/{node}/drain` moves a node's sessions to the others (the request is
//! passed to that node when it lands elsewhere: `cluster::forward`). docs/several-hosts.md.

use std::sync::Arc;

use actix_web::{web, HttpResponse};

use crate::actors::registry::RegistryHandle;
use crate::auth::Principal;
use crate::cluster::drain::DrainReport;
use crate::cluster::Cluster;
use crate::domain::{Slot, UserId};
use crate::http::openapi::{Forbidden, Unauthorized, Unavailable};
use crate::http::ApiError;
use crate::store::NodeRow;

crate::http::route_table! {
    get "/admin/nodes" => nodes,
    post "/admin/nodes/{node}/drain" => drain,
}

/// One session's lease.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaseView {
    pub user_id: UserId,
    pub slot: Slot,
    /// The owner; absent once released.
    pub node: Option<String>,
    /// The fencing token: bumped by every takeover.
    pub epoch: i64,
    /// Not expired.
    pub live: bool,
}

/// The cluster as the database has it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    /// The node that answered.
    pub node: String,
    pub nodes: Vec<NodeRow>,
    pub leases: Vec<LeaseView>,
}

fn cluster(data: &web::Data<Option<Arc<Cluster>>>) -> Result<Arc<Cluster>, ApiError> {
    data.get_ref().clone().ok_or(ApiError::NotClustered)
}

/// Every node (its URL, capacity, running browsers, heartbeat) and every lease.
#[utoipa::path(
    get,
    path = "/admin/nodes",
    tag = "admin",
    security(("bearer" = []), ("stackAccessToken" = [])),
    responses(
        (status = 200, description = "The nodes and the leases", body = ClusterView),
        (status = 409, description = "`not_clustered`: cluster mode is off", body = crate::http::error::ErrorBody),
        Unauthorized, Forbidden, Unavailable,
    ),
)]
async fn nodes(
    who: Principal,
    data: web::Data<Option<Arc<Cluster>>>,
) -> Result<HttpResponse, ApiError> {
    who.authorize_admin()?;
    let cluster = cluster(&data)?;
    Ok(HttpResponse::Ok().json(view(&cluster).await?))
}

pub async fn view(cluster: &Cluster) -> Result<ClusterView, ApiError> {
    let store = &cluster.store;
    let nodes = store.nodes(cluster.ttl).await.map_err(ApiError::internal)?;
    let leases = store.leases().await.map_err(ApiError::internal)?;
    Ok(ClusterView {
        node: cluster.node.clone(),
        nodes,
        leases: leases
            .into_iter()
            .map(|l| LeaseView {
                user_id: l.key.user_id().clone(),
                slot: l.key.slot(),
                node: l.node,
                epoch: l.epoch,
                live: l.live,
            })
            .collect(),
    })
}

/// Moves every session of `node` to the other nodes, one at a time (stop, snapshot, release;
/// another node restores and launches it), and keeps `node` from taking new ones until it
/// restarts. Answers when done, with each move's time.
#[utoipa::path(
    post,
    path = "/admin/nodes/{node}/drain",
    tag = "admin",
    params(("node" = String, Path, description = "The node's NODE_ID")),
    security(("bearer" = []), ("stackAccessToken" = [])),
    responses(
        (status = 200, description = "Every session moved (or why not)", body = DrainReport),
        (status = 404, description = "`unknown_node`: no live node is called that", body = crate::http::error::ErrorBody),
        (status = 409, description = "`not_clustered`: cluster mode is off; `no_other_node`: no other live node takes sessions (nothing changed)", body = crate::http::error::ErrorBody),
        Unauthorized, Forbidden, Unavailable,
    ),
)]
async fn drain(
    who: Principal,
    node: web::Path<String>,
    data: web::Data<Option<Arc<Cluster>>>,
    registry: web::Data<RegistryHandle>,
) -> Result<HttpResponse, ApiError> {
    who.authorize_admin()?;
    let cluster = cluster(&data)?;
    // Another live node's drain was passed on to it; one that lands here names this node or none.
    if *node != cluster.node {
        return Err(ApiError::UnknownNode);
    }
    let report = crate::cluster::drain::drain(&cluster, &registry)
        .await
        .map_err(|e| match e {
            crate::cluster::drain::DrainRefused::NoOtherNode => ApiError::NoOtherNode,
            e => ApiError::internal(e),
        })?;
    Ok(HttpResponse::Ok().json(report))
}
