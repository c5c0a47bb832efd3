import { randomUUID } from 'node:crypto';
import type { FhirContext, FhirRequest, Handler } from '../context.ts';
import { errors } from '../outcome.ts';
import { unknownResource, type FhirResource, type WriteSession } from '../repository.ts';
import type { Access } from '../../access/policy.ts';
import type { WriteOutcome } from './create.ts';
import {
  assertAccessible, assertVersionAccessible, conditionalCriteria, matchRestriction, parseIfMatch, requireAccess, resourceBody,
  supportedParams, writeResponse,
} from './common.ts';

/** Update, or create with the client's id when the resource does not exist (update-as-create). */
export async function updateResource(
  session: WriteSession,
  resource: FhirResource,
  id: string,
  ifMatch?: number,
): Promise<WriteOutcome> {
  if (resource.id === undefined) throw errors.badRequest('an update must carry the resource id in the body', ['id']);
  if (resource.id !== id) throw errors.badRequest(`the body's id does not match the URL's id`, ['id']);
  const { version, created } = await session.update(resource, id, ifMatch);
  const name = `${version.type}/${version.id}`;
  return created
    ? { status: 201, version, message: `created ${name}` }
    : { status: 200, version, message: `updated ${name} to version ${version.versionId}` };
}

/**
 * A patient-bound token updates only what its compartment holds, and answers anything else as missing.
 * It has no update-as-create: creating under an id of its choice would tell whether another compartment
 * holds that id.
 */
export async function assertUpdatable(session: WriteSession, access: Access, type: string, id: string): Promise<void> {
  if (access.kind !== 'patient') return;
  const current = await session.current(type, id);
  if (!current?.json) throw unknownResource(type);
  assertVersionAccessible(access, current);
}

/** Conditional update: 0 matches → create, 1 → update it, more → 412. A patient-bound `access` matches within its compartment. */
export async function conditionalUpdate(
  session: WriteSession,
  resource: FhirResource,
  query: string,
  ifMatch?: number,
  access: Access = { kind: 'all' },
): Promise<WriteOutcome> {
  const matches = await session.findMatches(resource.resourceType, query, matchRestriction(access));
  if (matches.length > 1) {
    throw errors.preconditionFailed(`the conditional update matched more than one ${resource.resourceType}`, 'multiple-matches');
  }
  if (matches.length === 0 && access.kind === 'patient' && resource.id !== undefined) {
    throw errors.badRequest(
      'a patient-bound token creates under a server-assigned id: send the resource without an id when the criteria may match nothing',
      ['id'],
    );
  }
  const id = matches[0] ?? (typeof resource.id === 'string' ? resource.id : randomUUID());
  if (resource.id !== undefined && resource.id !== id) {
    throw errors.badRequest(`the body's id does not match the resource the condition selected`, ['id']);
  }
  return updateResource(session, { ...resource, id }, id, ifMatch);
}

/** PUT [base]/[type]/[id] */
export const update: Handler = async (req: FhirRequest, ctx: FhirContext, { type, id }) => {
  supportedParams(req, [], 'update');
  const access = requireAccess(req, type, 'u');
  const resource = resourceBody(req.body, type);
  assertAccessible(access, type, resource);
  const ifMatch = parseIfMatch(req.ifMatch);
  const result = await ctx.repo.write(async (session) => {
    await assertUpdatable(session, access, type, id);
    return updateResource(session, resource, id, ifMatch);
  });
  return writeResponse(result.status, result.version, req, ctx, result.message);
};

/** PUT [base]/[type]?[criteria] */
export const updateConditional: Handler = async (req, ctx, { type }) => {
  requireAccess(req, type, 'u');
  const access = requireAccess(req, type, 'c');
  const resource = resourceBody(req.body, type);
  assertAccessible(access, type, resource);
  const criteria = conditionalCriteria(req, req.query, 'conditional update');
  const ifMatch = parseIfMatch(req.ifMatch);
  const result = await ctx.repo.write((session) => conditionalUpdate(session, resource, criteria, ifMatch, access));
  return writeResponse(result.status, result.version, req, ctx, result.message);
};
