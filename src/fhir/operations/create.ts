import type { FhirContext, FhirRequest, Handler } from '../context.ts';
import { errors } from '../outcome.ts';
import type { FhirResource, ResourceVersion, WriteSession } from '../repository.ts';
import { assertAccessible, requireAccess, resourceBody, writeResponse } from './common.ts';

export interface WriteOutcome {
  status: number;
  version: ResourceVersion;
  message: string;
}

/**
 * Creates `resource`; with `ifNoneExist` (conditional create) an existing single match is returned
 * instead (200), and several matches fail with 412. `id` is the server-assigned id to use, if preassigned.
 */
export async function createResource(
  session: WriteSession,
  resource: FhirResource,
  ifNoneExist?: string,
  id?: string,
): Promise<WriteOutcome> {
  const type = resource.resourceType;
  if (ifNoneExist !== undefined) {
    const matches = await session.findMatches(type, ifNoneExist);
    if (matches.length > 1) throw errors.preconditionFailed(`If-None-Exist matched more than one ${type}`, 'multiple-matches');
    if (matches.length === 1) {
      const existing = (await session.current(type, matches[0]))!;
      return { status: 200, version: existing, message: `${type}/${existing.id} already exists; nothing was created` };
    }
  }
  const version = await session.create(resource, id);
  return { status: 201, version, message: `created ${type}/${version.id}` };
}

/** POST [base]/[type] */
export const create: Handler = async (req: FhirRequest, ctx: FhirContext, { type }) => {
  const access = requireAccess(req, type, 'c');
  const resource = resourceBody(req.body, type);
  assertAccessible(access, type, resource);
  const result = await ctx.repo.write((session) => createResource(session, resource, req.ifNoneExist));
  return writeResponse(result.status, result.version, req, ctx, result.message);
};
