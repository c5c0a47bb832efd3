import { authorize, type Access } from '../../access/policy.ts';
import type { Handler } from '../context.ts';
import { serializeBundle } from '../bundle-json.ts';
import { compartmentTypes } from '../compartment.ts';
import { FhirError, errors } from '../outcome.ts';
import { assertId, unknownResource } from '../repository.ts';
import { MAX_PAGE_SIZE, sinceInstant } from '../search/query.ts';
import { requireAccess } from './common.ts';

/** $everything returns whole records: one page holds up to MAX_PAGE_SIZE resources unless _count asks for fewer. */
function parseEverythingParams(query: Array<[string, string]>) {
  const out: { since?: string; types?: string[]; limit: number; cursor?: { typeIndex: number; afterId: string }; applied: Array<[string, string]> } = {
    limit: MAX_PAGE_SIZE,
    applied: [],
  };
  for (const [key, value] of query) {
    if (key === '_count') {
      if (!/^\d+$/.test(value) || Number(value) < 1) throw errors.badRequest('_count must be a positive integer');
      out.limit = Math.min(Number(value), MAX_PAGE_SIZE);
      out.applied.push([key, String(out.limit)]);
    } else if (key === '_since') {
      out.since = sinceInstant(value);
      out.applied.push([key, value]);
    } else if (key === '_type') {
      const types = value.split(',').map((t) => t.trim());
      const known = compartmentTypes();
      const outside = types.filter((t) => !known.includes(t));
      if (outside.length > 0) {
        throw errors.badRequest(`_type: ${outside.map((t) => `'${t.slice(0, 64)}'`).join(', ')} cannot be in a patient compartment`);
      }
      out.types = [...new Set([...(out.types ?? []), ...types])];
      out.applied.push([key, value]);
    } else if (key === '_cursor') {
      const m = /^(\d{1,3}):([A-Za-z0-9\-.]{1,64})$/.exec(value);
      if (!m) throw errors.badRequest('_cursor is malformed');
      out.cursor = { typeIndex: Number(m[1]), afterId: m[2] };
    } else if (key !== '_format' && key !== '_pretty') {
      throw errors.notSupported(`$everything parameter '${key.slice(0, 64)}' is not supported (supported: _since, _type, _count)`);
    }
  }
  return out;
}

/** The token's read access to a type, or undefined when it has none. */
function readAccess(req: Parameters<Handler>[0], type: string): Access | undefined {
  try {
    return authorize(req.auth, type, 'r');
  } catch (e) {
    if (e instanceof FhirError) return undefined;
    throw e;
  }
}

/**
 * GET [base]/Patient/[id]/$everything — the patient's whole compartment as a searchset Bundle, paged by
 * `next` links, plus (mode `include`) the resources each page refers to that no compartment holds, such as
 * the practitioners and organizations. Types the token may not read are left out (it needs read on Patient).
 */
export const everything: Handler = async (req, ctx, { id }) => {
  const access = requireAccess(req, 'Patient', 'r');
  assertId(id);
  if (access.kind === 'patient' && access.patientId !== id) throw unknownResource('Patient');
  const params = parseEverythingParams(req.query);
  const readable = compartmentTypes().filter((t) => (!params.types || params.types.includes(t)) && readAccess(req, t) !== undefined);
  const page = await ctx.repo.everything(id, {
    since: params.since,
    types: readable,
    limit: params.limit,
    cursor: params.cursor,
    // Outside the compartment a patient-bound token sees nothing, so only type-wide read access includes.
    canInclude: (type) => readAccess(req, type)?.kind === 'all',
  });
  const url = (extra: Array<[string, string]>) => {
    const qs = new URLSearchParams([...params.applied, ...extra]).toString();
    return `${ctx.baseUrl}/Patient/${id}/$everything${qs ? `?${qs}` : ''}`;
  };
  const link = [{ relation: 'self', url: url(params.cursor ? [['_cursor', `${params.cursor.typeIndex}:${params.cursor.afterId}`]] : []) }];
  if (page.nextCursor) link.push({ relation: 'next', url: url([['_cursor', page.nextCursor]]) });
  const entries = [
    ...page.versions.map((v) => ({ fullUrl: `${ctx.baseUrl}/${v.type}/${v.id}`, resourceJson: v.json, search: { mode: 'match' } })),
    ...page.included.map((v) => ({ fullUrl: `${ctx.baseUrl}/${v.type}/${v.id}`, resourceJson: v.json, search: { mode: 'include' } })),
  ];
  return { status: 200, body: serializeBundle({ resourceType: 'Bundle', type: 'searchset', link }, entries) };
};
