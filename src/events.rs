//! What happens in the sessions, as events: `message` (a new message of a linked session),
//! `message.ack` (a sent message was delivered, read, …), `session.status` (the session
//! object after every state change), and what happens to earlier messages: `message.media` (a
//! media stored on retry), `message.reaction`, `message.revoked`, `message.edited`, `poll.vote`
//! (docs/media.md). The [`Outbox`] writes each event to the database before
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
pub const MESSAGE_MEDIA: &str = "message.media";
pub const MESSAGE_REACTION: &str = "message.reaction";
pub const MESSAGE_REVOKED: &str = "message.revoked";
pub const MESSAGE_EDITED: &str = "message.edited";
pub const POLL_VOTE: &str = "poll.vote";
/// Every event type, for webhook subscriptions.
pub const TYPES: [&str; 8] = [
    MESSAGE,
    MESSAGE_ACK,
    SESSION_STATUS,
    MESSAGE_MEDIA,
    MESSAGE_REACTION,
    MESSAGE_REVOKED,
    MESSAGE_EDITED,
    POLL_VOTE,
];

/// What the page says of a media message before it is downloaded.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageMedia {
    pub mimetype: Option<String>,
    pub filename: Option<String>,
    /// Bytes, as WhatsApp announced them.
    pub size: Option<u64>,
}

/// A shared location.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Location {
    pub latitude: f64,
    pub longitude: f64,
    /// The place's name (the first line of WhatsApp's description).
    pub name: Option<String>,
    /// The rest of the description.
    pub address: Option<String>,
    pub url: Option<String>,
}

/// A shared contact card.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContactCard {
    pub name: Option<String>,
    /// The vCard text.
    pub vcard: String,
}

/// A poll someone created.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Poll {
    pub name: String,
    /// The choices; a vote names them by their index here.
    pub options: Vec<String>,
    /// How many choices a voter may pick (0: any number).
    pub selectable_count: u32,
}

/// A message of a linked session, as the page reported it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
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
    /// A media message (image, video, audio, ptt, document, sticker).
    #[serde(default)]
    pub media: Option<PageMedia>,
    #[serde(default)]
    pub location: Option<Location>,
    #[serde(default)]
    pub contacts: Option<Vec<ContactCard>>,
    #[serde(default)]
    pub poll: Option<Poll>,
    /// The message this one replies to.
    #[serde(default)]
    pub quoted_message_id: Option<String>,
}

/// A media message's file as an event carries it: stored (`sha256`) or not (`error`). Its `url`
/// is added each time the event leaves the daemon (`crate::media::Media::present`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MediaInfo {
    /// For `/api/media/{userId}/{slot}/{mediaId}`.
    pub id: String,
    pub mimetype: Option<String>,
    pub filename: Option<String>,
    pub size: Option<u64>,
    /// Hex SHA-256 of the stored bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// A signed link to the bytes, valid `MEDIA_URL_TTL_SECS` from when the event was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Why it was not stored (`quota`, or the download's failure): `POST …/retry` tries again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
    /// The file of a media message (never its bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contacts: Option<Vec<ContactCard>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poll: Option<Poll>,
    /// The message this one replies to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quoted_message_id: Option<String>,
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
            media: None,
            location: m.location,
            contacts: m.contacts,
            poll: m.poll,
            quoted_message_id: m.quoted_message_id,
        }
    }

    /// One event per WhatsApp message id per session.
    pub fn dedupe(&self) -> String {
        format!("msg:{}", self.id)
    }
}

/// `message.media`: the file of an earlier `message` event, stored on retry.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MediaEvent {
    pub user_id: UserId,
    pub slot: Slot,
    pub message_id: String,
    pub chat_id: Option<String>,
    pub media: MediaInfo,
}

/// What the page reports about an earlier message: a reaction, a revoke, an edit, a poll vote.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PageChange {
    Reaction(Reaction),
    Revoke(Revoke),
    Edit(Edit),
    Vote(Vote),
}

/// Someone reacted to a message (or took the reaction back: `emoji` null).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Reaction {
    /// The reaction's own WhatsApp id.
    pub id: String,
    /// The message reacted to.
    pub message_id: String,
    pub emoji: Option<String>,
    pub from: Option<String>,
    /// Unix milliseconds.
    #[serde(default)]
    pub timestamp: i64,
}

/// A message was deleted for everyone.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Revoke {
    /// The revoke's own WhatsApp id.
    pub id: Option<String>,
    /// The message deleted.
    pub message_id: String,
    /// Who deleted it.
    pub from: Option<String>,
}

/// A message's text was changed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Edit {
    pub message_id: String,
    pub chat_id: Option<String>,
    /// The new text (or caption).
    pub body: Option<String>,
    /// The edit's own WhatsApp id, when WhatsApp Web gives it.
    pub edit_id: Option<String>,
    /// Unix milliseconds.
    #[serde(default)]
    pub timestamp: i64,
}

/// Someone voted in a poll (their whole current choice: an empty list takes the vote back).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Vote {
    /// The poll.
    pub message_id: String,
    pub chat_id: Option<String>,
    pub voter: Option<String>,
    pub options: Vec<VoteOption>,
    /// Unix milliseconds.
    #[serde(default)]
    pub timestamp: i64,
}

/// A chosen option: its index in the poll's `options`, and its text when the page knows the poll.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VoteOption {
    pub id: i64,
    pub name: Option<String>,
}

/// An event about an earlier message: its session, then the change's fields.
macro_rules! change_event {
    ($($name:ident($change:ident): $doc:literal),* $(,)?) => {$(
        #[doc = $doc]
        #[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            pub user_id: UserId,
            pub slot: Slot,
            #[serde(flatten)]
            pub change: $change,
        }
    )*};
}

change_event! {
    ReactionEvent(Reaction): "`message.reaction`: a reaction to a message (`emoji` null: taken back).",
    RevokedEvent(Revoke): "`message.revoked`: a message was deleted for everyone.",
    EditedEvent(Edit): "`message.edited`: a message's text was changed.",
    VoteEvent(Vote): "`poll.vote`: a vote in a poll.",
}

impl PageChange {
    /// Its event type, dedupe key (one event per WhatsApp id, or per vote and time) and data.
    pub fn event(self, key: &SessionKey) -> (&'static str, String, serde_json::Value) {
        let (user_id, slot) = (key.user_id().clone(), key.slot());
        let json = |v: Result<serde_json::Value, serde_json::Error>| v.expect("events serialize");
        match self {
            PageChange::Reaction(change) => (
                MESSAGE_REACTION,
                format!("react:{}:{}", change.id, change.timestamp),
                json(serde_json::to_value(ReactionEvent {
                    user_id,
                    slot,
                    change,
                })),
            ),
            PageChange::Revoke(change) => (
                MESSAGE_REVOKED,
                format!("revoke:{}", change.message_id),
                json(serde_json::to_value(RevokedEvent {
                    user_id,
                    slot,
                    change,
                })),
            ),
            PageChange::Edit(change) => (
                MESSAGE_EDITED,
                match &change.edit_id {
                    Some(id) => format!("edit:{}:{id}", change.message_id),
                    None => format!("edit:{}:{}", change.message_id, change.timestamp),
                },
                json(serde_json::to_value(EditedEvent {
                    user_id,
                    slot,
                    change,
                })),
            ),
            PageChange::Vote(change) => (
                POLL_VOTE,
                format!(
                    "vote:{}:{}:{}",
                    change.message_id,
                    change.voter.as_deref().unwrap_or(""),
                    change.timestamp
                ),
                json(serde_json::to_value(VoteEvent {
                    user_id,
                    slot,
                    change,
                })),
            ),
        }
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
    /// Gives a stored media its fresh link as an event leaves (set once at start).
    media: std::sync::OnceLock<Arc<crate::media::Media>>,
    /// Whether the service webhook (`WEBHOOK_URL`) gets every event.
    service: bool,
    bus: broadcast::Sender<StoredEvent>,
    wake: Arc<Notify>,
}

impl Outbox {
    pub fn new(store: Store, service: bool) -> Outbox {
        Outbox {
            store,
            media: std::sync::OnceLock::new(),
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
        self.append_with(key, kind, data, dedupe, None, fence).await
    }

    /// [`Self::append`], with the media row the event announces written in its transaction.
    pub async fn append_with(
        &self,
        key: &SessionKey,
        kind: &'static str,
        data: &impl Serialize,
        dedupe: Option<String>,
        media: Option<crate::store::MediaRow>,
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
                    media,
                },
                self.service,
                fence,
            )
            .await?;
        if let Some(stored) = &stored {
            let _ = self.bus.send(self.presented(stored.clone()));
            self.wake.notify_one();
        }
        Ok(stored)
    }

    pub fn set_media(&self, media: Arc<crate::media::Media>) {
        let _ = self.media.set(media);
    }

    /// An event's data as it leaves the daemon (webhook, stream, listing): a stored media gets a
    /// fresh signed link.
    pub fn present(&self, kind: &str, payload: &str) -> String {
        match self.media.get() {
            Some(media) => media.present(kind, payload),
            None => payload.to_owned(),
        }
    }

    /// `event` with its data as it leaves the daemon ([`Self::present`]).
    pub fn presented(&self, mut event: StoredEvent) -> StoredEvent {
        event.payload = self.present(&event.kind, &event.payload);
        event
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
                let _ = self.bus.send(self.presented(event));
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
