//! The delivery loop. It sleeps until the outbox wakes it (a new event, a re-queued delivery), a
//! delivery ends or the earliest retry is due — no polling while idle — then claims due
//! deliveries (the oldest pending one of each target and session), posts them signed, and records
//! each outcome: a 2xx ends it, 410 Gone disables the user's webhook, anything else is retried
//! after the next delay of [`SCHEDULE`] (with jitter) and, past its end, marked `failed` and kept.
//!
//! Each (target, session) is a lane of its own: every claimed delivery runs as its own task, up
//! to [`CONCURRENCY`] at once for the whole daemon, and the loop claims more while some are still
//! on their way — a receiver that takes its full 10 s holds its own lane only (its head is leased
//! while in flight, so it is not claimed twice), never another target's or another session's.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::guard::{Guard, GuardedResolver};
use super::sign::SigningSecret;
use crate::actors::session::rfc3339;
use crate::events::Outbox;
use crate::store::{now_ms, DueDelivery, Outcome, Target};

/// Delays after each failed attempt: about 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (the
/// default of `WEBHOOK_RETRY_SCHEDULE`).
pub const SCHEDULE: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];
/// Spread of each retry delay.
const JITTER: f64 = 0.1;
/// A receiver must answer within this.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// A claimed delivery is someone's for this long (a daemon that dies mid-delivery leaves it).
const LEASE_MS: i64 = 60_000;
/// How often the database's clock is read again (its offset from this host's drifts slowly).
const CLOCK_EVERY: Duration = Duration::from_secs(30);
/// Deliveries claimed in one statement.
const BATCH: i64 = 32;
/// Deliveries on their way at once, daemon-wide (one per lane at most).
pub const CONCURRENCY: usize = 64;
/// The default of `WEBHOOK_DISABLE_AFTER`: longer than the whole retry schedule (about 28 h).
pub const DISABLE_AFTER: Duration = Duration::from_secs(48 * 3600);

/// The platform's bot backend: gets every user's events; trusted (no address checks).
#[derive(Debug, Clone)]
pub struct ServiceWebhook {
    pub url: reqwest::Url,
    pub secret: SigningSecret,
}

pub struct Dispatcher {
    outbox: Arc<Outbox>,
    /// A target whose owed deliveries stay undelivered this long is given up
    /// (`WEBHOOK_DISABLE_AFTER`).
    disable_after: Duration,
    service: Option<ServiceWebhook>,
    guard: Arc<Guard>,
    trusted: reqwest::Client,
    guarded: reqwest::Client,
    schedule: Vec<Duration>,
    /// When the database's clock was last read, and its offset from this host's (ms).
    clock: Mutex<Option<(tokio::time::Instant, i64)>>,
}

impl Dispatcher {
    pub fn new(
        outbox: Arc<Outbox>,
        service: Option<ServiceWebhook>,
        guard: Arc<Guard>,
    ) -> Dispatcher {
        let client = || {
            reqwest::Client::builder()
                .timeout(TIMEOUT)
                .connect_timeout(TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("wa-supervisor/", env!("CARGO_PKG_VERSION")))
        };
        Dispatcher {
            outbox,
            disable_after: DISABLE_AFTER,
            service,
            trusted: client().build().expect("an HTTP client builds"),
            // No proxy from the environment (HTTPS_PROXY, ALL_PROXY): the guard checks the
            // address the client connects to, which through a proxy would be the proxy's.
            guarded: client()
                .no_proxy()
                .dns_resolver(Arc::new(GuardedResolver(guard.clone())))
                .build()
                .expect("an HTTP client builds"),
            guard,
            schedule: SCHEDULE.to_vec(),
            clock: Mutex::new(None),
        }
    }

    /// How long a target may fail before it is given up (`WEBHOOK_DISABLE_AFTER`).
    pub fn with_disable_after(mut self, after: Duration) -> Dispatcher {
        self.disable_after = after;
        self
    }

    /// The delays between attempts (`WEBHOOK_RETRY_SCHEDULE`).
    pub fn with_schedule(mut self, schedule: Vec<Duration>) -> Dispatcher {
        self.schedule = schedule;
        self
    }

    /// Runs the loop until the runtime ends.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(std::sync::Arc::new(self).run())
    }

    async fn run(self: Arc<Self>) {
        let wake = self.outbox.wake();
        let store = self.outbox.store().clone();
        let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
        let mut in_flight = tokio::task::JoinSet::new();
        // Targets that stopped recovering are looked for this often.
        let sweep_every = (self.disable_after / 4).min(Duration::from_secs(60));
        let mut next_sweep = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_sweep {
                self.give_up_failing().await;
                next_sweep = tokio::time::Instant::now() + sweep_every;
            }
            // Everything due now, as far as there is room.
            loop {
                let room = permits.available_permits().min(BATCH as usize);
                if room == 0 {
                    break;
                }
                let service = self.service.is_some();
                let now = self.now().await;
                let due = match store.claim_due(now, LEASE_MS, room as i64, service).await {
                    Ok(due) => due,
                    Err(e) => {
                        log::error!("webhooks: cannot claim deliveries: {}", crate::chain(&e));
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        break;
                    }
                };
                if due.is_empty() {
                    break;
                }
                for d in due {
                    let permit = permits
                        .clone()
                        .try_acquire_owned()
                        .expect("claimed no more than the free permits");
                    let me = self.clone();
                    in_flight.spawn(async move {
                        me.deliver(d).await;
                        drop(permit);
                    });
                }
            }
            // Then sleep until woken, a delivery ends (its lane's next one may be due, and there
            // is room again), or the next retry is due.
            let wait = match store.next_due_ms(self.service.is_some()).await {
                Ok(None) => None,
                Ok(Some(at)) => Some(Duration::from_millis(
                    u64::try_from(at - self.now().await).unwrap_or(0),
                )),
                Err(e) => {
                    log::error!("webhooks: {}", crate::chain(&e));
                    Some(Duration::from_secs(1))
                }
            };
            let until_sweep = next_sweep.saturating_duration_since(tokio::time::Instant::now());
            let wait = Some(wait.map_or(until_sweep, |w| w.min(until_sweep)));
            let sleep = async {
                match wait {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = wake.notified() => {}
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                () = sleep => {}
            }
        }
    }

    /// Now, by the clock every node of a cluster shares (the database's; see
    /// [`crate::store::Store::clock_ms`]): this host's clock plus its offset from the
    /// database's, read again every [`CLOCK_EVERY`] (not a query per delivery). The last offset
    /// when the database does not answer.
    async fn now(&self) -> i64 {
        let known = *self.clock.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, offset)) = known.filter(|(at, _)| at.elapsed() < CLOCK_EVERY) {
            return now_ms() + offset;
        }
        match self.outbox.store().clock_ms().await {
            Ok(now) => {
                let offset = now - now_ms();
                *self.clock.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some((tokio::time::Instant::now(), offset));
                now
            }
            Err(e) => {
                log::warn!("webhooks: the database's clock: {}", crate::chain(&e));
                now_ms() + known.map_or(0, |(_, offset)| offset)
            }
        }
    }

    /// A target whose owed deliveries have failed for longer than `disable_after` is given up:
    /// its backlog and storage stop growing (docs/nothing-lost.md).
    async fn give_up_failing(&self) {
        let now = self.now().await;
        let after = self.disable_after;
        let reason = format!(
            "not delivered for more than {} (WEBHOOK_DISABLE_AFTER)",
            humanize(after)
        );
        match self
            .outbox
            .store()
            .expire_failing(now - after.as_millis() as i64, reason, now)
            .await
        {
            Ok((0, 0)) => {}
            Ok((webhooks, deliveries)) => log::warn!(
                "webhooks: {webhooks} users' webhooks disabled and {deliveries} owed deliveries failed: not delivered for more than {}",
                humanize(after)
            ),
            Err(e) => log::error!("webhooks: {}", crate::chain(&e)),
        }
    }

    async fn deliver(&self, d: DueDelivery) {
        let store = self.outbox.store();
        let attempts = d.attempts + 1;
        let outcome = self.attempt(&d).await;
        let now = self.now().await;
        let outcome = match outcome {
            Ok(status) => Outcome::Delivered { status },
            Err(Attempt::Gone(status)) => {
                if let (Target::User, Some(hook)) = (d.target, &d.webhook) {
                    let reason = format!("the receiver answered {status} Gone");
                    if let Err(e) = store.disable_webhook(&hook.user, reason, now).await {
                        log::error!("webhooks: {}", crate::chain(&e));
                    }
                }
                Outcome::Failed {
                    status: Some(status),
                    error: "410 Gone: the target is disabled".to_owned(),
                }
            }
            Err(Attempt::Refused(error)) => Outcome::Failed {
                status: None,
                error,
            },
            Err(Attempt::Retry { status, error }) => match self.schedule.get(attempts as usize - 1)
            {
                Some(delay) => {
                    let jitter = rand::random_range(1.0 - JITTER..1.0 + JITTER);
                    Outcome::Retry {
                        next_ms: now + delay.mul_f64(jitter).as_millis() as i64,
                        status,
                        error,
                    }
                }
                None => Outcome::Failed { status, error },
            },
        };
        log::debug!(
            "webhooks: {} event {} to {}: {outcome:?}",
            d.event.key,
            d.event.id,
            d.target.as_str()
        );
        if let Err(e) = store.record_attempt(d.id, attempts, outcome, now).await {
            log::error!("webhooks: cannot record an attempt: {}", crate::chain(&e));
        }
    }

    /// One POST; the receiver's status on success.
    async fn attempt(&self, d: &DueDelivery) -> Result<u16, Attempt> {
        let (url, secret, client) = match (d.target, &self.service, &d.webhook) {
            (Target::Service, Some(service), _) => {
                (service.url.clone(), service.secret.clone(), &self.trusted)
            }
            (Target::Service, None, _) => {
                return Err(Attempt::Refused("no service webhook is configured".into()))
            }
            (Target::User, _, None) => {
                return Err(Attempt::Refused("the webhook was deleted".into()))
            }
            (Target::User, _, Some(hook)) => {
                if let Some(reason) = &hook.disabled_reason {
                    return Err(Attempt::Refused(format!(
                        "the webhook is disabled: {reason}"
                    )));
                }
                let url = self.guard.check_url(&hook.url).map_err(Attempt::Refused)?;
                let secret = SigningSecret::parse(&hook.secret).map_err(Attempt::Refused)?;
                (url, secret, &self.guarded)
            }
        };
        let body = format!(
            r#"{{"type":{},"timestamp":{},"data":{}}}"#,
            serde_json::to_string(&d.event.kind).expect("a string serializes"),
            serde_json::to_string(&rfc3339(d.event.created_ms)).expect("a string serializes"),
            // A stored media gets a link valid from this attempt on.
            self.outbox.present(&d.event.kind, &d.event.payload)
        );
        // Unique for good (not the row id, which a restore or another database repeats):
        // receivers dedupe by it.
        let id = d.event.webhook_id();
        let timestamp = now_ms() / 1000;
        let signature = secret.sign(&id, timestamp, body.as_bytes());
        let sent = client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(res) if res.status().is_success() => Ok(res.status().as_u16()),
            Ok(res) if res.status() == reqwest::StatusCode::GONE => Err(Attempt::Gone(410)),
            Ok(res) => Err(Attempt::Retry {
                status: Some(res.status().as_u16()),
                error: format!("the receiver answered {}", res.status()),
            }),
            Err(e) => Err(Attempt::Retry {
                status: None,
                error: crate::chain(&e),
            }),
        }
    }
}

enum Attempt {
    Gone(u16),
    Retry {
        status: Option<u16>,
        error: String,
    },
    /// Cannot be sent at all (no such target, a refused address): no retry.
    Refused(String),
}

/// `48 h`, `90 s`, `2500 ms`.
fn humanize(d: Duration) -> String {
    match d.as_millis() {
        ms if ms % 3_600_000 == 0 => format!("{} h", ms / 3_600_000),
        ms if ms % 1000 == 0 => format!("{} s", ms / 1000),
        ms => format!("{ms} ms"),
    }
}
