// The operator console: talks to this daemon's own API with the pasted token (kept in
// sessionStorage, sent only in the Authorization header) and follows the user's sessions over
// SSE with single-use tickets, so the token never appears in a URL. A received image or voice
// note is fetched the same way (never through its signed link) and shown from a blob: URL.
"use strict";

(function () {
  const TOKEN_KEY = "wa-supervisor.token";
  const $ = (sel) => document.querySelector(sel);
  const tokenInput = $("#token");
  const userInput = $("#user");
  const statusLine = $("#status");
  const slotsEl = $("#slots");

  let maxSlots = 10;
  let shownUser = null; // the user whose slots and events are on screen
  let events = null; // the EventSource
  let retryTimer = null;
  let retryDelay = 1000;
  // Acks of sent messages not on screen (yet): an ack can come before its message.
  const acks = new Map();
  const ACKS_KEPT = 200;

  function say(text, bad) {
    statusLine.textContent = text;
    statusLine.classList.toggle("bad", !!bad);
  }

  function token() {
    const t = tokenInput.value.trim();
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    return t;
  }

  async function api(method, path, body) {
    const headers = { Authorization: "Bearer " + token() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(path, {
      method,
      headers,
      cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let reply = null;
    try {
      reply = await res.json();
    } catch (_) {
      reply = null;
    }
    if (!res.ok) {
      const msg = reply && reply.message ? reply.message : res.statusText;
      const code = reply && reply.error ? reply.error : String(res.status);
      throw new Error(code + ": " + msg);
    }
    return reply;
  }

  function slotEl(n) {
    return document.getElementById("slot-" + n);
  }

  function buildSlots() {
    slotsEl.textContent = "";
    const tpl = $("#slot-template");
    for (let n = 1; n <= maxSlots; n++) {
      const el = tpl.content.firstElementChild.cloneNode(true);
      el.id = "slot-" + n;
      el.dataset.slot = String(n);
      el.querySelector(".n").textContent = String(n);
      el.querySelector(".start").addEventListener("click", () => act("start", n));
      el.querySelector(".pair").addEventListener("click", () => {
        const phone = el.querySelector(".phone").value.trim();
        act("pair", n, { phoneNumber: phone });
      });
      el.querySelector(".stop").addEventListener("click", () => act("stop", n));
      el.querySelector(".copy").addEventListener("click", (e) => copyCode(el, e.target));
      el.querySelector("form.send").addEventListener("submit", (e) => {
        e.preventDefault();
        const to = el.querySelector(".to").value.trim();
        const text = el.querySelector(".text").value;
        const picker = el.querySelector(".file");
        const file = picker.files && picker.files[0];
        const sent = file ? sendFile(n, to, file, text) : sendText(n, to, text);
        sent.then((ok) => {
          if (!ok) return;
          el.querySelector(".text").value = "";
          picker.value = "";
        });
      });
      el.querySelector(".logout").addEventListener("click", () => {
        if (confirm("Unlink slot " + n + " from its phone and delete its profile?")) act("logout", n);
      });
      slotsEl.appendChild(el);
    }
  }

  function clearSlots() {
    acks.clear();
    for (let n = 1; n <= maxSlots; n++) {
      render({ slot: n, state: "none", connectedNumber: null, qr: null, pairingCode: null, lastError: null });
      const el = slotEl(n);
      if (el) {
        const list = el.querySelector(".messages");
        while (list.firstElementChild) dropItem(list.firstElementChild);
        el.querySelector(".recent").hidden = true;
      }
    }
  }

  // `4915112345678` or `4915112345678@c.us` as `+4915112345678`; a group as "a group".
  function who(id) {
    if (!id) return "";
    const [user, server] = String(id).split("@");
    if (server === "g.us") return "a group";
    return /^\d+$/.test(user) ? "+" + user : String(id);
  }

  // A pairing code as WhatsApp shows it on the phone: groups of four, e.g. ABCD-EFGH.
  function groupCode(code) {
    const letters = String(code).replace(/[^0-9a-z]/gi, "").toUpperCase();
    return (letters.match(/.{1,4}/g) || []).join("-");
  }

  const REASONS = {
    qr_timeout: "the QR code was not scanned in time",
  };

  function reason(s) {
    return REASONS[s.lastError] || s.lastError || "unknown error";
  }

  // The state in words, for the badge.
  function stateWords(s) {
    switch (s.state) {
      case "none":
        return "Not started";
      case "starting":
        return "Starting…";
      case "restarting":
        return "Restarting…";
      case "qr":
        return "Waiting for scan";
      case "pairing":
        return s.pairingCode ? "Enter code on the phone" : "Asking WhatsApp for a code…";
      case "connected":
        return (
          (s.connectedNumber ? "Connected as " + who(s.connectedNumber) : "Connected") +
          (s.online === false ? " (phone offline)" : "")
        );
      case "stopped":
        return "Stopped";
      case "failed":
        return "Failed: " + reason(s);
      default:
        return s.state;
    }
  }

  // Shows the QR code only once its image decoded: never an empty or broken image.
  function showQr(img, url) {
    if (!url) {
      img.hidden = true;
      img.removeAttribute("src");
      return;
    }
    if (img.getAttribute("src") === url) return;
    img.src = url;
    img.decode().then(
      () => {
        if (img.getAttribute("src") === url) img.hidden = false;
      },
      () => {
        // replaced meanwhile, or not an image: stays as it is
      }
    );
  }

  function render(s) {
    const el = slotEl(s.slot);
    if (!el) return;
    const running = !["none", "stopped", "failed"].includes(s.state);
    el.dataset.state = s.state;
    const badge = el.querySelector(".state");
    const words = stateWords(s);
    if (badge.textContent !== words) badge.textContent = words;

    const number = el.querySelector(".number");
    number.hidden = !s.connectedNumber || s.state === "connected";
    number.textContent = s.connectedNumber ? "Linked to " + who(s.connectedNumber) : "";
    const error = el.querySelector(".error");
    error.hidden = !s.lastError || s.state === "failed";
    error.textContent = s.lastError ? (s.state === "restarting" ? "Restarting after: " : "Last error: ") + reason(s) : "";

    showQr(el.querySelector("img.qr"), s.state === "qr" && s.qr ? s.qr.dataUrl : null);
    const pairing = el.querySelector(".pairing");
    pairing.hidden = !(s.state === "pairing" && s.pairingCode);
    const code = el.querySelector(".code");
    code.textContent = s.pairingCode ? groupCode(s.pairingCode) : "";
    el.querySelector(".copy").hidden = !s.pairingCode;

    el.querySelector("form.send").hidden = s.state !== "connected";
    const start = el.querySelector(".start");
    start.hidden = s.state === "connected";
    start.disabled = s.state === "qr" || s.state === "starting" || s.state === "restarting";
    start.textContent = s.connectedNumber ? "Start" : "Generate QR";
    el.querySelector(".link").hidden = s.state === "connected";
    el.querySelector(".stop").disabled = !running;
    el.querySelector(".logout").disabled = s.state === "none";
  }

  // The last messages of a slot, newest last.
  const MESSAGES_SHOWN = 5;
  const ACK_WORDS = {
    error: ["!", "failed"],
    pending: ["…", "pending"],
    server: ["✓", "sent"],
    device: ["✓✓", "delivered"],
    read: ["✓✓", "read"],
    played: ["✓✓", "played"],
  };
  const ACK_ORDER = ["error", "pending", "server", "device", "read", "played"];

  const pad = (n) => String(n).padStart(2, "0");

  function clock(seconds) {
    const d = new Date(seconds * 1000);
    const time = pad(d.getHours()) + ":" + pad(d.getMinutes());
    const today = new Date();
    if (d.toDateString() === today.toDateString()) return time;
    return d.toLocaleDateString(undefined, { month: "short", day: "numeric" }) + " " + time;
  }

  function span(cls, text) {
    const s = document.createElement("span");
    s.className = cls;
    s.textContent = text;
    return s;
  }

  function setAck(item, ack) {
    if (!ACK_WORDS[ack]) return;
    // Acks only move forward (an older one arriving late changes nothing).
    if (ACK_ORDER.indexOf(item.dataset.ack) > ACK_ORDER.indexOf(ack) && ack !== "error") return;
    item.dataset.ack = ack;
    const [mark, word] = ACK_WORDS[ack];
    const el = item.querySelector(".ack");
    el.textContent = mark + " " + word;
  }

  function showAck(a) {
    const el = slotEl(a.slot);
    const item = el && [...el.querySelectorAll(".messages li")].find((li) => li.dataset.id === a.id);
    if (item) {
      setAck(item, a.ack);
      return;
    }
    acks.set(a.id, a.ack);
    if (acks.size > ACKS_KEPT) acks.delete(acks.keys().next().value);
  }

  // Copies the pairing code (as typed on the phone); without clipboard access it is selected.
  async function copyCode(el, button) {
    const code = el.querySelector(".code");
    try {
      await navigator.clipboard.writeText(code.textContent);
      button.textContent = "Copied";
      setTimeout(() => (button.textContent = "Copy"), 1500);
    } catch (_) {
      const range = document.createRange();
      range.selectNodeContents(code);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
    }
  }

  // What a message says in the list. Media shows its type beside its caption (what was sent or
  // received); a location, a contact card and a poll read as what they are (a location's body
  // is its map thumbnail, a contact's its vCard: neither is shown).
  function messageText(m) {
    if (m.location) {
      const l = m.location;
      const words = [l.name, l.address].filter((w) => w && String(w).trim()).join(" — ");
      return "📍 " + (words || l.latitude + ", " + l.longitude);
    }
    if (Array.isArray(m.contacts) && m.contacts.length > 0) {
      return m.contacts.map((c) => "👤 " + (c.name || "a contact")).join(", ");
    }
    if (m.poll) return "📊 " + m.poll.name;
    const kind = m.type && m.type !== "chat" ? "[" + m.type + "]" : "";
    return m.body == null || m.body === "" ? kind : (kind ? kind + " " : "") + m.body;
  }

  // How a stored media shows in the list: "img" for an image or a sticker, "audio" for a voice
  // note or an audio file, null for anything else (its type and caption say enough).
  function mediaElement(type, media) {
    if (!media || !media.id || !media.sha256) return null;
    const mime = String(media.mimetype || "").toLowerCase();
    if (type === "image" || type === "sticker" || mime.startsWith("image/")) return "img";
    if (type === "ptt" || type === "audio") return "audio";
    return null;
  }

  // A message item leaves the list: the blob: URL of its media goes with it.
  function dropItem(item) {
    if (item.dataset.blob) URL.revokeObjectURL(item.dataset.blob);
    delete item.dataset.blob;
    item.remove();
  }

  function mediaProblem(item, text) {
    const old = item.querySelector(".media-error");
    if (old) old.remove();
    item.appendChild(span("media-error", text));
  }

  // Shows the message's media in its item: the bytes fetched with the console's own token (no
  // link to expire), as a blob: URL; an image only once it decoded, never a broken one.
  async function showMedia(item, userId, slot, type, media) {
    const tag = mediaElement(type, media);
    if (!tag || item.querySelector(".media")) return;
    const el = document.createElement(tag);
    el.className = "media";
    el.hidden = true;
    if (tag === "img") {
      el.alt = "[" + type + "]" + (media.filename ? " " + media.filename : "");
    } else {
      el.controls = true;
      el.preload = "metadata";
    }
    item.appendChild(el);
    const path =
      "/api/media/" + encodeURIComponent(userId) + "/" + slot + "/" + encodeURIComponent(media.id);
    let url = null;
    try {
      const res = await fetch(path, { headers: { Authorization: "Bearer " + token() }, cache: "no-store" });
      if (!res.ok) throw new Error(res.status + " " + res.statusText);
      const blob = await res.blob();
      if (!item.isConnected) return;
      url = URL.createObjectURL(blob);
      item.dataset.blob = url;
      el.src = url;
      if (tag === "img") await el.decode();
      if (item.isConnected && el.isConnected) el.hidden = false;
    } catch (err) {
      el.remove();
      if (url && item.dataset.blob === url) {
        URL.revokeObjectURL(url);
        delete item.dataset.blob;
      }
      if (item.isConnected) mediaProblem(item, "Could not show the " + type + ": " + err.message);
    }
  }

  function showMessage(m) {
    const el = slotEl(m.slot);
    if (!el) return;
    const list = el.querySelector(".messages");
    if ([...list.children].some((li) => li.dataset.id === m.id)) return;
    const item = document.createElement("li");
    item.className = m.fromMe ? "out" : "in";
    item.dataset.id = m.id;
    if (m.type) item.dataset.type = m.type;
    const meta = document.createElement("span");
    meta.className = "meta";
    const peer = m.fromMe ? m.chatId : m.isGroup && m.author ? m.author : m.from;
    meta.appendChild(span("who", (m.fromMe ? "To " : "From ") + who(peer)));
    meta.title = m.chatId || "";
    if (Number.isFinite(m.timestamp)) {
      const time = document.createElement("time");
      time.dateTime = new Date(m.timestamp * 1000).toISOString();
      time.title = new Date(m.timestamp * 1000).toLocaleString();
      time.textContent = clock(m.timestamp);
      meta.appendChild(time);
    }
    if (m.fromMe) meta.appendChild(span("ack", ""));
    item.appendChild(meta);
    item.appendChild(span("body", messageText(m)));
    if (m.media && typeof m.media.error === "string") {
      mediaProblem(item, "Not downloaded: " + m.media.error);
    }
    if (m.fromMe && acks.has(m.id)) {
      setAck(item, acks.get(m.id));
      acks.delete(m.id);
    }
    list.appendChild(item);
    while (list.children.length > MESSAGES_SHOWN) dropItem(list.firstElementChild);
    el.querySelector(".recent").hidden = false;
    showMedia(item, m.userId || shownUser, m.slot, m.type, m.media);
  }

  // `message.media`: the file of a message on screen was stored after all (a retry).
  function showStoredMedia(d) {
    const el = slotEl(d.slot);
    const item = el && [...el.querySelectorAll(".messages li")].find((li) => li.dataset.id === d.messageId);
    if (!item) return;
    const problem = item.querySelector(".media-error");
    if (problem) problem.remove();
    showMedia(item, d.userId || shownUser, d.slot, item.dataset.type, d.media);
  }

  // The slot's last messages and their acks, read through the stored events (oldest first,
  // a page at a time; at most PAGES_READ pages).
  const PAGE_SIZE = 500;
  const PAGES_READ = 20;

  async function loadMessages(n) {
    const user = shownUser;
    const last = [];
    const acked = new Map();
    let after = 0;
    try {
      for (let pages = 0; pages < PAGES_READ; pages++) {
        const path = "/api/messages/" + encodeURIComponent(user) + "/" + n;
        const page = await api("GET", path + "?after=" + after + "&limit=" + PAGE_SIZE);
        for (const e of page.events) {
          if (e.type === "message") {
            last.push(e.data);
            if (last.length > MESSAGES_SHOWN) last.shift();
          } else if (e.type === "message.media") {
            const m = last.find((x) => x.id === e.data.messageId);
            if (m) m.media = e.data.media;
          } else if (e.type === "message.ack") {
            acked.set(e.data.id, e.data);
          }
        }
        if (page.events.length < PAGE_SIZE) break;
        after = page.next;
      }
    } catch (_) {
      // show what could be read
    }
    if (user !== shownUser) return;
    for (const m of last) {
      showMessage(m);
      if (acked.has(m.id)) showAck(acked.get(m.id));
    }
  }

  async function sendText(n, to, text) {
    try {
      const sent = await api("POST", "/api/messages/" + encodeURIComponent(shownUser) + "/" + n, { to, text });
      say("Slot " + n + ": sent " + sent.id);
      return true;
    } catch (err) {
      say("Slot " + n + ": " + err.message, true);
      return false;
    }
  }

  // An image goes as an image, anything else as a document (base64: the daemon checks its bytes).
  async function sendFile(n, to, file, caption) {
    try {
      const data = await new Promise((resolve, reject) => {
        const reader = new FileReader();
        reader.onload = () => resolve(String(reader.result).split(",")[1] || "");
        reader.onerror = () => reject(reader.error || new Error("the file could not be read"));
        reader.readAsDataURL(file);
      });
      const type = /^image\/(jpeg|png|webp)$/.test(file.type) ? "image" : "document";
      const body = { type, to, media: { data, filename: file.name } };
      if (caption.trim()) body.caption = caption;
      const sent = await api("POST", "/api/messages/" + encodeURIComponent(shownUser) + "/" + n, body);
      say("Slot " + n + ": sent " + type + " " + file.name + " (" + sent.id + ")");
      return true;
    } catch (err) {
      say("Slot " + n + ": " + err.message, true);
      return false;
    }
  }

  function closeEvents() {
    if (events) events.close();
    events = null;
    clearTimeout(retryTimer);
    retryTimer = null;
  }

  async function follow(user) {
    closeEvents();
    try {
      const t = await api("POST", "/api/events/" + encodeURIComponent(user) + "/ticket");
      if (user !== shownUser) return;
      const es = new EventSource(t.url);
      events = es;
      es.addEventListener("open", () => {
        retryDelay = 1000;
        say("Live: " + user);
      });
      es.addEventListener("session", (e) => {
        if (user === shownUser) render(JSON.parse(e.data));
      });
      es.addEventListener("message", (e) => {
        if (user === shownUser) showMessage(JSON.parse(e.data));
      });
      es.addEventListener("message.ack", (e) => {
        if (user === shownUser) showAck(JSON.parse(e.data));
      });
      es.addEventListener("message.media", (e) => {
        if (user === shownUser) showStoredMedia(JSON.parse(e.data));
      });
      es.addEventListener("error", () => {
        // EventSource would retry with the used ticket: close it and get a new one.
        if (events === es) retry(user, "Event stream lost; reconnecting…");
      });
    } catch (err) {
      retry(user, "Event stream: " + err.message + "; retrying…");
    }
  }

  function retry(user, why) {
    closeEvents();
    if (user !== shownUser) return;
    say(why, true);
    retryTimer = setTimeout(() => follow(user), retryDelay);
    retryDelay = Math.min(retryDelay * 2, 30000);
  }

  // Shows `user`'s slots and follows their events (again, when the user changed).
  async function show() {
    const user = userInput.value.trim();
    if (!token() || !user) {
      say("A token and a user id are needed.", true);
      return false;
    }
    if (user === shownUser && events) return true;
    shownUser = user;
    clearSlots();
    try {
      const list = await api("GET", "/api/status/" + encodeURIComponent(user));
      list.sessions.forEach(render);
      list.sessions.filter((s) => s.connectedNumber).forEach((s) => loadMessages(s.slot));
      say("Loaded " + user);
    } catch (err) {
      shownUser = null;
      say(err.message, true);
      return false;
    }
    follow(user);
    return true;
  }

  async function act(what, n, body) {
    if (!(await show())) return;
    try {
      const s = await api("POST", "/api/" + what + "/" + encodeURIComponent(shownUser) + "/" + n, body);
      render(s);
    } catch (err) {
      say("Slot " + n + ": " + err.message, true);
    }
  }

  async function init() {
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) tokenInput.value = saved;
    // MAX_SLOTS: the API description carries the configured slot range.
    try {
      const doc = await (await fetch("/openapi.json")).json();
      const max = doc.components.schemas.Slot.maximum;
      if (Number.isInteger(max) && max > 0) maxSlots = max;
    } catch (_) {
      // keep the default
    }
    buildSlots();
    $("#who").addEventListener("submit", (e) => {
      e.preventDefault();
      shownUser = null;
      show();
    });
    $("#forget").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      tokenInput.value = "";
      shownUser = null;
      closeEvents();
      clearSlots();
      say("Token forgotten.");
    });
    document.body.dataset.ready = "true";
  }

  init();
})();
