import type { Handler } from '../context.ts';
import { informational } from '../outcome.ts';
import type { WriteSession } from '../repository.ts';
import type { Access } from '../../access/policy.ts';
import type { MatchScope } from '../write-session.ts';
import { conditionalCriteria, parseIfMatch, supportedParams } from './common.ts';
import { assertWritableVersion, authorizeDelete, matchOne, matchScope } from './authorization.ts';

export interface DeleteOutcome {
  status: number;
  message: string;
  versionId?: number;
}

export async function deleteResource(
  session: WriteSession,
  type: string,
  id: string,
  access: Access,
  ifMatch?: number,
): Promise<DeleteOutcome> {
  const current = await session.current(type, id);
  assertWritableVersion(access, current, type);
  const deleted = await session.delete(type, id, ifMatch);
  if (deleted === current) return { status: 200, message: `${type}/${id} was already deleted`, versionId: current.versionId };
  return { status: 200, message: `deleted ${type}/${id}`, versionId: deleted?.versionId };
}

/** Conditional delete: 0 matches (within the caller's scope) → nothing to do, 1 → delete it, more → 412. */
export async function conditionalDelete(session: WriteSession, type: string, query: string, access: Access, scope: MatchScope): Promise<DeleteOutcome> {
  const match = await matchOne(session, type, query, scope, 'the conditional delete');
  if (match === undefined) return { status: 200, message: `no ${type} matched; nothing was deleted` };
  return deleteResource(session, type, match, access);
}

function deleteResponse(result: DeleteOutcome) {
  const headers: Record<string, string> = result.versionId ? { ETag: `W/"${result.versionId}"` } : {};
  return { status: result.status, headers, body: informational(result.message) };
}

/** DELETE [base]/[type]/[id] */
export const remove: Handler = async (req, ctx, { type, id }) => {
  supportedParams(req, [], 'delete');
  const access = authorizeDelete(req, type, false);
  const ifMatch = parseIfMatch(req.ifMatch);
  return deleteResponse(await ctx.repo.write((s) => deleteResource(s, type, id, access, ifMatch)));
};

/** DELETE [base]/[type]?[criteria] */
export const removeConditional: Handler = async (req, ctx, { type }) => {
  const access = authorizeDelete(req, type, true);
  const criteria = conditionalCriteria(req, req.query, 'conditional delete');
  return deleteResponse(await ctx.repo.write((s) => conditionalDelete(s, type, criteria, access, matchScope(req, 'conditional delete'))));
};
