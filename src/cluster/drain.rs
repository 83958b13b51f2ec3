//! `POST /admin/nodes/{node}/drain`: this node hands every session it runs to the others, one
//! at a time, and takes no new ones (docs/several-hosts.md, "Sessions move").
//!
//! For each session: stop, snapshot the closed browser's login, release the lease (the intent
//! stays `running`); another node's sweeper claims it at once (woken by `NOTIFY wa_lease`),
//! restores the snapshot and launches. The next session moves once this one is running there
//! again (`connected` if it was), so a drain never loads the others with many launches at once.

use std::time::Duration;

use tokio::time::Instant;

use super::Cluster;
use crate::actors::registry::RegistryHandle;
use crate::domain::{SessionKey, SessionState, Slot, UserId};
use crate::store::StoreError;

/// One session's move.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Moved {
    pub user_id: UserId,
    pub slot: Slot,
    /// The node that runs it now (absent when nobody took it in time).
    pub to: Option<String>,
    /// From the stop here to running (connected, if it was) on `to`.
    pub ms: u64,
    pub error: Option<String>,
}

/// What a drain did.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrainReport {
    pub node: String,
    pub moved: Vec<Moved>,
}

/// Why a drain did not start.
#[derive(Debug, thiserror::Error)]
pub enum DrainRefused {
    /// No other live node takes sessions: each move would only stop a session.
    #[error("no other live node takes sessions")]
    NoOtherNode,
    #[error("drain")]
    Store(#[from] StoreError),
}

/// Hands every session of this node over, one by one; the node stays draining. Refused, with
/// nothing changed, when no other live node takes sessions.
pub async fn drain(
    cluster: &Cluster,
    registry: &RegistryHandle,
) -> Result<DrainReport, DrainRefused> {
    let nodes = cluster.store.nodes(cluster.ttl).await?;
    if !nodes
        .iter()
        .any(|n| n.node != cluster.node && n.alive && !n.draining)
    {
        return Err(DrainRefused::NoOtherNode);
    }
    cluster.store.set_draining(&cluster.node, true).await?;
    log::info!(
        "drain: {} hands its {} sessions over",
        cluster.node,
        cluster.leases().len()
    );
    let mut moved = Vec::new();
    for (key, _) in cluster.leases() {
        moved.push(move_one(cluster, registry, &key).await);
    }
    Ok(DrainReport {
        node: cluster.node.clone(),
        moved,
    })
}

async fn move_one(cluster: &Cluster, registry: &RegistryHandle, key: &SessionKey) -> Moved {
    let started = Instant::now();
    let mut report = Moved {
        user_id: key.user_id().clone(),
        slot: key.slot(),
        to: None,
        ms: 0,
        error: None,
    };
    let was_linked = match registry.hand_over(key.clone()).await {
        Ok(session) => session.connected_number.is_some(),
        Err(e) => {
            report.error = Some(crate::chain(&e));
            return report;
        }
    };
    // Taken over by another node and running there (connected, when it was linked).
    let limit = cluster.ttl * 2 + Duration::from_secs(60);
    loop {
        if let (Ok(Some(lease)), Ok(Some(row))) = (
            cluster.store.lease(key).await,
            cluster.store.load_session(key).await,
        ) {
            let elsewhere = lease.live && lease.node.as_deref().is_some_and(|n| n != cluster.node);
            let running = if was_linked {
                row.state == SessionState::Connected
            } else {
                row.state.is_running()
            };
            if elsewhere && running {
                report.to = lease.node;
                break;
            }
        }
        if started.elapsed() > limit {
            report.error = Some(format!(
                "not running elsewhere within {} s",
                limit.as_secs()
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    report.ms = started.elapsed().as_millis() as u64;
    log::info!(
        "drain: {key} -> {} in {} ms",
        report.to.as_deref().unwrap_or("nowhere"),
        report.ms
    );
    report
}
