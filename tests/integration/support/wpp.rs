//! A stand-in for WA-JS (`window.WPP`) on the stand-in page: exactly the subset the daemon's
//! bridge uses, with the names and shapes of the pinned release's type definitions — an
//! `AuthCode` with `fullCode`, a `Wid` with `_serialized`, events through `WPP.on` — driven by the
//! page's `standin` events and its `/api/pair` and `/api/logout` endpoints. The daemon loads it
//! from a file like the real one (`WA_JS_PATH`, with its hash pinned by `WA_JS_SHA256`).

use std::path::PathBuf;

pub const VERSION: &str = "4.6.0-standin";

pub const SCRIPT: &str = r#"(() => {
  "use strict";
  const listeners = {};
  const emit = (name, arg) => (listeners[name] || []).forEach((f) => { try { f(arg); } catch (e) {} });
  const authCode = (payload) => ({
    type: "multidevice", ref: payload.split(",")[0], staticKeyPair: "", identityKeyPair: "",
    secretKey: "", fullCode: payload,
  });
  let code = null, me = null, ready = false, online = true, updateNeeded = false;
  window.WPP = {
    version: "4.6.0-standin",
    get isReady() { return ready; },
    on(name, fn) { (listeners[name] = listeners[name] || []).push(fn); },
    conn: {
      getAuthCode: async () => (code ? authCode(code) : null),
      isAuthenticated: () => !!me,
      isMainReady: () => !!me,
      getMyUserId: () => (me ? { server: "c.us", user: me, _serialized: me + "@c.us" } : undefined),
      refreshQR: async () => { window.__standin.reloadQr(); return null; },
      genLinkDeviceCodeForPhoneNumber: async (phone, sendPushNotification) => window.__standin.pair(phone),
      logout: async () => { await window.__standin.logout(); return true; },
      needsUpdate: () => updateNeeded,
      isOnline: () => online,
    },
    // WhatsApp's directory: a number is on WhatsApp when the server knows it; some have a
    // linked id.
    contact: {
      queryWidExists: async (id) => {
        const c = await window.__standin.contact(typeof id === "string" ? id : id._serialized);
        return c ? { wid: wid(c.phone + "@c.us"), lid: c.lid ? wid(c.lid) : undefined, biz: false } : null;
      },
      getPnLidEntry: async (id) => {
        const c = await window.__standin.contact(typeof id === "string" ? id : id._serialized);
        return c ? { phoneNumber: pn(c.phone + "@c.us"), lid: c.lid ? pn(c.lid) : undefined } : {};
      },
    },
    chat: {
      // Like WA-JS: answers once WhatsApp Web took the message (ack 0, the clock), and the new
      // message (fromMe) goes through chat.new_message too.
      sendTextMessage: async (chatId, content, options) => sent(chatId, "chat", String(content), options, {}),
      // `content` a File or Blob (a string would be a URL fetched by the page: the daemon never
      // passes one). The bytes go to the recipient's phone as they are.
      sendFileMessage: async (chatId, content, options) => {
        if (typeof content === "string") throw new Error("the stand-in takes files only");
        const o = options || {};
        // WhatsApp's own limit for images (WA-JS checks it before the upload).
        if (o.type === "image" && content.size > 16 * 1024 * 1024) throw new Error("file_too_large");
        const media = await window.__standin.upload(content);
        const type = o.type === "audio" && o.isPtt ? "ptt" : o.type;
        return sent(chatId, type, o.caption || "", o, {
          media: Object.assign(media, { mimetype: o.mimetype || content.type, filename: o.filename || content.name || null }),
          isPtt: !!o.isPtt,
        });
      },
      sendLocationMessage: async (chatId, options) =>
        sent(chatId, "location", "", options, { lat: Number(options.lat), lng: Number(options.lng), name: options.name || null, address: options.address || null }),
      sendVCardContactMessage: async (chatId, contacts, options) => {
        const list = (Array.isArray(contacts) ? contacts : [contacts]).map((c) => typeof c === "string" ? { id: c, name: c } : { id: String(c.id._serialized || c.id), name: c.name });
        return sent(chatId, "vcard", "", options, { contacts: list });
      },
      sendRawMessage: async (chatId, raw, options) => sent(chatId, String(raw.type), String(raw.body || ""), options, { raw }),
      sendReactionToMessage: async (messageId, reaction) => {
        const id = typeof messageId === "string" ? messageId : String(messageId._serialized || messageId);
        const m = (await window.__standin.messages()).find((m) => m.id === id);
        if (!m) throw new Error("msg_not_found");
        await window.__standin.send(m.fromMe ? m.to : m.from, "", null, { type: "reaction", msgId: id, reaction: reaction || null });
        return { sendMsgResult: "OK" };
      },
      sendCreatePollMessage: async (chatId, name, choices, options) =>
        sent(chatId, "poll_creation", String(name), options, { choices: choices.map(String), selectableCount: (options || {}).selectableCount }),
      markIsRead: async (chatId) => { await window.__standin.presence(chatId, "read"); return { wid: wid(chatId), unreadCount: 0 }; },
      markIsComposing: async (chatId, duration) => { await window.__standin.presence(chatId, "typing"); },
      markIsRecording: async (chatId, duration) => { await window.__standin.presence(chatId, "recording"); },
      markIsPaused: async (chatId) => { await window.__standin.presence(chatId, "paused"); },
      // The file of a media message of the page's store, from WhatsApp's media servers: a Blob of
      // the message's mimetype. Throws like WA-JS: `msg_not_found`, `message_not_contains_media`,
      // `media_not_found` (an Error with that message and `code`; the real one throws a plain
      // `{error, code, message}`), and an Error "download failed: HTTP …" when the download fails.
      downloadMedia: async (id) => {
        const key = typeof id === "string" ? id : String(id._serialized || id);
        const m = (await window.__standin.messages()).find((m) => m.id === key);
        if (!m) throw new Error("msg_not_found");
        if (!MEDIA.includes(m.type)) throw Object.assign(new Error("message_not_contains_media"), { code: "message_not_contains_media" });
        let blob;
        try { blob = await window.__standin.download(key); }
        catch (e) { throw e.message === "media_not_found" ? Object.assign(e, { code: "media_not_found" }) : e; }
        return new Blob([blob], { type: m.mimetype || blob.type || "application/octet-stream" });
      },
      // A message of the page's store by its serialized id; WA-JS throws when there is none.
      getMessageById: async (id) => {
        const m = (await window.__standin.messages()).find((m) => m.id === id);
        if (!m) throw new Error("msg_not_found");
        return msgModel(m, !!m.fromMe);
      },
      // The chats of the page's store, the most recent first (`ChatModel`: `id` a Wid, `t`).
      list: async (options) => {
        const chats = new Map();
        for (const m of await window.__standin.messages()) {
          const chat = m.fromMe ? m.to : m.from;
          chats.set(chat, Math.max(chats.get(chat) || 0, Number(m.t || 0)));
        }
        const sorted = [...chats].sort((a, b) => b[1] - a[1]).map(([id, t]) => ({ id: wid(id), t }));
        return options && options.count != null ? sorted.slice(0, options.count) : sorted;
      },
      // A chat's latest messages, oldest first (`MsgModel`s).
      getMessages: async (chatId, options) => {
        const id = typeof chatId === "string" ? chatId : chatId._serialized;
        const all = (await window.__standin.messages())
          .filter((m) => (m.fromMe ? m.to : m.from) === id)
          .sort((a, b) => Number(a.t || 0) - Number(b.t || 0));
        const count = options && options.count != null ? options.count : 20;
        const anchor = options && options.direction === "before" && options.id ? all.findIndex((m) => m.id === String(options.id)) : -1;
        const upto = anchor >= 0 ? all.slice(0, anchor) : all;
        return upto.slice(Math.max(0, upto.length - count)).map((m) => msgModel(m, !!m.fromMe));
      },
    },
  };
  // Like WA-JS: answers once WhatsApp Web took the message (ack 0, the clock), and the new
  // message (fromMe) goes through chat.new_message too. A quoted message must be in the store.
  const sent = async (chatId, type, body, options, extra) => {
    const to = typeof chatId === "string" ? chatId : chatId._serialized;
    const o = options || {};
    if (o.quotedMsg && !(await window.__standin.messages()).some((m) => m.id === String(o.quotedMsg))) throw new Error("quoted message not found");
    const r = await window.__standin.send(to, body, o.messageId, Object.assign({ type, quoted: o.quotedMsg ? String(o.quotedMsg) : null }, extra));
    const m = Object.assign({ id: r.id, from: r.from, to, body, t: r.t, type, fromMe: true }, kept(type, body, extra));
    await window.__standin.remember(m);
    emit("chat.new_message", msgModel(m, true));
    return { id: r.id, ack: 0, from: r.from, to, sendMsgResult: null };
  };
  // What WhatsApp Web keeps of a sent message beside its body, as of a received one.
  const kept = (type, body, x) => {
    if (x.media) return { mimetype: x.media.mimetype, filename: x.media.filename || undefined, size: x.media.size };
    if (type === "location") return { lat: x.lat, lng: x.lng, loc: x.name && x.address ? x.name + "\n" + x.address : x.name || x.address || "" };
    if (type === "poll_creation") return { pollName: body, pollOptions: x.choices.map((name, localId) => ({ name, localId })), pollSelectableOptionsCount: Number(x.selectableCount || 0) };
    if (x.raw && x.raw.vcardFormattedName) return { vcardFormattedName: String(x.raw.vcardFormattedName) };
    return {};
  };
  const MEDIA = ["image", "video", "audio", "ptt", "document", "sticker"];
  const pn = (s) => ({ id: s.split("@")[0], server: s.split("@")[1], _serialized: s });
  const wid = (s) => (s ? { _serialized: s, user: s.split("@")[0], server: s.split("@")[1] } : undefined);
  // A message key from its serialized form `<fromMe>_<chat>_<id>`.
  const msgKey = (s) => {
    const [fromMe, remote, ...id] = String(s).split("_");
    return { _serialized: String(s), fromMe: fromMe === "true", remote: wid(remote), id: id.join("_") };
  };
  const chatOf = (m) => (m.fromMe ? m.to : m.from);
  const msgModel = (m, fromMe) => ({
    id: { _serialized: m.id, fromMe, remote: wid(fromMe ? m.to : m.from), id: m.id.split("_").pop() },
    from: wid(m.from), to: wid(m.to), body: m.body, type: m.type, t: m.t,
    // WhatsApp Web keeps a media message's caption apart from its body.
    caption: m.type && m.type !== "chat" && m.body ? m.body : undefined,
    mimetype: m.mimetype, filename: m.filename, size: m.size,
    lat: m.lat, lng: m.lng, loc: m.loc, clientUrl: m.clientUrl,
    vcardFormattedName: m.vcardFormattedName,
    pollName: m.pollName, pollOptions: m.pollOptions ? m.pollOptions.map((o) => ({ name: o.name, localId: o.localId })) : undefined,
    pollSelectableOptionsCount: m.pollSelectableOptionsCount,
    latestEditMsgKey: m.latestEditMsgKey ? msgKey(m.latestEditMsgKey) : undefined,
    latestEditSenderTimestampMs: m.latestEditSenderTimestampMs,
    get isMedia() { return MEDIA.includes(this.type); },
    isGroupMsg: false, author: undefined,
  });
  window.addEventListener("standin", (e) => {
    const d = e.detail;
    switch (d.type) {
      case "boot": ready = true; break;
      case "qr": code = d.payload; emit("conn.auth_code_change", authCode(d.payload)); break;
      case "idle": code = null; emit("conn.auth_code_change", null); emit("conn.qrcode_idle"); break;
      case "linked": code = null; me = d.phone; emit("conn.authenticated"); emit("conn.main_ready"); break;
      case "unlinked":
        me = null;
        emit("conn.logout_reason", d.reason || "user_initiated");
        emit("conn.logout");
        break;
      case "link_code": emit("conn.link_code_change", d.code); break;
      case "online": online = d.online; emit("conn.online", d.online); break;
      case "needs_update": updateNeeded = true; emit("conn.needs_update"); break;
      case "message": emit("chat.new_message", msgModel(d.msg, false)); break;
      // What a contact did about an earlier message (the page's `handle`), as WA-JS reports it.
      case "reaction":
        emit("chat.new_reaction", { id: msgKey(d.event.id), msgId: msgKey(d.event.msgId), reactionText: d.event.text || "", read: false, sender: wid(d.event.from), orphan: 0, orphanReason: null, timestamp: d.event.t });
        break;
      case "revoke":
        emit("chat.msg_revoke", { from: wid(d.event.from), to: wid(d.event.to), id: msgKey(d.event.id), refId: msgKey(d.event.msgId), type: "revoke" });
        break;
      case "edit": emit("chat.msg_edited", { chat: wid(chatOf(d.msg)), id: d.msg.id, msg: msgModel(d.msg, !!d.msg.fromMe) }); break;
      case "vote":
        emit("chat.poll_response", { msgId: msgKey(d.event.msgId), chatId: wid(chatOf(d.poll)), selectedOptions: d.event.selected.map(Number), timestamp: d.event.t, sender: wid(d.event.from) });
        break;
      case "offline_delivery_end": emit("conn.backend_event", "offline_delivery_end"); break;
      case "ack": emit("chat.msg_ack_change", { ack: d.ack, chat: wid(d.chat), ids: [{ _serialized: d.id }] }); break;
    }
  });
  // Ready once the page knows its device (like WA-JS once WhatsApp's modules loaded): "boot".
})();
"#;

/// Writes the stand-in to `dir`; its path and SHA-256 (for `--wa-js-path`, `--wa-js-sha256`).
pub fn install(dir: &std::path::Path) -> (PathBuf, String) {
    let path = dir.join("wpp-standin.js");
    std::fs::write(&path, SCRIPT).unwrap();
    (
        path,
        wa_supervisor::browser::wajs::sha256_hex(SCRIPT.as_bytes()),
    )
}

/// The real WA-JS as the project's set-up installed it (`scripts/fetch-wa-js.sh`).
pub fn real() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/wa-js/wppconnect-wa.js");
    assert!(
        path.is_file(),
        "{} missing: run scripts/fetch-wa-js.sh (the test command does)",
        path.display()
    );
    path
}
