/**
 * Fakes of the federation ports for unit tests (src/federation/ports.ts): a ledger index that knows what each
 * member anchored, and holders that answer from a list of entries. Integration tests use the real channel.
 */
import { randomBytes } from 'node:crypto';
import { anchorExtension } from '../../src/federation/anchor-extension.ts';
import type { AnchorFacts, HolderClientPort, HolderResponse, LedgerIndexPort, Requester } from '../../src/federation/ports.ts';
import { parseFhirJson, stringifyFhirJson } from '../../src/fhir/json.ts';
import { versionCommitmentHex } from '../../src/ledger/canonical-json.ts';
import type { AnchorLocation } from '../../src/vault/store.ts';

export interface SentEntry {
  /** The resource's JSON text as the holder sends it. */
  json: string;
  salt: string;
  anchor: AnchorLocation;
}

/** A ledger replica: facts by commitment, holders by link token. */
export class FakeLedger implements LedgerIndexPort {
  readonly facts = new Map<string, AnchorFacts>();
  readonly holders = new Map<string, Array<{ hospital: string; locator: string }>>();
  private nextBlock = 1;

  async holdersOfLink(linkToken: string) {
    return this.holders.get(linkToken) ?? [];
  }

  async anchorFacts(digests: string[]) {
    return new Map(digests.flatMap((d) => (this.facts.has(d) ? [[d, this.facts.get(d)!] as const] : [])));
  }

  /** Lists `hospital` (with this patient locator) as holding the link token. */
  link(token: string, hospital: string, locator: string): void {
    this.holders.set(token, [...(this.holders.get(token) ?? []), { hospital, locator }]);
  }

  /** Anchors a resource (an object, or JSON text as stored) as `creator` under a patient locator; returns the entry the holder sends for it. */
  anchor(resource: object | string, creator: string, patient: string, overrides: Partial<AnchorFacts> = {}): SentEntry & { commitment: string } {
    const json = typeof resource === 'string' ? resource : stringifyFhirJson(resource);
    const salt = randomBytes(32);
    const commitment = versionCommitmentHex(salt, parseFhirJson(json));
    const anchor = { blockNumber: this.nextBlock++, envelopeIndex: 0, entryIndex: 0 };
    this.facts.set(commitment, { ...anchor, creator, kind: 'anchor', patient, superseded: false, erased: false, ...overrides });
    return { json, salt: salt.toString('hex'), anchor, commitment };
  }
}

/** A Bundle entry as a holder sends it (the JSON text spliced in, decimals as written). */
export function entryText(e: SentEntry): string {
  return `{"extension":${JSON.stringify([anchorExtension(e.salt, e.anchor)])},"fullUrl":"https://holder.test/federation/fhir/x","resource":${e.json},"search":{"mode":"match"}}`;
}

export function bundleText(entries: SentEntry[], nextCursor?: string, extra: string[] = []): string {
  const link = [{ relation: 'self', url: 'https://holder.test/federation/fhir/Patient/$everything' }];
  if (nextCursor) link.push({ relation: 'next', url: `https://holder.test/federation/fhir/Patient/$everything?_count=2&_cursor=${encodeURIComponent(nextCursor)}` });
  return `{"resourceType":"Bundle","type":"searchset","link":${JSON.stringify(link)},"entry":[${[...entries.map(entryText), ...extra].join(',')}]}`;
}

export type HolderBehaviour = (query: Array<[string, string]>, claims: Requester & { link: string }, signal: AbortSignal) => Promise<HolderResponse>;

/** Holders by member id; every call is recorded. */
export class FakeHolders implements HolderClientPort {
  readonly calls: Array<{ member: string; query: Array<[string, string]>; claims: Requester & { link: string } }> = [];
  constructor(private readonly behaviours: Record<string, HolderBehaviour>) {}

  request(member: string, _path: string, query: Array<[string, string]>, claims: Requester & { link: string }, options: { signal: AbortSignal }): Promise<HolderResponse> {
    this.calls.push({ member, query, claims });
    const behaviour = this.behaviours[member];
    if (!behaviour) return Promise.reject(new Error(`no address for member ${member}`));
    return behaviour(query, claims, options.signal);
  }

  addressOf(member: string): string | undefined {
    return this.behaviours[member] ? `https://${member}.test:9443` : undefined;
  }
}

/** A holder that serves these pages in turn (page i+1 when asked with `_cursor=p<i+1>`). */
export function pagedHolder(pages: string[]): HolderBehaviour {
  return async (query) => {
    const cursor = query.find(([k]) => k === '_cursor')?.[1];
    const index = cursor ? Number(cursor.slice(1)) : 0;
    return { status: 200, text: pages[index] };
  };
}

/** Never answers until aborted (then rejects, as fetch does). */
export const silentHolder: HolderBehaviour = (_q, _c, signal) =>
  new Promise((_resolve, reject) => signal.addEventListener('abort', () => reject(new Error('aborted'))));
