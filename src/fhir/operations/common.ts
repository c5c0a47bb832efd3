/** Helpers shared by the operation handlers: request checks, version headers, Prefer handling. */
import { authorize, type Access } from '../../access/policy.ts';
import type { Permission } from '../../access/scopes.ts';
import type { FhirContext, FhirRequest, FhirResponse } from '../context.ts';
import type { BundleEntryParts } from '../bundle-json.ts';
import { parseFhirJson } from '../json.ts';
import { errors, informational } from '../outcome.ts';
import { assertResourceType, type FhirResource, type ResourceVersion } from '../repository.ts';
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
