/**
 * Paging the federated record: the merged record is kept in memory for a few minutes under a random cursor,
 * so that page 2 is served from the same verified result (no second federation round, no holder asked
 * again, pages consistent with each other). A snapshot is bound to the user and the request it answered
 * (another user's cursor is unknown to them) and expires; the oldest is dropped when too many are held.
 *
 * Per process: behind a load balancer, page requests must reach the gateway that served the first page
 * (a cursor elsewhere answers "unknown or expired", and the client starts again).
 */
import { randomBytes } from 'node:crypto';
import type { MergedRecord } from './merge.ts';

export const SNAPSHOT_TTL_MS = 5 * 60_000;
export const MAX_SNAPSHOTS = 64;

interface Snapshot {
  binding: string;
  record: MergedRecord;
  expires: number;
}

export class RecordSnapshots {
  /** Insertion order is age order: the first key is the oldest. */
  private readonly held = new Map<string, Snapshot>();

  constructor(
    private readonly ttlMs = SNAPSHOT_TTL_MS,
    private readonly max = MAX_SNAPSHOTS,
    private readonly now: () => number = Date.now,
  ) {}

  /** Keeps a record for `binding` (user and request); returns its cursor id (128 random bits, base64url). */
  put(binding: string, record: MergedRecord): string {
    this.expire();
    while (this.held.size >= this.max) this.held.delete(this.held.keys().next().value!);
    const id = randomBytes(16).toString('base64url');
    this.held.set(id, { binding, record, expires: this.now() + this.ttlMs });
    return id;
  }

  /** The record, if the cursor is held, unexpired, and bound to the same user and request. */
  get(id: string, binding: string): MergedRecord | undefined {
    this.expire();
    const snapshot = this.held.get(id);
    return snapshot?.binding === binding ? snapshot.record : undefined;
  }

  private expire(): void {
    const now = this.now();
    for (const [id, s] of this.held) if (s.expires <= now) this.held.delete(id);
  }
}

/** `_cursor` of a federated page: `<snapshot id>.<offset>`. */
const CURSOR = /^([A-Za-z0-9_-]{22})\.(0|[1-9]\d{0,8})$/;

export function formatRecordCursor(id: string, offset: number): string {
  return `${id}.${offset}`;
}

export function parseRecordCursor(value: string): { id: string; offset: number } | undefined {
  const m = CURSOR.exec(value);
  return m ? { id: m[1], offset: Number(m[2]) } : undefined;
}
