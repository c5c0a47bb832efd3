import jsonpatch from 'fast-json-patch';
import type { Handler } from '../context.ts';
import { parseFhirJson } from '../json.ts';
import { errors } from '../outcome.ts';
import { unknownResource, type FhirResource, type WriteSession } from '../repository.ts';
import type { Access } from '../../access/policy.ts';
import type { WriteOutcome } from './create.ts';
import { assertAccessible, assertVersionAccessible, parseIfMatch, requireAccess, writeResponse } from './common.ts';

/** Applies a JSON Patch (RFC 6902) to the current version and stores the result as a new version. */
export async function patchResource(
  session: WriteSession,
  type: string,
  id: string,
  operations: unknown,
  ifMatch?: number,
  access: Access = { kind: 'all' },
): Promise<WriteOutcome> {
  if (!Array.isArray(operations)) throw errors.badRequest('a JSON Patch body must be an array of operations');
  const current = await session.current(type, id);
  // Before any other answer: a patient-bound token sees others' resources, and deletions, as missing.
  if (!current || (access.kind === 'patient' && current.deleted)) throw unknownResource(type);
  assertVersionAccessible(access, current);
  if (current.deleted || !current.json) throw errors.gone(`this ${type} was deleted`);
  if (ifMatch !== undefined && current.versionId !== ifMatch) {
    throw errors.preconditionFailed(`If-Match names another version than the current one (${current.versionId})`);
  }
  let patched: FhirResource;
  try {
    const validationError = jsonpatch.validate(operations as jsonpatch.Operation[]);
    if (validationError) throw validationError;
    const doc = parseFhirJson(current.json) as FhirResource;
    patched = jsonpatch.applyPatch(doc, operations as jsonpatch.Operation[], true, true).newDocument;
  } catch (e) {
    const name = (e as { name?: string }).name ?? '';
    throw errors.unprocessable([
      { severity: 'error', code: 'processing', diagnostics: `the JSON Patch cannot be applied (${name || 'invalid operation'})` },
    ]);
  }
  if (patched?.resourceType !== type || patched.id !== id) {
    throw errors.unprocessable([
      { severity: 'error', code: 'processing', diagnostics: 'a JSON Patch must not change resourceType or id' },
    ]);
  }
  assertAccessible(access, type, patched);
  const { version } = await session.update(patched, id, current.versionId);
  return { status: 200, version, message: `patched ${type}/${id} to version ${version.versionId}` };
}

/** PATCH [base]/[type]/[id] with application/json-patch+json */
export const patch: Handler = async (req, ctx, { type, id }) => {
  const access = requireAccess(req, type, 'u');
  const ifMatch = parseIfMatch(req.ifMatch);
  const result = await ctx.repo.write((s) => patchResource(s, type, id, req.body, ifMatch, access));
  return writeResponse(result.status, result.version, req, ctx, result.message);
};
