/** Helpers shared by the operation handlers: request checks, version headers, Prefer handling. */
import { authorize, type Access } from '../../access/policy.ts';
import { inPatientCompartment } from '../../access/compartment.ts';
import type { Permission } from '../../access/scopes.ts';
import type { FhirContext, FhirRequest, FhirResponse } from '../context.ts';
import { parseFhirJson } from '../json.ts';
import { errors, informational } from '../outcome.ts';
import { assertResourceType, type FhirResource, type ResourceVersion } from '../repository.ts';

export function versionHeaders(v: ResourceVersion, ctx: FhirContext, withLocation = false): Record<string, string> {
  const headers: Record<string, string> = {
    ETag: `W/"${v.versionId}"`,
    'Last-Modified': new Date(v.lastUpdated).toUTCString(),
  };
  if (withLocation) headers.Location = `${ctx.baseUrl}/${v.type}/${v.id}/_history/${v.versionId}`;
  return headers;
}

/** A write's response as the client's `Prefer: return=` asks for (the resource by default). */
export function writeResponse(
  status: number,
  v: ResourceVersion,
  req: FhirRequest,
  ctx: FhirContext,
  message: string,
): FhirResponse {
  const headers = versionHeaders(v, ctx, true);
  if (req.preferReturn === 'minimal') return { status, headers };
  if (req.preferReturn === 'OperationOutcome') return { status, headers, body: informational(message) };
  return { status, headers, body: v.json };
}

/** A request body (or bundle entry resource) as a resource of the expected type (400 otherwise). */
export function resourceBody(body: unknown, expectedType?: string): FhirResource {
  if (body === undefined) throw errors.badRequest('the request has no body');
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw errors.badRequest('the body must be a JSON object holding a FHIR resource');
  }
  const type = (body as { resourceType?: unknown }).resourceType;
  if (typeof type !== 'string') throw errors.badRequest('the resource has no resourceType', ['resourceType']);
  if (expectedType !== undefined && type !== expectedType) {
    throw errors.badRequest(`the body is a ${type.slice(0, 64)}, the URL names ${expectedType}`, ['resourceType']);
  }
  assertResourceType(type);
  return body as FhirResource;
}

/** `W/"3"` or `"3"` → 3. */
export function parseIfMatch(header: string | undefined): number | undefined {
  if (header === undefined) return undefined;
  const m = /^(?:W\/)?"(\d{1,15})"$/.exec(header.trim());
  if (!m) throw errors.badRequest(`If-Match must be an ETag such as W/"1"`);
  return Number(m[1]);
}

/** Checks the token may do `permission` on `type`; returns the access it has. */
export function requireAccess(req: FhirRequest, type: string, permission: Permission): Access {
  assertResourceType(type);
  return authorize(req.auth, type, permission);
}

/** For patient-bound access, the resource must lie in that patient's compartment (else 403). */
export function assertAccessible(access: Access, type: string, resource: unknown): void {
  if (access.kind === 'patient' && !inPatientCompartment(type, resource, access.patientId)) {
    throw errors.forbidden(`this ${type} is outside the patient compartment the token is bound to`);
  }
}

/** Compartment check against a stored version's JSON, parsing it only when the access requires it. */
export function assertVersionAccessible(access: Access, v: ResourceVersion): void {
  if (access.kind === 'patient' && v.json) assertAccessible(access, v.type, parseFhirJson(v.json));
}
