//! Per-user webhooks as the API manages them: create or replace (a new signing secret, shown
//! once), read (never the secret), delete, list deliveries, re-queue one.

use std::sync::Arc;

use tokio::sync::Notify;

use super::guard::Guard;
use super::sign::SigningSecret;
use crate::domain::UserId;
use crate::events::TYPES;
use crate::store::{now_ms, DeliveryRow, Store, StoreError, WebhookRow};

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0}")]
    InvalidUrl(String),
    #[error("unknown event type {0:?} (known: message, message.ack, session.status, or \"*\")")]
    InvalidEvent(String),
    #[error("the database failed")]
    Store(#[from] StoreError),
}

pub struct Webhooks {
    store: Store,
    guard: Arc<Guard>,
    /// Wakes the dispatcher when a delivery is re-queued.
    wake: Arc<Notify>,
}

impl Webhooks {
    pub fn new(store: Store, guard: Arc<Guard>, wake: Arc<Notify>) -> Webhooks {
        Webhooks { store, guard, wake }
    }

    /// Creates or replaces `user`'s webhook: checked URL, the event types it wants (default
    /// all), a new signing secret (its text is returned this once).
    pub async fn put(
        &self,
        user: &UserId,
        url: &str,
        events: Option<Vec<String>>,
    ) -> Result<(WebhookRow, String), WebhookError> {
        let url = self
            .guard
            .check_url(url)
            .map_err(WebhookError::InvalidUrl)?;
        let events = match events {
            None => vec!["*".to_owned()],
            Some(list) if list.is_empty() => vec!["*".to_owned()],
            Some(list) => {
                for e in &list {
                    if e != "*" && !TYPES.contains(&e.as_str()) {
                        return Err(WebhookError::InvalidEvent(e.clone()));
                    }
                }
                let mut list = list;
                list.sort();
                list.dedup();
                list
            }
        };
        let (_, secret) = SigningSecret::generate();
        let now = now_ms();
        let previous = self.store.get_webhook(user).await?;
        let row = WebhookRow {
            user: user.clone(),
            url: url.to_string(),
            events,
            secret: secret.clone(),
            disabled_reason: None,
            created_ms: previous.map_or(now, |p| p.created_ms),
            updated_ms: now,
        };
        self.store.put_webhook(row.clone()).await?;
        Ok((row, secret))
    }

    pub async fn get(&self, user: &UserId) -> Result<Option<WebhookRow>, WebhookError> {
        Ok(self.store.get_webhook(user).await?)
    }

    /// `false` if there was none. Pending deliveries to it fail.
    pub async fn delete(&self, user: &UserId) -> Result<bool, WebhookError> {
        Ok(self.store.delete_webhook(user, now_ms()).await?)
    }

    /// The newest 100 deliveries to `user`'s webhook, optionally of one status.
    pub async fn deliveries(
        &self,
        user: &UserId,
        status: Option<String>,
    ) -> Result<Vec<DeliveryRow>, WebhookError> {
        Ok(self.store.list_deliveries(user, status, 100).await?)
    }

    /// Re-queues a delivery of `user`'s (due now). `false` if there is no such delivery.
    pub async fn retry(&self, user: &UserId, id: i64) -> Result<bool, WebhookError> {
        let found = self.store.retry_delivery(user, id, now_ms()).await?;
        if found {
            self.wake.notify_one();
        }
        Ok(found)
    }
}
