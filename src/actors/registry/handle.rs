//! [`RegistryHandle`]: what HTTP code calls. Hides the actor plumbing and answers in
//! [`RegistryError`]s; the HTTP layer maps them to statuses (`http/error.rs`), so nothing here
//! knows about HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use tokio::sync::broadcast;

use super::{messages::*, Registry};
use crate::actors::session::{Initiator, QrView, SentMessage, Session, SessionEnv};
use crate::domain::{PhoneNumber, SessionKey, SessionState, UserId};

/// How long a database check answers readiness (it is unauthenticated: at most one ping a
/// second whatever the request rate).
const DB_CHECK_TTL: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct RegistryHandle {
    addr: Addr<Registry>,
    env: Arc<SessionEnv>,
    db_check: Arc<DbCheck>,
}

/// The last database check, shared by every readiness call.
#[derive(Default)]
struct DbCheck(tokio::sync::Mutex<Option<(Instant, bool)>>);

impl DbCheck {
    /// The cached answer while fresh, else `ping()`'s (one ping at a time; others wait for it).
    async fn reachable<F>(&self, ping: impl FnOnce() -> F) -> bool
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

/// What readiness reports: each part `Ok`, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub database: Result<(), String>,
    pub browser: Result<(), String>,
    /// The WA-JS the pages get, if any (its absence is no failure: the DOM signals work).
    pub wa_js: Option<crate::browser::wajs::WaJsInfo>,
    /// The browser binary, engine and version sessions launch.
    pub binary: Option<crate::browser::BrowserBinary>,
}

impl RegistryHandle {
    pub fn new(addr: Addr<Registry>, env: Arc<SessionEnv>) -> RegistryHandle {
        RegistryHandle {
            addr,
            env,
            db_check: Default::default(),
        }
    }

    /// Starts `key`'s browser (idempotent); the session as it is now (usually `starting`).
    pub async fn start(&self, key: SessionKey, by: Initiator) -> Result<Session, RegistryError> {
        self.addr.send(Start { key, by }).await?
    }

    /// Links by phone number (starting the session if needed): the session in state `pairing`.
    pub async fn pair(
        &self,
        key: SessionKey,
        phone: PhoneNumber,
        by: Initiator,
    ) -> Result<Session, RegistryError> {
        self.addr.send(Pair { key, phone, by }).await?
    }

    /// Sends a message through `key`'s linked session.
    pub async fn send(
        &self,
        key: SessionKey,
        message: crate::messaging::Outgoing,
        idempotency_key: Option<String>,
    ) -> Result<SentMessage, RegistryError> {
        self.known(&key, || {
            let send = crate::actors::session::Send {
                key: key.clone(),
                message: message.clone(),
                idempotency_key: idempotency_key.clone(),
            };
            async move { Ok(self.addr.send(SendMessage(send)).await??.await?) }
        })
        .await
    }

    /// The page of `key`'s linked session, for one call around the conversation.
    pub async fn page(&self, key: SessionKey) -> Result<crate::browser::PageHandle, RegistryError> {
        self.known(&key, || {
            let msg = UsePage(crate::actors::session::UsePage { key: key.clone() });
            async move { self.addr.send(msg).await? }
        })
        .await
    }

    /// Writes a media stored on retry with its `message.media` event, through its session.
    pub async fn record_media(
        &self,
        event: crate::events::MediaEvent,
        row: crate::store::MediaRow,
    ) -> Result<(), RegistryError> {
        let key = row.key.clone();
        let msg = RecordMedia(crate::actors::session::RecordMedia { key, event, row });
        self.addr.send(msg).await?
    }

    /// Cluster mode: starts `key` on this node if it should run and no node holds it (the
    /// sweeper's call).
    pub async fn adopt(&self, key: SessionKey) {
        match self.env.store.load_session(&key).await {
            Ok(Some(row)) => self.addr.do_send(Adopt { row }),
            Ok(None) => {}
            Err(e) => log::warn!("{key} not adopted: {}", crate::chain(&e)),
        }
    }

    /// `call`, and in a cluster once more after learning the stored row of a session this
    /// node never ran (another node created it).
    async fn known<T, F, Fut>(&self, key: &SessionKey, call: F) -> Result<T, RegistryError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, RegistryError>>,
    {
        match call().await {
            Err(RegistryError::Unknown) if self.env.cluster.is_some() => {
                match self.env.store.load_session(key).await {
                    Ok(Some(row)) => {
                        self.addr.send(Learn { row }).await?;
                        call().await
                    }
                    Ok(None) => Err(RegistryError::Unknown),
                    Err(e) => Err(RegistryError::store(e)),
                }
            }
            other => other,
        }
    }

    /// `key`'s stored events after the cursor, oldest first (messages, acks, state changes).
    pub async fn events(
        &self,
        key: SessionKey,
        after: i64,
        limit: i64,
    ) -> Result<Vec<crate::store::StoredEvent>, RegistryError> {
        self.env
            .store
            .events_after(&key, after, limit)
            .await
            .map(|events| self.presented(events))
            .map_err(RegistryError::store)
    }

    /// `user`'s stored events after the cursor (any slot): what a stream that fell behind missed.
    pub async fn user_events(
        &self,
        user: UserId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<crate::store::StoredEvent>, RegistryError> {
        self.env
            .store
            .user_events_after(&user, after, limit)
            .await
            .map(|events| self.presented(events))
            .map_err(RegistryError::store)
    }

    /// Stored events as they leave the daemon: a stored media gets a fresh link.
    fn presented(&self, events: Vec<crate::store::StoredEvent>) -> Vec<crate::store::StoredEvent> {
        events
            .into_iter()
            .map(|e| self.env.outbox.presented(e))
            .collect()
    }

    /// Every stored event from now on (messages, acks, state changes; filter by user).
    /// The id of the newest stored event (0 when there is none): where a new stream's cursor
    /// starts.
    pub async fn latest_event_id(&self) -> Result<i64, RegistryError> {
        self.env
            .store
            .latest_event_id()
            .await
            .map_err(RegistryError::store)
    }

    pub fn subscribe_events(&self) -> broadcast::Receiver<crate::store::StoredEvent> {
        self.env.outbox.subscribe()
    }

    /// One session from the registry's cache; [`RegistryError::Unknown`] if never started.
    pub async fn status(&self, key: SessionKey) -> Result<Session, RegistryError> {
        self.known(&key, || async {
            self.addr
                .send(Status { key: key.clone() })
                .await?
                .ok_or(RegistryError::Unknown)
        })
        .await
    }

    /// Every session of `user`, by slot. In a cluster: the stored rows, with this node's own
    /// view of the sessions it runs (the other nodes write every change of theirs to the rows).
    pub async fn list(&self, user: UserId) -> Result<Vec<Session>, RegistryError> {
        let local = self.addr.send(ListUser { user: user.clone() }).await?;
        let Some(cluster) = &self.env.cluster else {
            return Ok(local);
        };
        let rows = self
            .env
            .store
            .list_sessions(Some(&user))
            .await
            .map_err(RegistryError::store)?;
        Ok(rows
            .iter()
            .map(|row| {
                local
                    .iter()
                    .find(|s| s.key == row.key && cluster.holds(&row.key).is_some())
                    .cloned()
                    .unwrap_or_else(|| Session::as_written(row))
            })
            .collect())
    }

    /// Cluster mode: hands `key` (running here) over to another node.
    pub async fn hand_over(&self, key: SessionKey) -> Result<Session, RegistryError> {
        self.addr.send(HandOver { key }).await?
    }

    /// The QR code the session shows now.
    pub async fn qr(&self, key: SessionKey) -> Result<Arc<QrView>, RegistryError> {
        self.known(&key, || async {
            self.addr.send(Qr { key: key.clone() }).await?
        })
        .await
    }

    /// Closes the browser, keeps the profile; replies once the browser is gone.
    pub async fn stop(&self, key: SessionKey, by: Initiator) -> Result<Session, RegistryError> {
        self.known(&key, || async {
            let (key, by) = (key.clone(), by.clone());
            self.addr.send(Stop { key, by }).await?
        })
        .await
    }

    /// Unlinks: closes the browser and deletes the profile; replies once the folder is gone.
    /// `wake`: a linked session without a browser is started first, to unlink it on WhatsApp's
    /// side too.
    pub async fn logout(
        &self,
        key: SessionKey,
        by: Initiator,
        wake: bool,
    ) -> Result<Session, RegistryError> {
        self.known(&key, || async {
            let (key, by) = (key.clone(), by.clone());
            self.addr.send(Logout { key, by, wake }).await?
        })
        .await
    }

    /// Copies `key`'s login from a closed browser (docs/operations.md, "Backup").
    pub async fn copy_login(
        &self,
        key: SessionKey,
    ) -> Result<crate::actors::session::LoginCopy, RegistryError> {
        self.known(&key, || async {
            self.addr.send(CopyLogin { key: key.clone() }).await?
        })
        .await
    }

    /// `key` is removed for good: its actor stops once its writes landed, and starts of it are
    /// refused until [`Self::removed`].
    pub async fn retire(&self, key: SessionKey) -> Result<(), RegistryError> {
        self.addr.send(Retire { key }).await?
    }

    /// The removal of `key` is done.
    pub async fn removed(&self, key: SessionKey) {
        let _ = self.addr.send(Removed { key }).await;
    }

    /// Every session this node knows, from the cache.
    pub async fn all(&self) -> Result<Vec<Session>, RegistryError> {
        Ok(self.addr.send(ListAll).await?)
    }

    /// The store the sessions write to.
    pub fn store(&self) -> &crate::store::Store {
        &self.env.store
    }

    /// What the sessions share (folders, media, cluster).
    pub fn env(&self) -> &Arc<SessionEnv> {
        &self.env
    }

    /// Closes every session for a daemon shutdown; returns how many actors were asked.
    pub async fn shutdown_all(&self) -> usize {
        self.addr.send(ShutdownAll).await.unwrap_or(0)
    }

    /// How many known sessions are in each state.
    pub async fn count_states(&self) -> Result<Vec<(SessionState, usize)>, RegistryError> {
        Ok(self.addr.send(CountStates).await?)
    }

    /// Every actor as operators see it.
    pub async fn inspect(&self) -> Result<RegistryInfo, RegistryError> {
        Ok(self.addr.send(InspectAll).await?)
    }

    /// The browser binary sessions launch (engine, version, path), if one was found.
    pub fn browser(&self) -> Option<crate::browser::BrowserBinary> {
        self.env.browser.clone()
    }

    /// Every change of every session from now on (subscribers filter by user).
    pub fn subscribe(&self) -> broadcast::Receiver<Session> {
        self.env.events.subscribe()
    }

    /// The browsers' processes (browser, zygotes, renderers, utilities) and their total
    /// proportional set size in bytes, read from `/proc` off the async threads.
    pub async fn browser_memory(&self) -> (usize, u64) {
        let root = self.env.sessions.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            let trees = crate::browser::process::browser_trees(&root);
            let processes = trees.iter().map(|t| t.pids.len()).sum();
            let pss = trees.iter().map(|t| t.pss_bytes()).sum();
            (processes, pss)
        })
        .await
        .unwrap_or_default()
    }

    /// Whether the database answers (pinged at most once a second) and browsers can be launched
    /// (checked on every call).
    pub async fn readiness(&self) -> Readiness {
        let reachable = self
            .db_check
            .reachable(|| async {
                self.env
                    .store
                    .ping()
                    .await
                    .map_err(|e| log::warn!("readiness: database: {}", crate::chain(&e)))
                    .is_ok()
            })
            .await;
        let database = if reachable {
            Ok(())
        } else {
            Err("unreachable".to_owned())
        };
        Readiness {
            database,
            browser: self.env.launcher.ready(),
            wa_js: self.env.wa_js_info(),
            binary: self.env.browser.clone(),
        }
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
