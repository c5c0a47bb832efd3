/**
 * Waiting in integration tests: `untilWithin(defaultTimeoutMs, everyMs)` gives an `until(what, check,
 * timeoutMs?)` that polls `check` every `everyMs` until it holds, and fails naming `what` after the timeout.
 */
export type Until = (what: string, check: () => boolean | Promise<boolean>, timeoutMs?: number) => Promise<void>;

export function untilWithin(defaultTimeoutMs: number, everyMs: number): Until {
  return async (what, check, timeoutMs = defaultTimeoutMs) => {
    const deadline = Date.now() + timeoutMs;
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, everyMs));
    }
  };
}
