//! The session's database writer: rows, audit events and outbox events reach the store in the
//! order the actor made them, off the actor's thread. The outbox streams and delivers an event
//! (SSE, webhooks) only once it is written.
//!
//! In a cluster every write names the session's lease ([`Fence`]): writes queued while this
//! node holds no lease are dropped, and a write refused by the fence gives the lease up (the
//! actor is told and kills its browser).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::view::Session;
use crate::cluster::Cluster;
use crate::domain::SessionKey;
use crate::events::{Outbox, SESSION_STATUS};
use crate::store::{Fence, NewEvent, SessionRow, StoreError};

enum Write {
    Row(SessionRow),
    Audit(NewEvent),
    /// The session after a change: a `session.status` event.
    Publish(Session),
    /// Another event of this session (a message, an ack).
    Event(&'static str, serde_json::Value),
    /// Answered once every earlier write is done.
    Flush(oneshot::Sender<()>),
    /// The lease later writes name (cluster mode).
    Fence(Option<Fence>),
}

/// The sending side; the task ends when it is dropped.
pub struct Writer(mpsc::UnboundedSender<Write>);

impl Writer {
    /// Starts the writer task of `key`'s session.
    pub fn spawn(outbox: Arc<Outbox>, key: SessionKey, cluster: Option<Arc<Cluster>>) -> Writer {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let store = outbox.store().clone();
            let mut fence = None;
            while let Some(write) = rx.recv().await {
                let write = match write {
                    Write::Flush(done) => {
                        let _ = done.send(());
                        continue;
                    }
                    Write::Fence(f) => {
                        fence = f;
                        continue;
                    }
                    // Not this node's session (any more): nothing to write.
                    _ if cluster.is_some() && fence.is_none() => continue,
                    write => write,
                };
                let result = match write {
                    Write::Row(row) => store.save_session(row, fence).await,
                    Write::Audit(ev) => store.record_event(ev, fence).await,
                    Write::Publish(session) => outbox
                        .append(&key, SESSION_STATUS, &session, fence)
                        .await
                        .map(drop),
                    Write::Event(kind, data) => {
                        outbox.append(&key, kind, &data, fence).await.map(drop)
                    }
                    Write::Flush(_) | Write::Fence(_) => unreachable!("handled above"),
                };
                if let (Err(StoreError::LeaseLost { .. }), Some(cluster)) = (&result, &cluster) {
                    fence = None;
                    cluster.lost(&key, "a write was refused: another node owns the session");
                    continue;
                }
                if let Err(e) = result {
                    log::error!(
                        "{key} could not write to the database: {}",
                        crate::chain(&e)
                    );
                }
            }
        });
        Writer(tx)
    }

    /// Later writes name `fence` (`None`: this node holds no lease; cluster writes stop).
    pub fn fence(&self, fence: Option<Fence>) {
        let _ = self.0.send(Write::Fence(fence));
    }

    pub fn row(&self, row: SessionRow) {
        let _ = self.0.send(Write::Row(row));
    }

    pub fn audit(&self, event: NewEvent) {
        let _ = self.0.send(Write::Audit(event));
    }

    pub fn publish(&self, session: Session) {
        let _ = self.0.send(Write::Publish(session));
    }

    pub fn event(&self, kind: &'static str, data: &impl serde::Serialize) {
        let data = serde_json::to_value(data).expect("events serialize");
        let _ = self.0.send(Write::Event(kind, data));
    }

    /// Resolves when every write queued so far has reached the database.
    pub fn flushed(&self) -> impl std::future::Future<Output = ()> + 'static {
        let (tx, rx) = oneshot::channel();
        let _ = self.0.send(Write::Flush(tx));
        async move {
            let _ = rx.await;
        }
    }
}
