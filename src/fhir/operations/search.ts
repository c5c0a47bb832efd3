import { inPatientCompartment, reportOutsideCompartment, restrictToPatient } from '../../access/compartment.ts';
import { requestConsent, type RequestConsent } from '../../access/consent-filter.ts';
import type { Access } from '../../access/policy.ts';
import type { StoreQuery } from '../../vault/store.ts';
import type { FhirContext, FhirRequest, Handler } from '../context.ts';
import { serializeBundle } from '../bundle-json.ts';
import { compartmentParams } from '../compartment.ts';
import { errors, FhirError, operationOutcome } from '../outcome.ts';
import { assertId, formatTypeCursor, parseTypeCursor, type ResourceVersion, type SearchPage } from '../repository.ts';
import { parseSearch } from '../search/query.ts';
import { knownResourceTypes, isKnownResourceType } from '../validation/index.ts';
import { requireAccess, searchEntry, supportedParams } from './common.ts';
import { accessIfAny, accessRestriction, searchRestriction, versionVisible, withinAccess, type Restriction } from './authorization.ts';

/** Whether a match lies in the compartment the search was narrowed to: `access`'s, and `patientId`'s if given. */
type MatchCheck = (v: ResourceVersion, resource: () => Record<string, unknown>) => boolean;

function compartmentCheck(access: Access, interaction: string, patientId?: string): MatchCheck {
  return (v, resource) => {
    if (!withinAccess(access, v, interaction, resource)) return false;
    if (patientId === undefined || inPatientCompartment(v.type, resource(), patientId)) return true;
    reportOutsideCompartment(interaction, v);
    return false;
  };
}

/** `[base]/[path]?params`, for self and next links. */
function linkUrl(base: string, path: string, params: Array<[string, string]>): string {
  const qs = new URLSearchParams(params).toString();
  return `${base}${path ? `/${path}` : ''}${qs ? `?${qs}` : ''}`;
}

/**
 * A type search (at `path`, under `restrict`, its matches re-checked by `canSee`) as a searchset Bundle;
 * under a stated purpose, what the patients' Consents withhold is left out and counted in an outcome entry.
 */
async function typeSearch(
  req: FhirRequest, ctx: FhirContext, type: string, path: string, restrict: Restriction, canSee: MatchCheck, consent?: RequestConsent,
): Promise<string> {
  const page: SearchPage = await ctx.repo.search(type, req.query, restrict, {
    baseUrl: ctx.baseUrl,
    canSee,
    handling: req.preferHandling,
    // Chained parameters and _revinclude search other types: the caller needs search access to them too.
    restrictFor: (other) => searchRestriction(req, other),
    canInclude: (v: ResourceVersion) => {
      const access = accessIfAny(req, v.type, 'r');
      return access !== undefined && versionVisible(access, v);
    },
  });
  const link = [{ relation: 'self', url: linkUrl(ctx.baseUrl, path, page.applied) }];
  if (page.nextCursor !== undefined) {
    link.push({ relation: 'next', url: linkUrl(ctx.baseUrl, path, [...page.applied, ['_cursor', page.nextCursor]]) });
  }
  const [matches, included] = consent ? [await consent.filter(page.versions), await consent.filter(page.included)] : [page.versions, page.included];
  const entries = [...matches.map((v) => searchEntry(ctx, v, 'match')), ...included.map((v) => searchEntry(ctx, v, 'include'))];
  if (consent) entries.push(...consent.outcome());
  if (page.warnings.length > 0) {
    entries.push({
      resource: operationOutcome(page.warnings.map((w) => ({ severity: 'warning', code: 'incomplete', diagnostics: w }))),
      search: { mode: 'outcome' },
    });
  }
  return serializeBundle({ resourceType: 'Bundle', type: 'searchset', total: page.total, link }, entries);
}

/**
 * GET (or POST …/_search) [base]/[type]?params — a searchset Bundle: the matches (search.mode 'match'),
 * then the `_include`d and `_revinclude`d resources the caller may read (search.mode 'include'), with
 * `total` and `next` links.
 */
export const search: Handler = async (req, ctx, { type }) => {
  const access = requireAccess(req, type, 's');
  const consent = requestConsent(req, ctx);
  const body = await typeSearch(req, ctx, type, type, accessRestriction(access), compartmentCheck(access, 'search'), consent);
  return { status: 200, body, disclosure: consent?.facts() };
};

/**
 * GET [base]/Patient/[id]/[type]?params — the search of `type` within the patient's compartment. A patient
 * that does not exist, or one a patient-bound token may not see, has an empty compartment: the answer
 * tells nothing about whether the patient exists.
 */
export const compartmentSearch: Handler = async (req, ctx, { id, type }) => {
  assertId(id);
  const access = requireAccess(req, type, 's');
  const tokenRestriction = accessRestriction(access);
  if (!compartmentParams().has(type)) throw errors.badRequest(`${type} resources are never in a patient compartment`);
  const restrict = (q: StoreQuery) => restrictToPatient(tokenRestriction ? tokenRestriction(q) : q, id);
  const canSee = compartmentCheck(access, 'compartment search', id);
  const consent = requestConsent(req, ctx);
  const body = await typeSearch(req, ctx, type, `Patient/${id}/${type}`, restrict, canSee, consent);
  return { status: 200, body, disclosure: consent?.facts() };
};

/** What a search across types accepts: store-native criteria and the paging and counting parameters. */
const SYSTEM_PARAMS = ['_type', '_id', '_lastUpdated', '_count', '_total', '_totalMethod', '_summary', '_cursor'];

/** The types a search across types covers, each with its restriction for the caller. */
function systemTypes(req: FhirRequest, typeParams: string[]): Array<{ type: string; restrict: Restriction; access: Access }> {
  if (typeParams.length > 0) {
    const types = [...new Set(typeParams.flatMap((v) => v.split(',').map((t) => t.trim())))];
    if (!types.every(isKnownResourceType)) throw errors.badRequest('_type: every value must be a FHIR R4 resource type');
    // Types named explicitly need search access (403 otherwise), as in a type search.
    return types.map((type) => {
      const access = requireAccess(req, type, 's');
      return { type, restrict: accessRestriction(access), access };
    });
  }
  // Without _type: every type the caller may search.
  return knownResourceTypes().flatMap((type) => {
    try {
      const access = requireAccess(req, type, 's');
      const restrict = accessRestriction(access);
      restrict?.({ type, clauses: [], lastUpdated: [], limit: 0 }); // throws for types outside a patient-bound token's reach
      return [{ type, restrict, access }];
    } catch (e) {
      if (e instanceof FhirError) return [];
      throw e;
    }
  });
}

/**
 * GET (or POST _search) [base]?_type=A,B&_id=…&_lastUpdated=… — a search across types on the criteria every
 * type shares, paged type after type (in `_type` order, else alphabetical) and by id within a type.
 */
export const systemSearch: Handler = async (req, ctx) => {
  const params = supportedParams(req, SYSTEM_PARAMS, 'a search across types');
  const consent = requestConsent(req, ctx);
  const types = systemTypes(req, params.filter(([k]) => k === '_type').map(([, v]) => v));
  const cursorValue = params.find(([k]) => k === '_cursor')?.[1];
  const cursor = cursorValue === undefined ? undefined : parseTypeCursor(cursorValue);
  // The shared criteria are type-independent: parsed once, then one query per type, narrowed for the caller.
  const parsed = parseSearch('Patient', params.filter(([k]) => k !== '_type' && k !== '_cursor'));
  const queries = types.map(({ type, restrict }) => {
    const query = { ...parsed.query, type };
    return restrict ? restrict(query) : query;
  });
  const page = await ctx.repo.searchAcross(queries, {
    limit: parsed.countOnly ? 0 : parsed.query.limit,
    cursor,
    withTotal: parsed.total !== 'none' || parsed.countOnly,
  });
  const applied: Array<[string, string]> = [...params.filter(([k]) => k === '_type'), ...parsed.applied];
  const link = [{ relation: 'self', url: linkUrl(ctx.baseUrl, '', [...applied, ...(cursorValue ? [['_cursor', cursorValue] as [string, string]] : [])]) }];
  if (page.nextCursor) {
    link.push({ relation: 'next', url: linkUrl(ctx.baseUrl, '', [...applied, ['_cursor', formatTypeCursor(page.nextCursor)]]) });
  }
  const accessOf = new Map(types.map(({ type, access }) => [type, access]));
  const visible = page.versions.filter((v) => withinAccess(accessOf.get(v.type)!, v, 'system search'));
  const entries = (consent ? await consent.filter(visible) : visible).map((v) => searchEntry(ctx, v, 'match'));
  if (consent) entries.push(...consent.outcome());
  const body = serializeBundle({ resourceType: 'Bundle', type: 'searchset', total: page.total, link }, entries);
  return { status: 200, body, disclosure: consent?.facts() };
};
