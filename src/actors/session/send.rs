use actix::prelude::*;
use tokio::time::Instant;

use super::{Bridge, SessionActor, SessionError};
use crate::browser::Command;
use crate::domain::{ChatId, MessageText, SessionKey};
use crate::store::Reservation;

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// Sends a text through WA-JS once WhatsApp Web accepted it locally. With an idempotency key,
/// a key seen within 24 h answers the first send's result and sends nothing.
#[derive(Message)]
#[rtype(result = "Result<SentMessage, SessionError>")]
pub struct Send {
    pub key: SessionKey,
    pub to: ChatId,
    pub text: MessageText,
    pub idempotency_key: Option<String>,
}

/// What a send answers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SentMessage {
    /// WhatsApp's message id (`message.ack` events name it).
    pub id: String,
    /// The chat it went to.
    pub to: String,
    /// Unix seconds.
    pub timestamp: i64,
    pub ack: crate::events::Ack,
}

/// Sends per minute, refilled continuously.
#[derive(Debug)]
pub struct SendBudget {
    tokens: f64,
    at: Instant,
}

impl SendBudget {
    pub fn new(per_minute: u32) -> SendBudget {
        SendBudget {
            tokens: f64::from(per_minute),
            at: Instant::now(),
        }
    }

    /// Takes one send, or says how many seconds until one is available.
    fn take(&mut self, per_minute: u32) -> Result<(), u64> {
        let rate = f64::from(per_minute) / 60.0;
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * rate)
            .min(f64::from(per_minute));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - self.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

impl SendBudget {
    /// Gives back a send that did not happen (an idempotent replay).
    fn refund(&mut self, per_minute: u32) {
        self.tokens = (self.tokens + 1.0).min(f64::from(per_minute));
    }
}

impl Handler<Send> for SessionActor {
    type Result = ResponseActFuture<Self, Result<SentMessage, SessionError>>;

    fn handle(&mut self, msg: Send, _: &mut Context<Self>) -> Self::Result {
        let refused = |e| Box::pin(fut::ready(Err(e))) as Self::Result;
        if let Err(e) = self.check_key(&msg.key) {
            return refused(e);
        }
        // Whether a send can happen now is settled after the idempotency key: a replay answers
        // the first result even when the session is no longer linked.
        let ready = match (&self.run, self.machine.is_connected(), self.bridge) {
            (Some(run), true, Bridge::WaJs) => Ok(run.browser.command(Command::SendText {
                to: msg.to.as_str().to_owned(),
                text: msg.text.as_str().to_owned(),
            })),
            (Some(_), true, _) => Err(SessionError::BridgeUnavailable),
            _ => Err(SessionError::NotConnected),
        };
        let budget = match ready {
            Ok(_) => self.send_budget.take(self.env.send_per_minute),
            Err(_) => Ok(()),
        };
        // A send that then does not happen (a replay) gives back what it took.
        let took = ready.is_ok() && budget.is_ok();
        // In a cluster, writes name this node's lease; without one the session is not ours.
        let fence = match self.write_fence() {
            Ok(fence) => fence,
            Err(e) => return refused(e),
        };
        let store = self.env.store.clone();
        let key = self.key.clone();
        let to = msg.to.as_str().to_owned();
        let idem = msg.idempotency_key;
        Box::pin(
            async move {
                // `(answer, refund)`: a send that did not happen gives its budget back.
                if let Some(idem) = &idem {
                    let now = crate::store::now_ms();
                    let reserved = store
                        .reserve_send(&key, idem.clone(), now, IDEMPOTENCY_WINDOW_MS, fence)
                        .await
                        .map_err(SessionError::store);
                    match reserved {
                        Err(e) => return (Err(e), true),
                        Ok(Reservation::Done(json)) => {
                            let first = serde_json::from_str(&json)
                                .map_err(|e| SessionError::store(std::io::Error::other(e)));
                            return (first, true);
                        }
                        Ok(Reservation::InFlight) => {
                            return (Err(SessionError::SendInProgress), true)
                        }
                        Ok(Reservation::Reserved) => {}
                    }
                }
                let result = match (ready, budget) {
                    (Err(e), _) => Err(e),
                    (Ok(_), Err(retry_after_secs)) => {
                        Err(SessionError::RateLimited { retry_after_secs })
                    }
                    (Ok(send), Ok(())) => match send.await {
                        Ok(answer) => Ok(sent_message(&answer, &to)),
                        Err(e) => Err(SessionError::SendFailed(crate::chain(&e))),
                    },
                };
                if let Some(idem) = idem {
                    // The answer is kept for replays; a send that did not happen frees its key.
                    let json = result
                        .as_ref()
                        .ok()
                        .map(|s| serde_json::to_string(s).expect("serializes"));
                    if let Err(e) = store.finish_send(&key, idem, json, fence).await {
                        log::error!("{key} idempotency key not recorded: {}", crate::chain(&e));
                    }
                }
                (result, false)
            }
            .into_actor(self)
            .map(move |(result, refund), act, _| {
                if refund && took {
                    act.send_budget.refund(act.env.send_per_minute);
                }
                result
            }),
        )
    }
}

fn sent_message(answer: &serde_json::Value, to: &str) -> SentMessage {
    SentMessage {
        id: answer["id"].as_str().unwrap_or_default().to_owned(),
        to: answer["to"].as_str().unwrap_or(to).to_owned(),
        timestamp: crate::store::now_ms() / 1000,
        ack: crate::events::Ack::from_wa(answer["ack"].as_i64().unwrap_or(0)),
    }
}
