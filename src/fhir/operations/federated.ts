/**
 * The federated summarized record over FHIR (docs/federation.md, "The federated record"):
 *
 *   GET [base]/Patient/[id]/$everything?federated=true[&_count][&_cursor]
 *   GET [base]/Patient/$everything?identifier=system|value[&federated=true][&_count]   (later pages: ?_cursor=…)
 *
 * Authorization as local $everything (read on Patient; a patient-bound token only for its own patient, and
 * not by identifier); the purpose from X-Purpose-Of-Use / X-Break-Glass-Reason. The record is gathered once
 * (federation/federated-everything.ts) and kept for its later pages (federation/snapshots.ts): a `_cursor`
 * is bound to the user, the request and the purpose.
 */
import { keepInCompartment } from '../../access/compartment.ts';
import type { FederatedRecordPort, FederatedTarget } from '../../federation/federated-everything.ts';
import { recordPage, type LocalEntry, type MergedRecord } from '../../federation/merge.ts';
import { statedPurpose } from '../../access/consent-local.ts';
import { requestConsent, type RequestConsent } from '../../access/consent-filter.ts';
import { formatRecordCursor, parseRecordCursor } from '../../federation/snapshots.ts';
import { compartmentTypes } from '../compartment.ts';
import type { FhirContext, FhirRequest, FhirResponse } from '../context.ts';
import { errors, type OperationOutcome } from '../outcome.ts';
import { assertId, unknownResource, type EverythingCursor } from '../repository.ts';
import { parseVersion } from '../resource-version.ts';
import { MAX_PAGE_SIZE, parseCount } from '../search/query.ts';
import { requireAccess, supportedParams } from './common.ts';
import { accessIfAny } from './authorization.ts';

/** Whether `federated=true` asks for the federated record (`false` or absent: the local one; else 400). */
export function isFederated(req: FhirRequest): boolean {
  const values = req.query.filter(([k]) => k === 'federated').map(([, v]) => v);
  if (values.some((v) => v !== 'true' && v !== 'false') || new Set(values).size > 1) throw errors.badRequest('federated must be true or false');
  return values[0] === 'true';
}

function federationOf(ctx: FhirContext): FederatedRecordPort {
  if (!ctx.federation) throw errors.notSupported('federation is not configured on this gateway (no consortium federation)');
  return ctx.federation;
}

/** `system|value` (the first `|` separates them; the value may hold more). The message never echoes it. */
function parseIdentifier(value: string): { system: string; value: string } {
  const bar = value.indexOf('|');
  if (bar <= 0 || bar === value.length - 1) throw errors.badRequest('identifier must be system|value, both present');
  return { system: value.slice(0, bar), value: value.slice(bar + 1) };
}

/**
 * The caller's own part: every page of local $everything for these patients, as the user may see it, and,
 * when the user states a purpose, as the patients' Consents here let them see it (a local request that states
 * a purpose is under Consent, docs/federation.md "Local requests").
 */
async function localRecord(req: FhirRequest, ctx: FhirContext, patientIds: string[], consent: RequestConsent | undefined): Promise<LocalEntry[]> {
  const types = compartmentTypes().filter((t) => accessIfAny(req, t, 'r') !== undefined);
  const canInclude = (type: string) => accessIfAny(req, type, 'r')?.kind === 'all';
  const entries: LocalEntry[] = [];
  for (const patientId of patientIds) {
    let cursor: EverythingCursor | undefined;
    do {
      const page = await ctx.repo.everything(patientId, { types, limit: MAX_PAGE_SIZE, cursor, canInclude });
      if (consent) [page.versions, page.included] = await Promise.all([consent.filter(page.versions), consent.filter(page.included)]);
      for (const v of keepInCompartment('everything', page.versions, patientId)) {
        if (v.json) entries.push({ type: v.type, id: v.id, json: v.json, commitment: v.digest, mode: 'match' });
      }
      for (const v of page.included) if (v.json) entries.push({ type: v.type, id: v.id, json: v.json, commitment: v.digest, mode: 'include' });
      cursor = page.nextCursor;
    } while (cursor);
  }
  return entries;
}

/** `Patient/[id]/$everything?federated=true` (id given) or `Patient/$everything?identifier=…` (no id). */
export async function federatedEverything(req: FhirRequest, ctx: FhirContext, id?: string): Promise<FhirResponse> {
  const federation = federationOf(ctx);
  const access = requireAccess(req, 'Patient', 'r');
  const params = supportedParams(req, ['federated', '_count', '_cursor', ...(id === undefined ? ['identifier'] : [])], '$everything?federated=true');
  const value = (name: string) => params.filter(([k]) => k === name).map(([, v]) => v);
  if (value('_count').length > 1 || value('_cursor').length > 1 || value('identifier').length > 1) throw errors.badRequest('_count, _cursor and identifier may each be given once');
  const count = value('_count').length ? parseCount(value('_count')[0], false) : MAX_PAGE_SIZE;
  // A federated request always has a purpose: treatment unless the user states another. Only a stated one puts
  // the local part under the Consents here too (as any local request stating a purpose).
  const consent = requestConsent(req, ctx);
  const stated = statedPurpose(req) ?? { purpose: 'TREAT' };
  if (id !== undefined) {
    assertId(id);
    // Decided before any read: the same answer whether or not the other patient exists.
    if (access.kind === 'patient' && access.patientId !== id) throw unknownResource('Patient');
  } else if (access.kind === 'patient') {
    throw errors.forbidden('a patient-bound token asks for its own record: Patient/[id]/$everything?federated=true');
  }
  const binding = `${req.auth.subject}\0${id === undefined ? 'identifier' : `Patient/${id}`}\0${stated.purpose}`;
  const url = (cursor?: string) => {
    const path = id === undefined ? 'Patient/$everything' : `Patient/${id}/$everything`;
    const query = new URLSearchParams([...(id === undefined ? [] : [['federated', 'true']]), ['_count', String(count)], ...(cursor ? [['_cursor', cursor]] : [])]);
    return `${ctx.baseUrl}/${path}?${query}`;
  };
  const page = (record: MergedRecord, snapshot: string | undefined, offset: number, self: string): FhirResponse => {
    const next = snapshot && offset + count < record.entries.length ? url(formatRecordCursor(snapshot, offset + count)) : undefined;
    return { status: 200, body: recordPage(record, offset, count, { self, next }) };
  };

  const cursorValue = value('_cursor')[0];
  if (cursorValue !== undefined) {
    const cursor = parseRecordCursor(cursorValue);
    const kept = cursor && federation.kept(cursor.id, binding);
    if (!cursor || !kept) throw errors.badRequest('_cursor is unknown or expired: ask for the record again without it');
    return page(kept, cursor.id, cursor.offset, url(cursorValue));
  }

  let target: FederatedTarget;
  if (id !== undefined) {
    target = { kind: 'patient', patientId: id, patient: parseVersion(await ctx.repo.read('Patient', id)) };
  } else {
    const identifier = value('identifier');
    if (identifier.length === 0) throw errors.badRequest('Patient/$everything at the type level needs identifier=system|value');
    target = { kind: 'identifier', ...parseIdentifier(identifier[0]) };
  }
  const { record } = await federation.everything({
    target,
    // Tokens carry no role claim yet: every user asks as a clinician (the assertion's default role).
    requester: { sub: req.auth.subject, role: 'clinician', pou: stated.purpose, ...(stated.btgReason ? { btg: stated.btgReason } : {}) },
    baseUrl: ctx.baseUrl,
    readLocal: (patientIds) => localRecord(req, ctx, patientIds, consent),
    canRead: (type) => accessIfAny(req, type, 'r') !== undefined,
  });
  if (consent) withLocalConsent(record, consent);
  const snapshot = record.entries.length > count ? federation.keep(binding, record) : undefined;
  const self = id === undefined ? `${ctx.baseUrl}/Patient/$everything?${new URLSearchParams(params)}` : url();
  return { ...page(record, snapshot, 0, self), ...(consent && { disclosure: consent.facts() }) };
}

/** Adds what the local Consents withheld (or break-the-glass opened) to the record's outcome. */
function withLocalConsent(record: MergedRecord, consent: RequestConsent): void {
  const issues = consent.outcome().flatMap((e) => (e.resource as OperationOutcome).issue);
  if (issues.length === 0) return;
  record.outcome = { resourceType: 'OperationOutcome', issue: [...issues, ...(record.outcome?.issue ?? [])] };
}
