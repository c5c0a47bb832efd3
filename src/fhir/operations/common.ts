/** Helpers shared by the operation handlers: request checks, version headers, Prefer handling. */
import { authorize, type Access } from '../../access/policy.ts';
import { inPatientCompartment, restrictToPatient } from '../../access/compartment.ts';
import type { StoreQuery } from '../../vault/store.ts';
import type { Permission } from '../../access/scopes.ts';
import type { FhirContext, FhirRequest, FhirResponse } from '../context.ts';
import type { BundleEntryParts } from '../bundle-json.ts';
import { parseFhirJson } from '../json.ts';
import { errors, FhirError, informational } from '../outcome.ts';
import { assertResourceType, unknownResource, unknownVersion, type FhirResource, type ResourceVersion } from '../repository.ts';
import { versionCommitmentHex } from '../../ledger/canonical-json.ts';
import { AnchorMismatchError } from '../../ledger/service.ts';

export function versionHeaders(v: ResourceVersion, ctx: FhirContext, withLocation = false): Record<string, string> {
  const headers: Record<string, string> = {
    ETag: `W/"${v.versionId}"`,
    'Last-Modified': new Date(v.lastUpdated).toUTCString(),
  };
  if (withLocation) headers.Location = `${ctx.baseUrl}/${v.type}/${v.id}/_history/${v.versionId}`;
  if (ctx.ledger) {
    // The version's anchored state: where the ledger holds its commitment, or pending while it is in the outbox.
    // The salt is not in a header (proxies log headers): $proof gives it to a reader who needs to open it.
    headers['X-MedBlock-Anchor'] = v.anchor ? `block=${v.anchor.blockNumber}; envelope=${v.anchor.envelopeIndex}; entry=${v.anchor.entryIndex}` : 'pending';
    if (v.digest) headers['X-MedBlock-Digest'] = `commitment-v1=${v.digest}`;
  }
  return headers;
}

/**
 * The read path's integrity check: the decrypted content and its sealed salt must give the vault's commitment,
 * and an anchored commitment must be the one the ledger holds at the vault's anchor location. Throws
 * AnchorMismatchError.
 */
export async function assertAnchorIntact(v: ResourceVersion, ctx: FhirContext): Promise<void> {
  if (!ctx.ledger || v.deleted) return;
  const mismatch = new AnchorMismatchError(v.type, v.id, v.versionId);
  // A live version always has content, a salt and a commitment: one without them was blanked in the store.
  if (!v.json || !v.digest || !v.salt || versionCommitmentHex(v.salt, parseFhirJson(v.json)) !== v.digest) throw mismatch;
  if (v.anchor) await ctx.ledger.checkAnchor({ type: v.type, id: v.id, versionId: v.versionId, digest: v.digest }, v.anchor);
}

/** A searchset entry for a version: a match, or a resource included with the matches. */
export function searchEntry(ctx: FhirContext, v: ResourceVersion, mode: 'match' | 'include'): BundleEntryParts {
  return { fullUrl: `${ctx.baseUrl}/${v.type}/${v.id}`, resourceJson: v.json, search: { mode } };
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
    throw errors.badRequest(`the body's resourceType is not the URL's type, ${expectedType}`, ['resourceType']);
  }
  assertResourceType(type);
  return body as FhirResource;
}

/** Parameters every interaction accepts: they shape the response format only. */
const FORMAT_PARAMS = ['_format', '_pretty'];

/** Search parameters that shape a result (its size, order, contents) but select nothing. */
const RESULT_SHAPING_PARAMS = ['_count', '_summary', '_total', '_sort', '_include', '_revinclude', '_elements', '_contained', '_containedType', '_cursor'];

/** Refuses an unsupported parameter (400 naming it, never its value) unless the client asked for lenient handling. */
function refuseUnlessLenient(req: FhirRequest, name: string, interaction: string, supported: readonly string[]): void {
  if (req.preferHandling === 'lenient') return;
  throw errors.notSupported(
    `parameter '${name.slice(0, 64)}' is not supported on ${interaction}` +
      (supported.length ? ` (supported: ${supported.join(', ')})` : '') +
      '; send Prefer: handling=lenient to have unsupported parameters ignored',
  );
}

/**
 * Refuses query parameters the interaction does not support (400 naming the parameter, never its value),
 * unless the client asked for `Prefer: handling=lenient`; returns the supported ones, in order.
 */
export function supportedParams(req: FhirRequest, supported: readonly string[], interaction: string): Array<[string, string]> {
  const kept: Array<[string, string]> = [];
  for (const pair of req.query) {
    if (FORMAT_PARAMS.includes(pair[0]) || supported.includes(pair[0])) kept.push(pair);
    else refuseUnlessLenient(req, pair[0], interaction, supported);
  }
  return kept;
}

/**
 * The search criteria of a conditional interaction (from the URL query, or If-None-Exist), as a query
 * string. Every criterion is parsed as a search, which refuses unknown parameters even under lenient
 * handling: ignoring a criterion would widen the match, and a conditional write would hit the wrong
 * resource. Parameters that only shape search results select nothing: refused, or dropped when lenient.
 */
export function conditionalCriteria(req: FhirRequest, pairs: Array<[string, string]>, interaction: string): string {
  const criteria = pairs.filter(([key]) => {
    const name = key.split(':', 1)[0];
    if (FORMAT_PARAMS.includes(name)) return false;
    if (!RESULT_SHAPING_PARAMS.includes(name)) return true;
    refuseUnlessLenient(req, name, interaction, []);
    return false;
  });
  return new URLSearchParams(criteria).toString();
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

/** A resource the request would write must lie in the patient compartment of a patient-bound token (else 403). */
export function assertAccessible(access: Access, type: string, resource: unknown): void {
  if (access.kind === 'patient' && !inPatientCompartment(type, resource, access.patientId)) {
    throw errors.forbidden(`this ${type} is outside the patient compartment the token is bound to`);
  }
}

/**
 * A stored version outside the patient compartment of a patient-bound token answers exactly as a missing
 * one (`unknown`), so that the token learns nothing about other patients' data, not even what exists.
 */
export function assertVersionAccessible(access: Access, v: ResourceVersion, unknown: (type: string) => FhirError = unknownResource): void {
  if (access.kind === 'patient' && v.json && !inPatientCompartment(v.type, parseFhirJson(v.json), access.patientId)) {
    throw unknown(v.type);
  }
}

/**
 * Reads a version as the token may see it. A patient-bound token sees others' resources as missing, and
 * deletions and erasures too: they hold no content that would tell whose they were.
 */
async function visibleVersion(access: Access, type: string, unknown: (type: string) => FhirError, read: Promise<ResourceVersion>): Promise<ResourceVersion> {
  let v: ResourceVersion;
  try {
    v = await read;
  } catch (e) {
    if (access.kind === 'patient' && e instanceof FhirError && e.status === 410) throw unknown(type);
    throw e;
  }
  assertVersionAccessible(access, v, unknown);
  return v;
}

/** The current version of `type/id` as `access` may see it (404 or 410 otherwise). */
export function readAccessible(ctx: FhirContext, access: Access, type: string, id: string): Promise<ResourceVersion> {
  return visibleVersion(access, type, unknownResource, ctx.repo.read(type, id));
}

/** Version `vid` of `type/id` as `access` may see it (404 or 410 otherwise). */
export function vreadAccessible(ctx: FhirContext, access: Access, type: string, id: string, vid: string): Promise<ResourceVersion> {
  return visibleVersion(access, type, unknownVersion, ctx.repo.vread(type, id, vid));
}

/** What a patient-bound token's conditional matches are narrowed to: its compartment, as its searches are. */
export function matchRestriction(access: Access): ((q: StoreQuery) => StoreQuery) | undefined {
  return access.kind === 'patient' ? (q) => restrictToPatient(q, access.patientId) : undefined;
}
