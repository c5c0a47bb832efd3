import type { Handler } from '../context.ts';
import { errors, informational } from '../outcome.ts';
import { unknownResource, type WriteSession } from '../repository.ts';
import type { Access } from '../../access/policy.ts';
import { assertVersionAccessible, conditionalCriteria, parseIfMatch, requireAccess, supportedParams } from './common.ts';

export interface DeleteOutcome {
  status: number;
  message: string;
  versionId?: number;
}

export async function deleteResource(
  session: WriteSession,
  type: string,
  id: string,
  ifMatch?: number,
  access: Access = { kind: 'all' },
): Promise<DeleteOutcome> {
  const current = await session.current(type, id);
  // A deletion holds no content to tell whose it was: a patient-bound token sees it as missing.
  if (!current || (access.kind === 'patient' && current.deleted)) throw unknownResource(type);
  assertVersionAccessible(access, current);
  const deleted = await session.delete(type, id, ifMatch);
  if (deleted === current) return { status: 200, message: `${type}/${id} was already deleted`, versionId: current.versionId };
  return { status: 200, message: `deleted ${type}/${id}`, versionId: deleted?.versionId };
}

/** Conditional delete: 0 matches → nothing to do, 1 → delete it, more → 412. */
export async function conditionalDelete(session: WriteSession, type: string, query: string): Promise<DeleteOutcome> {
  const matches = await session.findMatches(type, query);
  if (matches.length > 1) throw errors.preconditionFailed(`the conditional delete matched more than one ${type}`, 'multiple-matches');
  if (matches.length === 0) return { status: 200, message: `no ${type} matched; nothing was deleted` };
  return deleteResource(session, type, matches[0]);
}

function deleteResponse(result: DeleteOutcome) {
  const headers: Record<string, string> = result.versionId ? { ETag: `W/"${result.versionId}"` } : {};
  return { status: result.status, headers, body: informational(result.message) };
}

/** DELETE [base]/[type]/[id] */
export const remove: Handler = async (req, ctx, { type, id }) => {
  supportedParams(req, [], 'delete');
  const access = requireAccess(req, type, 'd');
  const ifMatch = parseIfMatch(req.ifMatch);
  return deleteResponse(await ctx.repo.write((s) => deleteResource(s, type, id, ifMatch, access)));
};

/** DELETE [base]/[type]?[criteria] */
export const removeConditional: Handler = async (req, ctx, { type }) => {
  const access = requireAccess(req, type, 'd');
  if (access.kind === 'patient') throw errors.forbidden('conditional delete needs a user/ or system/ scope');
  const criteria = conditionalCriteria(req, req.query, 'conditional delete');
  return deleteResponse(await ctx.repo.write((s) => conditionalDelete(s, type, criteria)));
};
