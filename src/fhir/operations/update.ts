import { randomUUID } from 'node:crypto';
import type { FhirContext, FhirRequest, Handler } from '../context.ts';
import { errors } from '../outcome.ts';
import type { FhirResource, WriteSession } from '../repository.ts';
import type { Access } from '../../access/policy.ts';
import type { MatchScope } from '../write-session.ts';
import type { WriteOutcome } from './create.ts';
import { conditionalCriteria, parseIfMatch, resourceBody, supportedParams, writeResponse } from './common.ts';
import { assertWritable, assertWritableVersion, authorizeUpdate, matchOne, matchScope } from './authorization.ts';

/**
 * Update as `access` may, or create with the client's id when the resource does not exist (update-as-create).
 * A patient-bound token updates only what its compartment alone holds, answers anything else as missing,
 * and has no update-as-create: creating under an id of its choice would tell whether another compartment
 * holds that id. `serverAssigned` marks an id the server chose (a conditional update that matched nothing).
 */
export async function updateResource(
  session: WriteSession,
  resource: FhirResource,
  id: string,
  access: Access,
  ifMatch?: number,
  serverAssigned = false,
): Promise<WriteOutcome> {
  if (resource.id === undefined) throw errors.badRequest('an update must carry the resource id in the body', ['id']);
  if (resource.id !== id) throw errors.badRequest(`the body's id does not match the URL's id`, ['id']);
  const type = resource.resourceType;
  if (access.kind === 'patient' && !serverAssigned) assertWritableVersion(access, await session.current(type, id), type);
  assertWritable(access, type, resource);
  const { version, created } = await session.update(resource, id, ifMatch);
  const name = `${version.type}/${version.id}`;
  return created
    ? { status: 201, version, message: `created ${name}` }
    : { status: 200, version, message: `updated ${name} to version ${version.versionId}` };
}

/**
 * The id a conditional update writes: its single match within the caller's scope (more → 412), else the
 * body's id, else a new server-assigned one. A patient-bound token cannot choose the id of a new resource.
 */
export async function conditionalUpdateTarget(
  session: WriteSession,
  resource: FhirResource,
  query: string,
  access: Access,
  scope: MatchScope,
): Promise<{ id: string; serverAssigned: boolean }> {
  const match = await matchOne(session, resource.resourceType, query, scope, 'the conditional update');
  const bodyId = typeof resource.id === 'string' ? resource.id : undefined;
  if (match === undefined && access.kind === 'patient' && resource.id !== undefined) {
    throw errors.badRequest(
      'a patient-bound token creates under a server-assigned id: send the resource without an id when the criteria may match nothing',
      ['id'],
    );
  }
  const id = match ?? bodyId ?? randomUUID();
  if (resource.id !== undefined && resource.id !== id) {
    throw errors.badRequest(`the body's id does not match the resource the condition selected`, ['id']);
  }
  return { id, serverAssigned: match === undefined && bodyId === undefined };
}

/** PUT [base]/[type]/[id] */
export const update: Handler = async (req: FhirRequest, ctx: FhirContext, { type, id }) => {
  supportedParams(req, [], 'update');
  const access = authorizeUpdate(req, type, false);
  const resource = resourceBody(req.body, type);
  const ifMatch = parseIfMatch(req.ifMatch);
  const result = await ctx.repo.write((session) => updateResource(session, resource, id, access, ifMatch));
  return writeResponse(result.status, result.version, req, ctx, result.message);
};

/** PUT [base]/[type]?[criteria]: 0 matches → create, 1 → update it, more → 412. */
export const updateConditional: Handler = async (req, ctx, { type }) => {
  const access = authorizeUpdate(req, type, true);
  const resource = resourceBody(req.body, type);
  const criteria = conditionalCriteria(req, req.query, 'conditional update');
  const ifMatch = parseIfMatch(req.ifMatch);
  const result = await ctx.repo.write(async (session) => {
    const { id, serverAssigned } = await conditionalUpdateTarget(session, resource, criteria, access, matchScope(req, 'conditional update'));
    return updateResource(session, { ...resource, id }, id, access, ifMatch, serverAssigned);
  });
  return writeResponse(result.status, result.version, req, ctx, result.message);
};
