// The operator console: talks to this daemon's own API with the pasted token (kept in
// sessionStorage, sent only in the Authorization header) and follows the user's sessions over
// SSE with single-use tickets, so the token never appears in a URL.
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
      el.querySelector("form.send").addEventListener("submit", (e) => {
        e.preventDefault();
        const to = el.querySelector(".to").value.trim();
        const text = el.querySelector(".text").value;
        sendText(n, to, text).then((ok) => {
          if (ok) el.querySelector(".text").value = "";
        });
      });
      el.querySelector(".logout").addEventListener("click", () => {
        if (confirm("Unlink slot " + n + " from its phone and delete its profile?")) act("logout", n);
      });
      slotsEl.appendChild(el);
    }
  }

  function clearSlots() {
    for (let n = 1; n <= maxSlots; n++) {
      render({ slot: n, state: "unknown", connectedNumber: null, qr: null, pairingCode: null, lastError: null });
      const list = slotEl(n) && slotEl(n).querySelector(".messages");
      if (list) {
        list.textContent = "";
        list.hidden = true;
      }
    }
  }

  function render(s) {
    const el = slotEl(s.slot);
    if (!el) return;
    el.dataset.state = s.state;
    el.querySelector("form.send").hidden = s.state !== "connected";
    el.querySelector(".state").textContent = s.state;
    el.querySelector(".number").textContent = s.connectedNumber ? "+" + s.connectedNumber : "";
    el.querySelector(".error").textContent = s.lastError || "";
    const pairing = el.querySelector(".pairing");
    pairing.hidden = s.state !== "pairing";
    pairing.querySelector(".code").textContent = s.pairingCode || "waiting for WhatsApp…";
    const img = el.querySelector("img.qr");
    if (s.qr && s.qr.dataUrl) {
      if (img.getAttribute("src") !== s.qr.dataUrl) img.src = s.qr.dataUrl;
      img.hidden = false;
    } else {
      img.removeAttribute("src");
      img.hidden = true;
    }
  }

  // The last messages of a slot, newest last.
  const MESSAGES_SHOWN = 5;

  function showMessage(m) {
    const el = slotEl(m.slot);
    if (!el) return;
    const list = el.querySelector(".messages");
    const item = document.createElement("li");
    item.className = m.fromMe ? "out" : "in";
    const who = m.fromMe ? "→ " + (m.chatId || "") : (m.from || "") + ":";
    item.textContent = who + " " + (m.body == null ? "[" + m.type + "]" : m.body);
    list.appendChild(item);
    while (list.children.length > MESSAGES_SHOWN) list.firstElementChild.remove();
    list.hidden = false;
  }

  async function loadMessages(n) {
    try {
      const page = await api("GET", "/api/messages/" + encodeURIComponent(shownUser) + "/" + n + "?limit=500");
      page.events
        .filter((e) => e.type === "message")
        .slice(-MESSAGES_SHOWN)
        .forEach((e) => showMessage(e.data));
    } catch (_) {
      // no messages to show
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
      list.sessions.filter((s) => s.state === "connected").forEach((s) => loadMessages(s.slot));
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
