"use client";

// The /connections page: the signed-in user's WhatsApp slots, linked by QR code or pairing code,
// kept current by the event stream. It calls the daemon from the browser with the user's own
// Stack Auth access token, so it reaches that user's sessions and nobody else's.
import { useUser } from "@stackframe/stack";
import { useEffect, useMemo, useRef, useState, type FormEvent } from "react";

import { ApiError, WaApi, type Session, type SessionState } from "../../src/client";

/** The signed-in user as the Stack Auth SDK gives it. */
type StackUser = NonNullable<ReturnType<typeof useUser>>;

/** Slots 1..10: the daemon's MAX_SLOTS (default 10; the generated types do not carry it). */
const SLOTS = Array.from({ length: 10 }, (_, i) => i + 1);

/** Every state the API has; a new one fails `tsc` until it is named here. */
const STATE_LABEL: Record<SessionState, string> = {
  starting: "starting…",
  qr: "scan the QR code",
  pairing: "enter the code on your phone",
  connected: "connected",
  restarting: "restarting…",
  stopped: "stopped",
  failed: "failed",
};

/** States with a browser running: stop applies, start does nothing new. */
const RUNNING: ReadonlySet<SessionState> = new Set(["starting", "qr", "pairing", "connected", "restarting"]);

export default function ConnectionsPage() {
  const user = useUser();
  if (!user) return <p>Sign in to link your WhatsApp numbers.</p>;
  return <Connections user={user} />;
}

function Connections({ user }: { user: StackUser }) {
  // The token is asked for on every call (Stack Auth refreshes it); the latest user object answers.
  const userRef = useRef(user);
  userRef.current = user;
  const api = useMemo(() => new WaApi(async () => (await userRef.current.getAuthJson()).accessToken), []);

  const [sessions, setSessions] = useState<ReadonlyMap<number, Session>>(new Map());
  const [live, setLive] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [busySlot, setBusySlot] = useState<number | null>(null);

  /** Keeps the newest view of each slot: answers and stream events can arrive in any order. */
  const put = (incoming: Session[]) =>
    setSessions((prev) => {
      const next = new Map(prev);
      for (const s of incoming) {
        const known = next.get(s.slot);
        if (!known || Date.parse(s.updatedAt) >= Date.parse(known.updatedAt)) next.set(s.slot, s);
      }
      return next;
    });

  useEffect(() => {
    let mounted = true;
    api.list(user.id).then(
      (reply) => mounted && put(reply.sessions),
      (e: unknown) => mounted && setError(describe(e)),
    );
    const unfollow = api.follow(user.id, {
      onSession: (s) => put([s]),
      onLive: setLive,
      onError: (e) => setError(describe(e)),
    });
    return () => {
      mounted = false;
      unfollow();
    };
  }, [api, user.id]);

  async function act(slot: number, call: () => Promise<Session>) {
    setBusySlot(slot);
    setError(null);
    try {
      put([await call()]);
    } catch (e) {
      setError(describe(e));
    } finally {
      setBusySlot(null);
    }
  }

  return (
    <main>
      <h1>WhatsApp connections</h1>
      <p>{live ? "Live" : "Connecting…"}</p>
      {error && <p role="alert">{error}</p>}
      <ul>
        {SLOTS.map((slot) => (
          <SlotCard
            key={slot}
            slot={slot}
            session={sessions.get(slot)}
            busy={busySlot === slot}
            onStart={() => act(slot, () => api.start(user.id, slot))}
            onPair={(phone) => act(slot, () => api.pair(user.id, slot, phone))}
            onStop={() => act(slot, () => api.stop(user.id, slot))}
            onLogout={() => {
              if (confirm(`Unlink the number of slot ${slot}? Linking again needs the phone.`)) {
                void act(slot, () => api.logout(user.id, slot));
              }
            }}
          />
        ))}
      </ul>
    </main>
  );
}

interface SlotCardProps {
  slot: number;
  /** Absent: never started. */
  session: Session | undefined;
  busy: boolean;
  onStart(): void;
  onPair(phoneNumber: string): void;
  onStop(): void;
  onLogout(): void;
}

function SlotCard({ slot, session, busy, onStart, onPair, onStop, onLogout }: SlotCardProps) {
  const [phone, setPhone] = useState("");
  const running = session !== undefined && RUNNING.has(session.state);
  const linked = session?.state === "connected";

  function submitPair(e: FormEvent<HTMLFormElement>) {
    e.preventDefault();
    onPair(phone.replace(/[\s()-]/g, ""));
  }

  return (
    <li>
      <h2>
        Slot {slot}: {session ? STATE_LABEL[session.state] : "not linked"}
        {session?.connectedNumber && ` (+${session.connectedNumber})`}
        {linked && session.online === false && " — phone offline"}
      </h2>

      {session?.qr && (
        <img
          src={session.qr.dataUrl}
          width={264}
          height={264}
          alt="QR code: on the phone open WhatsApp → Linked devices → Link a device, and scan it"
        />
      )}
      {session?.state === "pairing" && (
        <p>
          Code: <strong>{session.pairingCode ?? "asking WhatsApp…"}</strong> — on the phone open WhatsApp →
          Linked devices → Link a device → Link with phone number instead, and enter it.
        </p>
      )}
      {session?.lastError && <p>Last error: {session.lastError}</p>}

      {!running && (
        <button type="button" disabled={busy} onClick={onStart}>
          {session?.connectedNumber ? "Start" : "Link with a QR code"}
        </button>
      )}
      {!linked && (
        <form onSubmit={submitPair}>
          <input
            type="tel"
            inputMode="numeric"
            placeholder="4915112345678"
            aria-label="Phone number, country code first"
            value={phone}
            onChange={(e) => setPhone(e.target.value)}
          />
          <button type="submit" disabled={busy || phone.trim() === ""}>
            Link with a code
          </button>
        </form>
      )}
      {running && (
        <button type="button" disabled={busy} onClick={onStop}>
          Stop
        </button>
      )}
      {session && (
        <button type="button" disabled={busy} onClick={onLogout}>
          Log out
        </button>
      )}
    </li>
  );
}

function describe(e: unknown): string {
  if (e instanceof ApiError) {
    const wait = e.retryAfterSecs ? ` Try again in ${e.retryAfterSecs} s.` : "";
    return `${e.message} (${e.code}).${wait}`;
  }
  return e instanceof Error ? e.message : String(e);
}
