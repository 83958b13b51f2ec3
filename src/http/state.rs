//! What the handlers share besides the registry handle and the authenticator: only what they
//! need (no browser, folder or database).

use std::sync::Arc;

use crate::http::routes::events::StreamSlots;
use crate::metrics::Metrics;

pub struct AppState {
    /// Slots per user (`MAX_SLOTS`): the path extractor's bound.
    pub max_slots: u16,
    /// Counters and histograms rendered by `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Open event streams per user.
    pub streams: StreamSlots,
    /// Per-user webhooks and their deliveries.
    pub webhooks: crate::webhooks::Webhooks,
}
