/**
 * The federated record as one searchset Bundle (docs/federation.md, "The federated record"). Pure.
 *
 * - One entry per resource version: versions are told apart by their commitment, and the local copy of a
 *   commitment wins over a remote one.
 * - Remote entries carry `meta.source` = `urn:medblock:member:<id>` and a fullUrl under the holder's
 *   federation address; one Provenance per holder names them (target, each with its anchor location), the
 *   member as the custodian agent, and the ledger blocks holding their anchors.
 * - The record's Patients from different hospitals are linked to each other with `Patient.link` (`seealso`).
 * - An OperationOutcome entry (search.mode `outcome`) names each holder that was down, slow, refusing or sent
 *   rejected entries, by member id and counts only: never anything the entries held.
 */
import { createHash } from 'node:crypto';
import { serializeBundle, type BundleEntryParts } from '../fhir/bundle-json.ts';
import { cloneFhirJson, parseFhirJson, stringifyFhirJson } from '../fhir/json.ts';
import { operationOutcome, type OperationOutcome, type OutcomeIssue } from '../fhir/outcome.ts';
import { MEMBER_SYSTEM } from '../access/consent.ts';
import type { AnchorLocation } from '../vault/store.ts';
import { anchorLocationExtension } from './anchor-extension.ts';
import { REJECT_REASONS, rejectedCount, type AcceptedEntry, type CheckResult } from './remote-check.ts';

export const LEDGER_BLOCK_SYSTEM = 'urn:medblock:ledger-block';
/** Provenance.policy of a remote holder's part: what the caller checked before serving it. */
export const VERIFICATION_POLICY = 'https://medblock.dev/fhir/federation/verified-commitment-v1';

/** One entry of the caller's own record, as local $everything serves it. */
export interface LocalEntry {
  type: string;
  id: string;
  /** The stored JSON, served byte for byte (unless it is a Patient that gets links). */
  json: string;
  /** The version's commitment (absent only without a ledger). */
  commitment?: string;
  mode: 'match' | 'include';
}

/** What became of one holder. */
export type HolderResult = 'ok' | 'timeout' | 'unreachable' | 'refused' | 'malformed';

export interface HolderReport {
  member: string;
  /** The base of its entries' fullUrls (its federation FHIR base). */
  base: string;
  result: HolderResult;
  /** The HTTP status of a refusal. */
  status?: number;
  accepted: AcceptedEntry[];
  rejected: CheckResult['rejected'];
  notYetAnchored: number;
  /** It sent more entries than the caller takes from one holder; the rest was left out. */
  truncatedAt?: number;
  timeoutMs?: number;
}

export interface MergeInput {
  /** The caller's FHIR base. */
  baseUrl: string;
  local: LocalEntry[];
  /** Ids of the local Patients the record is about (their entries get links to the remote Patients). */
  localPatients: readonly string[];
  holders: HolderReport[];
  /** Further things to say (e.g. the patient is not linked). */
  notes: OutcomeIssue[];
  /** When the record was assembled (Provenance.recorded). */
  recorded: string;
}

export interface MergedRecord {
  /** Resources first (local, then holder by holder), then one Provenance per holder. */
  entries: BundleEntryParts[];
  /** Number of match entries. */
  total: number;
  outcome?: OperationOutcome;
}

interface PatientEntry {
  fullUrl: string;
  hospital: string;
  resource: Record<string, unknown>;
  part: BundleEntryParts;
}

export function mergeRecord(input: MergeInput): MergedRecord {
  const seen = new Set<string>();
  const entries: BundleEntryParts[] = [];
  const patients: PatientEntry[] = [];
  let total = 0;
  for (const e of input.local) {
    if (e.commitment !== undefined) {
      if (seen.has(e.commitment)) continue;
      seen.add(e.commitment);
    }
    const part: BundleEntryParts = { fullUrl: `${input.baseUrl}/${e.type}/${e.id}`, resourceJson: e.json, search: { mode: e.mode } };
    if (e.mode === 'match') total++;
    if (e.type === 'Patient' && e.mode === 'match' && input.localPatients.includes(e.id)) {
      patients.push({ fullUrl: part.fullUrl!, hospital: '', resource: parseFhirJson(e.json) as Record<string, unknown>, part });
    }
    entries.push(part);
  }
  const provenances: BundleEntryParts[] = [];
  for (const holder of input.holders) {
    const served: Array<{ fullUrl: string; anchor: AnchorLocation }> = [];
    for (const e of holder.accepted) {
      if (seen.has(e.commitment)) continue;
      seen.add(e.commitment);
      const resource = cloneFhirJson(e.resource);
      resource.meta = { ...(resource.meta as object | undefined), source: `${MEMBER_SYSTEM}:${holder.member}` };
      const part: BundleEntryParts = { fullUrl: `${holder.base}/${e.type}/${e.id}`, search: { mode: 'match' } };
      if (e.type === 'Patient') patients.push({ fullUrl: part.fullUrl!, hospital: holder.member, resource, part });
      else part.resourceJson = stringifyFhirJson(resource);
      entries.push(part);
      served.push({ fullUrl: part.fullUrl!, anchor: e.anchor });
      total++;
    }
    if (served.length > 0) provenances.push(provenanceOf(holder.member, served, input.recorded));
  }
  linkPatients(patients);
  const issues = [...input.notes, ...input.holders.flatMap(holderIssues)];
  return { entries: [...entries, ...provenances], total, ...(issues.length ? { outcome: operationOutcome(issues) } : {}) };
}

/** Every Patient gets a `seealso` link to each Patient of another hospital in the record. */
function linkPatients(patients: PatientEntry[]): void {
  for (const p of patients) {
    const others = patients.filter((o) => o.hospital !== p.hospital).map((o) => ({ other: { reference: o.fullUrl }, type: 'seealso' }));
    if (others.length > 0) {
      const existing = Array.isArray(p.resource.link) ? p.resource.link : [];
      p.resource.link = [...existing, ...others];
      p.part.resourceJson = stringifyFhirJson(p.resource);
    } else if (p.part.resourceJson === undefined) {
      p.part.resourceJson = stringifyFhirJson(p.resource);
    }
  }
}

function provenanceOf(member: string, served: Array<{ fullUrl: string; anchor: AnchorLocation }>, recorded: string): BundleEntryParts {
  const blocks = [...new Set(served.map((s) => s.anchor.blockNumber))].sort((a, b) => a - b);
  const resource = {
    resourceType: 'Provenance',
    target: served.map((s) => ({
      reference: s.fullUrl,
      extension: [anchorLocationExtension(s.anchor)],
    })),
    recorded,
    policy: [VERIFICATION_POLICY],
    agent: [
      {
        type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/provenance-participant-type', code: 'custodian' }] },
        who: { type: 'Organization', identifier: { system: MEMBER_SYSTEM, value: member } },
      },
    ],
    entity: blocks.map((n) => ({ role: 'source', what: { identifier: { system: LEDGER_BLOCK_SYSTEM, value: String(n) } } })),
  };
  // Deterministic: the same holder's part of the same record gets the same id.
  const uuid = createHash('sha256').update(`${member}\0${recorded}\0${served.length}`).digest('hex');
  const fullUrl = `urn:uuid:${uuid.slice(0, 8)}-${uuid.slice(8, 12)}-4${uuid.slice(13, 16)}-8${uuid.slice(17, 20)}-${uuid.slice(20, 32)}`;
  return { fullUrl, resource, search: { mode: 'include' } };
}

/** What the outcome says of a holder: member id, result and counts; never content. */
function holderIssues(h: HolderReport): OutcomeIssue[] {
  const who = `member ${h.member}`;
  const issues: OutcomeIssue[] = [];
  if (h.result === 'timeout') issues.push({ severity: 'warning', code: 'timeout', diagnostics: `${who} did not answer within ${h.timeoutMs} ms; its part of the record is missing` });
  if (h.result === 'unreachable') issues.push({ severity: 'warning', code: 'transient', diagnostics: `${who} is unreachable; its part of the record is missing` });
  if (h.result === 'refused') issues.push({ severity: 'warning', code: 'forbidden', diagnostics: `${who} refused the request (HTTP ${h.status}); its part of the record is missing` });
  if (h.result === 'malformed') issues.push({ severity: 'warning', code: 'invalid', diagnostics: `${who} sent an answer that is not a searchset Bundle; its part of the record is missing` });
  const rejected = rejectedCount(h.rejected);
  if (rejected > 0) {
    const reasons = REJECT_REASONS.filter((r) => h.rejected[r]).map((r) => `${h.rejected[r]} ${r}`).join(', ');
    issues.push({ severity: 'warning', code: 'security', diagnostics: `${who}: ${rejected} entries failed verification against this gateway's ledger and are left out (${reasons})` });
  }
  if (h.notYetAnchored > 0) issues.push({ severity: 'information', code: 'incomplete', diagnostics: `${who}: ${h.notYetAnchored} versions not yet anchored there are left out` });
  if (h.truncatedAt !== undefined) issues.push({ severity: 'warning', code: 'too-costly', diagnostics: `${who} holds more than ${h.truncatedAt} entries for this patient; the rest is left out` });
  return issues;
}

/**
 * One page of a merged record: `count` entries from `offset`, with the OperationOutcome on every page (it
 * describes the whole record). `links` are absolute URLs.
 */
export function recordPage(record: MergedRecord, offset: number, count: number, links: { self: string; next?: string }): string {
  const link = [{ relation: 'self', url: links.self }, ...(links.next ? [{ relation: 'next', url: links.next }] : [])];
  const page = record.entries.slice(offset, offset + count);
  const outcome: BundleEntryParts[] = record.outcome ? [{ resource: record.outcome, search: { mode: 'outcome' } }] : [];
  return serializeBundle({ resourceType: 'Bundle', type: 'searchset', total: record.total, link }, [...page, ...outcome]);
}
