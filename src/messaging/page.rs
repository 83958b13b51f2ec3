//! Handing a message to WhatsApp Web through WA-JS (docs/messaging.md, "Into the page").
//!
//! - Media goes in slices of [`SLICE_BYTES`] (no DevTools message near 1 MiB), kept in the page
//!   under a random upload id and made into one `File` by the send itself, which drops them.
//! - The send runs in the page as a job: one call starts it, short calls collect it. No single
//!   DevTools call waits for WhatsApp (the client cuts every call at 10 s), and a send that takes
//!   longer than its deadline is reported as of unknown outcome, never as not sent.
//! - Every `WPP` member used here is listed in [`WPP_MEMBERS`], checked against the pinned
//!   WA-JS's type definitions (`tests/integration/bridge.rs`).

use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use super::{Body, MediaKind, Outgoing};
use crate::browser::{BrowserError, Command, PageHandle};

/// Every `WPP` member the messaging calls touch.
pub const WPP_MEMBERS: &[&str] = &[
    "WPP.chat.sendTextMessage",
    "WPP.chat.sendFileMessage",
    "WPP.chat.sendLocationMessage",
    "WPP.chat.sendVCardContactMessage",
    "WPP.chat.sendRawMessage",
    "WPP.chat.sendReactionToMessage",
    "WPP.chat.sendCreatePollMessage",
    "WPP.chat.getMessageById",
];

/// Bytes of media per DevTools call (base64 makes it 683 KiB of text).
pub const SLICE_BYTES: usize = 512 * 1024;

/// How long a send may take before its outcome is unknown: 20 s, and a second more for every
/// 256 KiB of media (WhatsApp Web uploads it before it answers), at most [`SEND_DEADLINE_MAX`].
pub fn deadline(msg: &Outgoing) -> Duration {
    let media = match &msg.body {
        Body::Media { media, .. } => media.bytes.len() as u64 / (256 * 1024),
        _ => 0,
    };
    (Duration::from_secs(20) + Duration::from_secs(media)).min(SEND_DEADLINE_MAX)
}

/// The longest any send may take.
pub const SEND_DEADLINE_MAX: Duration = Duration::from_secs(300);

/// How a send through the page ended without an answer.
#[derive(Debug)]
pub enum SendError {
    /// Nothing can have been sent: the page refused it, or the send never started.
    NotSent(BrowserError),
    /// The send started and its end is not known (a timeout, a page that went away).
    Unknown(BrowserError),
}

/// Sends `msg` (with WhatsApp message id `message_id` when given); the answer is
/// `{id, ack, to}` once WhatsApp Web took the message.
pub async fn send(
    page: &PageHandle,
    msg: &Outgoing,
    message_id: Option<&str>,
) -> Result<Value, SendError> {
    let what = what(msg);
    let upload = match &msg.body {
        Body::Media { media, .. } => Some(upload(page, what, &media.bytes).await?),
        _ => None,
    };
    let job = random_id();
    let call = call(msg, message_id, upload.as_deref());
    let start = format!(
        "const jobs = (window.__waSupJobs = window.__waSupJobs || {{}}); const j = {{ done: false }}; \
         jobs[{job}] = j; \
         j.p = (async () => {{ {call} }})().then((v) => {{ j.done = true; j.ok = v; }}, \
           (e) => {{ j.done = true; j.error = String(e && e.message || e); }}); \
         setTimeout(() => {{ delete jobs[{job}]; }}, 600000); return true;",
        job = js(&job),
    );
    if let Err(e) = (page)(Command::Call { what, body: start }).await {
        if let Some(up) = &upload {
            drop_upload(page, up).await;
        }
        // A page that answered with an error did not start the send; no answer at all leaves
        // it open whether the job started.
        return Err(match e {
            e @ BrowserError::Command { .. } => SendError::NotSent(e),
            e => SendError::Unknown(e),
        });
    }
    let collect = format!(
        "const jobs = window.__waSupJobs || {{}}; const j = jobs[{job}]; if (!j) return {{ gone: true }}; \
         if (!j.done) await Promise.race([j.p, new Promise((r) => setTimeout(r, 4000))]); \
         if (!j.done) return {{ pending: true }}; delete jobs[{job}]; \
         return j.error != null ? {{ failed: j.error }} : {{ done: j.ok }};",
        job = js(&job),
    );
    let until = tokio::time::Instant::now() + deadline(msg);
    let answer = collect_until(page, what, collect, until).await;
    // A large file leaves garbage in the page (its slices, the File): collected now, not
    // whenever the page next allocates.
    if upload.is_some() && media_len(msg) > GC_AFTER_BYTES {
        let _ = (page)(Command::CollectGarbage).await;
    }
    answer
}

/// Media larger than this is followed by a garbage collection in the page.
const GC_AFTER_BYTES: usize = 1 << 20;

fn media_len(msg: &Outgoing) -> usize {
    match &msg.body {
        Body::Media { media, .. } => media.bytes.len(),
        _ => 0,
    }
}

/// Collects the send job until it ends or `until` passes.
async fn collect_until(
    page: &PageHandle,
    what: &'static str,
    collect: String,
    until: tokio::time::Instant,
) -> Result<Value, SendError> {
    loop {
        let answer = (page)(Command::Call {
            what,
            body: collect.clone(),
        })
        .await
        .map_err(SendError::Unknown)?;
        if let Some(done) = answer.get("done") {
            return Ok(done.clone());
        }
        if let Some(failed) = answer.get("failed") {
            return Err(SendError::NotSent(BrowserError::Command {
                what,
                message: failed.as_str().unwrap_or("failed").to_owned(),
            }));
        }
        if answer.get("gone").is_some() {
            return Err(SendError::Unknown(BrowserError::Command {
                what,
                message: "the page was reloaded during the send".into(),
            }));
        }
        if tokio::time::Instant::now() >= until {
            return Err(SendError::Unknown(BrowserError::Timeout(what)));
        }
    }
}

/// A message this device sent, by its serialized id (`true_<chat>_<id>`): `{id, ack, to}`, or
/// `null` when WhatsApp Web's store has no such message.
pub async fn find_sent(page: &PageHandle, id: &str) -> Result<Value, BrowserError> {
    let body = format!(
        "let m = null; try {{ m = await WPP.chat.getMessageById({}); }} catch (e) {{ m = null; }} \
         return m ? {{ id: wid(m.id), ack: Number(m.ack || 0), to: wid(m.to) }} : null;",
        js(id)
    );
    (page)(Command::Call {
        what: "getMessageById",
        body,
    })
    .await
}

/// The media into the page, slice by slice; its upload id.
async fn upload(page: &PageHandle, what: &'static str, bytes: &[u8]) -> Result<String, SendError> {
    let id = random_id();
    for slice in bytes.chunks(SLICE_BYTES) {
        let b64 = base64::engine::general_purpose::STANDARD.encode(slice);
        let body = format!(
            "const s = atob({}); const a = new Uint8Array(s.length); \
             for (let i = 0; i < s.length; i++) a[i] = s.charCodeAt(i); \
             const u = (window.__waSupUploads = window.__waSupUploads || {{}}); \
             (u[{id}] = u[{id}] || []).push(a); return u[{id}].length;",
            js(&b64),
            id = js(&id),
        );
        if let Err(e) = (page)(Command::Call { what, body }).await {
            drop_upload(page, &id).await;
            return Err(SendError::NotSent(e));
        }
    }
    Ok(id)
}

/// Frees what an upload left in the page (best effort: a page that went away has freed it).
async fn drop_upload(page: &PageHandle, id: &str) {
    let body = format!(
        "if (window.__waSupUploads) delete window.__waSupUploads[{}]; return true;",
        js(id)
    );
    let _ = (page)(Command::Call {
        what: "upload",
        body,
    })
    .await;
}

fn what(msg: &Outgoing) -> &'static str {
    match &msg.body {
        Body::Text(_) => "sendTextMessage",
        Body::Media { .. } => "sendFileMessage",
        Body::Location { .. } => "sendLocationMessage",
        Body::Card { .. } => "sendVCardContactMessage",
        Body::Vcard { .. } => "sendRawMessage",
        Body::Reaction { .. } => "sendReactionToMessage",
        Body::Poll { .. } => "sendCreatePollMessage",
    }
}

/// The body of the async function that sends `msg`; it answers `{id, ack, to}`.
fn call(msg: &Outgoing, message_id: Option<&str>, upload: Option<&str>) -> String {
    let to = js(msg.to.as_str());
    let mut options = json!({ "createChat": true });
    if let Some(id) = message_id {
        options["messageId"] = json!(id);
    }
    if let Some(quoted) = &msg.reply_to {
        options["quotedMsg"] = json!(quoted);
    }
    let answer = format!(
        "const answer = (r) => ({{ id: String(r.id), ack: Number(r.ack || 0), to: r.to ? String(r.to) : {to} }});"
    );
    let with = |extra: Value| {
        let mut all = options.clone();
        if let (Some(all), Some(extra)) = (all.as_object_mut(), extra.as_object()) {
            all.extend(extra.clone());
        }
        all.to_string()
    };
    let send = match &msg.body {
        Body::Text(text) => format!(
            "return answer(await WPP.chat.sendTextMessage({to}, {}, {}));",
            js(text.as_str()),
            options
        ),
        Body::Media { media, caption } => {
            let (kind, ptt) = match media.kind {
                MediaKind::Image => ("image", false),
                MediaKind::Video => ("video", false),
                MediaKind::Audio => ("audio", false),
                MediaKind::Voice => ("audio", true),
                MediaKind::Document => ("document", false),
                MediaKind::Sticker => ("sticker", false),
            };
            let mut extra = json!({
                "type": kind,
                "filename": media.filename,
                "mimetype": media.mimetype,
            });
            if ptt {
                extra["isPtt"] = json!(true);
            }
            if let Some(caption) = caption {
                extra["caption"] = json!(caption);
            }
            format!(
                "const u = window.__waSupUploads || {{}}; const parts = u[{up}] || []; delete u[{up}]; \
                 const file = new File(parts, {name}, {{ type: {mime} }}); \
                 if (file.size !== {size}) throw new Error('the upload into the page is incomplete'); \
                 return answer(await WPP.chat.sendFileMessage({to}, file, {opts}));",
                up = js(upload.unwrap_or_default()),
                name = js(&media.filename),
                mime = js(&media.mimetype),
                size = media.bytes.len(),
                opts = with(extra),
            )
        }
        Body::Location {
            lat,
            lng,
            name,
            address,
        } => {
            let mut extra = json!({ "lat": lat, "lng": lng });
            if let Some(name) = name {
                extra["name"] = json!(name);
            }
            if let Some(address) = address {
                extra["address"] = json!(address);
            }
            format!(
                "return answer(await WPP.chat.sendLocationMessage({to}, {}));",
                with(extra)
            )
        }
        Body::Card { name, phone } => format!(
            "return answer(await WPP.chat.sendVCardContactMessage({to}, {}, {}));",
            json!({ "id": format!("{phone}@c.us"), "name": name }),
            options
        ),
        Body::Vcard { vcard, name } => format!(
            "return answer(await WPP.chat.sendRawMessage({to}, {}, {}));",
            json!({ "type": "vcard", "body": vcard, "vcardFormattedName": name }),
            options
        ),
        // WA-JS gives a reaction no id of its own: the answer names the message reacted to.
        Body::Reaction { message_id, emoji } => format!(
            "const r = await WPP.chat.sendReactionToMessage({id}, {emoji}); \
             if (r && typeof r.sendMsgResult === 'string' && /error/i.test(r.sendMsgResult)) throw new Error(r.sendMsgResult); \
             return {{ id: {id}, ack: 0, to: {to} }};",
            id = js(message_id),
            emoji = if emoji.is_empty() { "false".to_owned() } else { js(emoji) },
        ),
        Body::Poll {
            name,
            options: choices,
            selectable,
        } => format!(
            "return answer(await WPP.chat.sendCreatePollMessage({to}, {}, {}, {}));",
            js(name),
            json!(choices),
            with(json!({ "selectableCount": selectable }))
        ),
    };
    format!("{answer} {send}")
}

/// A JavaScript string literal.
fn js(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn random_id() -> String {
    format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ChatId, MessageText};
    use crate::messaging::Media;
    use std::sync::{Arc, Mutex};

    fn every_kind() -> Vec<Outgoing> {
        let media = |kind| Body::Media {
            media: Media {
                kind,
                bytes: Arc::new(vec![7; SLICE_BYTES * 2 + 1]),
                mimetype: "application/pdf".into(),
                filename: "m.pdf".into(),
            },
            caption: Some("c".into()),
        };
        let to = ChatId::parse("4915112345678").unwrap();
        [
            Body::Text(MessageText::parse("hi").unwrap()),
            media(MediaKind::Document),
            media(MediaKind::Voice),
            Body::Location {
                lat: 1.0,
                lng: 2.0,
                name: None,
                address: Some("a".into()),
            },
            Body::Card {
                name: "Ana".into(),
                phone: "4915100000001".into(),
            },
            Body::Vcard {
                vcard: "BEGIN:VCARD\nFN:Ana\nEND:VCARD".into(),
                name: "Ana".into(),
            },
            Body::Reaction {
                message_id: "false_1@c.us_A".into(),
                emoji: String::new(),
            },
            Body::Poll {
                name: "?".into(),
                options: vec!["a".into(), "b".into()],
                selectable: 1,
            },
        ]
        .into_iter()
        .map(|body| Outgoing {
            to: to.clone(),
            reply_to: Some("false_1@c.us_Q".into()),
            body,
        })
        .collect()
    }

    /// A page that records every call and answers like WA-JS would.
    fn recording_page(calls: Arc<Mutex<Vec<(&'static str, String)>>>) -> PageHandle {
        Arc::new(move |command| {
            let calls = calls.clone();
            Box::pin(async move {
                let (what, body) = match command {
                    Command::Call { what, body } => (what, body),
                    Command::CollectGarbage => ("collectGarbage", String::new()),
                    other => panic!("{other:?}"),
                };
                calls.lock().unwrap().push((what, body.clone()));
                Ok(if body.contains("pending") {
                    json!({ "done": { "id": "true_1@c.us_X", "ack": 0, "to": "1@c.us" } })
                } else {
                    json!(true)
                })
            })
        })
    }

    #[tokio::test]
    async fn media_goes_in_slices_below_a_mebibyte() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let page = recording_page(calls.clone());
        let doc = every_kind().swap_remove(1);
        let answer = send(&page, &doc, Some("3EB0AB")).await.unwrap();
        assert_eq!(answer["id"], "true_1@c.us_X");
        let calls = calls.lock().unwrap();
        // Three slices, the start, one collection, a garbage collection (over 1 MiB).
        assert_eq!(calls[5].0, "collectGarbage");
        assert_eq!(
            calls.len(),
            6,
            "{:?}",
            calls.iter().map(|c| c.1.len()).collect::<Vec<_>>()
        );
        assert!(calls.iter().all(|(_, body)| body.len() < 768 * 1024));
        assert!(
            calls[3].1.contains("\"messageId\":\"3EB0AB\""),
            "{}",
            calls[3].1
        );
        assert!(calls[3].1.contains("\"quotedMsg\":\"false_1@c.us_Q\""));
    }

    #[test]
    fn the_calls_use_only_the_listed_members() {
        let text: String = every_kind()
            .iter()
            .map(|m| call(m, Some("3EB0"), Some("up")))
            .collect::<Vec<_>>()
            .join(" ")
            + " WPP.chat.getMessageById(";
        let used = crate::browser::bridge::members_used(&text);
        let mut listed = WPP_MEMBERS.to_vec();
        listed.sort();
        assert_eq!(used, listed);
        assert!(text.contains("isPtt"));
        assert!(text.contains("sendReactionToMessage(\"false_1@c.us_A\", false)"));
    }
}
