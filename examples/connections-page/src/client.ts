// A small typed client of the wa-supervisor API for a browser page signed in with Stack Auth.
//
// Every type comes from src/api.d.ts, which generate.sh makes from the daemon's /openapi.json: a
// call names its route by the path string of the API description, and its parameters, body and
// answer are looked up there. A route or a field that changes in the daemon fails `tsc` here
// (check.sh), so the page cannot drift from the API.
import type { components, paths } from "./api";

export type Session = components["schemas"]["Session"];
export type SessionState = components["schemas"]["SessionState"];
type ErrorBody = components["schemas"]["ErrorBody"];
type Events = paths["/api/events/{userId}"]["get"];
/** The `data:` of an SSE `session` event. */
type SessionEvent = Events["responses"][200]["content"]["text/event-stream"];

/** The daemon as the browser reaches it, e.g. `https://wa.example.com` (inlined by Next.js). */
const BASE_URL = (process.env.NEXT_PUBLIC_WA_API_URL ?? "").replace(/\/+$/, "");
/** The header that carries the Stack Auth access token (the daemon also takes `Authorization: Bearer`). */
const TOKEN_HEADER = "x-stack-access-token";
const RECONNECT_FIRST_MS = 1_000;
const RECONNECT_MAX_MS = 30_000;

type Method = "get" | "post";
/** The operation at this path and method (`never` when the API has no such route). */
type Operation<P extends keyof paths, M extends Method> = NonNullable<paths[P][M]>;
type PathParams<O> = O extends { parameters: { path: infer A } } ? A : never;
type JsonBody<O> = O extends { requestBody: { content: { "application/json": infer B } } } ? B : never;
/** A request body argument only for operations that take one. */
type BodyArg<O> = [JsonBody<O>] extends [never] ? [] : [body: JsonBody<O>];
/** The JSON of the operation's 2xx answer. */
type Success<O> = O extends { responses: infer R }
  ? {
      [S in keyof R]: S extends 200 | 201 | 202
        ? R[S] extends { content: { "application/json": infer B } }
          ? B
          : never
        : never;
    }[keyof R]
  : never;

/** A refusal: the API's `{ error, message }` with its status. */
export class ApiError extends Error {
  readonly status: number;
  /** The API's stable code (`too_many_pending`, `no_qr`, …), or `http_<status>` for a reply
   * that is not the API's (a proxy's error page). */
  readonly code: string;
  /** From `Retry-After` (429, 503): seconds to wait before trying again. */
  readonly retryAfterSecs: number | null;

  constructor(status: number, code: string, message: string, retryAfterSecs: number | null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.retryAfterSecs = retryAfterSecs;
  }
}

/** What `WaApi.follow` reports. */
export interface Follower {
  /** A session as it is now: first every started session of the user, then each change. */
  onSession(session: Session): void;
  /** The stream is open (`true`), or interrupted and about to reconnect (`false`). */
  onLive(live: boolean): void;
  /** A ticket could not be had; the next attempt follows by itself. */
  onError(error: unknown): void;
}

/** One user's sessions, called with that user's Stack Auth access token. */
export class WaApi {
  readonly #token: () => Promise<string | null>;

  /** `token` is asked before every request: Stack Auth refreshes access tokens as they expire. */
  constructor(token: () => Promise<string | null>) {
    this.#token = token;
  }

  /** The user's started sessions, by slot (slots never started are absent). */
  list(userId: string) {
    return this.#call("get", "/api/status/{userId}", { userId });
  }

  /** Starts the session's browser (idempotent); a QR code follows (`state: "qr"`, `qr.dataUrl`). */
  start(userId: string, slot: number) {
    return this.#call("post", "/api/start/{userId}/{slot}", { userId, slot });
  }

  /** Links by phone number instead of a QR code: `state: "pairing"`, `pairingCode` once known. */
  pair(userId: string, slot: number, phoneNumber: string) {
    return this.#call("post", "/api/pair/{userId}/{slot}", { userId, slot }, { phoneNumber });
  }

  /** Closes the browser; the number stays linked (start brings it back without a QR code). */
  stop(userId: string, slot: number) {
    return this.#call("post", "/api/stop/{userId}/{slot}", { userId, slot });
  }

  /** Unlinks the number: closes the browser and deletes its profile. */
  logout(userId: string, slot: number) {
    return this.#call("post", "/api/logout/{userId}/{slot}", { userId, slot });
  }

  /**
   * Follows the user's event stream until the returned function is called. `EventSource` cannot
   * send headers, so each connection presents a ticket (`POST /api/events/{userId}/ticket`, with
   * the token). A ticket is single use: the browser's own reconnect would present the used one and
   * be refused, so on any error the source is closed and a new ticket opens the next one, after a
   * delay that doubles up to 30 s. Each connection starts with the current sessions, so nothing
   * missed while away is lost.
   */
  follow(userId: string, to: Follower): () => void {
    let stopped = false;
    let source: EventSource | null = null;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let delayMs = RECONNECT_FIRST_MS;

    const retry = (atLeastMs = 0) => {
      if (stopped) return;
      timer = setTimeout(connect, Math.max(delayMs, atLeastMs));
      delayMs = Math.min(delayMs * 2, RECONNECT_MAX_MS);
    };
    const connect = async () => {
      let ticket: string;
      try {
        ({ ticket } = await this.#call("post", "/api/events/{userId}/ticket", { userId }));
      } catch (error) {
        to.onError(error);
        retry(error instanceof ApiError ? (error.retryAfterSecs ?? 0) * 1000 : 0);
        return;
      }
      if (stopped) return;
      const query: NonNullable<Events["parameters"]["query"]> = { ticket };
      source = new EventSource(`${url("/api/events/{userId}", { userId })}?${new URLSearchParams(query)}`);
      source.onopen = () => {
        delayMs = RECONNECT_FIRST_MS;
        to.onLive(true);
      };
      source.addEventListener("session", (event) => {
        const session: SessionEvent = JSON.parse(event.data as string);
        to.onSession(session);
      });
      source.onerror = () => {
        source?.close();
        source = null;
        to.onLive(false);
        retry();
      };
    };

    void connect();
    return () => {
      stopped = true;
      clearTimeout(timer);
      source?.close();
    };
  }

  async #call<P extends keyof paths, M extends Method>(
    method: M,
    path: P,
    params: PathParams<Operation<P, M>>,
    ...body: BodyArg<Operation<P, M>>
  ): Promise<Success<Operation<P, M>>> {
    const token = await this.#token();
    if (!token) throw new ApiError(401, "unauthorized", "not signed in", null);
    const headers: Record<string, string> = { [TOKEN_HEADER]: token };
    const init: RequestInit = { method: method.toUpperCase(), headers, cache: "no-store" };
    if (body.length > 0) {
      headers["content-type"] = "application/json";
      init.body = JSON.stringify(body[0]);
    }
    const res = await fetch(url(path, params), init);
    if (!res.ok) throw await refusal(res);
    return (await res.json()) as Success<Operation<P, M>>;
  }
}

/** The daemon's URL of `path` with its `{name}` parameters filled in. */
function url<P extends keyof paths>(path: P, params: object): string {
  const values = params as Record<string, string | number>;
  return BASE_URL + path.replace(/\{(\w+)\}/g, (_, name: string) => encodeURIComponent(String(values[name])));
}

async function refusal(res: Response): Promise<ApiError> {
  const retryAfter = Number(res.headers.get("retry-after"));
  const retryAfterSecs = Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : null;
  const body: Partial<ErrorBody> = await res.json().catch(() => ({}));
  return new ApiError(
    res.status,
    body.error ?? `http_${res.status}`,
    body.message ?? `${res.status} ${res.statusText}`,
    retryAfterSecs,
  );
}
