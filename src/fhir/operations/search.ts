import { restrictToPatient } from '../../access/compartment.ts';
import type { Handler } from '../context.ts';
import { serializeBundle } from '../bundle-json.ts';
import { requireAccess } from './common.ts';

function linkUrl(base: string, type: string, params: Array<[string, string]>): string {
  const qs = new URLSearchParams(params).toString();
  return `${base}/${type}${qs ? `?${qs}` : ''}`;
}

/** GET [base]/[type]?params — a searchset Bundle with `next` links that page by id. */
export const search: Handler = async (req, ctx, { type }) => {
  const access = requireAccess(req, type, 's');
  const restrict = access.kind === 'patient' ? (q: Parameters<typeof restrictToPatient>[0]) => restrictToPatient(q, access.patientId) : undefined;
  const page = await ctx.repo.search(type, req.query, restrict);
  const link = [{ relation: 'self', url: linkUrl(ctx.baseUrl, type, page.applied) }];
  if (page.nextCursor !== undefined) {
    link.push({ relation: 'next', url: linkUrl(ctx.baseUrl, type, [...page.applied, ['_cursor', page.nextCursor]]) });
  }
  const envelope: Record<string, unknown> = { resourceType: 'Bundle', type: 'searchset' };
  if (page.total !== undefined) envelope.total = page.total;
  envelope.link = link;
  const entries = page.versions.map((v) => ({
    fullUrl: `${ctx.baseUrl}/${v.type}/${v.id}`,
    resourceJson: v.json,
    search: { mode: 'match' },
  }));
  return { status: 200, body: serializeBundle(envelope, entries) };
};
