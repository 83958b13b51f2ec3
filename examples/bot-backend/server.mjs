// An example bot backend for wa-supervisor: receives the daemon's webhooks, verifies their
// Standard Webhooks signatures, handles each `webhook-id` once (remembered in an append-only
// file, so a restart keeps it) and answers every incoming text message with "echo: <text>"
// through the send API, with an idempotency key derived from the incoming message's id.
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
 * What to do with one verified event: `{ status, note }`. Only a 2xx status lets the event be
 * recorded as handled; anything else makes the daemon deliver it again later.
 */
async function handle(cfg, event) {
  if (event.type !== "message") return { status: 204, note: "ignored" };
  const m = event.data ?? {};
  if (m.fromMe) return { status: 204, note: "ignored (our own message)" };
  if (typeof m.body !== "string" || m.body.trim() === "") {
    return { status: 204, note: "ignored (no text)" };
  }
  const text = ECHO + [...m.body].slice(0, TEXT_MAX_CHARS - ECHO.length).join("");
  const url = `${cfg.apiUrl}/api/messages/${encodeURIComponent(m.userId)}/${m.slot}`;
  let res;
  try {
    res = await fetch(url, {
      method: "POST",
      headers: {
        authorization: `Bearer ${cfg.apiToken}`,
        "content-type": "application/json",
      },
      body: JSON.stringify({ to: m.chatId, text, idempotencyKey: replyKey(m.id) }),
      signal: AbortSignal.timeout(SEND_TIMEOUT_MS),
    });
  } catch (e) {
    return { status: 503, note: `send failed (${e.cause?.code ?? e.name}): will be redelivered` };
  }
  const answer = await res.json().catch(() => ({}));
  const who = `${m.userId}:${m.slot} ${m.chatId} message ${m.id}`;
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
