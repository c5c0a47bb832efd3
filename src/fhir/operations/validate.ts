import type { Handler } from '../context.ts';
import { errors, operationOutcome } from '../outcome.ts';
import { validateResource } from '../validation/index.ts';
import { requireAccess, resourceBody, supportedParams } from './common.ts';

/** The resource to validate: the body itself, or the `resource` parameter of a Parameters body. */
function resourceToValidate(body: unknown): { resource: unknown; profiles: string[] } {
  const b = body as { resourceType?: string; parameter?: Array<{ name?: string; resource?: unknown; valueUri?: string; valueCanonical?: string }> };
  if (b?.resourceType !== 'Parameters') return { resource: body, profiles: [] };
  const resource = b.parameter?.find((p) => p.name === 'resource')?.resource;
  if (resource === undefined) throw errors.badRequest('the Parameters body has no "resource" parameter');
  const profiles = (b.parameter ?? [])
    .filter((p) => p.name === 'profile')
    .map((p) => p.valueUri ?? p.valueCanonical)
    .filter((p): p is string => typeof p === 'string');
  return { resource, profiles };
}

/** POST [base]/[type]/$validate and [base]/[type]/[id]/$validate: 200 with an OperationOutcome listing every issue. */
export const validate: Handler = async (req, _ctx, { type }) => {
  requireAccess(req, type, 'r');
  const { resource, profiles } = resourceToValidate(resourceBody(req.body));
  const body = resourceBody(resource, type);
  for (const [key, value] of supportedParams(req, ['profile'], '$validate')) if (key === 'profile') profiles.push(value);
  const issues = validateResource(body, profiles.length ? { profiles } : undefined);
  const outcome = operationOutcome(
    issues.length
      ? issues.map((i) => ({ severity: i.severity, code: i.code, diagnostics: i.message, expression: [i.expression] }))
      : [{ severity: 'information', code: 'informational', diagnostics: 'the resource is valid' }],
  );
  return { status: 200, body: outcome };
};
