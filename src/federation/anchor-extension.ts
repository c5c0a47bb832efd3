/**
 * The Bundle.entry extension a holder puts on every resource it sends (docs/federation.md, "The federated
 * record"): the version's commitment salt and where the holder says the ledger anchored it, so that the
 * caller can recompute the commitment and look it up in its own ledger replica.
 *
 *   { "url": ANCHOR_EXTENSION_URL, "extension": [
 *       { "url": "salt", "valueString": "<64 lowercase hex>" },
 *       { "url": "blockNumber", "valueUnsignedInt": 12 },
 *       { "url": "envelopeIndex", "valueUnsignedInt": 0 },
 *       { "url": "entryIndex", "valueUnsignedInt": 3 } ] }
 */
import { isLosslessNumber, toNumber } from '../fhir/json.ts';
import type { AnchorLocation } from '../vault/store.ts';

export const ANCHOR_EXTENSION_URL = 'https://medblock.dev/fhir/StructureDefinition/anchor';
const LOCATION_FIELDS = ['blockNumber', 'envelopeIndex', 'entryIndex'] as const;
const SALT_HEX = /^[0-9a-f]{64}$/;

export function anchorExtension(saltHex: string, anchor: AnchorLocation): Record<string, unknown> {
  const { url, extension } = anchorLocationExtension(anchor);
  return { url, extension: [{ url: 'salt', valueString: saltHex }, ...extension] };
}

/** The anchor location alone (no salt): what the merged record's Provenance says of each remote entry. */
export function anchorLocationExtension(anchor: AnchorLocation): { url: string; extension: Array<Record<string, unknown>> } {
  return { url: ANCHOR_EXTENSION_URL, extension: LOCATION_FIELDS.map((f) => ({ url: f, valueUnsignedInt: anchor[f] })) };
}

export type ReadAnchor = { ok: true; salt: Buffer; anchor: AnchorLocation } | { ok: false; reason: 'bad-salt' | 'malformed' };

/** The salt and claimed location of an entry (a Bundle.entry as parsed by parseFhirJson). */
export function readAnchorExtension(entry: unknown): ReadAnchor {
  const extensions = (entry as { extension?: unknown } | null)?.extension;
  if (!Array.isArray(extensions)) return { ok: false, reason: 'malformed' };
  const matching = extensions.filter((e) => (e as { url?: unknown } | null)?.url === ANCHOR_EXTENSION_URL);
  if (matching.length !== 1) return { ok: false, reason: 'malformed' };
  const parts = (matching[0] as { extension?: unknown }).extension;
  if (!Array.isArray(parts)) return { ok: false, reason: 'malformed' };
  const value = (url: string, key: string): unknown => {
    const found = parts.filter((p) => (p as { url?: unknown } | null)?.url === url);
    return found.length === 1 ? (found[0] as Record<string, unknown>)[key] : undefined;
  };
  const anchor = {} as AnchorLocation;
  for (const field of LOCATION_FIELDS) {
    const raw = value(field, 'valueUnsignedInt');
    const n = typeof raw === 'number' || isLosslessNumber(raw) ? toNumber(raw) : NaN;
    if (!Number.isSafeInteger(n) || n < 0) return { ok: false, reason: 'malformed' };
    anchor[field] = n;
  }
  const salt = value('salt', 'valueString');
  if (typeof salt !== 'string' || !SALT_HEX.test(salt)) return { ok: false, reason: 'bad-salt' };
  return { ok: true, salt: Buffer.from(salt, 'hex'), anchor };
}
