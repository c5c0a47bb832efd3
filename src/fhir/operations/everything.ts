import { keepInCompartment } from '../../access/compartment.ts';
import type { FhirRequest, Handler } from '../context.ts';
import { serializeBundle } from '../bundle-json.ts';
import { compartmentTypes } from '../compartment.ts';
import { errors } from '../outcome.ts';
import { assertId, formatTypeCursor, parseTypeCursor, unknownResource, type EverythingCursor } from '../repository.ts';
import { MAX_PAGE_SIZE, parseCount, sinceInstant } from '../search/query.ts';
import { requireAccess, searchEntry } from './common.ts';
import { accessIfAny } from './authorization.ts';
import { consentFilter } from '../../access/consent-local.ts';
import { federatedEverything, isFederated } from './federated.ts';

const PARAMS = ['_since', '_type', '_count'];
const REFERENCED_CURSOR = /^r:((?:[A-Z][A-Za-z]{0,63}\/[A-Za-z0-9\-.]{1,64})?)$/;

/** `typeIndex:afterId` among the compartment resources, `r:Type/id` among the referenced ones. */
function parseCursor(value: string): EverythingCursor {
  if (!value.startsWith('r:')) return { phase: 'compartment', ...parseTypeCursor(value) };
  const m = REFERENCED_CURSOR.exec(value);
  if (!m) throw errors.badRequest('_cursor is malformed');
  return { phase: 'referenced', afterKey: m[1] };
}

function formatCursor(c: EverythingCursor): string {
  return c.phase === 'compartment' ? formatTypeCursor(c) : `r:${c.afterKey}`;
}

/**
 * The operation's parameters: from the query, and for POST also from a Parameters body (valueInstant,
 * valueDateTime, valueString, valueCode, valueInteger, valuePositiveInt). Unknown ones follow Prefer: handling.
 */
function parameterPairs(req: FhirRequest): Array<[string, string]> {
  const pairs = [...req.query];
  if (req.method !== 'POST' || req.body === undefined) return pairs;
  const body = req.body as { resourceType?: unknown; parameter?: unknown };
  if (typeof body !== 'object' || body === null || body.resourceType !== 'Parameters') {
    throw errors.badRequest('the body of POST $everything must be a Parameters resource');
  }
  if (body.parameter !== undefined && !Array.isArray(body.parameter)) throw errors.badRequest('Parameters.parameter must be an array');
  for (const p of (body.parameter ?? []) as Array<Record<string, unknown> | null>) {
    const name = p?.name;
    if (typeof name !== 'string') throw errors.badRequest('every Parameters.parameter needs a name');
    const valueKey = Object.keys(p!).find((k) => k.startsWith('value'));
    const value = valueKey === undefined ? undefined : p![valueKey];
    if (typeof value !== 'string' && typeof value !== 'number') {
      throw errors.badRequest(`Parameters.parameter '${name.slice(0, 64)}' needs a primitive value`);
    }
    pairs.push([name, String(value)]);
  }
  return pairs;
}

interface EverythingParams {
  since?: string;
  types?: string[];
  limit: number;
  cursor?: EverythingCursor;
  applied: Array<[string, string]>;
}

/** $everything returns whole records: one page holds up to MAX_PAGE_SIZE entries unless _count asks for fewer. */
function parseEverythingParams(req: FhirRequest): EverythingParams {
  const out: EverythingParams = { limit: MAX_PAGE_SIZE, applied: [] };
  for (const [key, value] of parameterPairs(req)) {
    if (key === '_count') {
      out.limit = parseCount(value, false);
      out.applied.push([key, String(out.limit)]);
    } else if (key === '_since') {
      out.since = sinceInstant(value);
      out.applied.push([key, value]);
    } else if (key === '_type') {
      const types = value.split(',').map((t) => t.trim());
      const known = compartmentTypes();
      if (!types.every((t) => known.includes(t))) throw errors.badRequest('_type: every type must be one that a patient compartment can hold');
      out.types = [...new Set([...(out.types ?? []), ...types])];
      out.applied.push([key, value]);
    } else if (key === '_cursor') {
      out.cursor = parseCursor(value);
    } else if (key !== 'federated' && key !== '_format' && key !== '_pretty' && req.preferHandling !== 'lenient') {
      throw errors.notSupported(
        `$everything parameter '${key.slice(0, 64)}' is not supported (supported: ${PARAMS.join(', ')}); send Prefer: handling=lenient to have it ignored`,
      );
    }
  }
  return out;
}

/**
 * GET or POST [base]/Patient/[id]/$everything — the patient's whole compartment as a searchset Bundle,
 * paged by `next` links, then (mode `include`) the resources it refers to that no compartment holds, such
 * as the practitioners and organizations, each once. Types the token may not read are left out (it needs
 * read on Patient).
 */
export const everything: Handler = async (req, ctx, { id }) => {
  if (isFederated(req)) return federatedEverything(req, ctx, id);
  const access = requireAccess(req, 'Patient', 'r');
  assertId(id);
  // Decided before any read: the same answer whether or not the other patient exists.
  if (access.kind === 'patient' && access.patientId !== id) throw unknownResource('Patient');
  const params = parseEverythingParams(req);
  const readable = compartmentTypes().filter((t) => (!params.types || params.types.includes(t)) && accessIfAny(req, t, 'r') !== undefined);
  // A request that states a purpose of use gets what the patient's Consent allows (access/consent-local.ts).
  const consent = await consentFilter(req, ctx, id);
  const page = await ctx.repo.everything(id, {
    since: params.since,
    types: consent ? readable.filter((t) => consent.permits(t)) : readable,
    limit: params.limit,
    cursor: params.cursor,
    // Outside the compartment a patient-bound token sees nothing, so only type-wide read access includes.
    canInclude: (type) => accessIfAny(req, type, 'r')?.kind === 'all' && (consent?.permits(type) ?? true),
  });
  const url = (cursor?: EverythingCursor) => {
    const qs = new URLSearchParams([...params.applied, ...(cursor ? [['_cursor', formatCursor(cursor)]] : [])]).toString();
    return `${ctx.baseUrl}/Patient/${id}/$everything${qs ? `?${qs}` : ''}`;
  };
  const link = [{ relation: 'self', url: url(params.cursor) }];
  if (page.nextCursor) link.push({ relation: 'next', url: url(page.nextCursor) });
  // The index chose the compartment's resources; the decrypted content must agree (else: forged index terms).
  const matches = keepInCompartment('everything', page.versions, id);
  const entries = [...matches.map((v) => searchEntry(ctx, v, 'match')), ...page.included.map((v) => searchEntry(ctx, v, 'include'))];
  if (consent) entries.push(...consent.outcome(readable));
  const body = serializeBundle({ resourceType: 'Bundle', type: 'searchset', total: page.total, link }, entries);
  return { status: 200, body, disclosure: consent?.facts(readable) };
};

/** GET [base]/Patient/$everything?identifier=system|value: the federated record of whoever carries it. */
export const everythingByIdentifier: Handler = async (req, ctx) => federatedEverything(req, ctx);
