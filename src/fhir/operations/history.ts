import { requestConsent, type RequestConsent } from '../../access/consent-filter.ts';
import { authorize, type Access } from '../../access/policy.ts';
import { ACCESS_LOG_TYPE } from '../../access/reserved.ts';
import type { FhirContext, FhirRequest, Handler } from '../context.ts';
import { serializeBundle } from '../bundle-json.ts';
import { errors } from '../outcome.ts';
import { assertId, unknownResource, type ResourceVersion } from '../repository.ts';
import { DEFAULT_PAGE_SIZE, parseCount, sinceInstant } from '../search/query.ts';
import { requireAccess, supportedParams } from './common.ts';
import { accessIfAny, readAccessible, versionVisible } from './authorization.ts';

interface HistoryParams {
  since?: string;
  beforeSeq?: number;
  limit: number;
  applied: Array<[string, string]>;
}

function parseHistoryParams(req: FhirRequest): HistoryParams {
  const out: HistoryParams = { limit: DEFAULT_PAGE_SIZE, applied: [] };
  for (const [key, value] of supportedParams(req, ['_count', '_since', '_cursor'], 'history')) {
    if (key === '_count') {
      out.limit = parseCount(value);
      out.applied.push([key, String(out.limit)]);
    } else if (key === '_since') {
      out.since = sinceInstant(value);
      out.applied.push([key, value]);
    } else if (key === '_cursor') {
      if (!/^\d{1,15}$/.test(value)) throw errors.badRequest('_cursor is malformed'); // 15 digits stay below 2^53
      out.beforeSeq = Number(value);
    }
  }
  return out;
}

async function historyBundle(
  req: FhirRequest,
  ctx: FhirContext,
  access: Access,
  path: string,
  type?: string,
  id?: string,
  consent?: RequestConsent,
): Promise<string> {
  const params = parseHistoryParams(req);
  const page = await ctx.repo.history({
    type, id, since: params.since, beforeSeq: params.beforeSeq, limit: params.limit,
  });
  const { nextCursor } = page;
  // A resource may have moved into the token's compartment: its versions from before are someone else's.
  // System history spans every type, the access log included, which a wildcard scope does not cover.
  const visible = page.versions.filter((v) => versionVisible(access, v) && (type !== undefined || accessIfAny(req, v.type, 'r') !== undefined));
  // Under a stated purpose, each version as its own content places it: the Consents of its patients decide.
  const versions = consent ? await consent.filter(visible) : visible;
  // The count of all versions would tell how many were left out.
  const total = access.kind === 'patient' || (type === undefined && accessIfAny(req, ACCESS_LOG_TYPE, 'r') === undefined) ? undefined : page.total;
  const self = (extra: Array<[string, string]>) => {
    const qs = new URLSearchParams([...params.applied, ...extra]).toString();
    return `${ctx.baseUrl}${path}${qs ? `?${qs}` : ''}`;
  };
  const link = [{ relation: 'self', url: self([]) }];
  if (nextCursor !== undefined) link.push({ relation: 'next', url: self([['_cursor', String(nextCursor)]]) });
  const entries = versions.map((v) => {
    const url = `${v.type}/${v.id}`;
    const method = v.deleted ? 'DELETE' : v.versionId === 1 ? 'POST' : 'PUT';
    return {
      fullUrl: `${ctx.baseUrl}/${url}`,
      resourceJson: v.json,
      request: { method, url: method === 'POST' ? v.type : url },
      // A DELETE answers 200 with an OperationOutcome, so its entry says 200 too.
      response: {
        status: v.versionId === 1 && !v.deleted ? '201 Created' : '200 OK',
        etag: `W/"${v.versionId}"`,
        lastModified: v.lastUpdated,
      },
    };
  });
  return serializeBundle({ resourceType: 'Bundle', type: 'history', total, link }, [...entries, ...(consent?.outcome() ?? [])]);
}

/** GET [base]/[type]/[id]/_history */
export const instanceHistory: Handler = async (req, ctx, { type, id }) => {
  const access = requireAccess(req, type, 'r');
  assertId(id);
  const consent = requestConsent(req, ctx);
  const current = await ctx.repo.store.current(type, id);
  if (!current) throw unknownResource(type);
  if (access.kind === 'patient') await readAccessible(ctx, access, type, id);
  const body = await historyBundle(req, ctx, access, `/${type}/${id}/_history`, type, id, consent);
  return { status: 200, body, disclosure: consent?.facts() };
};

/** GET [base]/[type]/_history */
export const typeHistory: Handler = async (req, ctx, { type }) => {
  const access = requireAccess(req, type, 'r');
  if (access.kind === 'patient') throw errors.forbidden('type history needs a user/ or system/ scope');
  const consent = requestConsent(req, ctx);
  return { status: 200, body: await historyBundle(req, ctx, access, `/${type}/_history`, type, undefined, consent), disclosure: consent?.facts() };
};

/** GET [base]/_history */
export const systemHistory: Handler = async (req, ctx) => {
  const access = authorize(req.auth, '*', 'r');
  if (access.kind === 'patient') throw errors.forbidden('system history needs a user/ or system/ scope');
  const consent = requestConsent(req, ctx);
  return { status: 200, body: await historyBundle(req, ctx, access, '/_history', undefined, undefined, consent), disclosure: consent?.facts() };
};
