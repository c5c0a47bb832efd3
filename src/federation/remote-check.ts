/**
 * What the caller believes of a holder's answer (docs/federation.md, "The federated record"). Pure: the
 * orchestrator fetches the pages and the ledger facts, this decides.
 *
 * 1. `readHolderPage` parses a page of the holder's Bundle (as text: decimals keep their lexeme) and, per
 *    entry, recomputes the commitment from the resource's canonical JSON and the salt the holder sent.
 * 2. `checkRemoteEntries` looks each commitment up in the facts of the caller's OWN ledger replica: it must be
 *    anchored, by that holder's signed envelope, at the location the holder claims, for one of the patient
 *    locators the ledger lists for the link token, and neither superseded nor erased. Everything else is
 *    rejected with a reason, counted, and never served.
 *
 * An entry edited in flight (or in the holder's vault) recomputes to a commitment nobody anchored:
 * `not-anchored`.
 */
import { versionCommitmentHex } from '../ledger/canonical-json.ts';
import { FhirJsonSyntaxError, parseFhirJson } from '../fhir/json.ts';
import { ID_PATTERN } from '../fhir/resource-version.ts';
import type { AnchorLocation } from '../vault/store.ts';
import { readAnchorExtension } from './anchor-extension.ts';
import type { AnchorFacts } from './ports.ts';

export const REJECT_REASONS = [
  'malformed',
  'bad-salt',
  'not-anchored',
  'anchored-by-another-member',
  'location-mismatch',
  'other-patient',
  'superseded',
  'erased',
] as const;
export type RejectReason = (typeof REJECT_REASONS)[number];

/** The issue code (in an OperationOutcome's details.coding) of a holder's "left out, not anchored yet" count. */
export const NOT_YET_ANCHORED = 'not-yet-anchored';
export const FEDERATION_CODES = 'https://medblock.dev/fhir/CodeSystem/federation';

const RESOURCE_TYPE = /^[A-Z][A-Za-z]{0,63}$/;

/** One entry of a holder's page, its commitment recomputed; or why that was impossible. */
export type Candidate =
  | { ok: true; type: string; id: string; resource: Record<string, unknown>; commitment: string; anchor: AnchorLocation }
  | { ok: false; reason: 'malformed' | 'bad-salt' };

export interface HolderPage {
  candidates: Candidate[];
  /** The `_cursor` of the holder's next page (only the cursor is taken from its link: the URL is never followed). */
  nextCursor?: string;
  /** Versions the holder left out because they are not anchored yet. */
  notYetAnchored: number;
}

export class MalformedHolderPageError extends Error {
  constructor(reason: string) {
    super(`the holder's answer is not a searchset Bundle: ${reason}`);
    this.name = 'MalformedHolderPageError';
  }
}

/** One entry as the holder sent it. */
export function candidateOf(entry: unknown): Candidate {
  const resource = (entry as { resource?: unknown } | null)?.resource as Record<string, unknown> | undefined;
  if (typeof resource !== 'object' || resource === null || Array.isArray(resource)) return { ok: false, reason: 'malformed' };
  const { resourceType: type, id } = resource;
  if (typeof type !== 'string' || !RESOURCE_TYPE.test(type) || typeof id !== 'string' || !ID_PATTERN.test(id)) return { ok: false, reason: 'malformed' };
  const anchor = readAnchorExtension(entry);
  if (!anchor.ok) return { ok: false, reason: anchor.reason };
  try {
    return { ok: true, type, id, resource, commitment: versionCommitmentHex(anchor.salt, resource), anchor: anchor.anchor };
  } catch {
    return { ok: false, reason: 'malformed' }; // no canonical JSON (a lone surrogate …)
  }
}

/** A page of the holder's Bundle. @throws MalformedHolderPageError when it is not a searchset Bundle. */
export function readHolderPage(text: string): HolderPage {
  let bundle: Record<string, unknown>;
  try {
    bundle = parseFhirJson(text) as Record<string, unknown>;
  } catch (e) {
    if (e instanceof FhirJsonSyntaxError) throw new MalformedHolderPageError('not JSON');
    throw e;
  }
  if (typeof bundle !== 'object' || bundle === null || bundle.resourceType !== 'Bundle' || bundle.type !== 'searchset') {
    throw new MalformedHolderPageError('not a searchset Bundle');
  }
  const entries = bundle.entry ?? [];
  if (!Array.isArray(entries)) throw new MalformedHolderPageError('entry is not an array');
  const candidates: Candidate[] = [];
  let notYetAnchored = 0;
  for (const entry of entries) {
    const mode = (entry as { search?: { mode?: unknown } } | null)?.search?.mode;
    if (mode === 'outcome') notYetAnchored += notYetAnchoredCount((entry as { resource?: unknown }).resource);
    else candidates.push(candidateOf(entry));
  }
  return { candidates, nextCursor: nextCursorOf(bundle.link), notYetAnchored };
}

function nextCursorOf(links: unknown): string | undefined {
  if (!Array.isArray(links)) return undefined;
  const next = links.find((l) => (l as { relation?: unknown } | null)?.relation === 'next') as { url?: unknown } | undefined;
  if (typeof next?.url !== 'string') return undefined;
  try {
    return new URL(next.url, 'https://holder.invalid/').searchParams.get('_cursor') ?? undefined;
  } catch {
    return undefined;
  }
}

/** The count in a holder's outcome issue coded not-yet-anchored (its diagnostics start with the number). */
function notYetAnchoredCount(outcome: unknown): number {
  const issues = (outcome as { issue?: unknown } | null)?.issue;
  if (!Array.isArray(issues)) return 0;
  let count = 0;
  for (const issue of issues) {
    const codings = (issue as { details?: { coding?: unknown } } | null)?.details?.coding;
    const coded = Array.isArray(codings) && codings.some((c) => c?.system === FEDERATION_CODES && c?.code === NOT_YET_ANCHORED);
    const diagnostics = (issue as { diagnostics?: unknown } | null)?.diagnostics;
    const n = typeof diagnostics === 'string' ? /^(\d{1,9}) /.exec(diagnostics) : null;
    if (coded && n) count += Number(n[1]);
  }
  return count;
}

/** A remote version the caller verified against its own ledger. */
export interface AcceptedEntry {
  holder: string;
  type: string;
  id: string;
  resource: Record<string, unknown>;
  commitment: string;
  anchor: AnchorLocation;
}

export interface CheckResult {
  accepted: AcceptedEntry[];
  /** Rejected entries by reason (counts only: what they held is never passed on). */
  rejected: Partial<Record<RejectReason, number>>;
}

/**
 * Decides every candidate of a holder. `locators` are the holder's patient locators for the link token
 * (holdersOfLink); `facts` are the caller's own ledger facts for the candidates' commitments.
 */
export function checkRemoteEntries(
  holder: string,
  locators: ReadonlySet<string>,
  candidates: readonly Candidate[],
  facts: ReadonlyMap<string, AnchorFacts>,
): CheckResult {
  const accepted: AcceptedEntry[] = [];
  const rejected: CheckResult['rejected'] = {};
  for (const candidate of candidates) {
    const reason = candidate.ok ? verdict(holder, locators, candidate.anchor, facts.get(candidate.commitment)) : candidate.reason;
    if (reason) rejected[reason] = (rejected[reason] ?? 0) + 1;
    else if (candidate.ok) {
      const { type, id, resource, commitment, anchor } = candidate;
      accepted.push({ holder, type, id, resource, commitment, anchor });
    }
  }
  return { accepted, rejected };
}

function verdict(holder: string, locators: ReadonlySet<string>, claimed: AnchorLocation, facts: AnchorFacts | undefined): RejectReason | undefined {
  if (!facts || facts.kind !== 'anchor') return 'not-anchored';
  if (facts.creator !== holder) return 'anchored-by-another-member';
  if (facts.blockNumber !== claimed.blockNumber || facts.envelopeIndex !== claimed.envelopeIndex || facts.entryIndex !== claimed.entryIndex) {
    return 'location-mismatch';
  }
  // Anchored under a patient the ledger does not link to this token: another person's record.
  if (facts.patient === undefined || !locators.has(facts.patient)) return 'other-patient';
  if (facts.erased) return 'erased';
  if (facts.superseded) return 'superseded';
  return undefined;
}

export function rejectedCount(rejected: CheckResult['rejected']): number {
  return Object.values(rejected).reduce((a, b) => a + (b ?? 0), 0);
}
