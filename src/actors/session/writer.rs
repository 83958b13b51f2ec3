//! The session's database writer: rows, audit events and outbox events reach the store in the
//! order the actor made them, off the actor's thread. The outbox streams and delivers an event
//! (SSE, webhooks) only once it is written.
//!
//! A write that fails is tried again, with a backoff, until it lands (docs/nothing-lost.md): a
//! PostgreSQL restart, a pool that cannot give a connection in time or SQLite busy with another
//! writer delay what follows, never drop it, and the order is kept (later writes wait). Only a
//! lost lease ends a write. Messages and acks carry a dedupe key, so a write whose commit was
//! not confirmed (the connection cut after it) is stored once when it is tried again.
//!
//! In a cluster every write names the session's lease ([`Fence`]): writes queued while this
//! node holds no lease are dropped, and a write refused by the fence gives the lease up (the
//! actor is told and kills its browser).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::view::Session;
use crate::cluster::Cluster;
use crate::domain::SessionKey;
use crate::events::{Outbox, SESSION_STATUS};
use crate::store::{Fence, MediaRow, NewEvent, SessionRow, StoreError};

enum Write {
    Row(SessionRow),
    Audit(NewEvent),
    /// The session after a change: a `session.status` event.
    Publish(Session),
    /// Another event of this session (a message, an ack), with its dedupe key and the media
    /// row it announces.
    Event(
        &'static str,
        serde_json::Value,
        Option<String>,
        Option<MediaRow>,
    ),
    /// Answered once every earlier write is done.
    Flush(oneshot::Sender<()>),
    /// The lease later writes name (cluster mode).
    Fence(Option<Fence>),
}

/// The first wait after a failed write; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The sending side; the task ends when every clone is dropped.
#[derive(Clone)]
pub struct Writer(mpsc::UnboundedSender<Write>);

impl Writer {
    /// Starts the writer task of `key`'s session.
    pub fn spawn(outbox: Arc<Outbox>, key: SessionKey, cluster: Option<Arc<Cluster>>) -> Writer {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut fence = None;
            while let Some(write) = rx.recv().await {
                match write {
                    Write::Flush(done) => {
                        let _ = done.send(());
                    }
                    Write::Fence(f) => fence = f,
                    // Not this node's session (any more): nothing to write.
                    _ if cluster.is_some() && fence.is_none() => {}
                    write => {
                        if let Err(lost) = until_written(&outbox, &key, &write, fence).await {
                            fence = None;
                            if let Some(cluster) = &cluster {
                                cluster.lost(&key, &lost);
                            }
                        }
                    }
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

    /// An event of this session; `dedupe`: stored once per value (a message id, an ack).
    pub fn event(&self, kind: &'static str, data: &impl serde::Serialize, dedupe: Option<String>) {
        self.event_with(kind, data, dedupe, None);
    }

    /// An event and the media row it announces, written in one transaction.
    pub fn event_with(
        &self,
        kind: &'static str,
        data: &impl serde::Serialize,
        dedupe: Option<String>,
        media: Option<MediaRow>,
    ) {
        let data = serde_json::to_value(data).expect("events serialize");
        let _ = self.0.send(Write::Event(kind, data, dedupe, media));
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

/// Writes `write`, trying again after every failure until it lands; `Err` (why) only when the
/// session's lease is gone, which no retry can mend.
async fn until_written(
    outbox: &Outbox,
    key: &SessionKey,
    write: &Write,
    fence: Option<Fence>,
) -> Result<(), String> {
    let store = outbox.store();
    let mut wait = RETRY_FIRST;
    let mut failures = 0u32;
    loop {
        let result = match write {
            Write::Row(row) => store.save_session(row.clone(), fence).await,
            Write::Audit(ev) => store.record_event(ev.clone(), fence).await,
            Write::Publish(session) => outbox
                .append(key, SESSION_STATUS, session, None, fence)
                .await
                .map(drop),
            Write::Event(kind, data, dedupe, media) => outbox
                .append_with(key, kind, data, dedupe.clone(), media.clone(), fence)
                .await
                .map(drop),
            Write::Flush(_) | Write::Fence(_) => return Ok(()),
        };
        match result {
            Ok(()) => {
                if failures > 0 {
                    log::info!("{key} database writes resume after {failures} failed attempts");
                }
                return Ok(());
            }
            Err(StoreError::LeaseLost { .. }) => {
                return Err("a write was refused: another node owns the session".to_owned())
            }
            Err(e) => {
                failures += 1;
                // One line when writes stop, then one now and then while they stay stopped.
                if failures == 1 || failures.is_multiple_of(20) {
                    log::warn!(
                        "{key} could not write to the database (attempt {failures}, trying again in {} ms; later writes wait): {}",
                        wait.as_millis(),
                        crate::chain(&e)
                    );
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RETRY_MAX);
            }
        }
    }
}
