import type { FhirContext, FhirRequest, Handler } from '../context.ts';
import { errors } from '../outcome.ts';
import type { FhirResource, ResourceVersion, WriteSession } from '../repository.ts';
import type { Access } from '../../access/policy.ts';
import type { MatchScope } from '../write-session.ts';
import { conditionalCriteria, resourceBody, supportedParams, writeResponse } from './common.ts';
import { assertWritable, authorizeCreate, matchOne, matchScope } from './authorization.ts';

export interface WriteOutcome {
  status: number;
  version: ResourceVersion;
  message: string;
}

/** How a create finds what already exists: its If-None-Exist criteria, matched within the caller's scope. */
export interface IfNoneExist {
  criteria: string;
  scope: MatchScope;
}

/**
 * Creates `resource` as `access` may; with `ifNoneExist` (conditional create) an existing single match is
 * returned instead (200), and several matches fail with 412. `id` is the server-assigned id to use, if
 * preassigned; `existingId` an If-None-Exist match already found (bundles match before they write).
 */
export async function createResource(
  session: WriteSession,
  resource: FhirResource,
  access: Access,
  options: { ifNoneExist?: IfNoneExist; id?: string; existingId?: string } = {},
): Promise<WriteOutcome> {
  const type = resource.resourceType;
  assertWritable(access, type, resource);
  const existingId = options.ifNoneExist
    ? await matchOne(session, type, options.ifNoneExist.criteria, options.ifNoneExist.scope, 'If-None-Exist')
    : options.existingId;
  if (existingId !== undefined) {
    const existing = (await session.current(type, existingId))!;
    return { status: 200, version: existing, message: `${type}/${existing.id} already exists; nothing was created` };
  }
  const version = await session.create(resource, options.id);
  return { status: 201, version, message: `created ${type}/${version.id}` };
}

async function createWith(req: FhirRequest, ctx: FhirContext, type: string, criteria: string | undefined) {
  const access = authorizeCreate(req, type, criteria !== undefined);
  const resource = resourceBody(req.body, type);
  const ifNoneExist = criteria === undefined ? undefined : { criteria, scope: matchScope(req, 'conditional create') };
  const result = await ctx.repo.write((session) => createResource(session, resource, access, { ifNoneExist }));
  return writeResponse(result.status, result.version, req, ctx, result.message);
}

/** The If-None-Exist header's criteria, if any. */
function ifNoneExistCriteria(req: FhirRequest): string | undefined {
  if (req.ifNoneExist === undefined) return undefined;
  return conditionalCriteria(req, [...new URLSearchParams(req.ifNoneExist)], 'If-None-Exist');
}

/** POST [base]/[type], conditional with If-None-Exist */
export const create: Handler = async (req, ctx, { type }) => {
  supportedParams(req, [], 'create');
  return createWith(req, ctx, type, ifNoneExistCriteria(req));
};

/**
 * POST [base]/[type]?[criteria]: a conditional create with the criteria in the URL, as If-None-Exist (fhirpy's
 * get_or_create sends it). Both at once must agree.
 */
export const createConditional: Handler = async (req, ctx, { type }) => {
  const criteria = conditionalCriteria(req, req.query, 'conditional create');
  const header = ifNoneExistCriteria(req);
  if (header !== undefined && criteria !== '' && header !== criteria) {
    throw errors.badRequest('If-None-Exist and the URL query hold different criteria; send them in one of the two');
  }
  // Under lenient handling the query may hold nothing but ignored parameters: then it is a plain create.
  return createWith(req, ctx, type, criteria || header);
};
