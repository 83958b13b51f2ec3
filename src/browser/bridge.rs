//! The page bridge on WA-JS: the script the daemon injects after WA-JS, what it reports, and the
//! commands the daemon runs through it (docs/ARCHITECTURE.md, "The page").
//!
//! The script waits for `WPP.isReady`, subscribes to the events the session needs and reports
//! each as a JSON message `{"bridge": <kind>, …}` through the same CDP binding as the DOM
//! watcher. Every `WPP` member used here is declared by the pinned WA-JS's type definitions
//! (a test reads them: `tests/integration/bridge.rs`).

use serde::Deserialize;

use super::page::Observation;

/// Every `WPP` member the bridge touches, for the check against the pinned type definitions.
pub const WPP_MEMBERS: &[&str] = &[
    "WPP.isReady",
    "WPP.version",
    "WPP.on",
    "WPP.conn.getAuthCode",
    "WPP.conn.isAuthenticated",
    "WPP.conn.isMainReady",
    "WPP.conn.getMyUserId",
    "WPP.conn.refreshQR",
    "WPP.conn.genLinkDeviceCodeForPhoneNumber",
    "WPP.conn.logout",
    "WPP.chat.list",
    "WPP.chat.getMessages",
    "WPP.chat.getMessageById",
    "WPP.contact.getPnLidEntry",
];

/// Every WA-JS event the bridge subscribes to.
pub const WPP_EVENTS: &[&str] = &[
    "conn.auth_code_change",
    "conn.qrcode_idle",
    "conn.main_ready",
    "conn.logout_reason",
    "conn.logout",
    "conn.needs_update",
    "conn.online",
    "conn.link_code_change",
    "chat.new_message",
    "chat.msg_ack_change",
    "chat.new_reaction",
    "chat.msg_revoke",
    "chat.msg_edited",
    "chat.poll_response",
    "conn.backend_event",
];

/// The injected script (after WA-JS itself, before the page's own scripts run).
pub fn script(binding: &str) -> String {
    format!(
        r#"(() => {{
  const send = (msg) => {{ if (typeof window.{binding} === "function") window.{binding}(JSON.stringify(msg)); }};
  const me = () => {{ const w = WPP.conn.getMyUserId(); return w ? w._serialized : null; }};
  {MESSAGE_FNS}
  let reason = null;
  const start = () => {{
    if (!window.WPP || !WPP.isReady) {{ setTimeout(start, 100); return; }}
    WPP.on("conn.auth_code_change", (c) => send({{ bridge: "auth_code", code: c ? c.fullCode : null }}));
    WPP.on("conn.qrcode_idle", () => send({{ bridge: "qr_idle" }}));
    WPP.on("conn.main_ready", () => send({{ bridge: "main_ready", wid: me() }}));
    WPP.on("conn.logout_reason", (r) => {{ reason = r == null ? null : String(r); send({{ bridge: "logout", reason: reason }}); }});
    WPP.on("conn.logout", () => send({{ bridge: "logout", reason: reason }}));
    WPP.on("conn.needs_update", () => send({{ bridge: "needs_update" }}));
    WPP.on("conn.online", (o) => send({{ bridge: "online", online: !!o }}));
    WPP.on("conn.link_code_change", (code) => send({{ bridge: "link_code", code: String(code) }}));
    // In order, each with the phone behind an @lid when WhatsApp knows it (at most 2 s); what
    // happens to a message (a reaction, a revoke, an edit, a vote) never overtakes it.
    let queue = Promise.resolve();
    const inOrder = (f) => {{ queue = queue.then(f).catch(() => {{}}); }};
    WPP.on("chat.new_message", (m) => {{
      const msg = message(m);
      inOrder(async () => {{ if (!msg.phone) msg.phone = await lidPhone(msg); send({{ bridge: "message", message: msg }}); }});
    }});
    WPP.on("chat.msg_ack_change", (e) => send({{ bridge: "ack", ack: Number(e.ack), ids: (e.ids || []).map(wid) }}));
    const change = (c) => send({{ bridge: "change", change: c }});
    WPP.on("chat.new_reaction", (r) => inOrder(() => change({{ kind: "reaction", id: wid(r.id), messageId: wid(r.msgId),
      emoji: r.reactionText ? String(r.reactionText) : null, from: wid(r.sender), timestamp: Number(r.timestamp || 0) }})));
    WPP.on("chat.msg_revoke", (r) => inOrder(() => change({{ kind: "revoke", id: wid(r.id), messageId: wid(r.refId),
      from: wid(r.author) || wid(r.from) }})));
    // (WA-JS names the message's `to` as the chat: for a received message, this device.)
    WPP.on("chat.msg_edited", (e) => inOrder(() => {{ const m = e.msg || {{}};
      change({{ kind: "edit", messageId: String(e.id), chatId: wid(m.id && m.id.remote) || wid(e.chat), body: m.type === "chat" || !m.type ? (m.body == null ? null : String(m.body)) : (m.caption || null),
        editId: wid(m.latestEditMsgKey), timestamp: Number(m.latestEditSenderTimestampMs || 0) }}); }}));
    WPP.on("chat.poll_response", (v) => inOrder(async () => change({{ kind: "vote", messageId: wid(v.msgId), chatId: wid(v.chatId),
      voter: wid(v.sender), options: await votedOptions(v), timestamp: Number(v.timestamp || 0) }})));
    WPP.on("conn.backend_event", (name) => {{ if (name === "offline_delivery_end") send({{ bridge: "offline_delivery_end" }}); }});
    send({{ bridge: "ready", version: String(WPP.version) }});
    {SNAPSHOT}.then((s) => send(s));
  }};
  start();
}})();"#
    )
}

/// WhatsApp Web's message model as the daemon reports it (`message(m)`; `wid(w)` for ids): the
/// bridge's live events and gap filling read messages the same way.
pub const MESSAGE_FNS: &str = r#"const wid = (w) => w == null ? null : (typeof w === "string" ? w : (w._serialized || String(w)));
  const message = (m) => ({
    id: wid(m.id), chatId: wid(m.id && m.id.remote) || wid(m.from), from: wid(m.from), to: wid(m.to),
    fromMe: !!(m.id && m.id.fromMe), type: String(m.type || "chat"),
    body: m.type === "chat" ? (typeof m.body === "string" ? m.body : null) : (m.caption || null),
    timestamp: Number(m.t || 0), isGroup: !!m.isGroupMsg, author: wid(m.author),
    phone: phoneOf(m.isGroupMsg ? wid(m.author) : (wid(m.id && m.id.remote) || wid(m.from))),
    media: MEDIA.includes(m.type) ? { mimetype: m.mimetype ? String(m.mimetype) : null, filename: m.filename ? String(m.filename) : null, size: Number(m.size) > 0 ? Number(m.size) : null } : null,
    location: m.type === "location" ? place(m) : null,
    contacts: m.type === "vcard" ? [{ name: m.vcardFormattedName ? String(m.vcardFormattedName) : null, vcard: String(m.body || "") }]
      : m.type === "multi_vcard" ? (m.vcardList || []).map((c) => ({ name: c.displayName ? String(c.displayName) : null, vcard: String(c.vcard || "") })) : null,
    poll: m.type === "poll_creation" ? { name: String(m.pollName || ""), options: (m.pollOptions || []).map((o) => String(o.name)),
      selectableCount: Number(m.pollSelectableOptionsCount || 0) } : null,
    quotedMessageId: wid(m.quotedMsgId) || null,
  });
  const MEDIA = ["image", "video", "audio", "ptt", "document", "sticker"];
  const place = (m) => {
    const lines = String(m.loc || "").split("\n");
    return { latitude: Number(m.lat), longitude: Number(m.lng), name: lines[0] || null,
      address: lines.slice(1).join("\n") || null, url: m.clientUrl ? String(m.clientUrl) : null };
  };
  // A vote's options: WA-JS gives the poll's option objects (its code) or their ids (its types).
  const votedOptions = async (v) => {
    let poll = null;
    const out = [];
    for (const o of v.selectedOptions || []) {
      if (o == null) continue;
      if (typeof o === "object") { out.push({ id: Number(o.localId), name: o.name == null ? null : String(o.name) }); continue; }
      if (poll === null) { try { poll = await WPP.chat.getMessageById(wid(v.msgId)); } catch (e) { poll = {}; } }
      const known = ((poll && poll.pollOptions) || []).find((p) => Number(p.localId) === Number(o));
      out.push({ id: Number(o), name: known ? String(known.name) : null });
    }
    return out;
  };
  const phoneOf = (id) => (id && id.endsWith("@c.us")) ? id.split("@")[0] : null;
  const lidPhone = async (msg) => {
    const id = msg.isGroup ? msg.author : msg.chatId;
    if (!id || !id.endsWith("@lid")) return null;
    try {
      const e = await Promise.race([WPP.contact.getPnLidEntry(id), new Promise((r) => setTimeout(() => r(null), 2000))]);
      return e && e.phoneNumber ? phoneOf(e.phoneNumber._serialized) : null;
    } catch (e) { return null; }
  };"#;

/// The bridge's view of the page now, as one message (the initial report and the poll).
const SNAPSHOT: &str = r#"(async () => {
    if (WPP.conn.isAuthenticated() && WPP.conn.isMainReady()) {
      const w = WPP.conn.getMyUserId();
      return { bridge: "main_ready", wid: w ? w._serialized : null };
    }
    const c = await WPP.conn.getAuthCode();
    return { bridge: "auth_code", code: c ? c.fullCode : null };
  })()"#;

/// An expression for `Runtime.evaluate`: the bridge's snapshot as JSON text, or `null` when WA-JS
/// is not ready.
pub fn snapshot_expression() -> String {
    format!("(async () => (window.WPP && WPP.isReady) ? JSON.stringify(await {SNAPSHOT}) : null)()")
}

/// What the daemon asks of the page through WA-JS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A new QR code after the page stopped offering them.
    RefreshQr,
    /// A code to link by phone number (country code first, digits only); answers the code.
    PairingCode { phone: String },
    /// Unlink this device on WhatsApp's side.
    Logout,
    /// A full garbage collection in the page (DevTools `HeapProfiler.collectGarbage`, not a
    /// WA-JS call): after a large media send, so the page's memory returns to its level.
    CollectGarbage,
    /// A call of the messaging room (`src/messaging/page.rs`): `body` is an async function's
    /// body that may use `wid(w)` and `message(m)`; its return value is the answer.
    Call { what: &'static str, body: String },
    /// Gap filling: the messages in the page's own store with a timestamp at or after `since`
    /// (unix seconds), from the `chats` chats at the top of the chat list, at most `per_chat`
    /// each; answers a list of messages.
    RecentMessages {
        since: i64,
        chats: u32,
        per_chat: u32,
    },
}

impl Command {
    /// The expression that runs the command: a promise of `{ok: value}` or `{error: message}`.
    pub fn expression(&self) -> String {
        let call = match self {
            Command::RefreshQr => "await WPP.conn.refreshQR(); return null;".to_owned(),
            Command::PairingCode { phone } => format!(
                "return String(await WPP.conn.genLinkDeviceCodeForPhoneNumber({}, true));",
                serde_json::to_string(phone).expect("a string serializes")
            ),
            Command::Logout => "return !!(await WPP.conn.logout());".to_owned(),
            Command::Call { body, .. } => format!("{MESSAGE_FNS} {body}"),
            Command::CollectGarbage => "return null;".to_owned(),
            Command::RecentMessages {
                since,
                chats,
                per_chat,
            } => format!(
                "{MESSAGE_FNS} const out = []; \
                 for (const c of await WPP.chat.list({{ count: {chats} }})) {{ \
                   if (Number(c.t || 0) < {since}) continue; \
                   for (const m of await WPP.chat.getMessages(wid(c.id), {{ count: {per_chat} }})) \
                     if (Number(m.t || 0) >= {since}) out.push(message(m)); }} \
                 return out;"
            ),
        };
        format!(
            "(async () => {{ try {{ if (!window.WPP || !WPP.isReady) return {{ error: 'WA-JS is not ready' }}; \
             const run = async () => {{ {call} }}; return {{ ok: await run() }}; }} \
             catch (e) {{ return {{ error: String(e && e.message || e) }}; }} }})()"
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            Command::RefreshQr => "refreshQR",
            Command::PairingCode { .. } => "genLinkDeviceCodeForPhoneNumber",
            Command::Logout => "logout",
            Command::Call { what, .. } => what,
            Command::CollectGarbage => "collectGarbage",
            Command::RecentMessages { .. } => "getMessages",
        }
    }
}

/// Every `WPP.…` member a script text names, sorted, once each (for the checks against the
/// lists of members, here and in `src/messaging/`).
#[cfg(test)]
pub(crate) fn members_used(text: &str) -> Vec<&str> {
    let mut used: Vec<&str> = text
        .match_indices("WPP.")
        .map(|(i, _)| {
            let rest = &text[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
                .unwrap_or(rest.len());
            rest[..end].trim_end_matches('.')
        })
        .collect();
    used.sort();
    used.dedup();
    used
}

/// A message of the bridge script.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "bridge", rename_all = "snake_case")]
pub enum Signal {
    Ready {
        version: String,
    },
    AuthCode {
        code: Option<String>,
    },
    QrIdle,
    MainReady {
        wid: Option<String>,
    },
    Logout {
        reason: Option<String>,
    },
    NeedsUpdate,
    Online {
        online: bool,
    },
    LinkCode {
        code: String,
    },
    Message {
        message: Box<crate::events::PageMessage>,
    },
    Ack {
        ack: i64,
        ids: Vec<String>,
    },
    Change {
        change: crate::events::PageChange,
    },
    OfflineDeliveryEnd,
}

impl Signal {
    pub fn observation(self) -> Observation {
        match self {
            Signal::Ready { version } => Observation::BridgeReady { version },
            Signal::AuthCode { code: Some(code) } if !code.is_empty() => Observation::Qr(code),
            Signal::AuthCode { .. } => Observation::Loading,
            Signal::QrIdle => Observation::QrExpired,
            Signal::MainReady { wid } => {
                match wid.as_deref().and_then(super::page::number_from_wid) {
                    Some(number) => Observation::Connected(number),
                    None => Observation::Loading,
                }
            }
            Signal::Logout { reason } => Observation::LoggedOut { reason },
            Signal::NeedsUpdate => Observation::NeedsUpdate,
            Signal::Online { online } => Observation::Online(online),
            Signal::LinkCode { code } => Observation::PairingCode(code),
            Signal::Message { message } => Observation::Message(message),
            Signal::Ack { ack, ids } => Observation::Ack { ack, ids },
            Signal::Change { change } => Observation::Change(change),
            Signal::OfflineDeliveryEnd => Observation::OfflineDeliveryEnd,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_become_observations() {
        let parse = |s: &str| serde_json::from_str::<Signal>(s).unwrap().observation();
        assert_eq!(
            parse(r#"{"bridge":"auth_code","code":"2@abc,def"}"#),
            Observation::Qr("2@abc,def".into())
        );
        assert_eq!(
            parse(r#"{"bridge":"auth_code","code":null}"#),
            Observation::Loading
        );
        assert_eq!(
            parse(r#"{"bridge":"main_ready","wid":"4915112345678@c.us"}"#),
            Observation::Connected("4915112345678".into())
        );
        assert_eq!(
            parse(r#"{"bridge":"logout","reason":"user_initiated"}"#),
            Observation::LoggedOut {
                reason: Some("user_initiated".into())
            }
        );
        assert_eq!(
            parse(r#"{"bridge":"online","online":false}"#),
            Observation::Online(false)
        );
        assert!(serde_json::from_str::<Signal>(r#"{"qr":null,"reload":false}"#).is_err());
    }

    #[test]
    fn the_script_uses_only_the_listed_members_and_events() {
        let text = format!(
            "{} {} {}",
            script("b"),
            snapshot_expression(),
            [
                Command::RefreshQr,
                Command::PairingCode { phone: "1".into() },
                Command::Logout,
                Command::RecentMessages {
                    since: 1,
                    chats: 2,
                    per_chat: 3,
                },
            ]
            .iter()
            .map(Command::expression)
            .collect::<Vec<_>>()
            .join(" ")
        );
        let used = members_used(&text);
        for member in &used {
            assert!(
                WPP_MEMBERS.contains(member),
                "{member} is used but not listed"
            );
        }
        for member in WPP_MEMBERS {
            assert!(used.contains(member), "{member} is listed but not used");
        }
        for event in WPP_EVENTS {
            assert!(text.contains(&format!("\"{event}\"")), "{event}");
        }
        assert_eq!(text.matches("WPP.on(\"").count(), WPP_EVENTS.len());
    }
}
