//! The session's database writer: rows and audit events reach the store in the order the
//! actor made them, off the actor's thread.

use tokio::sync::{mpsc, oneshot};

use crate::store::{NewEvent, SessionRow, Store};

enum Write {
    Row(SessionRow),
    Event(NewEvent),
    /// Answered once every earlier write is done.
    Flush(oneshot::Sender<()>),
}

/// The sending side; the task ends when it is dropped.
pub struct Writer(mpsc::UnboundedSender<Write>);

impl Writer {
    /// Starts the writer task of one session (`log_key` names it in error lines).
    pub fn spawn(store: Store, log_key: String) -> Writer {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(write) = rx.recv().await {
                let result = match write {
                    Write::Row(row) => store.save_session(row).await,
                    Write::Event(ev) => store.record_event(ev).await,
                    Write::Flush(done) => {
                        let _ = done.send(());
                        Ok(())
                    }
                };
                if let Err(e) = result {
                    log::error!(
                        "{log_key} could not write to the database: {}",
                        crate::chain(&e)
                    );
                }
            }
        });
        Writer(tx)
    }

    pub fn row(&self, row: SessionRow) {
        let _ = self.0.send(Write::Row(row));
    }

    pub fn event(&self, event: NewEvent) {
        let _ = self.0.send(Write::Event(event));
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
