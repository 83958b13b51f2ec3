//! Around the conversation (docs/messaging.md, "Around the conversation"): mark a chat read,
//! show typing or recording, check a number, list chats and read a chat's history from the
//! page's own store. Each is one short WA-JS call through the session's page; the answers are
//! shaped here.

use serde::Serialize;
use serde_json::Value;

use crate::browser::{BrowserError, Command, PageHandle};
use crate::domain::ChatId;

/// Every `WPP` member these calls touch (checked against the pinned `.d.ts` with the others).
pub const WPP_MEMBERS: &[&str] = &[
    "WPP.chat.markIsRead",
    "WPP.chat.markIsComposing",
    "WPP.chat.markIsRecording",
    "WPP.chat.markIsPaused",
    "WPP.chat.list",
    "WPP.chat.getMessages",
    "WPP.contact.queryWidExists",
];

/// Chats or messages one call answers at most.
pub const LIST_MAX: u32 = 200;

/// What a chat shows to its other side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    Typing,
    Recording,
    Paused,
}

/// `GET /api/contacts/{userId}/{slot}/{phone}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NumberCheck {
    /// Whether the number is on WhatsApp.
    pub exists: bool,
    /// The chat to send to (`<digits>@c.us`), when it exists.
    #[schema(example = "4915112345678@c.us")]
    pub chat_id: Option<String>,
    /// Its linked id (`<digits>@lid`), when WhatsApp gives one.
    #[schema(example = "203458712345678@lid")]
    pub lid: Option<String>,
    /// The number asked about, digits only.
    #[schema(example = "4915112345678")]
    pub phone: String,
}

/// A chat of `GET /api/chats/{userId}/{slot}`.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatView {
    /// `<digits>@c.us`, `<id>@g.us` or `<digits>@lid`: where to send.
    pub id: String,
    pub name: Option<String>,
    /// Unread messages.
    pub unread: u32,
    /// Unix seconds of the last activity.
    pub timestamp: i64,
    pub is_group: bool,
}

async fn call(page: &PageHandle, what: &'static str, body: String) -> Result<Value, BrowserError> {
    (page)(Command::Call { what, body }).await
}

fn js(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

pub async fn mark_read(page: &PageHandle, chat: &ChatId) -> Result<(), BrowserError> {
    let body = format!(
        "await WPP.chat.markIsRead({}); return true;",
        js(chat.as_str())
    );
    call(page, "markIsRead", body).await.map(drop)
}

pub async fn presence(
    page: &PageHandle,
    chat: &ChatId,
    state: Presence,
) -> Result<(), BrowserError> {
    let (what, member) = match state {
        Presence::Typing => ("markIsComposing", "WPP.chat.markIsComposing"),
        Presence::Recording => ("markIsRecording", "WPP.chat.markIsRecording"),
        Presence::Paused => ("markIsPaused", "WPP.chat.markIsPaused"),
    };
    let body = format!("await {member}({}); return true;", js(chat.as_str()));
    call(page, what, body).await.map(drop)
}

/// Whether `phone` (digits) is on WhatsApp, and its ids.
pub async fn check_number(page: &PageHandle, phone: &str) -> Result<NumberCheck, BrowserError> {
    let body = format!(
        "const r = await WPP.contact.queryWidExists({}); \
         return r ? {{ chatId: wid(r.wid), lid: r.lid ? wid(r.lid) : null }} : null;",
        js(&format!("{phone}@c.us"))
    );
    let found = call(page, "queryWidExists", body).await?;
    let text = |v: &Value| v.as_str().map(str::to_owned);
    Ok(NumberCheck {
        exists: found.is_object(),
        chat_id: text(&found["chatId"]),
        lid: text(&found["lid"]),
        phone: phone.to_owned(),
    })
}

/// The chats, the most recent first; only those with unread messages when `unread`.
pub async fn chats(
    page: &PageHandle,
    limit: u32,
    unread: bool,
) -> Result<Vec<ChatView>, BrowserError> {
    let body = format!(
        "const list = await WPP.chat.list({{ count: {limit}{} }}); \
         return list.map((c) => ({{ id: wid(c.id), name: c.name || c.formattedTitle || null, \
           unread: Number(c.unreadCount || 0), timestamp: Number(c.t || 0), isGroup: !!(c.isGroup || String(wid(c.id)).endsWith('@g.us')) }}));",
        if unread { ", onlyWithUnreadMessage: true" } else { "" }
    );
    let list = call(page, "list", body).await?;
    serde_json::from_value(list).map_err(|source| BrowserError::Unreadable {
        what: "list",
        source,
    })
}

/// A chat's messages from the page's store, oldest first: the latest `limit`, or those before
/// message `before`.
pub async fn history(
    page: &PageHandle,
    chat: &ChatId,
    before: Option<&str>,
    limit: u32,
) -> Result<Vec<crate::events::PageMessage>, BrowserError> {
    let anchor = before
        .map(|id| format!(", direction: 'before', id: {}", js(id)))
        .unwrap_or_default();
    let body = format!(
        "const list = await WPP.chat.getMessages({}, {{ count: {limit}{anchor} }}); return list.map(message);",
        js(chat.as_str())
    );
    let list = call(page, "getMessages", body).await?;
    serde_json::from_value(list).map_err(|source| BrowserError::Unreadable {
        what: "getMessages",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn the_calls_use_only_the_listed_members() {
        let bodies = Arc::new(Mutex::new(String::new()));
        let seen = bodies.clone();
        let page: PageHandle = Arc::new(move |command| {
            let seen = seen.clone();
            Box::pin(async move {
                if let Command::Call { body, .. } = command {
                    seen.lock().unwrap().push_str(&body);
                }
                Ok(Value::Array(vec![]))
            })
        });
        let chat = ChatId::parse("4915112345678").unwrap();
        mark_read(&page, &chat).await.unwrap();
        for state in [Presence::Typing, Presence::Recording, Presence::Paused] {
            presence(&page, &chat, state).await.unwrap();
        }
        assert!(!check_number(&page, "4915112345678").await.unwrap().exists);
        chats(&page, 10, true).await.unwrap();
        history(&page, &chat, Some("false_1@c.us_A"), 10)
            .await
            .unwrap();
        let text = bodies.lock().unwrap().clone();
        let used = crate::browser::bridge::members_used(&text);
        let mut listed = WPP_MEMBERS.to_vec();
        listed.sort();
        assert_eq!(used, listed);
    }
}
