/**
 * Erasure records: an erasure (`$erase`) is written into the access log as an AuditEvent before the data key
 * is destroyed, so it is sealed under the audit key and anchored in an `audit` envelope (a digest only, no
 * PHI) like every access record. `medblock verify` then tells an erasure from tampering: a destroyed data key
 * with no anchored erasure record naming it was destroyed behind the gateway's back.
 *
 * With MEDBLOCK_ERASE_APPROVAL=second-approver the first `$erase` writes an erasure *request* record the same
 * way (durable and anchored, in the vault only), and the erasure happens when a different user with the erase
 * scope calls `$erase` on the same patient.
 */
import type { FhirRepository, ResourceVersion } from '../fhir/repository.ts';
import type { StoredVersion } from '../vault/store.ts';
import { compartmentTerm } from '../fhir/compartment.ts';

export type EraseApproval = 'none' | 'second-approver';

export const ERASE_APPROVALS: readonly EraseApproval[] = ['none', 'second-approver'];

export interface ErasurePolicy {
  approval: EraseApproval;
  /** Named as the records' observer, as in access records. */
  hospitalId: string;
}

/** The subtype system of erasure records; its codes are `request` and `erasure`. */
export const ERASURE_SYSTEM = 'urn:medblock:erasure';
/** How an erasure record names the data key it destroyed (a blind key id, not PHI). */
export const DATA_KEY_SYSTEM = 'urn:medblock:data-key';
const SUBJECT_SYSTEM = 'urn:medblock:token-subject';

type ErasureCode = 'request' | 'erasure';

export interface ErasureRecord {
  code: ErasureCode;
  keyId: string;
  /** Token subjects: the requester first, then the approver (second-approver mode). */
  actors: string[];
}

function erasureEvent(code: ErasureCode, patientId: string, keyId: string, actors: string[], recorded: string, hospitalId: string): Record<string, unknown> {
  return {
    resourceType: 'AuditEvent',
    type: { system: 'http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle', code: 'destroy', display: 'Destroy/Delete' },
    subtype: [{ system: ERASURE_SYSTEM, code }],
    action: code === 'erasure' ? 'D' : 'E',
    recorded,
    outcome: '0',
    outcomeDesc: code === 'erasure' ? "the patient's data key is destroyed" : 'erasure requested; waiting for a second approver',
    agent: actors.map((actor, i) => ({ who: { identifier: { system: SUBJECT_SYSTEM, value: actor } }, requestor: i === 0 })),
    source: { observer: { display: hospitalId }, type: [{ system: 'http://terminology.hl7.org/CodeSystem/security-source-type', code: '4' }] },
    entity: [{ what: { reference: `Patient/${patientId}` } }, { what: { identifier: { system: DATA_KEY_SYSTEM, value: keyId } } }],
  };
}

/** The erasure record an AuditEvent's content is, if it is one. */
export function erasureRecordOf(resource: unknown): ErasureRecord | undefined {
  const r = resource as {
    subtype?: Array<{ system?: string; code?: string }>;
    entity?: Array<{ what?: { identifier?: { system?: string; value?: string } } }>;
    agent?: Array<{ who?: { identifier?: { value?: string } } }>;
  };
  const code = r?.subtype?.find((s) => s.system === ERASURE_SYSTEM)?.code;
  if (code !== 'request' && code !== 'erasure') return undefined;
  const keyId = r.entity?.find((e) => e.what?.identifier?.system === DATA_KEY_SYSTEM)?.what?.identifier?.value;
  if (!keyId) return undefined;
  return { code, keyId, actors: (r.agent ?? []).map((a) => a.who?.identifier?.value ?? '') };
}

export type ErasureOutcome =
  | { state: 'erased'; erasedAt: string; resources: number }
  | { state: 'pending'; requestedAt: string };

/** The requests on record for erasing `keyId` of the patient, oldest first. */
async function requestsFor(repo: FhirRepository, patientId: string, keyId: string): Promise<Array<{ record: ErasureRecord; version: ResourceVersion }>> {
  const page = await repo.search('AuditEvent', [
    ['entity', `Patient/${patientId}`],
    ['subtype', `${ERASURE_SYSTEM}|request`],
    ['_count', '1000'],
  ]);
  return page.versions
    .map((version) => ({ version, record: erasureRecordOf(JSON.parse(version.json ?? 'null')) }))
    .filter((r): r is { record: ErasureRecord; version: ResourceVersion } => r.record?.keyId === keyId)
    .sort((a, b) => (a.version.lastUpdated < b.version.lastUpdated ? -1 : 1));
}

/**
 * Writes an erasure record; its lastUpdated is the time a repeated request reports. `erases`: the compartment
 * an `erasure` record (not a request) ends: the vault keeps that patient's locator token on the record's
 * outbox row, computed while the key still exists, and the ledger gets it as the audit entry's `erased`.
 */
function writeRecord(repo: FhirRepository, event: Record<string, unknown>, erases?: string): Promise<ResourceVersion> {
  return repo.write((session) => session.create(event as never, undefined, { erases }));
}

/**
 * `$erase` by `actor` under the policy: erases (record first, then the key), or records a request and
 * answers pending. Erasing an erased patient again finishes an interrupted erasure and reports its time.
 */
export async function eraseByPolicy(repo: FhirRepository, policy: ErasurePolicy, patientId: string, actor: string): Promise<ErasureOutcome> {
  const target = await repo.erasureTarget(patientId);
  if (target.erasedAt !== undefined) return { state: 'erased', ...(await repo.erase(patientId, target.erasedAt)) };
  let actors = [actor];
  if (policy.approval === 'second-approver') {
    const requests = await requestsFor(repo, patientId, target.keyId);
    const byOther = requests.find((r) => r.record.actors[0] !== actor);
    if (!byOther) {
      const own = requests[0];
      if (own) return { state: 'pending', requestedAt: own.version.lastUpdated };
      const request = await writeRecord(repo, erasureEvent('request', patientId, target.keyId, actors, new Date().toISOString(), policy.hospitalId));
      return { state: 'pending', requestedAt: request.lastUpdated };
    }
    actors = [byOther.record.actors[0], actor];
  }
  // The record is durable before the key is destroyed: a crash in between leaves a record and a live key,
  // which the next $erase finishes; never a destroyed key without its record.
  const erasedAt = new Date().toISOString();
  await writeRecord(repo, erasureEvent('erasure', patientId, target.keyId, actors, erasedAt, policy.hospitalId), compartmentTerm(patientId));
  return { state: 'erased', ...(await repo.erase(patientId, erasedAt)) };
}

/**
 * `medblock verify`'s erasure check: every destroyed data key must be named by an erasure record whose
 * digest the ledger holds. A key tombstoned directly in the database has none: that is tampering.
 */
export class ErasureCheck {
  /** Destroyed key id → where it was first seen. */
  private readonly destroyed = new Map<string, string>();
  private readonly recorded = new Set<string>();

  /** A version that reads as erased (its data key is a tombstone). */
  erased(version: Pick<StoredVersion, 'keyId'>, where: string): void {
    if (version.keyId && !this.destroyed.has(version.keyId)) this.destroyed.set(version.keyId, where);
  }

  /** A version whose content matched its anchored digest: an erasure record among them vouches for its key. */
  anchored(version: Pick<StoredVersion, 'type' | 'content'>): void {
    if (version.type !== 'AuditEvent' || !version.content) return;
    const record = erasureRecordOf(JSON.parse(Buffer.from(version.content).toString('utf8')));
    if (record?.code === 'erasure') this.recorded.add(record.keyId);
  }

  problems(): Array<{ where: string; problem: string }> {
    return [...this.destroyed]
      .filter(([keyId]) => !this.recorded.has(keyId))
      .map(([keyId, where]) => ({ where, problem: `its data key ${keyId} was destroyed without an anchored erasure record: not an $erase, tampering` }));
  }
}
