/**
 * The outbox publisher: turns the vault's unanchored versions into signed anchor envelopes, orders them,
 * and marks each version anchored once a block carrying it as a valid envelope of this member committed.
 *
 * Crash safety comes from the outbox, not from this process: a version stays in the outbox until
 * markAnchored, so after a crash it is found again. Before re-publishing what it finds on a fresh pass
 * over the outbox, the publisher asks the ledger whether the digest is already anchored (the crash may
 * have come after the block committed but before the mark), so a restart re-anchors only what never made
 * it into a block. Envelopes whose fate is unknown (a failed append, an invalid verdict) are released and
 * found again by the next pass; a digest anchored twice is harmless (the index keeps its first location).
 */
import {
  createEnvelope,
  DEFAULT_MAX_ENVELOPE_BYTES,
  encodeEnvelope,
  MAX_ANCHOR_ENTRIES,
  parseEnvelope,
  type AnchorEntry,
  type AuditEntry,
  type EnvelopeSigner,
} from './envelope.ts';
import type { LedgerStore } from './ledger-store.ts';
import type { CommittedBlock, LedgerMember } from './member.ts';
import { tombstoneDigest } from './tombstone.ts';
import type { AnchorMark, ResourceStore, UnanchoredVersion } from '../vault/store.ts';

export type AnchorOutbox = Pick<ResourceStore, 'unanchored' | 'markAnchored'>;

export interface AnchorPublisherOptions {
  outbox: AnchorOutbox;
  member: LedgerMember;
  ledger: LedgerStore;
  signer: EnvelopeSigner;
  /** Entries per anchor envelope (≤ MAX_ANCHOR_ENTRIES). */
  entriesPerEnvelope?: number;
  /** The channel's maxEnvelopeBytes: envelopes are also cut by size (link tokens make entries longer). */
  maxEnvelopeBytes?: number;
  /** Digests ordered but not yet seen in a committed block; publishing pauses above it (default 10,000: beyond about that, more in flight only adds queueing, measured by the ledger benchmark). */
  maxInFlight?: number;
  /** How often the outbox is read when nothing wakes the publisher. */
  pollMs?: number;
  /** An in-flight digest not committed after this long is released and published again. */
  resubmitAfterMs?: number;
  log?: (event: string, fields: Record<string, string | number | boolean>) => void;
}

type VersionRef = Pick<AnchorMark, 'type' | 'id' | 'versionId'>;

interface InFlight {
  versions: VersionRef[];
  since: number;
}

const OUTBOX_PAGE = 5000;
/** Versions of this type are access-log records: anchored in audit envelopes. */
export const ACCESS_LOG_TYPE = 'AuditEvent';

/** Room left in an envelope for everything but its entries (header, signature, JSON framing). */
const ENVELOPE_OVERHEAD_BYTES = 1024;

/**
 * A patient's version is anchored with its locator token, its resource token and, for a Patient, its link
 * tokens (possibly none: that retracts the links published before). No resource type: it told every member
 * what kind of record a patient had, and the ledger never needs it.
 */
function anchorEntry(digest: string, version: UnanchoredVersion): AnchorEntry {
  if (!version.patientToken) return { digest };
  return {
    digest,
    patient: version.patientToken,
    ...(version.resourceToken !== undefined && { resource: version.resourceToken }),
    ...(version.linkTokens !== undefined && { links: version.linkTokens }),
  };
}

/** An access-log record: its digest, and on an erasure record the erased patient's locator token. */
function auditEntry(digest: string, version: UnanchoredVersion): AuditEntry {
  return version.erasedPatientToken !== undefined ? { digest, erased: version.erasedPatientToken } : { digest };
}

/** Consecutive groups of at most `maxCount` entries whose JSON stays within `maxBytes`. */
function groups<T>(entries: T[], maxCount: number, maxBytes: number): T[][] {
  const out: T[][] = [];
  let current: T[] = [];
  let bytes = 0;
  for (const entry of entries) {
    const size = JSON.stringify(entry).length + 1;
    if (current.length > 0 && (current.length >= maxCount || bytes + size > maxBytes)) {
      out.push(current);
      current = [];
      bytes = 0;
    }
    current.push(entry);
    bytes += size;
  }
  if (current.length > 0) out.push(current);
  return out;
}

/** What a version is anchored with: its commitment, or the tombstone digest of a deletion. */
export function anchoredDigest(version: Pick<UnanchoredVersion, 'type' | 'id' | 'versionId' | 'lastUpdated' | 'digest'>): string {
  return version.digest ?? tombstoneDigest(version.type, version.id, version.versionId, version.lastUpdated);
}

export class AnchorPublisher {
  private readonly inFlight = new Map<string, InFlight>();
  private cursor = 0;
  /** When the current pass over the outbox started from its beginning (Date.now()). */
  private passStartedAt = 0;
  /** True during a pass that started from the beginning of the outbox: digests are looked up in the ledger first. */
  private recovering = true;
  private running = false;
  private loopDone: Promise<void> = Promise.resolve();
  private wake: (() => void) | undefined;
  private marking: Promise<void> = Promise.resolve();
  private readonly onBlock = (committed: CommittedBlock) => {
    this.marking = this.marking
      .then(() => (this.running ? this.markFrom(committed) : undefined))
      .catch((e: unknown) => this.log('anchor_mark_failed', { error: (e as Error).message }));
  };
  private readonly log: NonNullable<AnchorPublisherOptions['log']>;
  readonly counters = { published: 0, anchored: 0, resubmitted: 0 };

  constructor(private readonly options: AnchorPublisherOptions) {
    this.log = options.log ?? (() => {});
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.options.member.on('block', this.onBlock);
    this.loopDone = this.loop();
  }

  /**
   * Stops publishing. Marks still queued are dropped and one in progress gets a short grace period: marking
   * is only bookkeeping (the next start finds those versions in the ledger and marks them), and on a store
   * where each update is slow (FerretDB scans per update) a backlog would otherwise hold a shutdown for minutes.
   */
  async stop(graceMs = 2000): Promise<void> {
    this.running = false;
    this.options.member.off('block', this.onBlock);
    this.notify();
    await this.loopDone;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.marking, new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)))]);
    clearTimeout(timer);
  }

  /** Something was committed to the vault: look at the outbox now rather than at the next poll. */
  notify(): void {
    this.wake?.();
  }

  /** Digests ordered and not yet committed. */
  get inFlightCount(): number {
    return this.inFlight.size;
  }

  private async loop(): Promise<void> {
    const { pollMs = 1000 } = this.options;
    while (this.running) {
      try {
        if (await this.publishOnce()) continue;
      } catch (e) {
        this.log('anchor_publish_failed', { error: (e as Error).message });
        this.rescan();
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, pollMs);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }

  /** Publishes one page of the outbox; false when there was nothing to do (or anchoring is paused). */
  private async publishOnce(): Promise<boolean> {
    const { member, outbox, maxInFlight = 10_000, pollMs = 1000 } = this.options;
    if (!member.healthy() || this.inFlight.size >= maxInFlight) return false;
    const page = await outbox.unanchored({ afterSeq: this.cursor, limit: OUTBOX_PAGE });
    if (page.length === 0) {
      // The end of the outbox. A store whose batches commit out of seq order (MongoDB) can make a version
      // appear behind the cursor, so passes start again from the beginning, but at most once per pollMs:
      // a pass from the beginning re-reads every version still in flight (skipped, but read), and starting
      // one on every commit notification made reading the outbox cost as much as sealing. In between, a
      // notification reads only what was committed after the cursor.
      this.recovering = false;
      this.releaseStale();
      if (Date.now() - this.passStartedAt >= pollMs) this.restartPass();
      return false;
    }
    this.cursor = page[page.length - 1].seq;
    const fresh = new Map<string, { version: UnanchoredVersion; refs: VersionRef[] }>();
    for (const version of page) {
      const digest = anchoredDigest(version);
      if (this.inFlight.has(digest)) continue;
      const ref = { type: version.type, id: version.id, versionId: version.versionId };
      const seen = fresh.get(digest);
      if (seen) seen.refs.push(ref);
      else fresh.set(digest, { version, refs: [ref] });
    }
    if (this.recovering && fresh.size > 0) await this.markAlreadyAnchored(fresh);
    await this.publish([...fresh].map(([digest, { version, refs }]) => ({ digest, version, refs })));
    return true;
  }

  private async markAlreadyAnchored(fresh: Map<string, { version: UnanchoredVersion; refs: VersionRef[] }>): Promise<void> {
    const { ledger, member } = this.options;
    const found = await ledger.locate(member.channel, [...fresh.keys()]);
    const marks: AnchorMark[] = [];
    for (const [digest, location] of found) {
      if (location.creator !== member.memberId) continue;
      for (const ref of fresh.get(digest)!.refs) marks.push({ ...ref, blockNumber: location.blockNumber, envelopeIndex: location.envelopeIndex, entryIndex: location.entryIndex });
      fresh.delete(digest);
    }
    if (marks.length) {
      await this.options.outbox.markAnchored(marks);
      this.counters.anchored += marks.length;
    }
  }

  private async publish(items: Array<{ digest: string; version: UnanchoredVersion; refs: VersionRef[] }>): Promise<void> {
    if (items.length === 0) return;
    const { member, signer, entriesPerEnvelope = MAX_ANCHOR_ENTRIES, maxEnvelopeBytes = DEFAULT_MAX_ENVELOPE_BYTES } = this.options;
    const size = Math.min(Math.max(1, entriesPerEnvelope), MAX_ANCHOR_ENTRIES);
    const budget = Math.max(1, maxEnvelopeBytes - ENVELOPE_OVERHEAD_BYTES);
    const envelopes: Uint8Array[] = [];
    const now = Date.now();
    const accessLog = items.filter(({ version }) => version.type === ACCESS_LOG_TYPE);
    const resources = items.filter(({ version }) => version.type !== ACCESS_LOG_TYPE);
    for (const entries of groups(resources.map(({ digest, version }) => anchorEntry(digest, version)), size, budget)) {
      envelopes.push(encodeEnvelope(createEnvelope(signer, { channel: member.channel, type: 'anchor', payload: { entries } })));
    }
    // Access-log records go in audit envelopes: digests only (not even the patient token), and an erasure's `erased`.
    for (const entries of groups(accessLog.map(({ digest, version }) => auditEntry(digest, version)), size, budget)) {
      envelopes.push(encodeEnvelope(createEnvelope(signer, { channel: member.channel, type: 'audit', payload: { entries } })));
    }
    for (const { digest, refs } of items) this.inFlight.set(digest, { versions: refs, since: now });
    try {
      await member.submit(envelopes);
      this.counters.published += items.length;
    } catch (e) {
      // Outcome unknown: release them; the next pass finds them (in the ledger, or still unanchored).
      for (const { digest } of items) this.inFlight.delete(digest);
      throw e;
    }
  }

  private async markFrom({ block, verdicts }: CommittedBlock): Promise<void> {
    const me = this.options.member.memberId;
    const marks: AnchorMark[] = [];
    const committed: string[] = [];
    let released = false;
    verdicts.forEach((verdict, envelopeIndex) => {
      if (verdict.valid) {
        const { envelope } = verdict;
        if (envelope.creator !== me || (envelope.type !== 'anchor' && envelope.type !== 'audit')) return;
        envelope.payload.entries.forEach(({ digest }, entryIndex) => {
          const flight = this.inFlight.get(digest);
          if (!flight) return;
          committed.push(digest);
          for (const ref of flight.versions) marks.push({ ...ref, blockNumber: block.header.number, envelopeIndex, entryIndex });
        });
      } else {
        // Our own envelope rejected (e.g. a replay after an unknown-outcome retry): publish its digests again.
        const parsed = parseEnvelope(block.envelopes[envelopeIndex], Infinity);
        if (!parsed.valid || parsed.envelope.creator !== me || (parsed.envelope.type !== 'anchor' && parsed.envelope.type !== 'audit')) return;
        this.log('anchor_envelope_rejected', { block: block.header.number, envelope: envelopeIndex, reason: verdict.reason });
        for (const { digest } of parsed.envelope.payload.entries) this.inFlight.delete(digest);
        released = true;
      }
    });
    if (marks.length) {
      await this.options.outbox.markAnchored(marks);
      this.counters.anchored += marks.length;
    }
    // Only now: until marked, the versions are still in the outbox and must not look publishable.
    for (const digest of committed) this.inFlight.delete(digest);
    if (released) this.rescan();
    this.notify();
  }

  /** In-flight digests older than resubmitAfterMs were lost (e.g. an append that failed after all): publish again. */
  private releaseStale(): void {
    const { resubmitAfterMs = 30_000 } = this.options;
    const cutoff = Date.now() - resubmitAfterMs;
    let released = 0;
    for (const [digest, flight] of this.inFlight) {
      if (flight.since < cutoff) {
        this.inFlight.delete(digest);
        released++;
      }
    }
    if (released > 0) {
      this.counters.resubmitted += released;
      this.rescan();
    }
  }

  /** Start again from the beginning of the outbox, checking the ledger before publishing. */
  private rescan(): void {
    this.restartPass();
    this.recovering = true;
  }

  private restartPass(): void {
    this.cursor = 0;
    this.passStartedAt = Date.now();
  }
}
