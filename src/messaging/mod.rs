//! Everything a bot sends (docs/messaging.md): the request of `POST /api/messages/{userId}/{slot}`
//! by `type` ([`SendRequest`]), checked into an [`Outgoing`] message; media taken in by the
//! daemon, never the page ([`media`]); and the calls that hand a message to WhatsApp Web
//! ([`page`]). The session actor only decides whether a send may happen now (linked, WA-JS,
//! budget, idempotency) and gives the job a [`crate::browser::PageHandle`]: it does not grow with
//! every message type.

pub mod conversation;
pub mod media;
pub mod page;

use serde::Deserialize;

use crate::domain::{ChatId, MessageText, IDEMPOTENCY_KEY_MAX};
pub use media::{Intake, Media, MediaError, MediaInput, MediaKind};

/// Longest caption (WhatsApp's own limit).
pub const CAPTION_MAX_CHARS: usize = 1024;
/// Longest location name or address, contact name, poll name or option.
pub const LABEL_MAX_CHARS: usize = 256;
/// Longest vCard.
pub const VCARD_MAX_BYTES: usize = 16 * 1024;
/// Poll options: at least, at most (WhatsApp's limits).
pub const POLL_OPTIONS: std::ops::RangeInclusive<usize> = 2..=12;

/// The body of `POST /api/messages/{userId}/{slot}`: one schema per `type` (`text` when absent).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SendRequest {
    Text(TextMessage),
    Image(MediaMessage),
    Video(MediaMessage),
    /// An audio file (played inline, not as a voice note).
    Audio(MediaMessage),
    /// A push-to-talk voice note: anything ffmpeg decodes, sent as Ogg/Opus mono 16 kHz.
    Voice(MediaMessage),
    Document(MediaMessage),
    Sticker(MediaMessage),
    Location(LocationMessage),
    Contact(ContactMessage),
    Reaction(ReactionMessage),
    Poll(PollMessage),
}

/// `type: text`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TextMessage {
    /// `<digits>` (country code first), `<digits>@c.us`, `<id>@g.us` or `<digits>@lid`.
    #[schema(example = "4915112345678")]
    to: String,
    /// 1 to 65 536 characters.
    text: String,
    /// A message id (an event's `id`): sent as a quoted reply to it.
    reply_to: Option<String>,
    /// The same key within 24 h answers the first send's result and sends nothing (≤ 128
    /// characters).
    idempotency_key: Option<String>,
}

/// `type: image | video | audio | voice | document | sticker`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MediaMessage {
    #[schema(example = "4915112345678")]
    to: String,
    media: MediaInput,
    /// Images, videos and documents only; at most 1 024 characters.
    caption: Option<String>,
    reply_to: Option<String>,
    idempotency_key: Option<String>,
}

/// `type: location`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocationMessage {
    #[schema(example = "4915112345678")]
    to: String,
    /// −90 to 90.
    #[schema(example = 52.52)]
    lat: f64,
    /// −180 to 180.
    #[schema(example = 13.405)]
    lng: f64,
    name: Option<String>,
    address: Option<String>,
    reply_to: Option<String>,
    idempotency_key: Option<String>,
}

/// `type: contact`: a whole `vcard`, or a `name` and a `phone` WhatsApp makes the card of.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContactMessage {
    #[schema(example = "4915112345678")]
    to: String,
    /// A vCard (`BEGIN:VCARD` … `END:VCARD`, at most 16 KiB); or `name` and `phone`.
    vcard: Option<String>,
    name: Option<String>,
    /// Digits, country code first (optional `+`).
    phone: Option<String>,
    reply_to: Option<String>,
    idempotency_key: Option<String>,
}

/// `type: reaction` (no `replyTo`): `emoji` on message `messageId`; an empty emoji removes it.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReactionMessage {
    /// The chat of the message.
    #[schema(example = "4915112345678")]
    to: String,
    /// The message reacted to (an event's `id`).
    message_id: String,
    #[schema(example = "👍")]
    emoji: String,
    idempotency_key: Option<String>,
}

/// `type: poll`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PollMessage {
    #[schema(example = "4915112345678")]
    to: String,
    /// The question.
    name: String,
    /// 2 to 12 distinct options.
    options: Vec<String>,
    /// How many options one voter may pick (1 to the number of options; default 1).
    selectable: Option<u32>,
    reply_to: Option<String>,
    idempotency_key: Option<String>,
}

/// A checked message, ready for the page (its media already taken in).
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub to: ChatId,
    /// The message quoted (a serialized message id).
    pub reply_to: Option<String>,
    pub body: Body,
}

#[derive(Debug, Clone)]
pub enum Body {
    Text(MessageText),
    Media {
        media: Media,
        caption: Option<String>,
    },
    Location {
        lat: f64,
        lng: f64,
        name: Option<String>,
        address: Option<String>,
    },
    /// A vCard as given.
    Vcard {
        vcard: String,
        name: String,
    },
    /// A card WhatsApp makes of a number.
    Card {
        name: String,
        phone: String,
    },
    Reaction {
        message_id: String,
        emoji: String,
    },
    Poll {
        name: String,
        options: Vec<String>,
        selectable: u32,
    },
}

impl Outgoing {
    /// What WhatsApp calls the message's type (the log, the answer).
    pub fn kind(&self) -> &'static str {
        match &self.body {
            Body::Text(_) => "text",
            Body::Media { media, .. } => media.kind.name(),
            Body::Location { .. } => "location",
            Body::Vcard { .. } | Body::Card { .. } => "contact",
            Body::Reaction { .. } => "reaction",
            Body::Poll { .. } => "poll",
        }
    }
}

/// A request checked but for its media (taken in next, with the caller's trust).
pub struct Draft {
    pub to: ChatId,
    pub reply_to: Option<String>,
    pub idempotency_key: Option<String>,
    pub body: DraftBody,
}

pub enum DraftBody {
    Ready(Body),
    Media {
        kind: MediaKind,
        input: MediaInput,
        caption: Option<String>,
    },
}

impl Draft {
    /// The message once its media is in.
    pub async fn take_in(self, intake: &Intake, trusted: bool) -> Result<Outgoing, MediaError> {
        let body = match self.body {
            DraftBody::Ready(body) => body,
            DraftBody::Media {
                kind,
                input,
                caption,
            } => Body::Media {
                media: intake.take(input, kind, trusted).await?,
                caption,
            },
        };
        Ok(Outgoing {
            to: self.to,
            reply_to: self.reply_to,
            body,
        })
    }
}

impl SendRequest {
    /// Parses the JSON body (`type` defaults to `text`).
    pub fn parse(body: &[u8]) -> Result<SendRequest, String> {
        let mut value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
        let Some(object) = value.as_object_mut() else {
            return Err("the body must be a JSON object".into());
        };
        object
            .entry("type")
            .or_insert_with(|| serde_json::Value::from("text"));
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    /// Every field checked; nothing fetched yet.
    pub fn check(self) -> Result<Draft, String> {
        let media = |kind, m: MediaMessage| {
            if m.caption.is_some() && !kind_takes_caption(kind) {
                return Err(format!(
                    "`caption` goes with image, video and document messages, not {}",
                    MediaKind::name(kind)
                ));
            }
            let caption = m
                .caption
                .map(|c| label(&c, "caption", CAPTION_MAX_CHARS))
                .transpose()?;
            Ok((
                m.to,
                m.reply_to,
                m.idempotency_key,
                DraftBody::Media {
                    kind,
                    input: m.media,
                    caption,
                },
            ))
        };
        let ready = |b: Body| DraftBody::Ready(b);
        let (to, reply_to, idempotency_key, body) = match self {
            SendRequest::Text(m) => {
                let text = MessageText::parse(&m.text).map_err(|e| e.to_string())?;
                (m.to, m.reply_to, m.idempotency_key, ready(Body::Text(text)))
            }
            SendRequest::Image(m) => media(MediaKind::Image, m)?,
            SendRequest::Video(m) => media(MediaKind::Video, m)?,
            SendRequest::Audio(m) => media(MediaKind::Audio, m)?,
            SendRequest::Voice(m) => media(MediaKind::Voice, m)?,
            SendRequest::Document(m) => media(MediaKind::Document, m)?,
            SendRequest::Sticker(m) => media(MediaKind::Sticker, m)?,
            SendRequest::Location(m) => {
                if !(m.lat.is_finite() && (-90.0..=90.0).contains(&m.lat)) {
                    return Err("`lat` must be −90 to 90".into());
                }
                if !(m.lng.is_finite() && (-180.0..=180.0).contains(&m.lng)) {
                    return Err("`lng` must be −180 to 180".into());
                }
                let name = m
                    .name
                    .map(|n| label(&n, "name", LABEL_MAX_CHARS))
                    .transpose()?;
                let address = m
                    .address
                    .map(|a| label(&a, "address", LABEL_MAX_CHARS))
                    .transpose()?;
                let body = Body::Location {
                    lat: m.lat,
                    lng: m.lng,
                    name,
                    address,
                };
                (m.to, m.reply_to, m.idempotency_key, ready(body))
            }
            SendRequest::Contact(m) => {
                let body = match (m.vcard, m.name, m.phone) {
                    (Some(vcard), None, None) => Body::Vcard {
                        name: vcard_name(&vcard)?,
                        vcard,
                    },
                    (None, Some(name), Some(phone)) => {
                        let phone = crate::domain::PhoneNumber::parse(&phone)
                            .map_err(|e| format!("`phone`: {e}"))?;
                        Body::Card {
                            name: label(&name, "name", LABEL_MAX_CHARS)?,
                            phone: phone.as_str().to_owned(),
                        }
                    }
                    _ => return Err("a contact is a `vcard`, or a `name` and a `phone`".into()),
                };
                (m.to, m.reply_to, m.idempotency_key, ready(body))
            }
            SendRequest::Reaction(m) => {
                let message_id = check_message_id(&m.message_id, "messageId")?;
                let emoji = m.emoji;
                let letters = emoji
                    .chars()
                    .any(|c| c.is_ascii_alphanumeric() || c.is_whitespace());
                if emoji.chars().count() > 16 || letters {
                    return Err("`emoji` must be one emoji, or empty to remove the reaction".into());
                }
                let body = Body::Reaction { message_id, emoji };
                (m.to, None, m.idempotency_key, ready(body))
            }
            SendRequest::Poll(m) => {
                let name = label(&m.name, "name", LABEL_MAX_CHARS)?;
                if !POLL_OPTIONS.contains(&m.options.len()) {
                    return Err(format!(
                        "`options` must hold {} to {} options",
                        POLL_OPTIONS.start(),
                        POLL_OPTIONS.end()
                    ));
                }
                let options = m
                    .options
                    .iter()
                    .map(|o| label(o, "options[]", LABEL_MAX_CHARS))
                    .collect::<Result<Vec<_>, _>>()?;
                let distinct: std::collections::HashSet<&String> = options.iter().collect();
                if distinct.len() != options.len() {
                    return Err("`options` must be distinct".into());
                }
                let selectable = m.selectable.unwrap_or(1);
                if selectable == 0 || selectable as usize > options.len() {
                    return Err("`selectable` must be 1 to the number of options".into());
                }
                let body = Body::Poll {
                    name,
                    options,
                    selectable,
                };
                (m.to, m.reply_to, m.idempotency_key, ready(body))
            }
        };
        let to = ChatId::parse(&to).map_err(|e| e.to_string())?;
        let reply_to = reply_to
            .map(|r| check_message_id(&r, "replyTo"))
            .transpose()?;
        if let Some(k) = &idempotency_key {
            if k.is_empty() || k.chars().count() > IDEMPOTENCY_KEY_MAX {
                return Err(format!(
                    "`idempotencyKey` must be 1 to {IDEMPOTENCY_KEY_MAX} characters"
                ));
            }
        }
        Ok(Draft {
            to,
            reply_to,
            idempotency_key,
            body,
        })
    }
}

fn kind_takes_caption(kind: MediaKind) -> bool {
    matches!(
        kind,
        MediaKind::Image | MediaKind::Video | MediaKind::Document
    )
}

/// A short text field: 1 to `max` characters, not only white space.
fn label(raw: &str, field: &str, max: usize) -> Result<String, String> {
    let n = raw.chars().count();
    if n == 0 || n > max || raw.trim().is_empty() {
        return Err(format!(
            "`{field}` must be 1 to {max} characters and not only white space"
        ));
    }
    Ok(raw.to_owned())
}

/// A serialized message id as events carry it: `true_<chat>_<id>` or `false_<chat>_<id>`
/// (groups add `_<participant>`).
pub fn check_message_id(raw: &str, field: &str) -> Result<String, String> {
    let shaped = (raw.starts_with("true_") || raw.starts_with("false_"))
        && raw.len() <= 256
        && raw.split('_').count() >= 3
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_@.-:".contains(&b));
    if !shaped {
        return Err(format!(
            "`{field}` must be a message id as events give it (`true_…` or `false_…`)"
        ));
    }
    Ok(raw.to_owned())
}

/// The formatted name (`FN`) of a vCard, checking its frame.
fn vcard_name(vcard: &str) -> Result<String, String> {
    let framed = vcard.trim_start().starts_with("BEGIN:VCARD") && vcard.contains("END:VCARD");
    if vcard.len() > VCARD_MAX_BYTES || !framed {
        return Err(format!(
            "`vcard` must be one vCard (BEGIN:VCARD … END:VCARD), at most {} KiB",
            VCARD_MAX_BYTES / 1024
        ));
    }
    vcard
        .lines()
        .find_map(|l| l.strip_prefix("FN:").or_else(|| l.strip_prefix("FN;")))
        .map(|n| n.rsplit(':').next().unwrap_or(n).trim().to_owned())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| "`vcard` needs an FN (formatted name) line".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str) -> Result<Draft, String> {
        SendRequest::parse(json.as_bytes())?.check()
    }

    #[test]
    fn text_is_the_default_type() {
        let d = check(r#"{"to": "4915112345678", "text": "hi"}"#).unwrap();
        assert_eq!(d.to.as_str(), "4915112345678@c.us");
        assert!(matches!(d.body, DraftBody::Ready(Body::Text(_))));
        let d = check(r#"{"type": "text", "to": "203458712345678@lid", "text": "hi"}"#).unwrap();
        assert_eq!(d.to.as_str(), "203458712345678@lid");
    }

    #[test]
    fn each_type_takes_its_fields() {
        for ok in [
            r#"{"type":"image","to":"4915112345678","media":{"data":"AA=="},"caption":"menu"}"#,
            r#"{"type":"voice","to":"4915112345678","media":{"url":"https://x.test/a.mp3"}}"#,
            r#"{"type":"document","to":"4915112345678","media":{"data":"AA==","filename":"m.pdf"},"replyTo":"false_4915112345678@c.us_3EB0AA"}"#,
            r#"{"type":"location","to":"4915112345678","lat":52.5,"lng":13.4,"name":"Casa"}"#,
            r#"{"type":"contact","to":"4915112345678","name":"Ana","phone":"+4915100000001"}"#,
            "{\"type\":\"contact\",\"to\":\"4915112345678\",\"vcard\":\"BEGIN:VCARD\\nVERSION:3.0\\nFN:Ana\\nEND:VCARD\"}",
            r#"{"type":"reaction","to":"4915112345678","messageId":"false_4915112345678@c.us_3EB0AA","emoji":"👍"}"#,
            r#"{"type":"reaction","to":"4915112345678","messageId":"false_4915112345678@c.us_3EB0AA","emoji":""}"#,
            r#"{"type":"poll","to":"4915112345678","name":"Pizza?","options":["yes","no"],"selectable":2}"#,
        ] {
            assert!(check(ok).is_ok(), "{ok}: {:?}", check(ok).err());
        }
    }

    #[test]
    fn refusals_name_the_field() {
        for (bad, says) in [
            (r#"{"type":"fax","to":"4915112345678"}"#, "unknown variant"),
            (
                r#"{"type":"text","to":"4915112345678","text":"hi","media":{}}"#,
                "unknown field",
            ),
            (
                r#"{"type":"voice","to":"4915112345678","media":{"data":"AA=="},"caption":"x"}"#,
                "caption",
            ),
            (
                r#"{"type":"sticker","to":"4915112345678","media":{"data":"AA=="},"caption":"x"}"#,
                "caption",
            ),
            (
                r#"{"type":"location","to":"4915112345678","lat":91,"lng":0}"#,
                "lat",
            ),
            (
                r#"{"type":"location","to":"4915112345678","lat":0,"lng":-181}"#,
                "lng",
            ),
            (
                r#"{"type":"contact","to":"4915112345678","name":"Ana"}"#,
                "vcard",
            ),
            (
                r#"{"type":"contact","to":"4915112345678","vcard":"hello"}"#,
                "vcard",
            ),
            (
                r#"{"type":"reaction","to":"4915112345678","messageId":"x","emoji":"👍"}"#,
                "messageId",
            ),
            (
                r#"{"type":"reaction","to":"4915112345678","messageId":"false_1@c.us_A","emoji":"ok"}"#,
                "emoji",
            ),
            (
                r#"{"type":"reaction","to":"4915112345678","messageId":"false_1@c.us_A","emoji":"👍","replyTo":"false_1@c.us_B"}"#,
                "unknown field",
            ),
            (
                r#"{"type":"poll","to":"4915112345678","name":"?","options":["a"]}"#,
                "options",
            ),
            (
                r#"{"type":"poll","to":"4915112345678","name":"?","options":["a","a"]}"#,
                "distinct",
            ),
            (
                r#"{"type":"poll","to":"4915112345678","name":"?","options":["a","b"],"selectable":3}"#,
                "selectable",
            ),
            (
                r#"{"type":"text","to":"4915112345678","text":"hi","replyTo":"nope"}"#,
                "replyTo",
            ),
            (r#"{"type":"text","to":"abc@lid","text":"hi"}"#, "`to`"),
            (r#"[1]"#, "JSON object"),
        ] {
            let err = check(bad).err().unwrap_or_else(|| panic!("{bad} passed"));
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
