// An example bot backend for wa-supervisor: receives the daemon's webhooks, verifies their
// Standard Webhooks signatures, handles each `webhook-id` once (remembered in an append-only
// file, so a restart keeps it) and answers every incoming text message with "echo: <text>"
// through the send API, with an idempotency key derived from the incoming message's id. An
// incoming photo, voice note, video, document or sticker is answered with its size and SHA-256,
// computed from the bytes fetched through the event's signed link (docs/media.md) and checked
// against the hash the daemon announced; one the daemon could not download, with why.
//
// Exactly once, end to end: the daemon delivers at least once and redelivers until it gets a
// 2xx, so this server answers 2xx only after the reply was sent and the webhook-id written and
// fsynced. A crash between the send and that write means a redelivery, whose send carries the
// same idempotency key: the daemon answers it from its record and sends nothing again.
//
// Environment: WEBHOOK_SECRET (whsec_…), WA_API_URL (e.g. http://127.0.0.1:8080), WA_API_TOKEN
// (the service API_TOKEN, or the user's own access token), PORT (default 3000; 0 picks one),
// HOST (default 127.0.0.1), DEDUPE_FILE (default ./seen-webhook-ids.log).

import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { createHash } from "node:crypto";
import { Webhook, WebhookVerificationError } from "standardwebhooks";

/** A webhook body larger than this is refused (a text is at most 65 536 characters). */
const MAX_BODY_BYTES = 1024 * 1024;
/** The daemon waits 10 s for an answer: the send must be done well before that. */
const SEND_TIMEOUT_MS = 8000;
/** What the send API accepts (`IDEMPOTENCY_KEY_MAX`, `TEXT_MAX_CHARS` in the daemon). */
const IDEMPOTENCY_KEY_MAX = 128;
const TEXT_MAX_CHARS = 65536;
const ECHO = "echo: ";
/** Fetching a media's bytes gets this long, so the reply still fits in the daemon's 10 s. */
const MEDIA_FETCH_TIMEOUT_MS = 5000;
/** The shortest time a send is given, whatever the fetch took. */
const SEND_TIMEOUT_MIN_MS = 2000;
/** How a media message's type reads in a reply. */
const MEDIA_WORDS = { ptt: "voice note" };

function config() {
  const env = process.env;
  const missing = ["WEBHOOK_SECRET", "WA_API_URL", "WA_API_TOKEN"].filter((k) => !env[k]);
  if (missing.length > 0) {
    fail(`missing environment: ${missing.join(", ")}`);
  }
  let webhook;
  try {
    webhook = new Webhook(env.WEBHOOK_SECRET);
  } catch (e) {
    fail(`WEBHOOK_SECRET must be whsec_<base64> (${e.message})`);
  }
  const port = Number(env.PORT ?? 3000);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    fail(`PORT must be a port number, got ${JSON.stringify(env.PORT)}`);
  }
  return {
    webhook,
    apiUrl: env.WA_API_URL.replace(/\/+$/, ""),
    apiToken: env.WA_API_TOKEN,
    host: env.HOST || "127.0.0.1",
    port,
    dedupeFile: path.resolve(env.DEDUPE_FILE || "seen-webhook-ids.log"),
  };
}

function fail(message) {
  console.error(`bot-backend: ${message}`);
  process.exit(2);
}

function log(line) {
  console.log(`${new Date().toISOString()} ${line}`);
}

/**
 * The webhook-ids handled so far: read at start, one per line, appended and fsynced as each
 * event is done. A line cut short by a crash never matches an id; the next write starts on a
 * fresh line.
 */
class SeenIds {
  constructor(file) {
    let text = "";
    try {
      text = fs.readFileSync(file, "utf8");
    } catch (e) {
      if (e.code !== "ENOENT") throw e;
    }
    const lines = text.split("\n");
    // The last element is "" after a complete last line, or a fragment a crash left.
    this.ids = new Set(lines.slice(0, -1).filter((l) => l.length > 0));
    this.fd = fs.openSync(file, "a", 0o600);
    if (text.length > 0 && !text.endsWith("\n")) {
      fs.writeSync(this.fd, "\n");
    }
    fs.fsyncSync(this.fd);
    // The file's entry in its folder must survive a crash too.
    const dir = fs.openSync(path.dirname(file), "r");
    fs.fsyncSync(dir);
    fs.closeSync(dir);
  }

  has(id) {
    return this.ids.has(id);
  }

  /** Durable once this returns. */
  add(id) {
    fs.writeSync(this.fd, `${id}\n`);
    fs.fsyncSync(this.fd);
    this.ids.add(id);
  }
}

/** Reads the raw body (the signature covers its exact bytes). */
function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on("data", (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(Object.assign(new Error("body too large"), { status: 413 }));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

/** The key of the reply to message `id`: the same for every redelivery of that message. */
function replyKey(id) {
  const key = `reply-${id}`;
  if (key.length <= IDEMPOTENCY_KEY_MAX) return key;
  return `reply-sha256-${createHash("sha256").update(id).digest("hex")}`;
}

/**
 * The bytes behind a media link, streamed through SHA-256 (never held in memory):
 * `{ size, sha256 }`, or `{ gone }` when the daemon no longer has them (kept
 * `MEDIA_RETENTION_DAYS`). Throws when the fetch failed in a way that may pass.
 *
 * `media.url` is signed and needs no credentials: it is a path on the daemon (prefixed with
 * WA_API_URL) unless the daemon has a PUBLIC_URL, then it is absolute, and used as it is. The
 * daemon signs a fresh link for every delivery attempt, so a redelivery never carries an
 * expired one.
 */
async function fetchMedia(cfg, media) {
  const url = /^https?:\/\//i.test(media.url) ? media.url : cfg.apiUrl + media.url;
  const res = await fetch(url, { signal: AbortSignal.timeout(MEDIA_FETCH_TIMEOUT_MS) });
  if (res.status === 404 || res.status === 410) {
    await res.body?.cancel();
    return { gone: `${res.status} ${res.statusText}` };
  }
  if (res.status !== 200) {
    await res.body?.cancel();
    throw Object.assign(new Error(`media answered ${res.status}`), { code: `HTTP ${res.status}` });
  }
  const hash = createHash("sha256");
  let size = 0;
  for await (const chunk of res.body) {
    hash.update(chunk);
    size += chunk.length;
  }
  return { size, sha256: hash.digest("hex") };
}

/**
 * The reply to an incoming media message (`m.media` set): `{ text }`, or `{ retry }` (why) when
 * it should be tried again later.
 */
async function mediaReply(cfg, m) {
  const what = MEDIA_WORDS[m.type] ?? m.type ?? "file";
  const media = m.media;
  if (typeof media.error === "string") {
    return { text: `could not get your ${what}: ${media.error}` };
  }
  if (typeof media.url !== "string" || typeof media.sha256 !== "string") {
    return { text: `could not get your ${what}: no link to it` };
  }
  let got;
  try {
    got = await fetchMedia(cfg, media);
  } catch (e) {
    return { retry: `media fetch failed (${e.code ?? e.cause?.code ?? e.name})` };
  }
  if (got.gone) return { text: `could not get your ${what}: ${got.gone}` };
  let text = `got your ${what}: ${got.size} bytes, sha256 ${got.sha256}`;
  if (got.sha256 !== media.sha256.toLowerCase()) {
    text += ` (does NOT match the sha256 ${media.sha256} the daemon announced)`;
  } else if (Number.isInteger(media.size) && media.size !== got.size) {
    text += ` (WhatsApp announced ${media.size} bytes)`;
  }
  return { text };
}

/**
 * What to do with one verified event: `{ status, note }`. Only a 2xx status lets the event be
 * recorded as handled; anything else makes the daemon deliver it again later.
 */
async function handle(cfg, event) {
  const started = Date.now();
  if (event.type !== "message") return { status: 204, note: "ignored" };
  const m = event.data ?? {};
  if (m.fromMe) return { status: 204, note: "ignored (our own message)" };
  const who = `${m.userId}:${m.slot} ${m.chatId} message ${m.id}`;
  let text;
  if (m.media && typeof m.media === "object") {
    const reply = await mediaReply(cfg, m);
    if (reply.retry) return { status: 503, note: `${who}: ${reply.retry}: will be redelivered` };
    text = reply.text;
  } else if (typeof m.body === "string" && m.body.trim() !== "") {
    text = ECHO + [...m.body].slice(0, TEXT_MAX_CHARS - ECHO.length).join("");
  } else {
    return { status: 204, note: "ignored (no text)" };
  }
  const url = `${cfg.apiUrl}/api/messages/${encodeURIComponent(m.userId)}/${m.slot}`;
  const timeout = Math.max(SEND_TIMEOUT_MIN_MS, SEND_TIMEOUT_MS - (Date.now() - started));
  let res;
  try {
    res = await fetch(url, {
      method: "POST",
      headers: {
        authorization: `Bearer ${cfg.apiToken}`,
        "content-type": "application/json",
      },
      body: JSON.stringify({ to: m.chatId, text, idempotencyKey: replyKey(m.id) }),
      signal: AbortSignal.timeout(timeout),
    });
  } catch (e) {
    return { status: 503, note: `send failed (${e.cause?.code ?? e.name}): will be redelivered` };
  }
  const answer = await res.json().catch(() => ({}));
  if (res.status === 201) {
    return { status: 204, note: `${who}: replied (${answer.id})` };
  }
  // A request that can never succeed (a chat id the API does not take, …): drop it, or the
  // daemon would keep redelivering it.
  if (res.status === 400 || res.status === 404) {
    return { status: 204, note: `${who}: not answerable: ${res.status} ${answer.error}` };
  }
  // not_connected, send_in_progress, rate_limited, a 5xx, a wrong token: try again later.
  return { status: 503, note: `${who}: send answered ${res.status} ${answer.error}: will be redelivered` };
}

function main() {
  const cfg = config();
  const seen = new SeenIds(cfg.dedupeFile);
  /** webhook-id → the promise of its outcome, while being handled (a concurrent redelivery waits). */
  const inFlight = new Map();

  async function handleOnce(id, event) {
    if (seen.has(id)) return { status: 204, note: "duplicate" };
    const outcome = await handle(cfg, event);
    if (outcome.status < 300) seen.add(id);
    return outcome;
  }

  const server = http.createServer(async (req, res) => {
    const answer = (status, body) => {
      res.writeHead(status, body ? { "content-type": "application/json" } : {});
      res.end(body ? JSON.stringify(body) : undefined);
    };
    if (req.method === "GET" && req.url === "/healthz") return answer(200, { ok: true });
    if (req.url !== "/webhook") return answer(404, { error: "not_found" });
    if (req.method !== "POST") return answer(405, { error: "method_not_allowed" });
    let body;
    try {
      body = await readBody(req);
    } catch (e) {
      return answer(e.status ?? 400, { error: e.message });
    }
    const id = req.headers["webhook-id"] ?? "-";
    let event;
    try {
      event = cfg.webhook.verify(body, req.headers);
    } catch (e) {
      const why = e instanceof WebhookVerificationError ? e.message : "malformed payload";
      log(`${id} rejected: ${why}`);
      return answer(401, { error: "invalid_signature" });
    }
    let pending = inFlight.get(id);
    if (!pending) {
      pending = handleOnce(id, event).finally(() => inFlight.delete(id));
      inFlight.set(id, pending);
    }
    let outcome;
    try {
      outcome = await pending;
    } catch (e) {
      outcome = { status: 500, note: `failed: ${e.message}` };
    }
    log(`${id} ${event?.type ?? "?"} ${outcome.note}`);
    answer(outcome.status);
  });

  server.listen(cfg.port, cfg.host, () => {
    const { address, port } = server.address();
    log(`bot-backend listening on http://${address}:${port}/webhook (dedupe file ${cfg.dedupeFile}, ${seen.ids.size} ids)`);
  });
  for (const signal of ["SIGINT", "SIGTERM"]) {
    process.on(signal, () => server.close(() => process.exit(0)));
  }
}

main();
