//! Stand-in for WhatsApp Web, served on loopback for integration tests.
//!
//! Signals exposed by `GET /` (same as the real site):
//! - QR waiting: `<div data-ref="2@…,…,…,…"><canvas></canvas></div>`. The payload rotates every
//!   `rotation`; a cycle shows `rotations` payloads in total, then the canvas is removed, a
//!   `<button>Click to reload QR code</button>` appears inside the same `div[data-ref]` (whose
//!   `data-ref` value is now stale: the server no longer accepts it). Clicking starts a new cycle.
//! - Linked: `localStorage["last-wid-md"] = "\"<phone>:7@c.us\""`, `localStorage["last-wid"] =
//!   "\"<phone>@c.us\""`, QR container removed, `<div id="pane-side">` shown.
//! - Unlinked from the phone: those keys are removed, `#pane-side` removed, QR shown again.
//!
//! Each browser profile is a "device": the page keeps a random device id in IndexedDB (committed
//! with `durability: "strict"`, so it survives a SIGKILL shortly after the first load), and the
//! server keeps device → phone. The page polls `GET /api/state` every 150 ms (`poll`). Each page load
//! also sends a random instance id, so a test can check that no device (no WhatsApp link) was
//! ever live in two browsers at once ([`StandIn::max_live_instances`]).
//!
//! Control endpoints: `POST /control/scan` `{"payload","phone"}`, `POST /control/unlink`
//! `{"phone","reason"?}`, `POST /control/enter-code` `{"code","phone"}` (a pairing code typed on
//! the phone), `POST /control/online` `{"phone","online"}`, `POST /control/needs-update` →
//! 200 `{"ok":true}` or 404 `{"error":"…"}`.
//!
//! For the WA-JS stand-in (`support/wpp.rs`) the page announces each change as a `standin`
//! DOM event, and serves `POST /api/pair` (a linking code for a phone, rotating like the QR
//! codes) and `POST /api/logout` (the device unlinks itself).
//!
//! What the "phones" send reaches the page through the same inbox, in order: messages of every
//! kind (`StandIn::incoming*`; the bytes of a file stay on the server, `GET /api/media?id=…`,
//! as on WhatsApp's media servers) and what they do about earlier messages (`react`, `revoke`,
//! `edit`, `vote`).
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::{ServerHandle, Service as _};
use actix_web::{http::header, web, App, HttpResponse, HttpServer};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

/// Options of the stand-in page.
#[derive(Debug, Clone)]
pub struct StandInOptions {
    /// How long each QR payload is shown before the next one.
    pub rotation: Duration,
    /// How many payloads one cycle shows (the first one included) before the reload button.
    pub rotations: u32,
    /// Which browsers get WhatsApp's refusal page instead of the app.
    pub refuse: Refuse,
    /// How often the page asks its server for news (WhatsApp Web's websocket). Above
    /// `LIVE_WINDOW`, [`StandIn::max_live_instances`] says nothing.
    pub poll: Duration,
}

impl Default for StandInOptions {
    fn default() -> Self {
        StandInOptions {
            rotation: Duration::from_secs(20),
            rotations: 6,
            refuse: Refuse::default(),
            poll: Duration::from_millis(150),
        }
    }
}

/// When the stand-in answers like WhatsApp Web does a browser it does not take: "WhatsApp works
/// with Google Chrome 60+", no QR, no app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Refuse {
    #[default]
    /// A browser that says it is headless — in its `User-Agent` or `Sec-CH-UA` header, or in
    /// `navigator.userAgent` / `navigator.userAgentData` — as the real site refuses
    /// `HeadlessChrome`. Every test's browser must pass for the app.
    Headless,
    /// Every browser (the daemon's detection of the refusal is the test).
    Always,
    /// None (the benchmarks' bare baselines, which set no user agent of their own).
    Never,
}

/// What the refusal page says, as WhatsApp Web's does.
pub const REFUSAL: &str = "WhatsApp works with Google Chrome 60+";

#[derive(Default)]
struct Device {
    phone: Option<String>,
    /// MiB the page is to allocate and keep (its heap grows, as WhatsApp Web's does with chats).
    grow_mib: u32,
    /// What the page reported of its browser (`/api/caps`).
    caps: Option<serde_json::Value>,
    /// The latest payload handed to this device, if still scannable.
    current: Option<String>,
    /// Linking by phone number: the phone, the current code and when it was issued.
    pairing: Option<(String, String, std::time::Instant)>,
    /// Why the device was last unlinked (shown to WA-JS as `conn.logout_reason`).
    logout_reason: Option<String>,
    /// The phone's connectivity as the page reports it.
    offline: bool,
    /// Chat activity waiting for the page's next poll: new messages and acks (WhatsApp's
    /// numbers: 1 server, 2 device, 3 read).
    inbox: Vec<serde_json::Value>,
    acks: Vec<serde_json::Value>,
}

/// How recently a page instance must have been seen to count as live.
const LIVE_WINDOW: Duration = Duration::from_secs(1);

/// The page instances (one per page load) of one device: when each was first and last seen,
/// and the most that were ever live at once.
///
/// An instance is live when it was seen within [`LIVE_WINDOW`] and no other instance of the
/// device first appeared after its last request. The second condition tells a reload (or a
/// browser closed and another opened) from two browsers at once: an old page stops polling
/// before the new one loads, while two live browsers each keep polling after the other's first
/// request — within one poll (150 ms) both count.
#[derive(Default)]
struct Instances {
    seen: HashMap<String, (Instant, Instant)>,
    max_live: usize,
}

impl Instances {
    /// Records a request of `instance` at `now`; how many instances are live now.
    fn see(&mut self, instance: &str, now: Instant) -> usize {
        self.seen
            .retain(|_, (_, last)| now.saturating_duration_since(*last) <= LIVE_WINDOW);
        self.seen
            .entry(instance.to_owned())
            .and_modify(|(_, last)| *last = now)
            .or_insert((now, now));
        let live = self
            .seen
            .values()
            .filter(|(_, last)| !self.seen.values().any(|(first, _)| first > last))
            .count();
        self.max_live = self.max_live.max(live);
        live
    }
}

/// A message a device sent (as the stand-in "phone" of its recipient received it).
#[derive(Debug, Clone, PartialEq)]
pub struct SentMessage {
    pub device: String,
    pub from: Option<String>,
    pub to: String,
    pub body: String,
    pub id: String,
    /// WhatsApp's type (`chat`, `image`, `ptt`, `document`, `location`, `vcard`, `reaction`,
    /// `poll_creation`, …).
    pub kind: String,
    /// What the page passed beside the body: `quoted`, `media` (`token`, `size`, `mimetype`,
    /// `filename`), `lat`/`lng`, `contacts`, `raw`, `choices`, `msgId`/`reaction`, `isPtt`.
    pub extra: serde_json::Value,
}

impl SentMessage {
    /// The bytes of the file this message carried, as the recipient got them.
    pub fn media_bytes(&self, standin: &StandIn) -> Option<Vec<u8>> {
        let token = self.extra["media"]["token"].as_str()?;
        standin.state.lock().unwrap().uploads.get(token).cloned()
    }
}

#[derive(Default)]
struct State {
    devices: HashMap<String, Device>,
    /// payload → device id, for every payload ever issued.
    owner: HashMap<String, String>,
    issued: Vec<String>,
    /// Every User-Agent header a page asked for a QR code with.
    user_agents: std::collections::BTreeSet<String>,
    /// When each of `issued` was handed to a page.
    issued_at: Vec<std::time::Instant>,
    rotation_ms: u64,
    rotations: u32,
    poll_ms: u64,
    /// Every pairing code ever issued.
    codes: Vec<String>,
    /// Devices that logged themselves out (through WA-JS).
    self_logouts: Vec<String>,
    needs_update: bool,
    /// Every message the devices sent.
    sent: Vec<SentMessage>,
    /// device → its page instances.
    instances: HashMap<String, Instances>,
    /// How many times a device got linked by a scan or an entered pairing code.
    links: usize,
    refuse: Refuse,
    /// How many times the refusal page was served.
    refusals: usize,
    /// How long WhatsApp's side takes to answer a send (it has the message at once).
    send_delay: Duration,
    /// Files the pages uploaded, by token.
    uploads: HashMap<String, Vec<u8>>,
    /// Numbers on WhatsApp beside the linked devices' own, with their linked id if any.
    contacts: HashMap<String, Option<String>>,
    /// Every read and presence a device showed: (device's phone, chat, state).
    presence: Vec<(String, String, String)>,
    /// The files of the messages the stand-in "phones" sent (WhatsApp's media servers), by
    /// message id: the bytes and their mimetype.
    media: HashMap<String, (Vec<u8>, String)>,
    /// Message ids whose media WhatsApp no longer has ([`StandIn::forget_media`]).
    forgotten: std::collections::HashSet<String>,
    /// How many of the next downloads fail ([`StandIn::fail_downloads`]).
    failing_downloads: usize,
    /// Downloads served.
    downloads: usize,
}

/// The kinds of media message a phone sends.
const MEDIA_KINDS: [&str; 6] = ["image", "video", "audio", "ptt", "document", "sticker"];

/// A chat id: a number (`<digits>@c.us`) or a whole id (`…@lid`) as given.
fn jid(from: &str) -> String {
    match from.contains('@') {
        true => from.to_owned(),
        false => format!("{from}@c.us"),
    }
}

/// A new id of something `from` sent (WhatsApp's `false_<chat>_<id>`).
fn incoming_id(from: &str) -> String {
    format!("false_{from}_{:016X}", rand::random::<u64>())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

impl State {
    /// Hands `entry` to the page of every device linked to `phone`; Err when there is none.
    fn push_inbox(&mut self, phone: &str, entry: serde_json::Value) -> Result<(), String> {
        let mut n = 0;
        for dev in self
            .devices
            .values_mut()
            .filter(|d| d.phone.as_deref() == Some(phone))
        {
            dev.inbox.push(entry.clone());
            n += 1;
        }
        if n == 0 {
            return Err(format!("no device is linked to {phone}"));
        }
        Ok(())
    }

    /// A message from `from` to `phone`: its id, time and chats, with `fields` (type, body and
    /// what the type carries). Its id.
    fn deliver(
        &mut self,
        phone: &str,
        from: &str,
        fields: serde_json::Value,
        silent: bool,
    ) -> Result<String, String> {
        let from = jid(from);
        let id = incoming_id(&from);
        let mut msg = json!({
            "id": id, "from": from, "to": format!("{phone}@c.us"),
            "body": "", "t": now_secs(), "type": "chat",
        });
        if let (Some(msg), serde_json::Value::Object(fields)) = (msg.as_object_mut(), fields) {
            msg.extend(fields);
        }
        self.push_inbox(phone, json!({"msg": msg, "silent": silent}))?;
        Ok(id)
    }

    /// Something `from` did about the earlier message `msg_id` (a reaction, a revoke, an edit, a
    /// poll vote): its own id, who, when (ms) and `fields`. Its id.
    fn event(
        &mut self,
        phone: &str,
        from: &str,
        kind: &str,
        msg_id: &str,
        fields: serde_json::Value,
    ) -> Result<String, String> {
        let from = jid(from);
        let id = incoming_id(&from);
        let mut event = json!({
            "id": id, "kind": kind, "msgId": msg_id, "from": from,
            "to": format!("{phone}@c.us"), "t": now_ms(),
        });
        if let (Some(event), serde_json::Value::Object(fields)) = (event.as_object_mut(), fields) {
            event.extend(fields);
        }
        self.push_inbox(phone, json!({ "event": event }))?;
        Ok(id)
    }

    /// The file of message `id` on WhatsApp's servers: one a phone sent, or one a device
    /// uploaded and sent.
    fn media_of(&self, id: &str) -> Option<(Vec<u8>, String)> {
        if self.forgotten.contains(id) {
            return None;
        }
        if let Some(found) = self.media.get(id) {
            return Some(found.clone());
        }
        let sent = self.sent.iter().rev().find(|m| m.id == id)?;
        let media = &sent.extra["media"];
        let bytes = self.uploads.get(media["token"].as_str()?)?;
        let mimetype = media["mimetype"]
            .as_str()
            .unwrap_or("application/octet-stream");
        Some((bytes.clone(), mimetype.to_owned()))
    }

    fn scan(&mut self, payload: &str, phone: &str) -> Result<(), String> {
        let phone = phone.trim();
        if phone.is_empty() || !phone.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("phone must be digits, got {phone:?}"));
        }
        let dev_id = self
            .owner
            .get(payload)
            .cloned()
            .ok_or_else(|| format!("unknown QR payload {payload:?}"))?;
        let dev = self.devices.get_mut(&dev_id).ok_or("device vanished")?;
        if dev.current.as_deref() != Some(payload) {
            return Err(format!(
                "QR payload {payload:?} is no longer current for its device"
            ));
        }
        dev.current = None;
        dev.phone = Some(phone.to_string());
        self.links += 1;
        Ok(())
    }

    fn unlink(&mut self, phone: &str, reason: Option<&str>) -> Result<(), String> {
        let mut n = 0;
        for dev in self.devices.values_mut() {
            if dev.phone.as_deref() == Some(phone) {
                dev.phone = None;
                dev.current = None;
                dev.logout_reason = Some(reason.unwrap_or("user_initiated").to_owned());
                n += 1;
            }
        }
        if n == 0 {
            Err(format!("no device linked to {phone}"))
        } else {
            Ok(())
        }
    }

    fn new_code(&mut self) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTVWXYZ23456789";
        let pick = || ALPHABET[rand::random_range(0..ALPHABET.len())] as char;
        let code: String = (0..9).map(|i| if i == 4 { '-' } else { pick() }).collect();
        self.codes.push(code.clone());
        code
    }

    /// The device's pairing code, rotated when older than the rotation period.
    fn pairing_code(&mut self, device: &str) -> Option<String> {
        let rotation = std::time::Duration::from_millis(self.rotation_ms);
        let (phone, stale) = {
            let (phone, _, at) = self.devices.get(device)?.pairing.as_ref()?;
            (phone.clone(), at.elapsed() >= rotation)
        };
        if stale {
            let code = self.new_code();
            self.devices.get_mut(device)?.pairing = Some((phone, code, std::time::Instant::now()));
        }
        self.devices
            .get(device)?
            .pairing
            .as_ref()
            .map(|(_, c, _)| c.clone())
    }

    fn enter_code(&mut self, code: &str, phone: &str) -> Result<(), String> {
        let (id, dev) = self
            .devices
            .iter_mut()
            .find(|(_, d)| d.pairing.as_ref().is_some_and(|(_, c, _)| c == code))
            .ok_or_else(|| format!("no device shows the code {code:?}"))?;
        let (expected, _, _) = dev.pairing.as_ref().unwrap();
        if expected != phone {
            return Err(format!(
                "the code of {id} was asked for {expected}, not {phone}"
            ));
        }
        dev.pairing = None;
        dev.current = None;
        dev.phone = Some(phone.to_owned());
        self.links += 1;
        Ok(())
    }

    fn new_payload(&mut self, device: &str) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        let a: [u8; 32] = rand::random();
        let b: [u8; 32] = rand::random();
        let c: [u8; 32] = rand::random();
        let d: [u8; 24] = rand::random();
        let p = format!(
            "2@{},{},{},{}",
            b64.encode(a),
            b64.encode(b),
            b64.encode(c),
            b64.encode(d)
        );
        self.owner.insert(p.clone(), device.to_string());
        self.issued.push(p.clone());
        self.issued_at.push(std::time::Instant::now());
        self.devices.entry(device.to_string()).or_default().current = Some(p.clone());
        p
    }
}

type Shared = Arc<Mutex<State>>;

/// A running stand-in server. Stops when dropped.
pub struct StandIn {
    state: Shared,
    addr: SocketAddr,
    handle: ServerHandle,
}

impl StandIn {
    /// Binds 127.0.0.1:0 and serves in the background (own worker thread; the accept loop is
    /// spawned on the current tokio/actix runtime). Does not block.
    pub async fn start(opts: StandInOptions) -> StandIn {
        let state: Shared = Arc::new(Mutex::new(State {
            rotation_ms: opts.rotation.as_millis().max(1) as u64,
            rotations: opts.rotations.max(1),
            refuse: opts.refuse,
            poll_ms: opts.poll.as_millis().max(1) as u64,
            ..State::default()
        }));
        let data = web::Data::from(state.clone());
        let shared = state.clone();
        let server = HttpServer::new(move || {
            let seen = shared.clone();
            App::new()
                .app_data(data.clone())
                .wrap_fn(move |req, srv| {
                    if let Ok(q) = web::Query::<InstanceQuery>::from_query(req.query_string()) {
                        if valid_device(&q.device) && valid_device(&q.instance) {
                            let mut s = seen.lock().unwrap();
                            let instances = s.instances.entry(q.device.clone()).or_default();
                            instances.see(&q.instance, Instant::now());
                        }
                    }
                    srv.call(req)
                })
                .route("/", web::get().to(page))
                .route("/sw.js", web::get().to(service_worker))
                .route("/api/state", web::get().to(api_state))
                .route("/api/qr", web::get().to(api_qr))
                .route("/api/expire", web::post().to(api_expire))
                .route("/control/scan", web::post().to(control_scan))
                .route("/control/unlink", web::post().to(control_unlink))
                .route("/control/devices", web::get().to(control_devices))
                .route("/api/pair", web::post().to(api_pair))
                .route("/api/logout", web::post().to(api_logout))
                .route("/api/send", web::post().to(api_send))
                .app_data(web::PayloadConfig::new(256 << 20))
                .route("/api/upload", web::post().to(api_upload))
                .route("/api/media", web::get().to(api_media))
                .route("/api/presence", web::post().to(api_presence))
                .route("/api/contact", web::post().to(api_contact))
                .route("/api/caps", web::post().to(api_caps))
                .route("/api/received", web::post().to(api_received))
                .route("/api/refused", web::post().to(api_refused))
                .route("/control/enter-code", web::post().to(control_enter_code))
                .route("/control/online", web::post().to(control_online))
                .route(
                    "/control/needs-update",
                    web::post().to(control_needs_update),
                )
        })
        .workers(2)
        .disable_signals()
        .shutdown_timeout(1)
        .bind(("127.0.0.1", 0))
        .expect("stand-in: bind 127.0.0.1:0");
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        StandIn {
            state,
            addr,
            handle,
        }
    }

    /// The page, e.g. `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Socket address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// "Scan" with a phone: links the device that was last shown `payload`. Err if the payload is
    /// unknown or no longer current for its device (rotated, expired, or already scanned).
    pub async fn scan(&self, payload: &str, phone: &str) -> Result<(), String> {
        self.state.lock().unwrap().scan(payload, phone)
    }

    /// Unlink every device linked to `phone` (as if done from the phone). Err if none.
    pub async fn unlink(&self, phone: &str) -> Result<(), String> {
        self.state.lock().unwrap().unlink(phone, None)
    }

    /// Unlink with the reason WhatsApp gives (`conn.logout_reason` through WA-JS).
    pub async fn unlink_because(&self, phone: &str, reason: &str) -> Result<(), String> {
        self.state.lock().unwrap().unlink(phone, Some(reason))
    }

    /// "Type" a pairing code on the phone `phone`: links the device that shows it, if the code
    /// was asked for that number.
    pub async fn enter_code(&self, code: &str, phone: &str) -> Result<(), String> {
        self.state.lock().unwrap().enter_code(code, phone)
    }

    /// The phone of `phone` goes offline (`false`) or comes back.
    pub fn set_online(&self, phone: &str, online: bool) {
        let mut st = self.state.lock().unwrap();
        for dev in st
            .devices
            .values_mut()
            .filter(|d| d.phone.as_deref() == Some(phone))
        {
            dev.offline = !online;
        }
    }

    /// From now on WhatsApp Web asks every page for a newer browser.
    pub fn require_update(&self) {
        self.state.lock().unwrap().needs_update = true;
    }

    /// A contact `from` (digits) writes `body` to the number `phone`: every device linked to it
    /// gets the message. Its WhatsApp id; Err when no device is linked to `phone`.
    pub fn incoming(&self, phone: &str, from: &str, body: &str) -> Result<String, String> {
        self.deliver(phone, from, body, false)
    }

    /// Like [`Self::incoming`], but the page stores the message without announcing it (as a
    /// page that received it while nothing could record it: only gap filling finds it).
    pub fn incoming_unannounced(
        &self,
        phone: &str,
        from: &str,
        body: &str,
    ) -> Result<String, String> {
        self.deliver(phone, from, body, true)
    }

    fn deliver(&self, phone: &str, from: &str, body: &str, silent: bool) -> Result<String, String> {
        self.state.lock().unwrap().deliver(
            phone,
            from,
            json!({"body": body, "type": "chat"}),
            silent,
        )
    }

    /// A contact `from` sends a file to `phone`: `kind` one of `image`, `video`, `audio`, `ptt`,
    /// `document`, `sticker`. The message (`type` the kind, `mimetype`, `filename`, `size`, the
    /// caption as `body`) goes to the devices; the bytes stay on WhatsApp's servers (here), for
    /// `WPP.chat.downloadMedia`. Its WhatsApp id.
    #[allow(clippy::too_many_arguments)]
    pub fn incoming_media(
        &self,
        phone: &str,
        from: &str,
        kind: &str,
        bytes: Vec<u8>,
        mimetype: &str,
        filename: Option<&str>,
        caption: Option<&str>,
    ) -> Result<String, String> {
        if !MEDIA_KINDS.contains(&kind) {
            return Err(format!("{kind:?} is none of {MEDIA_KINDS:?}"));
        }
        let mut fields = json!({
            "type": kind, "mimetype": mimetype, "size": bytes.len(),
            "body": caption.unwrap_or_default(),
        });
        if let Some(filename) = filename {
            fields["filename"] = json!(filename);
        }
        let mut st = self.state.lock().unwrap();
        let id = st.deliver(phone, from, fields, false)?;
        st.media.insert(id.clone(), (bytes, mimetype.to_owned()));
        Ok(id)
    }

    /// A contact shares a location, as WhatsApp Web has one: `lat`, `lng`, and `loc` the name
    /// and the address on two lines (the one given if only one is, else empty).
    pub fn incoming_location(
        &self,
        phone: &str,
        from: &str,
        lat: f64,
        lng: f64,
        name: Option<&str>,
        address: Option<&str>,
    ) -> Result<String, String> {
        let loc = match (name, address) {
            (Some(name), Some(address)) => format!("{name}\n{address}"),
            (one, other) => one.or(other).unwrap_or_default().to_owned(),
        };
        self.state.lock().unwrap().deliver(
            phone,
            from,
            json!({"type": "location", "lat": lat, "lng": lng, "loc": loc}),
            false,
        )
    }

    /// A contact sends a contact card: `body` the vCard, `vcardFormattedName` the name.
    pub fn incoming_vcard(
        &self,
        phone: &str,
        from: &str,
        name: &str,
        vcard: &str,
    ) -> Result<String, String> {
        self.state.lock().unwrap().deliver(
            phone,
            from,
            json!({"type": "vcard", "body": vcard, "vcardFormattedName": name}),
            false,
        )
    }

    /// A contact sends a poll: `pollName`, `pollOptions` (`{name, localId}`, `localId` from 0)
    /// and `pollSelectableOptionsCount` (0: any number), the name as `body` too (as the stand-in
    /// keeps a poll the page sent).
    pub fn incoming_poll(
        &self,
        phone: &str,
        from: &str,
        name: &str,
        options: &[&str],
        selectable: u32,
    ) -> Result<String, String> {
        let options: Vec<_> = options
            .iter()
            .enumerate()
            .map(|(i, o)| json!({"name": o, "localId": i}))
            .collect();
        self.state.lock().unwrap().deliver(
            phone,
            from,
            json!({
                "type": "poll_creation", "body": name, "pollName": name,
                "pollOptions": options, "pollSelectableOptionsCount": selectable,
            }),
            false,
        )
    }

    /// `from` reacts to message `msg_id` with `emoji` (None: takes its reaction back):
    /// `chat.new_reaction`. The reaction's id.
    pub fn react(
        &self,
        phone: &str,
        from: &str,
        msg_id: &str,
        emoji: Option<&str>,
    ) -> Result<String, String> {
        self.state.lock().unwrap().event(
            phone,
            from,
            "reaction",
            msg_id,
            json!({"text": emoji.unwrap_or_default()}),
        )
    }

    /// `from` deletes message `msg_id` for everyone: the page keeps it as `revoked` (no body),
    /// and `chat.msg_revoke`.
    pub fn revoke(&self, phone: &str, from: &str, msg_id: &str) -> Result<(), String> {
        self.state
            .lock()
            .unwrap()
            .event(phone, from, "revoke", msg_id, json!({}))
            .map(drop)
    }

    /// `from` edits message `msg_id` to `body` (a caption, for media): the page's stored message
    /// changes (with `latestEditMsgKey`, `latestEditSenderTimestampMs`), and `chat.msg_edited`.
    /// Nothing is announced for a message the page does not have (as WhatsApp Web).
    pub fn edit(&self, phone: &str, from: &str, msg_id: &str, body: &str) -> Result<(), String> {
        self.state
            .lock()
            .unwrap()
            .event(phone, from, "edit", msg_id, json!({ "body": body }))
            .map(drop)
    }

    /// `from` votes on poll `poll_msg_id` (one the page received or sent) for the options with
    /// these `localId`s (none: takes the vote back): `chat.poll_response`. Nothing is announced
    /// for a poll the page does not have (as WA-JS).
    pub fn vote(
        &self,
        phone: &str,
        from: &str,
        poll_msg_id: &str,
        selected: &[u32],
    ) -> Result<(), String> {
        self.state
            .lock()
            .unwrap()
            .event(
                phone,
                from,
                "vote",
                poll_msg_id,
                json!({ "selected": selected }),
            )
            .map(drop)
    }

    /// The next `n` downloads (`WPP.chat.downloadMedia`) fail: WhatsApp's media servers answer
    /// an HTTP error, the page throws "download failed: HTTP 503".
    pub fn fail_downloads(&self, n: usize) {
        self.state.lock().unwrap().failing_downloads = n;
    }

    /// How many downloads WhatsApp's media servers served (failed ones not counted).
    pub fn downloads(&self) -> usize {
        self.state.lock().unwrap().downloads
    }

    /// WhatsApp no longer has the file of message `id` (received or sent): its download throws
    /// `media_not_found`.
    pub fn forget_media(&self, id: &str) {
        let mut st = self.state.lock().unwrap();
        st.media.remove(id);
        st.forgotten.insert(id.to_owned());
    }

    /// Messages (and reactions, revokes, edits, votes) handed to the devices of `phone` that
    /// their page has not stored yet.
    pub fn unstored(&self, phone: &str) -> usize {
        let st = self.state.lock().unwrap();
        st.devices
            .values()
            .filter(|d| d.phone.as_deref() == Some(phone))
            .map(|d| d.inbox.len())
            .sum()
    }

    /// The recipient read message `id` sent by a device of `phone` (ack 3).
    pub fn read(&self, phone: &str, id: &str) {
        let mut st = self.state.lock().unwrap();
        let Some(sent) = st.sent.iter().find(|m| m.id == id).cloned() else {
            return;
        };
        for dev in st
            .devices
            .values_mut()
            .filter(|d| d.phone.as_deref() == Some(phone))
        {
            dev.acks
                .push(json!({"ack": 3, "id": sent.id, "chat": sent.to}));
        }
    }

    /// From now on WhatsApp's side answers each send after `delay` (it has the message at
    /// once: a page that dies meanwhile has sent it without knowing).
    pub fn delay_sends(&self, delay: Duration) {
        self.state.lock().unwrap().send_delay = delay;
    }

    /// The number `phone` is on WhatsApp, with linked id `lid` (`<digits>@lid`) if given.
    pub fn add_contact(&self, phone: &str, lid: Option<&str>) {
        self.state
            .lock()
            .unwrap()
            .contacts
            .insert(phone.to_owned(), lid.map(str::to_owned));
    }

    /// Every read and presence the devices showed: (device's phone, chat, state).
    pub fn presence(&self) -> Vec<(String, String, String)> {
        self.state.lock().unwrap().presence.clone()
    }

    /// Every message the devices sent, in order.
    pub fn sent(&self) -> Vec<SentMessage> {
        self.state.lock().unwrap().sent.clone()
    }

    /// Every pairing code issued so far.
    pub fn issued_codes(&self) -> Vec<String> {
        self.state.lock().unwrap().codes.clone()
    }

    /// Devices that unlinked themselves through WA-JS's logout.
    pub fn self_logouts(&self) -> Vec<String> {
        self.state.lock().unwrap().self_logouts.clone()
    }

    /// Every User-Agent a page asked for a QR code with.
    pub fn user_agents(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .user_agents
            .iter()
            .cloned()
            .collect()
    }

    /// Every payload ever issued, with the moment the page received it.
    pub fn issued_with_times(&self) -> Vec<(String, std::time::Instant)> {
        let s = self.state.lock().unwrap();
        s.issued
            .iter()
            .cloned()
            .zip(s.issued_at.iter().copied())
            .collect()
    }

    /// Every QR payload handed out so far, in order.
    pub fn issued_payloads(&self) -> Vec<String> {
        self.state.lock().unwrap().issued.clone()
    }

    /// The currently scannable payload of every device that has one.
    pub fn current_payloads(&self) -> Vec<String> {
        let st = self.state.lock().unwrap();
        st.devices
            .values()
            .filter_map(|d| d.current.clone())
            .collect()
    }

    /// Phones with at least one linked device (sorted, deduplicated).
    pub fn linked_phones(&self) -> Vec<String> {
        let st = self.state.lock().unwrap();
        let mut v: Vec<String> = st
            .devices
            .values()
            .filter_map(|d| d.phone.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The most page instances of one device ever live at once (see `Instances`): above 1, two
    /// browsers were linked to one device at the same time.
    pub fn max_live_instances(&self) -> usize {
        let st = self.state.lock().unwrap();
        st.instances.values().map(|i| i.max_live).max().unwrap_or(0)
    }

    /// Forgets the maxima so far; live instances keep being tracked.
    pub fn reset_max_live_instances(&self) {
        let mut st = self.state.lock().unwrap();
        for i in st.instances.values_mut() {
            i.max_live = 0;
        }
    }

    /// How many times a device got linked by a QR scan or a pairing code entered on the phone
    /// (a session that comes back linked from its profile does not count).
    pub fn links(&self) -> usize {
        self.state.lock().unwrap().links
    }

    /// The page of every device linked to `phone` allocates `mib` MiB more and keeps it.
    pub fn grow(&self, phone: &str, mib: u32) -> Result<(), String> {
        let mut st = self.state.lock().unwrap();
        let mut n = 0;
        for dev in st
            .devices
            .values_mut()
            .filter(|d| d.phone.as_deref() == Some(phone))
        {
            dev.grow_mib += mib;
            n += 1;
        }
        if n == 0 {
            return Err(format!("no device is linked to {phone}"));
        }
        Ok(())
    }

    /// What the page of each device reported of its browser at its latest load (user agent,
    /// client hints, `navigator.webdriver`, `window.chrome`, notifications, service workers…).
    pub fn capabilities(&self) -> Vec<serde_json::Value> {
        let st = self.state.lock().unwrap();
        st.devices.values().filter_map(|d| d.caps.clone()).collect()
    }

    /// How many times a browser got the refusal page.
    pub fn refusals(&self) -> usize {
        self.state.lock().unwrap().refusals
    }

    /// Number of devices (browser profiles) that have loaded the page at least once.
    pub fn device_count(&self) -> usize {
        self.state.lock().unwrap().devices.len()
    }

    /// Stop the server and wait for it.
    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        // `stop` sends the command synchronously; the returned future only awaits completion.
        drop(self.handle.stop(false));
    }
}

#[derive(Deserialize)]
struct DeviceQuery {
    device: String,
}

/// Sent by the page with every request that names its device.
#[derive(Deserialize)]
struct InstanceQuery {
    device: String,
    instance: String,
}

#[derive(Deserialize)]
struct ScanBody {
    payload: String,
    phone: String,
}

#[derive(Deserialize)]
struct UnlinkBody {
    phone: String,
    reason: Option<String>,
}

fn no_store(mut b: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    b.insert_header((header::CACHE_CONTROL, "no-store"));
    b
}

fn valid_device(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

async fn page(st: web::Data<Mutex<State>>, req: actix_web::HttpRequest) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let headless =
        header("user-agent").contains("Headless") || header("sec-ch-ua").contains("Headless");
    let (ms, n, poll, refuse, refused) = {
        let mut s = st.lock().unwrap();
        let refused = match s.refuse {
            Refuse::Always => true,
            Refuse::Headless => headless,
            Refuse::Never => false,
        };
        s.refusals += usize::from(refused);
        (s.rotation_ms, s.rotations, s.poll_ms, s.refuse, refused)
    };
    if refused {
        return no_store(HttpResponse::Ok())
            .content_type("text/html; charset=utf-8")
            .body(REFUSAL_PAGE.replace("__REFUSAL__", REFUSAL));
    }
    let html = PAGE
        .replace("__ROTATION_MS__", &ms.to_string())
        .replace("__ROTATIONS__", &n.to_string())
        .replace("__POLL_MS__", &poll.to_string())
        .replace(
            "__REFUSE_HEADLESS__",
            &(refuse == Refuse::Headless).to_string(),
        )
        .replace("__REFUSAL__", REFUSAL);
    no_store(HttpResponse::Ok())
        .content_type("text/html; charset=utf-8")
        .body(html)
}

/// A service worker, as WhatsApp Web registers one.
async fn service_worker() -> HttpResponse {
    no_store(HttpResponse::Ok())
        .content_type("text/javascript")
        .body("self.addEventListener('install', () => self.skipWaiting()); self.addEventListener('activate', (e) => e.waitUntil(clients.claim()));")
}

async fn api_state(st: web::Data<Mutex<State>>, q: web::Query<DeviceQuery>) -> HttpResponse {
    if !valid_device(&q.device) {
        return no_store(HttpResponse::BadRequest()).json(json!({"error": "bad device id"}));
    }
    let mut s = st.lock().unwrap();
    s.devices.entry(q.device.clone()).or_default();
    let code = s.pairing_code(&q.device);
    let needs_update = s.needs_update;
    let dev = s.devices.get_mut(&q.device).unwrap();
    // Messages stay in the inbox until the page says it stored them (`/api/received`).
    let (messages, acks) = if dev.phone.is_some() {
        (dev.inbox.clone(), std::mem::take(&mut dev.acks))
    } else {
        (Vec::new(), Vec::new())
    };
    let grow = std::mem::take(&mut dev.grow_mib);
    no_store(HttpResponse::Ok()).json(json!({
        "phone": dev.phone,
        "grow": grow,
        "pairingCode": code,
        "online": !dev.offline,
        "logoutReason": dev.logout_reason,
        "needsUpdate": needs_update,
        "messages": messages,
        "acks": acks,
    }))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendBody {
    to: String,
    body: String,
    /// The id the sender asked for (WA-JS's `messageId` option).
    message_id: Option<String>,
    /// The message's type and what goes with it (`chat` when absent).
    extra: Option<serde_json::Value>,
}

/// A device sends a text: the recipient's "phone" gets it; acks 1 (server) and 2 (device)
/// follow on the device's next poll.
async fn api_send(
    st: web::Data<Mutex<State>>,
    q: web::Query<DeviceQuery>,
    b: web::Json<SendBody>,
) -> HttpResponse {
    let (answer, delay) = {
        let mut s = st.lock().unwrap();
        let delay = s.send_delay;
        let Some(dev) = s.devices.get_mut(&q.device) else {
            return no_store(HttpResponse::BadRequest()).json(json!({"error": "unknown device"}));
        };
        let Some(phone) = dev.phone.clone() else {
            return no_store(HttpResponse::Conflict()).json(json!({"error": "not linked"}));
        };
        let id = match &b.message_id {
            Some(given) => format!("true_{}_{given}", b.to),
            None => format!("true_{}_{:016X}", b.to, rand::random::<u64>()),
        };
        for ack in [1, 2] {
            dev.acks.push(json!({"ack": ack, "id": id, "chat": b.to}));
        }
        let extra = b.extra.clone().unwrap_or(serde_json::Value::Null);
        s.sent.push(SentMessage {
            device: q.device.clone(),
            from: Some(phone.clone()),
            to: b.to.clone(),
            body: b.body.clone(),
            id: id.clone(),
            kind: extra["type"].as_str().unwrap_or("chat").to_owned(),
            extra,
        });
        (
            json!({"id": id, "from": format!("{phone}@c.us"), "t": now_secs()}),
            delay,
        )
    };
    // WhatsApp's side has the message now; its answer to the page may take a while.
    actix_web::rt::time::sleep(delay).await;
    no_store(HttpResponse::Ok()).json(answer)
}

#[derive(Deserialize)]
struct PresenceBody {
    chat: String,
    state: String,
}

async fn api_presence(
    st: web::Data<Mutex<State>>,
    q: web::Query<DeviceQuery>,
    b: web::Json<PresenceBody>,
) -> HttpResponse {
    let mut s = st.lock().unwrap();
    let Some(phone) = s.devices.get(&q.device).and_then(|d| d.phone.clone()) else {
        return no_store(HttpResponse::Conflict()).json(json!({"error": "not linked"}));
    };
    s.presence.push((phone, b.chat.clone(), b.state.clone()));
    no_store(HttpResponse::Ok()).json(json!({"ok": true}))
}

#[derive(Deserialize)]
struct ContactBody {
    /// `<digits>@c.us` or `<digits>@lid`.
    id: String,
}

/// WhatsApp's directory: `{phone, lid}` of a number or linked id it knows, else null.
async fn api_contact(st: web::Data<Mutex<State>>, b: web::Json<ContactBody>) -> HttpResponse {
    let s = st.lock().unwrap();
    let found = match b.id.split_once('@') {
        Some((phone, "c.us")) => s
            .contacts
            .get(phone)
            .map(|lid| (phone.to_owned(), lid.clone()))
            .or_else(|| {
                s.devices
                    .values()
                    .any(|d| d.phone.as_deref() == Some(phone))
                    .then(|| (phone.to_owned(), None))
            }),
        Some((_, "lid")) => s
            .contacts
            .iter()
            .find(|(_, lid)| lid.as_deref() == Some(b.id.as_str()))
            .map(|(phone, lid)| (phone.clone(), lid.clone())),
        _ => None,
    };
    let contact = found.map(|(phone, lid)| json!({"phone": phone, "lid": lid}));
    no_store(HttpResponse::Ok()).json(json!({ "contact": contact }))
}

/// A page uploads a file (WhatsApp's media servers): kept as it came, by a token.
async fn api_upload(
    st: web::Data<Mutex<State>>,
    q: web::Query<DeviceQuery>,
    body: web::Bytes,
) -> HttpResponse {
    let mut s = st.lock().unwrap();
    if s.devices.get(&q.device).is_none_or(|d| d.phone.is_none()) {
        return no_store(HttpResponse::Conflict()).json(json!({"error": "not linked"}));
    }
    let token = format!("{:016x}", rand::random::<u64>());
    let size = body.len();
    s.uploads.insert(token.clone(), body.to_vec());
    no_store(HttpResponse::Ok()).json(json!({"token": token, "size": size}))
}

#[derive(Deserialize)]
struct ReceivedBody {
    ids: Vec<String>,
}

#[derive(Deserialize)]
struct MediaQuery {
    device: String,
    /// The message's id.
    id: String,
}

/// A page downloads the file of a message (WhatsApp's media servers): 404
/// `{"error":"media_not_found"}` when they do not have it, 503 while told to fail.
async fn api_media(st: web::Data<Mutex<State>>, q: web::Query<MediaQuery>) -> HttpResponse {
    let mut s = st.lock().unwrap();
    if s.devices.get(&q.device).is_none_or(|d| d.phone.is_none()) {
        return no_store(HttpResponse::Conflict()).json(json!({"error": "not linked"}));
    }
    if s.failing_downloads > 0 {
        s.failing_downloads -= 1;
        return no_store(HttpResponse::ServiceUnavailable())
            .json(json!({"error": "download failed"}));
    }
    let Some((bytes, mimetype)) = s.media_of(&q.id) else {
        return no_store(HttpResponse::NotFound()).json(json!({"error": "media_not_found"}));
    };
    s.downloads += 1;
    let kind = header::HeaderValue::from_str(&mimetype)
        .unwrap_or(header::HeaderValue::from_static("application/octet-stream"));
    no_store(HttpResponse::Ok())
        .insert_header((header::CONTENT_TYPE, kind))
        .body(bytes)
}

/// The page stored these messages (and handled these events): the server forgets them (it
/// never sends them again).
async fn api_received(
    st: web::Data<Mutex<State>>,
    q: web::Query<DeviceQuery>,
    b: web::Json<ReceivedBody>,
) -> HttpResponse {
    let mut s = st.lock().unwrap();
    if let Some(dev) = s.devices.get_mut(&q.device) {
        dev.inbox.retain(|m| {
            !b.ids
                .iter()
                .any(|id| m["msg"]["id"] == id.as_str() || m["event"]["id"] == id.as_str())
        });
    }
    no_store(HttpResponse::Ok()).json(json!({"ok": true}))
}

/// The page reports what its browser looks like, at every load.
async fn api_caps(
    st: web::Data<Mutex<State>>,
    q: web::Query<DeviceQuery>,
    b: web::Json<serde_json::Value>,
) -> HttpResponse {
    let mut s = st.lock().unwrap();
    if !valid_device(&q.device) {
        return no_store(HttpResponse::BadRequest()).json(json!({"error": "bad device id"}));
    }
    s.devices.entry(q.device.clone()).or_default().caps = Some(b.into_inner());
    no_store(HttpResponse::Ok()).json(json!({"ok": true}))
}

/// The page found out in JavaScript that its browser is headless and showed the refusal.
async fn api_refused(st: web::Data<Mutex<State>>) -> HttpResponse {
    st.lock().unwrap().refusals += 1;
    no_store(HttpResponse::Ok()).json(json!({"ok": true}))
}

#[derive(Deserialize)]
struct PairBody {
    phone: String,
}

async fn api_pair(
    st: web::Data<Mutex<State>>,
    q: web::Query<DeviceQuery>,
    b: web::Json<PairBody>,
) -> HttpResponse {
    let mut s = st.lock().unwrap();
    if !valid_device(&q.device) || !s.devices.contains_key(&q.device) {
        return no_store(HttpResponse::BadRequest()).json(json!({"error": "unknown device"}));
    }
    if b.phone.len() < 8 || !b.phone.bytes().all(|c| c.is_ascii_digit()) {
        return no_store(HttpResponse::BadRequest()).json(json!({"error": "bad phone"}));
    }
    let code = s.new_code();
    let dev = s.devices.get_mut(&q.device).unwrap();
    dev.pairing = Some((b.phone.clone(), code.clone(), std::time::Instant::now()));
    no_store(HttpResponse::Ok()).json(json!({"code": code}))
}

async fn api_logout(st: web::Data<Mutex<State>>, q: web::Query<DeviceQuery>) -> HttpResponse {
    let mut s = st.lock().unwrap();
    let Some(dev) = s.devices.get_mut(&q.device) else {
        return no_store(HttpResponse::BadRequest()).json(json!({"error": "unknown device"}));
    };
    dev.phone = None;
    dev.logout_reason = Some("user_initiated".into());
    s.self_logouts.push(q.device.clone());
    no_store(HttpResponse::Ok()).json(json!({"ok": true}))
}

#[derive(Deserialize)]
struct EnterCodeBody {
    code: String,
    phone: String,
}

async fn control_enter_code(
    st: web::Data<Mutex<State>>,
    b: web::Json<EnterCodeBody>,
) -> HttpResponse {
    match st.lock().unwrap().enter_code(&b.code, &b.phone) {
        Ok(()) => HttpResponse::Ok().json(json!({"ok": true})),
        Err(e) => HttpResponse::NotFound().json(json!({"error": e})),
    }
}

#[derive(Deserialize)]
struct OnlineBody {
    phone: String,
    online: bool,
}

async fn control_online(st: web::Data<Mutex<State>>, b: web::Json<OnlineBody>) -> HttpResponse {
    let mut s = st.lock().unwrap();
    for dev in s
        .devices
        .values_mut()
        .filter(|d| d.phone.as_deref() == Some(b.phone.as_str()))
    {
        dev.offline = !b.online;
    }
    HttpResponse::Ok().json(json!({"ok": true}))
}

async fn control_needs_update(st: web::Data<Mutex<State>>) -> HttpResponse {
    st.lock().unwrap().needs_update = true;
    HttpResponse::Ok().json(json!({"ok": true}))
}

async fn api_qr(
    st: web::Data<Mutex<State>>,
    q: web::Query<DeviceQuery>,
    req: actix_web::HttpRequest,
) -> HttpResponse {
    if !valid_device(&q.device) {
        return no_store(HttpResponse::BadRequest()).json(json!({"error": "bad device id"}));
    }
    let mut s = st.lock().unwrap();
    let agent = req
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok());
    s.user_agents.insert(agent.unwrap_or_default().to_owned());
    if let Some(phone) = s.devices.get(&q.device).and_then(|d| d.phone.clone()) {
        return no_store(HttpResponse::Ok()).json(json!({"phone": phone}));
    }
    let p = s.new_payload(&q.device);
    no_store(HttpResponse::Ok()).json(json!({"payload": p}))
}

async fn api_expire(st: web::Data<Mutex<State>>, q: web::Query<DeviceQuery>) -> HttpResponse {
    let mut s = st.lock().unwrap();
    if let Some(d) = s.devices.get_mut(&q.device) {
        d.current = None;
    }
    no_store(HttpResponse::Ok()).json(json!({"ok": true}))
}

async fn control_scan(st: web::Data<Mutex<State>>, b: web::Json<ScanBody>) -> HttpResponse {
    match st.lock().unwrap().scan(&b.payload, &b.phone) {
        Ok(()) => HttpResponse::Ok().json(json!({"ok": true})),
        Err(e) => HttpResponse::NotFound().json(json!({"error": e})),
    }
}

async fn control_unlink(st: web::Data<Mutex<State>>, b: web::Json<UnlinkBody>) -> HttpResponse {
    match st.lock().unwrap().unlink(&b.phone, b.reason.as_deref()) {
        Ok(()) => HttpResponse::Ok().json(json!({"ok": true})),
        Err(e) => HttpResponse::NotFound().json(json!({"error": e})),
    }
}

async fn control_devices(st: web::Data<Mutex<State>>) -> HttpResponse {
    let s = st.lock().unwrap();
    let devs: serde_json::Map<String, serde_json::Value> = s
        .devices
        .iter()
        .map(|(k, d)| (k.clone(), json!({"phone": d.phone, "current": d.current})))
        .collect();
    no_store(HttpResponse::Ok()).json(json!({"devices": devs, "issued": s.issued.len()}))
}

/// WhatsApp Web's answer to a browser it does not take: no QR code, no app.
const REFUSAL_PAGE: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>WhatsApp</title></head>
<body><div class="landing-wrapper"><div class="landing-main">
<h1>__REFUSAL__</h1>
<p>To use WhatsApp, update Chrome or use Mozilla Firefox, Safari, Microsoft Edge or Opera.</p>
<a href="https://www.google.com/chrome">Update Google Chrome</a>
</div></div></body></html>
"##;

const PAGE: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>WhatsApp</title>
<style>
body{font-family:sans-serif;margin:0;background:#f0f2f5}
#app{max-width:700px;margin:40px auto;background:#fff;padding:24px}
div[data-ref]{width:264px;height:264px;position:relative}
div[data-ref] button{position:absolute;top:92px;left:32px;width:200px;height:80px;border-radius:40px;background:#008069;color:#fff;border:0}
#pane-side .chat{padding:10px;border-bottom:1px solid #eee}
</style></head>
<body><div id="app"><div id="startup">Loading…</div></div>
<script>
"use strict";
const ROTATION_MS = __ROTATION_MS__, ROTATIONS = __ROTATIONS__, POLL_MS = __POLL_MS__;
const app = document.getElementById("app");
let device = null, phone = null, cycle = 0, timer = null;
// One per page load: the server tells a reload from two browsers at once by it.
const instance = randomId();

function randomId() {
  const b = new Uint8Array(16); crypto.getRandomValues(b);
  return Array.from(b, x => x.toString(16).padStart(2, "0")).join("");
}
// The page's own store (IndexedDB, committed durably): its login and every message it received
// or sent, as WhatsApp Web keeps them.
let idb = null;
function openIdb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open("wa-standin", 2);
    req.onupgradeneeded = () => {
      for (const name of ["kv", "msgs"]) if (!req.result.objectStoreNames.contains(name)) req.result.createObjectStore(name);
    };
    req.onerror = () => reject(req.error);
    req.onsuccess = () => resolve(req.result);
  });
}
function tx(store, mode, run) {
  return new Promise((resolve, reject) => {
    let t;
    try { t = idb.transaction(store, mode, {durability: "strict"}); }
    catch (e) { t = idb.transaction(store, mode); }
    const out = run(t.objectStore(store));
    t.oncomplete = () => resolve(out.result);
    t.onerror = () => reject(t.error);
    t.onabort = () => reject(t.error || new Error("idb abort"));
  });
}
// The login: an id and a non-extractable signing key. A key that no longer signs (a profile that
// lost it) is a new device: unlinked.
async function deviceFromIdb() {
  idb = await openIdb();
  const stored = await tx("kv", "readonly", (s) => s.get("login"));
  if (stored && stored.id && stored.key) {
    try {
      await crypto.subtle.sign({name: "ECDSA", hash: "SHA-256"}, stored.key, new TextEncoder().encode(stored.id));
      return stored.id;
    } catch (e) {}
  }
  const pair = await crypto.subtle.generateKey({name: "ECDSA", namedCurve: "P-256"}, false, ["sign"]);
  const id = randomId();
  await tx("kv", "readwrite", (s) => s.put({id, key: pair.privateKey}, "login"));
  return id;
}
// A message into the store; whether it is new (a message already stored is not announced again).
async function remember(m) {
  const known = await tx("msgs", "readonly", (s) => s.get(m.id));
  if (known) return false;
  await tx("msgs", "readwrite", (s) => s.put(m, m.id));
  return true;
}
const storedMessages = () => tx("msgs", "readonly", (s) => s.getAll());
// What a contact did about an earlier message (`event`: `kind` reaction, revoke, edit or vote,
// `id` its own, `msgId` the message's): applied to the store once (the event's id is kept), and
// what to announce — null when already handled, or when WhatsApp Web would say nothing (an edit
// of a message the page does not have, a vote on a poll it does not have).
async function handle(e) {
  const seen = "event:" + e.id;
  if (await tx("kv", "readonly", (s) => s.get(seen))) return null;
  const target = await tx("msgs", "readonly", (s) => s.get(e.msgId));
  let out = null;
  switch (e.kind) {
    case "reaction": out = {type: "reaction", event: e}; break;
    case "revoke":
      if (target) {
        const revoked = {id: target.id, from: target.from, to: target.to, t: target.t, type: "revoked"};
        if (target.fromMe) revoked.fromMe = true;
        await tx("msgs", "readwrite", (s) => s.put(revoked, target.id));
      }
      out = {type: "revoke", event: e};
      break;
    case "edit":
      if (target) {
        const edited = Object.assign({}, target, {body: e.body, latestEditMsgKey: e.id, latestEditSenderTimestampMs: e.t});
        await tx("msgs", "readwrite", (s) => s.put(edited, target.id));
        out = {type: "edit", event: e, msg: edited};
      }
      break;
    case "vote": if (target) out = {type: "vote", event: e, poll: target}; break;
  }
  await tx("kv", "readwrite", (s) => s.put(true, seen));
  return out;
}
async function api(method, path) {
  const r = await fetch(path + "?device=" + encodeURIComponent(device) + "&instance=" + instance, {method, cache: "no-store"});
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}
function clearTimer() { if (timer) { clearTimeout(timer); timer = null; } }
// Each change, for the WA-JS stand-in (support/wpp.rs).
function announce(detail) { window.dispatchEvent(new CustomEvent("standin", { detail })); }
async function post(path, body) {
  const r = await fetch(path + "?device=" + encodeURIComponent(device) + "&instance=" + instance, {
    method: "POST", cache: "no-store", headers: {"content-type": "application/json"},
    body: JSON.stringify(body || {}) });
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}
window.__standin = {
  messages: () => storedMessages(),
  remember: (m) => remember(m),
  reloadQr: () => showQr(),
  pair: async (phone) => (await post("/api/pair", {phone: String(phone)})).code,
  logout: async () => { await post("/api/logout"); },
  send: async (to, body, messageId, extra) => post("/api/send", {to: String(to), body: String(body), messageId: messageId || null, extra: extra || null}),
  presence: async (chat, state) => post("/api/presence", {chat: String(typeof chat === "string" ? chat : chat._serialized), state}),
  contact: async (id) => (await post("/api/contact", {id: String(id)})).contact,
  // A file to WhatsApp's servers, as it is; what they keep of it.
  upload: async (blob) => {
    const r = await fetch("/api/upload?device=" + encodeURIComponent(device) + "&instance=" + instance, {method: "POST", cache: "no-store", body: blob});
    if (!r.ok) throw new Error("/api/upload: HTTP " + r.status);
    return r.json();
  },
  // The file of message `id` from WhatsApp's media servers (a Blob).
  download: async (id) => {
    const r = await fetch("/api/media?device=" + encodeURIComponent(device) + "&instance=" + instance + "&id=" + encodeURIComponent(id), {cache: "no-store"});
    if (r.status === 404) throw new Error("media_not_found");
    if (!r.ok) throw new Error("download failed: HTTP " + r.status);
    return r.blob();
  },
};

function drawQr(canvas, payload) {
  const ctx = canvas.getContext("2d"), n = 33, s = 8;
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "#122e31";
  let h = 2166136261;
  for (let i = 0; i < payload.length; i++) { h ^= payload.charCodeAt(i); h = Math.imul(h, 16777619) >>> 0; }
  for (let y = 0; y < n; y++) for (let x = 0; x < n; x++) {
    h ^= h << 13; h >>>= 0; h ^= h >>> 17; h ^= h << 5; h >>>= 0;
    const finder = (x < 7 && y < 7) || (x >= n - 7 && y < 7) || (x < 7 && y >= n - 7);
    if (finder ? (x % 6 === 0 || y % 6 === 0 || (x % 7 >= 2 && x % 7 <= 4 && y % 7 >= 2 && y % 7 <= 4)) : (h & 1))
      ctx.fillRect(x * s, y * s, s, s);
  }
}

function qrContainer() {
  let c = document.querySelector("div[data-ref]");
  if (!c) {
    const wrap = document.createElement("div");
    wrap.id = "qr-wrap";
    wrap.innerHTML = "<h1>Use WhatsApp on your computer</h1>";
    c = document.createElement("div");
    c.setAttribute("data-ref", "");
    wrap.appendChild(c);
    app.replaceChildren(wrap);
  }
  return c;
}

function showQr() {
  clearTimer();
  const my = ++cycle;
  const c = qrContainer();
  c.replaceChildren();
  const canvas = document.createElement("canvas");
  canvas.width = 264; canvas.height = 264;
  canvas.setAttribute("aria-label", "Scan this QR code to link a device!");
  c.appendChild(canvas);
  let shown = 0;
  const step = async () => {
    timer = null;
    if (my !== cycle) return;
    if (shown >= ROTATIONS) { expire(my); return; }
    let r;
    try { r = await api("GET", "/api/qr"); }
    catch (e) { if (my === cycle) timer = setTimeout(step, 500); return; }
    if (my !== cycle) return;
    if (r.phone) { showLinked(r.phone); return; }
    shown++;
    c.setAttribute("data-ref", r.payload);
    drawQr(canvas, r.payload);
    announce({type: "qr", payload: r.payload});
    timer = setTimeout(step, ROTATION_MS);
  };
  step();
}

async function expire(my) {
  try { await api("POST", "/api/expire"); } catch (e) {}
  if (my !== cycle) return;
  announce({type: "idle"});
  const c = qrContainer();
  const b = document.createElement("button");
  b.textContent = "Click to reload QR code";
  b.addEventListener("click", () => showQr());
  c.replaceChildren(b);
}

function showLinked(p) {
  clearTimer();
  cycle++;
  phone = p;
  localStorage.setItem("last-wid-md", JSON.stringify(p + ":7@c.us"));
  localStorage.setItem("last-wid", JSON.stringify(p + "@c.us"));
  announce({type: "linked", phone: p});
  if (!document.getElementById("pane-side")) {
    const pane = document.createElement("div");
    pane.id = "pane-side";
    pane.setAttribute("aria-label", "Chat list");
    for (const [name, msg] of [["Alice", "See you tomorrow"], ["Bob", "👍"], ["Family", "Dinner at 8?"]]) {
      const d = document.createElement("div");
      d.className = "chat";
      d.textContent = name + ": " + msg;
      pane.appendChild(d);
    }
    app.replaceChildren(pane);
  }
}

function showUnlinked(reason) {
  phone = null;
  announce({type: "unlinked", reason: reason || null});
  localStorage.removeItem("last-wid-md");
  localStorage.removeItem("last-wid");
  const pane = document.getElementById("pane-side");
  if (pane) pane.remove();
  showQr();
}

let lastCode = null, lastOnline = true, updateAsked = false;
async function poll() {
  try {
    const r = await api("GET", "/api/state");
    // A heap that grows (as WhatsApp Web's does with the chats): touched, so it is resident.
    for (let i = 0; i < (r.grow || 0); i++) ballast.push(new Uint8Array(1 << 20).fill(i % 255 + 1));
    if (r.phone && r.phone !== phone) showLinked(r.phone);
    else if (!r.phone && phone) showUnlinked(r.logoutReason);
    if (r.pairingCode && r.pairingCode !== lastCode) announce({type: "link_code", code: r.pairingCode});
    lastCode = r.pairingCode;
    if (phone && r.online !== lastOnline) announce({type: "online", online: r.online});
    lastOnline = r.online;
    if (r.needsUpdate && !updateAsked) { updateAsked = true; announce({type: "needs_update"}); }
    // As a device receives: stored first, then acknowledged to the server (which then forgets
    // it), then announced — unless it was stored before, or the test wants it unannounced.
    // Reactions, revokes, edits and votes come in the same order, each handled once.
    if ((r.messages || []).length) {
      const fresh = [];
      for (const m of r.messages) {
        if (m.event) { const d = await handle(m.event); if (d) fresh.push(d); }
        else if (await remember(m.msg) && !m.silent) fresh.push({type: "message", msg: m.msg});
      }
      await post("/api/received", {ids: r.messages.map((m) => (m.event || m.msg).id)});
      for (const d of fresh) announce(d);
    }
    for (const a of r.acks || []) announce({type: "ack", ack: a.ack, id: a.id, chat: a.chat});
  } catch (e) {}
  setTimeout(poll, POLL_MS);
}

// What the browser looks like to a page, reported for the engine tests.
async function capabilities() {
  const c = {ua: navigator.userAgent, webdriver: navigator.webdriver, chrome: typeof window.chrome,
    hidden: document.hidden, visibility: document.visibilityState,
    notification: typeof Notification === "undefined" ? "none" : Notification.permission,
    plugins: navigator.plugins.length, languages: navigator.languages.join(","),
    window: innerWidth + "x" + innerHeight, screen: screen.width + "x" + screen.height,
    brands: navigator.userAgentData ? navigator.userAgentData.brands.map((b) => b.brand) : null};
  try { c.wasm = !!(await WebAssembly.instantiate(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]))).instance; }
  catch (e) { c.wasm = String(e); }
  try {
    const t0 = performance.now();
    const late = (ms) => new Promise((r) => setTimeout(() => r(null), ms));
    const reg = await Promise.race([navigator.serviceWorker.register("/sw.js"), late(10000)]);
    c.serviceWorkerMs = Math.round(performance.now() - t0);
    c.serviceWorker = reg ? !!(reg.active || reg.waiting || reg.installing) : "no answer within 10 s";
  } catch (e) { c.serviceWorker = String(e); }
  c.sharedWorker = typeof SharedWorker;
  c.webSocket = typeof WebSocket;
  return c;
}

// The site's own check: a browser that says it is headless gets the refusal, not the app.
function saysHeadless() {
  const brands = navigator.userAgentData ? navigator.userAgentData.brands.map((b) => b.brand).join(" ") : "";
  return /Headless/.test(navigator.userAgent) || /Headless/.test(brands);
}

let ballast = [];
(async () => {
  if (__REFUSE_HEADLESS__ && saysHeadless()) {
    document.body.innerHTML = "<div class='landing-main'><h1>__REFUSAL__</h1><p>To use WhatsApp, update Chrome or use Mozilla Firefox, Safari, Microsoft Edge or Opera.</p></div>";
    fetch("/api/refused", {method: "POST"});
    return;
  }
  device = await deviceFromIdb();
  capabilities().then((c) => post("/api/caps", c)).catch(() => {});
  announce({type: "boot"});
  let r = {phone: null};
  try { r = await api("GET", "/api/state"); } catch (e) {}
  if (r.phone) { showLinked(r.phone); setTimeout(() => announce({type: "offline_delivery_end"}), 300); }
  else {
    localStorage.removeItem("last-wid-md");
    localStorage.removeItem("last-wid");
    showQr();
  }
  setTimeout(poll, POLL_MS);
})();
</script></body></html>
"##;

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `(instance, ms)` requests; the live counts they return.
    fn live(requests: &[(&str, u64)]) -> (Vec<usize>, usize) {
        let t0 = Instant::now();
        let mut i = Instances::default();
        let counts = requests
            .iter()
            .map(|&(id, ms)| i.see(id, t0 + Duration::from_millis(ms)))
            .collect();
        (counts, i.max_live)
    }

    #[test]
    fn one_page_polling_is_one_instance() {
        let polls: Vec<(&str, u64)> = (0..20).map(|n| ("a", n * 150)).collect();
        assert_eq!(live(&polls).1, 1);
    }

    #[test]
    fn a_reload_is_one_browser() {
        // "a" polls until 300 ms, reloads; "b" starts 200 ms later and polls on.
        let (counts, max) = live(&[
            ("a", 0),
            ("a", 150),
            ("a", 300),
            ("b", 500),
            ("b", 520),
            ("b", 670),
            ("b", 820),
        ]);
        assert_eq!(counts, [1, 1, 1, 1, 1, 1, 1]);
        assert_eq!(max, 1);
    }

    #[test]
    fn two_browsers_polling_are_two() {
        let (counts, max) = live(&[("a", 0), ("a", 150), ("b", 200), ("a", 300), ("b", 350)]);
        assert_eq!(counts, [1, 1, 1, 2, 2]);
        assert_eq!(max, 2);
    }

    #[test]
    fn an_instance_silent_for_a_second_is_gone() {
        // "a" went quiet (killed) and "b" started only later: never two.
        let (counts, _) = live(&[("a", 0), ("b", 1500), ("b", 1650)]);
        assert_eq!(counts, [1, 1, 1]);
        // "a" comes back after 1.2 s of silence while "b" polls: two once "b" polls again.
        let (counts, _) = live(&[("a", 0), ("b", 100), ("b", 1100), ("a", 1200), ("b", 1250)]);
        assert_eq!(counts, [1, 1, 1, 1, 2]);
    }

    /// With real Chromium: a scan is one link; a restart (the browser closed, another one on
    /// the same profile) is one live instance at a time and no new link.
    #[actix_web::test]
    async fn a_restart_is_no_second_browser_and_no_link() {
        use crate::support::harness::{spawn_app, uuid_like, LAUNCH};
        let t = spawn_app(StandInOptions::default(), &[]).await;
        let user = uuid_like(900);
        assert_eq!(t.start(&user, 1).await, 202);
        t.scan(&user, 1, "4915100000001").await;
        assert_eq!((t.standin.links(), t.standin.max_live_instances()), (1, 1));

        assert_eq!(t.stop(&user, 1).await, 200);
        assert_eq!(t.start(&user, 1).await, 202);
        t.wait_state(&user, 1, "connected", LAUNCH).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!((t.standin.links(), t.standin.max_live_instances()), (1, 1));
        t.standin.reset_max_live_instances();
        assert_eq!(t.standin.max_live_instances(), 0);

        assert_eq!(t.stop(&user, 1).await, 200);
    }
}
