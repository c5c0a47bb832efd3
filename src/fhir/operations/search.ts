import { restrictToPatient } from '../../access/compartment.ts';
import type { StoreQuery } from '../../vault/store.ts';
import type { Handler } from '../context.ts';
import { serializeBundle, type BundleEntryParts } from '../bundle-json.ts';
import { operationOutcome } from '../outcome.ts';
import type { ResourceVersion } from '../repository.ts';
import { assertVersionAccessible, requireAccess } from './common.ts';

function linkUrl(base: string, type: string, params: Array<[string, string]>): string {
  const qs = new URLSearchParams(params).toString();
  return `${base}/${type}${qs ? `?${qs}` : ''}`;
}

/**
 * GET [base]/[type]?params — a searchset Bundle: the matches (search.mode 'match'), then the `_include`d
 * and `_revinclude`d resources the caller may read (search.mode 'include'), with `next` links.
 */
/** The narrowing a search of `type` needs for this token: its patient compartment, if patient-bound. */
function searchRestriction(req: Parameters<Handler>[0], type: string): ((q: StoreQuery) => StoreQuery) | undefined {
  const access = requireAccess(req, type, 's');
  return access.kind === 'patient' ? (q: StoreQuery) => restrictToPatient(q, access.patientId) : undefined;
}

export const search: Handler = async (req, ctx, { type }) => {
  const page = await ctx.repo.search(type, req.query, searchRestriction(req, type), {
    baseUrl: ctx.baseUrl,
    // Chained parameters and _revinclude search other types: the caller needs search access to them too.
    restrictFor: (other) => searchRestriction(req, other),
    canInclude: (v: ResourceVersion) => {
      try {
        assertVersionAccessible(requireAccess(req, v.type, 'r'), v);
        return true;
      } catch {
        return false;
      }
    },
  });
  const link = [{ relation: 'self', url: linkUrl(ctx.baseUrl, type, page.applied) }];
  if (page.nextCursor !== undefined) {
    link.push({ relation: 'next', url: linkUrl(ctx.baseUrl, type, [...page.applied, ['_cursor', page.nextCursor]]) });
  }
  const envelope: Record<string, unknown> = { resourceType: 'Bundle', type: 'searchset' };
  if (page.total !== undefined) envelope.total = page.total;
  envelope.link = link;
  const entries: BundleEntryParts[] = page.versions.map((v) => ({
    fullUrl: `${ctx.baseUrl}/${v.type}/${v.id}`,
    resourceJson: v.json,
    search: { mode: 'match' },
  }));
  for (const v of page.included) {
    entries.push({ fullUrl: `${ctx.baseUrl}/${v.type}/${v.id}`, resourceJson: v.json, search: { mode: 'include' } });
  }
  if (page.warnings.length > 0) {
    entries.push({
      resource: operationOutcome(page.warnings.map((w) => ({ severity: 'warning', code: 'incomplete', diagnostics: w }))),
      search: { mode: 'outcome' },
    });
  }
  return { status: 200, body: serializeBundle(envelope, entries) };
};
