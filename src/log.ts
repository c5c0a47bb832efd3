/** One JSON line per event on stderr. Callers pass interaction names and statuses, never resource content. */
export function log(level: 'info' | 'warn' | 'error', event: string, fields: Record<string, string | number | boolean> = {}): void {
  if (process.env.MEDBLOCK_LOG === 'off') return;
  process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), level, event, ...fields })}\n`);
}
