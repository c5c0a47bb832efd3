/**
 * The authorization of each interaction, shared by its top-level handler and by batch and transaction
 * entries, so that a Bundle reaches nothing its entries could not reach one by one.
 *
 * - Scopes (authorize()) decide which interactions a token may perform on which types.
 * - A patient-bound token reads what lies in its patient's compartment, and writes only what lies in that
 *   compartment and in no other: the new content and the version it replaces alike.
 * - Search criteria that select what a write acts on (conditional create/update/delete, If-None-Exist,
 *   conditional references, chains inside them) run as a search by the caller: they need read and search
 *   access to the type searched, and match only within the caller's compartment, so a match, or a 412
 *   "several match", tells the caller nothing it could not read.
 * - Stored versions outside the caller's compartment answer as missing ones; decrypted results are checked
 *   against the compartment the index put them in (forged index terms are an integrity alarm, not an answer).
 */
import { authorize, type Access } from '../../access/policy.ts';
import { inPatientCompartment, onlyInPatientCompartment, reportOutsideCompartment, restrictToPatient } from '../../access/compartment.ts';
import type { StoreQuery } from '../../vault/store.ts';
import type { FhirContext, FhirRequest } from '../context.ts';
import { parseFhirJson } from '../json.ts';
import { errors, FhirError } from '../outcome.ts';
import { unknownResource, unknownVersion, type ResourceVersion, type WriteSession } from '../repository.ts';
import { parseVersion } from '../resource-version.ts';
import type { MatchScope } from '../write-session.ts';
import { requireAccess } from './common.ts';

export type Restriction = ((q: StoreQuery) => StoreQuery) | undefined;

/** What a patient-bound token's searches and matches are narrowed to: its compartment. */
export function accessRestriction(access: Access): Restriction {
  return access.kind === 'patient' ? (q) => restrictToPatient(q, access.patientId) : undefined;
}

/** The narrowing a search of `type` needs for this token (403 without search access to it). */
export function searchRestriction(req: FhirRequest, type: string): Restriction {
  return accessRestriction(requireAccess(req, type, 's'));
}

/** A match returns or acts on what it finds: it needs search and read access, and the narrower of the two applies. */
function matchAccess(req: FhirRequest, type: string): Access {
  const search = requireAccess(req, type, 's');
  const read = requireAccess(req, type, 'r');
  return search.kind === 'patient' ? search : read;
}

/**
 * Whether a decrypted result lies in the compartment `access` was narrowed to; one that does not was routed
 * there by a forged index term: an integrity alarm, and left out.
 */
export function withinAccess(access: Access, v: ResourceVersion, interaction: string, resource: () => Record<string, unknown> = () => parseVersion(v)): boolean {
  if (access.kind !== 'patient' || !v.json) return true;
  if (inPatientCompartment(v.type, resource(), access.patientId)) return true;
  reportOutsideCompartment(interaction, v);
  return false;
}

/** The caller's reach for the criteria of a conditional interaction or reference (see MatchScope). */
export function matchScope(req: FhirRequest, interaction: string): MatchScope {
  return {
    restrictFor: (type) => accessRestriction(matchAccess(req, type)),
    canSee: (v, resource) => withinAccess(matchAccess(req, v.type), v, interaction, resource),
  };
}

/** The one id `query` selects within the caller's scope, if any; several → 412. */
export async function matchOne(session: WriteSession, type: string, query: string, scope: MatchScope, what: string): Promise<string | undefined> {
  const matches = await session.findMatches(type, query, scope);
  if (matches.length > 1) throw errors.preconditionFailed(`${what} matched more than one ${type}`, 'multiple-matches');
  return matches[0];
}

/** create: `c`; conditional, also what its match needs. */
export function authorizeCreate(req: FhirRequest, type: string, conditional: boolean): Access {
  const access = requireAccess(req, type, 'c');
  if (conditional) matchAccess(req, type);
  return access;
}

/** update (`u`); a conditional update may create (`c`) and matches (`r`, `s`). */
export function authorizeUpdate(req: FhirRequest, type: string, conditional: boolean): Access {
  const access = requireAccess(req, type, 'u');
  if (!conditional) return access;
  matchAccess(req, type);
  return requireAccess(req, type, 'c');
}

/** delete (`d`); a conditional delete matches (`r`, `s`) and is not for patient-bound tokens. */
export function authorizeDelete(req: FhirRequest, type: string, conditional: boolean): Access {
  const access = requireAccess(req, type, 'd');
  if (!conditional) return access;
  if (access.kind === 'patient') throw errors.forbidden('conditional delete needs a user/ or system/ scope');
  matchAccess(req, type);
  return access;
}

/** New content a patient-bound token writes must lie in its patient's compartment and in no other (else 403). */
export function assertWritable(access: Access, type: string, resource: unknown): void {
  if (access.kind === 'patient' && !onlyInPatientCompartment(type, resource, access.patientId)) {
    throw errors.forbidden(`a patient-bound token writes only ${type} resources of its own patient's compartment, and of no other patient's`);
  }
}

/**
 * The version a patient-bound token would replace or delete: one outside its compartment answers as a
 * missing one, as do deletions (they hold no content to tell whose they were); one shared with another
 * patient's compartment is readable but not the token's to change (403).
 */
export function assertWritableVersion(access: Access, current: ResourceVersion | undefined, type: string): asserts current is ResourceVersion {
  if (!current) throw unknownResource(type);
  if (access.kind !== 'patient') return;
  if (!current.json) throw unknownResource(type);
  const resource = parseFhirJson(current.json);
  if (!inPatientCompartment(type, resource, access.patientId)) throw unknownResource(type);
  assertWritable(access, type, resource);
}

/**
 * A stored version outside the patient compartment of a patient-bound token answers exactly as a missing
 * one (`unknown`), so that the token learns nothing about other patients' data, not even what exists.
 */
export function assertVersionAccessible(access: Access, v: ResourceVersion, unknown: (type: string) => FhirError = unknownResource): void {
  if (!versionVisible(access, v)) throw unknown(v.type);
}

/** Whether `access` may see this version: assertVersionAccessible as a predicate, for filtering lists. */
export function versionVisible(access: Access, v: ResourceVersion): boolean {
  return access.kind !== 'patient' || !v.json || inPatientCompartment(v.type, parseFhirJson(v.json), access.patientId);
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

/** The token's access for `permission` on a type, or undefined when it has none. */
export function accessIfAny(req: FhirRequest, type: string, permission: 'r' | 's'): Access | undefined {
  try {
    return authorize(req.auth, type, permission);
  } catch (e) {
    if (e instanceof FhirError) return undefined;
    throw e;
  }
}
