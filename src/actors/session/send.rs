use actix::prelude::*;
use tokio::time::Instant;

use super::{Bridge, SessionActor, SessionError};
use crate::browser::PageHandle;
use crate::domain::SessionKey;
use crate::messaging::{page, Outgoing};
use crate::store::{Reservation, SendOutcome};

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// Sends a message through WA-JS once WhatsApp Web accepted it locally (how: `src/messaging/`;
/// the actor only settles whether it may happen now). With an idempotency key,
/// a key seen within 24 h answers the first send's result and sends nothing
/// (docs/nothing-lost.md). The answer is a [`SendJob`] the caller runs: the send does not belong
/// to the actor's context, so a browser crash mid-send (which restarts the actor) cannot cut
/// the caller off from its outcome.
#[derive(Message)]
#[rtype(result = "SendJob")]
pub struct Send {
    pub key: SessionKey,
    pub message: Outgoing,
    pub idempotency_key: Option<String>,
}

/// The send, to be awaited by whoever asked for it.
pub type SendJob = crate::browser::BoxFuture<Result<SentMessage, SessionError>>;

/// A send that did not happen (a replay, a refusal) gives back the budget it took.
#[derive(Message)]
#[rtype(result = "()")]
struct RefundSend;

impl Handler<RefundSend> for SessionActor {
    type Result = ();
    fn handle(&mut self, _: RefundSend, _: &mut Context<Self>) {
        self.send_budget.refund(self.env.send_per_minute);
    }
}

/// The page of a linked session for a call around the conversation (mark read, presence, a
/// number check, chats, history: `src/messaging/conversation.rs`); it takes one from the send
/// budget like a send.
#[derive(Message)]
#[rtype(result = "Result<PageHandle, SessionError>")]
pub struct UsePage {
    pub key: SessionKey,
}

impl Handler<UsePage> for SessionActor {
    type Result = Result<PageHandle, SessionError>;

    fn handle(&mut self, msg: UsePage, _: &mut Context<Self>) -> Self::Result {
        self.check_key(&msg.key)?;
        let page = match (&self.run, self.machine.is_connected(), self.bridge) {
            (Some(run), true, Bridge::WaJs) => run.browser.page(),
            (Some(_), true, _) => return Err(SessionError::BridgeUnavailable),
            _ => return Err(SessionError::NotConnected),
        };
        self.send_budget
            .take(self.env.send_per_minute)
            .map_err(|retry_after_secs| SessionError::RateLimited { retry_after_secs })?;
        Ok(page)
    }
}

/// A media stored on retry (`POST /api/media/…/retry`): its `message.media` event and media row,
/// written in the session's order under its lease; answered once written.
#[derive(Message)]
#[rtype(result = "Result<(), SessionError>")]
pub struct RecordMedia {
    pub key: SessionKey,
    pub event: crate::events::MediaEvent,
    pub row: crate::store::MediaRow,
}

impl Handler<RecordMedia> for SessionActor {
    type Result = ResponseFuture<Result<(), SessionError>>;

    fn handle(&mut self, msg: RecordMedia, _: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.check_key(&msg.key) {
            return Box::pin(async move { Err(e) });
        }
        let dedupe = format!(
            "media:{}:{}",
            msg.row.id,
            msg.row.sha256.as_deref().unwrap_or_default()
        );
        self.writer.event_with(
            crate::events::MESSAGE_MEDIA,
            &msg.event,
            Some(dedupe),
            Some(msg.row),
        );
        let flushed = self.writer.flushed();
        Box::pin(async move {
            flushed.await;
            Ok(())
        })
    }
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

/// A reservation older than this with no outcome belongs to a send that died with its daemon:
/// its outcome is unknown (the longest a send may take, and some room).
const IN_FLIGHT_STALE_MS: i64 = page::SEND_DEADLINE_MAX.as_millis() as i64 + 10_000;

/// The id a send with an idempotency key asks WhatsApp Web to give its message: derived from
/// the session and the key, so a retry can look in the page's store for the message the first
/// attempt may have sent (WhatsApp Web's own ids look alike: `3EB0` and hex).
pub fn message_id_for(key: &SessionKey, idem: &str) -> String {
    let hex = crate::browser::wajs::sha256_hex(format!("wa-supervisor:{key}:{idem}").as_bytes());
    format!("3EB0{}", hex[..18].to_ascii_uppercase())
}

impl Handler<Send> for SessionActor {
    type Result = MessageResult<Send>;

    fn handle(&mut self, msg: Send, ctx: &mut Context<Self>) -> Self::Result {
        let refused = |e| MessageResult(Box::pin(std::future::ready(Err(e))) as SendJob);
        if let Err(e) = self.check_key(&msg.key) {
            return refused(e);
        }
        let to = msg.message.to.as_str().to_owned();
        let idem = msg.idempotency_key;
        let message_id = idem.as_deref().map(|k| message_id_for(&self.key, k));
        // Whether a send can happen now is settled after the idempotency key: a replay answers
        // the first result even when the session is no longer linked.
        let ready: Result<PageHandle, SessionError> =
            match (&self.run, self.machine.is_connected(), self.bridge) {
                (Some(run), true, Bridge::WaJs) => Ok(run.browser.page()),
                (Some(_), true, _) => Err(SessionError::BridgeUnavailable),
                _ => Err(SessionError::NotConnected),
            };
        let find = ready.as_ref().ok().cloned();
        let message = msg.message;
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
        let actor = ctx.address();
        let job = async move {
            // `(answer, refund)`: a send that did not happen gives its budget back.
            if let (Some(idem), Some(message_id)) = (&idem, &message_id) {
                let now = crate::store::now_ms();
                let reserved = store
                    .reserve_send(
                        &key,
                        idem.clone(),
                        message_id.clone(),
                        now,
                        IDEMPOTENCY_WINDOW_MS,
                        fence,
                    )
                    .await
                    .map_err(SessionError::store);
                let unknown = match reserved {
                    Err(e) => return (Err(e), true),
                    Ok(Reservation::Done(json)) => {
                        let first = serde_json::from_str(&json)
                            .map_err(|e| SessionError::store(std::io::Error::other(e)));
                        return (first, true);
                    }
                    Ok(Reservation::InFlight { since_ms, .. })
                        if now - since_ms < IN_FLIGHT_STALE_MS =>
                    {
                        return (Err(SessionError::SendInProgress), true)
                    }
                    // In flight for longer than any send takes: it died with its daemon.
                    Ok(Reservation::InFlight { message_id, .. }) => {
                        record(&store, &key, idem, SendOutcome::Unknown, fence).await;
                        message_id
                    }
                    Ok(Reservation::Unknown { message_id }) => message_id,
                    Ok(Reservation::Reserved) => String::new(),
                };
                if !unknown.is_empty() {
                    let found = find.map(|page| {
                        let id = format!("true_{to}_{unknown}");
                        async move { page::find_sent(&page, &id).await }
                    });
                    return (
                        resolve_unknown(&store, &key, idem, unknown, found, &to, fence).await,
                        true,
                    );
                }
            }
            let (result, outcome) = match (ready, budget) {
                (Err(e), _) => (Err(e), SendOutcome::NotSent),
                (Ok(_), Err(retry_after_secs)) => (
                    Err(SessionError::RateLimited { retry_after_secs }),
                    SendOutcome::NotSent,
                ),
                (Ok(handle), Ok(())) => {
                    match page::send(&handle, &message, message_id.as_deref()).await {
                        Ok(answer) => {
                            let sent = sent_message(&answer, &to);
                            let json = serde_json::to_string(&sent).expect("serializes");
                            (Ok(sent), SendOutcome::Sent(json))
                        }
                        // The page refused it, or it never started: nothing was sent.
                        Err(page::SendError::NotSent(e)) => (
                            Err(match (&message.body, &e) {
                                (
                                    crate::messaging::Body::Media { .. },
                                    crate::browser::BrowserError::Command { message, .. },
                                ) => SessionError::MediaRefused(message.clone()),
                                _ => SessionError::SendFailed(crate::chain(&e)),
                            }),
                            SendOutcome::NotSent,
                        ),
                        // No answer (a timeout, a browser that died): it may have been sent.
                        Err(page::SendError::Unknown(e)) => {
                            log::warn!(
                                "{key} {} send outcome unknown (message id {}): {}",
                                message.kind(),
                                message_id.as_deref().unwrap_or("none"),
                                crate::chain(&e)
                            );
                            let err = match &message_id {
                                Some(id) => SessionError::SendOutcomeUnknown {
                                    message_id: id.clone(),
                                },
                                None => SessionError::SendFailed(format!(
                                    "no answer from WhatsApp Web, the message may have been sent (send with an idempotencyKey to be safe): {}",
                                    crate::chain(&e)
                                )),
                            };
                            (Err(err), SendOutcome::Unknown)
                        }
                    }
                }
            };
            if let Some(idem) = &idem {
                record(&store, &key, idem, outcome, fence).await;
            }
            (result, false)
        };
        let job: SendJob = Box::pin(async move {
            let (result, refund) = job.await;
            if refund && took {
                actor.do_send(RefundSend);
            }
            result
        });
        MessageResult(job)
    }
}

/// Records how a reserved send ended (logged when it cannot be).
async fn record(
    store: &crate::store::Store,
    key: &SessionKey,
    idem: &str,
    outcome: SendOutcome,
    fence: Option<crate::store::Fence>,
) {
    if let Err(e) = store
        .finish_send(key, idem.to_owned(), outcome, fence)
        .await
    {
        log::error!("{key} idempotency key not recorded: {}", crate::chain(&e));
    }
}

/// A retry of a send whose outcome is unknown: never a second send. The page's store is asked
/// for the message; found, its result is the answer from now on; else still unknown.
async fn resolve_unknown(
    store: &crate::store::Store,
    key: &SessionKey,
    idem: &str,
    message_id: String,
    find: Option<
        impl std::future::Future<Output = Result<serde_json::Value, crate::browser::BrowserError>>,
    >,
    to: &str,
    fence: Option<crate::store::Fence>,
) -> Result<SentMessage, SessionError> {
    if let Some(find) = find {
        match find.await {
            Ok(found) if found.is_object() => {
                let sent = sent_message(&found, to);
                let json = serde_json::to_string(&sent).expect("serializes");
                record(store, key, idem, SendOutcome::Sent(json), fence).await;
                return Ok(sent);
            }
            Ok(_) => {}
            Err(e) => log::warn!(
                "{key} looking for message {message_id}: {}",
                crate::chain(&e)
            ),
        }
    }
    Err(SessionError::SendOutcomeUnknown { message_id })
}

fn sent_message(answer: &serde_json::Value, to: &str) -> SentMessage {
    SentMessage {
        id: answer["id"].as_str().unwrap_or_default().to_owned(),
        to: answer["to"].as_str().unwrap_or(to).to_owned(),
        timestamp: crate::store::now_ms() / 1000,
        ack: crate::events::Ack::from_wa(answer["ack"].as_i64().unwrap_or(0)),
    }
}
