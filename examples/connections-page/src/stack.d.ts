// The part of the Stack Auth SDK this example uses, with the names and shapes of
// @stackframe/stack 2.8.108 (lib/hooks.d.ts, lib/stack-app/common.d.ts), declared here because the
// real package brings Next.js, React DOM and the SDK's own UI (about 650 MB installed) for one hook.
// In the Next.js app, which already has @stackframe/stack, leave this file out: the real
// declarations are a superset (useUser also takes options; getAuthJson also returns refreshToken).
declare module "@stackframe/stack" {
  export interface CurrentUser {
    readonly id: string;
    getAuthJson(): Promise<{ accessToken: string | null }>;
  }

  /** The signed-in user, or `null`. */
  export function useUser(): CurrentUser | null;
}
