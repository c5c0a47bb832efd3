/**
 * The holder's side of the federated record: `GET /federation/fhir/Patient/$everything?_count&_cursor`
 * (docs/federation.md, "The federated record"). The peer and its assertion are already checked by the
 * channel; the link token is the assertion's `link`.
 *
 * This hospital's Patients carrying the link token → each one's consent decision for the asking member,
 * its user, role and purpose → the current versions of their compartments of the permitted types, paged,
 * each with its commitment salt and anchor location (anchor-extension.ts). Versions not anchored yet are
 * left out and counted: the caller could not verify them. No type permitted for any patient: 403.
 */
import { keepInCompartment } from '../../access/compartment.ts';
import type { BundleEntryParts } from '../../fhir/bundle-json.ts';
import { serializeBundle } from '../../fhir/bundle-json.ts';
import { compartmentTypes } from '../../fhir/compartment.ts';
import type { FhirResponse } from '../../fhir/context.ts';
import { errors, FhirError } from '../../fhir/outcome.ts';
import { parseTypeCursor, type FhirRepository, type ResourceVersion, type TypeCursor } from '../../fhir/repository.ts';
import { MAX_PAGE_SIZE, parseCount } from '../../fhir/search/query.ts';
import { anchorExtension } from '../anchor-extension.ts';
import { FEDERATION_CODES, NOT_YET_ANCHORED } from '../remote-check.ts';
import type { ConsentPort, ConsentVerdict, FederationAccessLogPort, LinkedPatientsPort, Requester } from '../ports.ts';

/** What the channel hands a holder operation (a subset of CHANNEL's FederationRequest). */
export interface HolderRequest {
  /** The asking member (its TLS certificate's, equal to the assertion's iss). */
  peer: string;
  assertion: Requester & { link: string };
  query: Array<[string, string]>;
}

export interface HolderDeps {
  repo: FhirRepository;
  linkedPatients: LinkedPatientsPort;
  consent: ConsentPort;
  accessLog?: FederationAccessLogPort;
  /** This listener's FHIR base as peers reach it, e.g. https://h2.example:9443/federation/fhir. */
  baseUrl: string;
  now?: () => Date;
}

/** A position: the patient's index among the sorted linked patients, then within its compartment. */
interface HolderCursor {
  patient: number;
  within?: TypeCursor;
}

const CURSOR = /^(\d{1,4})(?::(.+))?$/;

function parseCursor(value: string): HolderCursor {
  const m = CURSOR.exec(value);
  if (!m) throw errors.badRequest('_cursor is malformed');
  return { patient: Number(m[1]), ...(m[2] !== undefined ? { within: parseTypeCursor(m[2]) } : {}) };
}

function formatCursor(c: HolderCursor): string {
  return c.within ? `${c.patient}:${c.within.typeIndex}:${c.within.afterId}` : String(c.patient);
}

function parseParams(query: Array<[string, string]>): { limit: number; cursor?: HolderCursor } {
  let limit = MAX_PAGE_SIZE;
  let cursor: HolderCursor | undefined;
  for (const [key, value] of query) {
    if (key === '_count') limit = parseCount(value, false);
    else if (key === '_cursor') cursor = parseCursor(value);
    // The name is the peer's text, not echoed: it may hold anything.
    else throw errors.notSupported('only _count and _cursor are supported here');
  }
  return { limit, cursor };
}

export async function holderEverything(req: HolderRequest, deps: HolderDeps): Promise<FhirResponse> {
  const { limit, cursor } = parseParams(req.query);
  const { sub, role, pou, btg, link } = req.assertion;
  const patients = [...(await deps.linkedPatients.patientsWithLinkToken(link))].sort();
  if (patients.length === 0) throw errors.notFound('no patient here carries this link token');
  const at = deps.now?.() ?? new Date();
  const types = compartmentTypes();
  const verdicts: ConsentVerdict[] = await Promise.all(
    patients.map((id) => deps.consent.decide(id, { actor: { member: req.peer, practitioner: sub, role }, purpose: pou, btgReason: btg, resourceTypes: types, at })),
  );
  const permitted = verdicts.map((v) => types.filter((t) => v.permits(t)));
  const record = (status: number, disclosed: string[]) =>
    deps.accessLog?.recordDisclosure({
      peer: req.peer,
      user: sub,
      role,
      purpose: pou,
      breakTheGlass: verdicts.some((v) => v.breakTheGlass),
      consents: [...new Set(verdicts.flatMap((v) => (v.consent ? [v.consent] : [])))],
      disclosed,
      status,
    });
  if (permitted.every((p) => p.length === 0)) {
    await logged(record(403, []));
    throw errors.forbidden("the patient's consent does not permit this disclosure");
  }

  const versions: ResourceVersion[] = [];
  let next: HolderCursor | undefined;
  let index = cursor?.patient ?? 0;
  let within = cursor?.within;
  while (index < patients.length && versions.length < limit) {
    const page = permitted[index].length === 0 ? { versions: [] } : await compartmentPage(deps.repo, patients[index], permitted[index], limit - versions.length, within);
    versions.push(...page.versions);
    if (page.nextCursor) {
      next = { patient: index, within: page.nextCursor };
      break;
    }
    index++;
    within = undefined;
  }
  if (!next && index < patients.length) next = { patient: index };

  const entries: BundleEntryParts[] = [];
  let notYetAnchored = 0;
  for (const v of versions) {
    if (!v.anchor || !v.salt || !v.json) {
      notYetAnchored++;
      continue;
    }
    entries.push({
      extension: [anchorExtension(Buffer.from(v.salt).toString('hex'), v.anchor)],
      fullUrl: `${deps.baseUrl}/${v.type}/${v.id}`,
      resourceJson: v.json,
      search: { mode: 'match' },
    });
  }
  if (notYetAnchored > 0) entries.push({ resource: notYetAnchoredOutcome(notYetAnchored), search: { mode: 'outcome' } });
  await logged(record(200, versions.filter((v) => v.anchor && v.salt).map((v) => `${v.type}/${v.id}/_history/${v.versionId}`)));

  const url = (c?: HolderCursor) => {
    const qs = new URLSearchParams([['_count', String(limit)], ...(c ? [['_cursor', formatCursor(c)]] : [])]);
    return `${deps.baseUrl}/Patient/$everything?${qs}`;
  };
  const links = [{ relation: 'self', url: url(cursor) }, ...(next ? [{ relation: 'next', url: url(next) }] : [])];
  return { status: 200, body: serializeBundle({ resourceType: 'Bundle', type: 'searchset', link: links }, entries) };
}

/** One patient's compartment, the permitted types only, as local $everything reads it (nothing outside it). */
async function compartmentPage(
  repo: FhirRepository,
  patientId: string,
  types: string[],
  limit: number,
  within: TypeCursor | undefined,
): Promise<{ versions: ResourceVersion[]; nextCursor?: TypeCursor }> {
  let page;
  try {
    page = await repo.everything(patientId, { types, limit, cursor: within && { phase: 'compartment', ...within }, canInclude: () => false });
  } catch (e) {
    // Deleted or erased since the ledger listed it: nothing of it leaves.
    if (e instanceof FhirError && (e.status === 404 || e.status === 410)) return { versions: [] };
    throw e;
  }
  // The index chose the compartment; the decrypted content must agree (else: forged index terms).
  const versions = keepInCompartment('federation-everything', page.versions, patientId);
  const nextCursor = page.nextCursor?.phase === 'compartment' ? { typeIndex: page.nextCursor.typeIndex, afterId: page.nextCursor.afterId } : undefined;
  return { versions, nextCursor };
}

function notYetAnchoredOutcome(count: number): object {
  return {
    resourceType: 'OperationOutcome',
    issue: [
      {
        severity: 'information',
        code: 'incomplete',
        details: { coding: [{ system: FEDERATION_CODES, code: NOT_YET_ANCHORED }], text: 'not yet anchored' },
        diagnostics: `${count} versions not yet anchored are left out; ask again shortly`,
      },
    ],
  };
}

/** No answer leaves before its access record is durable. */
async function logged(recording: Promise<void> | undefined): Promise<void> {
  await recording?.catch(() => {
    throw errors.accessLogUnavailable();
  });
}
