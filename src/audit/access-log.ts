/**
 * The access log: one AuditEvent per authenticated FHIR request, who did what to which resource with what
 * outcome. Records are written into the vault like any resource (encrypted, searchable by compliance
 * teams with AuditEvent read access) and anchored in the ledger through the outbox in `audit` envelopes
 * (digests only), so `medblock verify` detects an altered or deleted record.
 *
 * Writing uses group commit: a record is queued, and every record queued while a batch is being committed
 * goes into the next one, so the log costs one vault write per batch, not per request. The HTTP layer
 * waits for a request's record to be durable before it answers (and answers 503 if it cannot be written),
 * so every answer that left the gateway has its record; a crash can only lose records of unanswered requests.
 */
import type { FhirRepository } from '../fhir/repository.ts';
import { ACT_REASON_SYSTEM, MEMBER_SYSTEM, RESOURCE_TYPES_SYSTEM, TOKEN_SUBJECT_SYSTEM } from '../access/consent.ts';

export interface AccessRecord {
  /** Token subject; never a name. */
  actor: string;
  /** Interaction name from the route table (`read`, `search-type`, `proof`…). */
  interaction: string;
  method: string;
  /** `Type/id` of the resource acted on, when the request names one. */
  resource?: string;
  /** Resource type of a type-level request (search, create). */
  resourceType?: string;
  /** The patient the token is bound to, if any. */
  patient?: string;
  status: number;
  recorded: string;
  /** The member whose user `actor` is, when not this hospital's (the asking member of a federated request). */
  actorMember?: string;
  /** v3-ActReason purpose of use, when the request stated one (it was then decided under Consent). */
  purpose?: string;
  /** Break-the-glass turned a consent deny into a permit. */
  breakTheGlass?: boolean;
  /** The deciding Consent version (`Consent/<id>/_history/<v>`) or `default` (the consortium default). */
  consent?: string;
  /** Resource types the consent decision withheld. */
  withheld?: string[];
  /** A local read, search or history under Consent (possibly over several patients' records): each deciding version and what it withheld. */
  consents?: Array<{ consent: string; withheld: string[] }>;
  /** Members asked (the requesting side of a federated request). */
  members?: string[];
  /** Versions that left this hospital (`Type/id/_history/v`, the holding side of a federated request). */
  disclosed?: string[];
}

/** What FEDERATE records at either end of a federated request (see AccessLog.recordDisclosure). */
export interface DisclosureRecord {
  side: 'holder' | 'requester';
  /** The end user's token subject: at the holder, the asking member's user as its assertion names them. */
  actor: string;
  /** At the holder: the asking member. */
  requester?: string;
  /** At the requester: the members asked. */
  holders?: string[];
  /** The local patient's id, if any. */
  patient?: string;
  purpose: string;
  breakTheGlass: boolean;
  consent?: string;
  withheld?: string[];
  /** Several deciding versions (a holder whose link token names several local patients): one entity each. */
  consents?: Array<{ consent: string; withheld: string[] }>;
  disclosed?: string[];
  status: number;
}

/** A break-the-glass access: a security label on its record (v3-ActReason BTG), for compliance to search. */
export const BREAK_THE_GLASS_LABEL = { system: ACT_REASON_SYSTEM, code: 'BTG', display: 'break the glass' } as const;
/** The consent entity's identifier when no Consent decided. */
export const DEFAULT_CONSENT_IDENTIFIER = { system: 'urn:medblock:consent', value: 'default' } as const;

/** Subtype of the records at either end of a federated request: `federated-request` (asker), `federated-disclosure` (holder). */
export const FEDERATION_SUBTYPE_SYSTEM = 'urn:medblock:federation';
const FEDERATION_INTERACTIONS = new Set(['federated-request', 'federated-disclosure']);
const RESTFUL_INTERACTIONS = new Set(['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'history-type', 'history-system', 'create', 'search-type', 'search-system', 'capabilities', 'batch', 'transaction', 'operation']);
const ACTIONS: Record<string, string> = { GET: 'R', HEAD: 'R', POST: 'C', PUT: 'U', PATCH: 'U', DELETE: 'D' };

export function auditEvent(record: AccessRecord, hospitalId: string): Record<string, unknown> {
  const subtype = RESTFUL_INTERACTIONS.has(record.interaction) ? record.interaction : 'operation';
  const entities: Array<Record<string, unknown>> = [];
  if (record.resource) entities.push({ what: { reference: record.resource } });
  else if (record.resourceType) entities.push({ type: { system: 'http://hl7.org/fhir/resource-types', code: record.resourceType } });
  if (record.patient && record.resource !== `Patient/${record.patient}`) entities.push({ what: { reference: `Patient/${record.patient}` } });
  entities.push(...consentEntities(record));
  const who: Record<string, unknown> = { system: TOKEN_SUBJECT_SYSTEM, value: record.actor };
  if (record.actorMember) who.assigner = { identifier: { system: MEMBER_SYSTEM, value: record.actorMember } };
  return {
    resourceType: 'AuditEvent',
    ...(record.breakTheGlass ? { meta: { security: [BREAK_THE_GLASS_LABEL] } } : {}),
    type: { system: 'http://terminology.hl7.org/CodeSystem/audit-event-type', code: 'rest', display: 'RESTful Operation' },
    subtype: [
      { system: 'http://hl7.org/fhir/restful-interaction', code: subtype },
      ...(FEDERATION_INTERACTIONS.has(record.interaction) ? [{ system: FEDERATION_SUBTYPE_SYSTEM, code: record.interaction }] : []),
    ],
    action: ACTIONS[record.method] ?? 'E',
    recorded: record.recorded,
    outcome: record.status < 400 ? '0' : record.status < 500 ? '4' : '8',
    outcomeDesc: `HTTP ${record.status} ${record.interaction}`,
    ...(record.purpose ? { purposeOfEvent: [{ coding: [{ system: ACT_REASON_SYSTEM, code: record.purpose }] }] } : {}),
    agent: [{ who: { identifier: who }, requestor: true }],
    source: { observer: { display: hospitalId }, type: [{ system: 'http://terminology.hl7.org/CodeSystem/security-source-type', code: '4' }] },
    ...(entities.length ? { entity: entities } : {}),
  };
}

/** The consent decision (its deciding Consent version, what it withheld), the members asked, the versions that left. */
function consentEntities(record: AccessRecord): Array<Record<string, unknown>> {
  const entities: Array<Record<string, unknown>> = [];
  const decisions = record.consents ?? (record.consent ? [{ consent: record.consent, withheld: record.withheld ?? [] }] : []);
  for (const { consent, withheld } of decisions) {
    entities.push({
      what: consent === 'default' ? { identifier: DEFAULT_CONSENT_IDENTIFIER } : { reference: consent },
      type: { system: RESOURCE_TYPES_SYSTEM, code: 'Consent' },
      ...(withheld.length ? { detail: [{ type: 'withheld', valueString: withheld.join(',') }] } : {}),
    });
  }
  for (const member of record.members ?? []) {
    entities.push({ what: { identifier: { system: MEMBER_SYSTEM, value: member } }, type: { system: RESOURCE_TYPES_SYSTEM, code: 'Organization' } });
  }
  for (const reference of record.disclosed ?? []) entities.push({ what: { reference } });
  return entities;
}

interface Queued {
  record: AccessRecord;
  resolve: () => void;
  reject: (error: Error) => void;
}

export class AccessLog {
  private queue: Queued[] = [];
  private flushing: Promise<void> | undefined;
  private failures = 0;

  constructor(
    private readonly repo: FhirRepository,
    private readonly hospitalId: string,
    private readonly onError: (error: Error) => void = () => {},
  ) {}

  /** Queues a record; resolves once the batch it went into is committed (rejects if that batch failed). */
  record(record: AccessRecord): Promise<void> {
    const committed = new Promise<void>((resolve, reject) => this.queue.push({ record, resolve, reject }));
    if (!this.flushing) this.flushing = this.flush();
    return committed;
  }

  /**
   * The record of one end of a federated request: at the holder who asked (member and user), why, what the
   * Consent decided and which versions left; at the requester who asked whom, why. Resolves once durable.
   */
  recordDisclosure(d: DisclosureRecord): Promise<void> {
    return this.record({
      actor: d.actor,
      actorMember: d.requester,
      interaction: d.side === 'holder' ? 'federated-disclosure' : 'federated-request',
      method: 'GET',
      resource: d.patient ? `Patient/${d.patient}` : undefined,
      status: d.status,
      recorded: new Date().toISOString(),
      purpose: d.purpose,
      breakTheGlass: d.breakTheGlass,
      consent: d.consent,
      withheld: d.withheld,
      consents: d.consents,
      members: d.holders,
      disclosed: d.disclosed,
    });
  }

  /** Records that failed to be written (each failure is also reported through onError). */
  get failedRecords(): number {
    return this.failures;
  }

  /** Resolves when everything queued so far is committed (tests, shutdown). */
  async drain(): Promise<void> {
    while (this.flushing) await this.flushing;
  }

  private async flush(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0);
      try {
        await this.repo.write(async (session) => {
          for (const { record } of batch) await session.create(auditEvent(record, this.hospitalId) as never);
        });
        for (const { resolve } of batch) resolve();
      } catch (e) {
        this.failures += batch.length;
        this.onError(e as Error);
        for (const { reject } of batch) reject(e as Error);
      }
    }
    this.flushing = undefined;
  }
}
