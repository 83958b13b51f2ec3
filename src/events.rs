//! What happens in the sessions, as events: `message` (a new message of a linked session),
//! `message.ack` (a sent message was delivered, read, …) and `session.status` (the session
//! object after every state change). The [`Outbox`] writes each event to the database before
//! anything else is done with it, then streams it (SSE) and wakes the webhook dispatcher
//! (docs/ARCHITECTURE.md, "Messages and webhooks").

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, Notify};

use crate::domain::{SessionKey, Slot, UserId};
use crate::store::{now_ms, NewOutboxEvent, Store, StoreError, StoredEvent};

pub const MESSAGE: &str = "message";
pub const MESSAGE_ACK: &str = "message.ack";
pub const SESSION_STATUS: &str = "session.status";
/// Every event type, for webhook subscriptions.
pub const TYPES: [&str; 3] = [MESSAGE, MESSAGE_ACK, SESSION_STATUS];

/// A message of a linked session, as the page reported it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PageMessage {
    pub id: String,
    pub chat_id: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub from_me: bool,
    #[serde(rename = "type")]
    pub kind: String,
    /// The text (or a media caption).
    pub body: Option<String>,
    /// Unix seconds.
    pub timestamp: i64,
    pub is_group: bool,
    pub author: Option<String>,
    /// The other side's phone number (digits) when WhatsApp knows it: an `@c.us` chat's
    /// number, or what `WPP.contact.getPnLidEntry` maps an `@lid` to.
    #[serde(default)]
    pub phone: Option<String>,
    /// Read from the page's own store by gap filling, not announced by the page.
    #[serde(default)]
    pub backfill: bool,
}

/// `message`: a new message of a linked session.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageEvent {
    pub user_id: UserId,
    pub slot: Slot,
    /// WhatsApp's message id.
    pub id: String,
    /// The chat as WhatsApp gives it (`<number>@c.us`, `<digits>@lid`, or `<id>@g.us` for a
    /// group): reply to it as it is.
    pub chat_id: String,
    /// The other side's phone number (digits; in a group, the author's) when WhatsApp knows it
    /// — also for an `@lid` chat.
    #[schema(example = "4915112345678")]
    pub phone: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub from_me: bool,
    /// `chat` for text; media types carry only their caption in `body`.
    #[serde(rename = "type")]
    pub kind: String,
    pub body: Option<String>,
    /// Unix seconds.
    pub timestamp: i64,
    pub is_group: bool,
    /// In a group: who wrote it.
    pub author: Option<String>,
    /// `true` when the daemon found it in the page's own store (gap filling: it arrived while
    /// nothing could record it), not as it arrived.
    pub backfill: bool,
}

impl MessageEvent {
    pub fn new(key: &SessionKey, m: PageMessage) -> MessageEvent {
        MessageEvent {
            user_id: key.user_id().clone(),
            slot: key.slot(),
            id: m.id,
            chat_id: m.chat_id,
            phone: m.phone,
            from: m.from,
            to: m.to,
            from_me: m.from_me,
            kind: m.kind,
            body: m.body,
            timestamp: m.timestamp,
            is_group: m.is_group,
            author: m.author,
            backfill: m.backfill,
        }
    }

    /// One event per WhatsApp message id per session.
    pub fn dedupe(&self) -> String {
        format!("msg:{}", self.id)
    }
}

/// How far a sent message got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Ack {
    Error,
    Pending,
    Server,
    Device,
    Read,
    Played,
}

impl Ack {
    /// WhatsApp Web's numbers: -1 error, 0 pending (clock), 1 server, 2 device, 3 read, 4 played.
    pub fn from_wa(n: i64) -> Ack {
        match n {
            i64::MIN..=-1 => Ack::Error,
            0 => Ack::Pending,
            1 => Ack::Server,
            2 => Ack::Device,
            3 => Ack::Read,
            _ => Ack::Played,
        }
    }
}

/// `message.ack`: a message got further.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AckEvent {
    pub user_id: UserId,
    pub slot: Slot,
    pub id: String,
    pub ack: Ack,
}

impl AckEvent {
    /// One event per message and ack level per session.
    pub fn dedupe(&self) -> String {
        format!("ack:{}:{:?}", self.id, self.ack)
    }
}

/// Writes events, then streams them and wakes the webhook dispatcher.
pub struct Outbox {
    store: Store,
    /// Whether the service webhook (`WEBHOOK_URL`) gets every event.
    service: bool,
    bus: broadcast::Sender<StoredEvent>,
    wake: Arc<Notify>,
}

impl Outbox {
    pub fn new(store: Store, service: bool) -> Outbox {
        Outbox {
            store,
            service,
            bus: broadcast::channel(1024).0,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Writes the event (and the deliveries it owes) to the database; only then is it streamed
    /// and the dispatcher woken. An error means the event was not accepted; `None` that an event
    /// with the same `dedupe` was stored before (nothing is streamed or delivered again).
    pub async fn append(
        &self,
        key: &SessionKey,
        kind: &'static str,
        data: &impl Serialize,
        dedupe: Option<String>,
        fence: Option<crate::store::Fence>,
    ) -> Result<Option<StoredEvent>, StoreError> {
        let payload = serde_json::to_string(data).expect("events serialize");
        let stored = self
            .store
            .append_event(
                NewOutboxEvent {
                    key: key.clone(),
                    kind,
                    payload,
                    created_ms: now_ms(),
                    dedupe,
                },
                self.service,
                fence,
            )
            .await?;
        if let Some(stored) = &stored {
            let _ = self.bus.send(stored.clone());
            self.wake.notify_one();
        }
        Ok(stored)
    }

    /// Every event written from now on (subscribers filter by user).
    pub fn subscribe(&self) -> broadcast::Receiver<StoredEvent> {
        self.bus.subscribe()
    }

    /// Notified whenever a delivery may have become due (a new event, a re-queued delivery).
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Another node wrote event `id` (cluster mode: its `NOTIFY`): streamed here too, and the
    /// dispatcher woken for its deliveries.
    pub async fn relay(&self, id: i64) {
        match self.store.event_by_id(id).await {
            Ok(Some(event)) => {
                let _ = self.bus.send(event);
                self.wake.notify_one();
            }
            Ok(None) => {}
            Err(e) => log::warn!("event {id} from another node: {}", crate::chain(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_have_words() {
        let words: Vec<Ack> = [-1, 0, 1, 2, 3, 4].into_iter().map(Ack::from_wa).collect();
        assert_eq!(
            words,
            [
                Ack::Error,
                Ack::Pending,
                Ack::Server,
                Ack::Device,
                Ack::Read,
                Ack::Played
            ]
        );
        assert_eq!(serde_json::to_string(&Ack::Read).unwrap(), "\"read\"");
    }
}
