/**
 * A resource version as handlers see it, and the answers every path gives about one: ids and types that
 * are not valid, versions that are not there, deleted or erased, and `_elements` subsets.
 */
import type { AnchorLocation, VersionRecord } from '../vault/store.ts';
import { parseFhirJson, stringifyFhirJson } from './json.ts';
import { errors, FhirError } from './outcome.ts';
import { isKnownResourceType } from './validation/index.ts';

export type FhirResource = Record<string, unknown> & { resourceType: string; id?: string; meta?: Record<string, unknown> };

/** A version as handlers see it: the stored record plus its serialized JSON. */
export interface ResourceVersion {
  type: string;
  id: string;
  versionId: number;
  lastUpdated: string;
  deleted: boolean;
  /** Serialized resource (absent for deletions). */
  json?: string;
  /** The version's commitment, as the vault recorded it and the ledger anchors it (absent for deletions). */
  digest?: string;
  /** The commitment's salt, from inside the sealed content (absent for deletions and erased versions). */
  salt?: Uint8Array;
  /** Where the ledger anchored this version; absent while it waits in the outbox. */
  anchor?: AnchorLocation;
}

export const ID_PATTERN = /^[A-Za-z0-9\-.]{1,64}$/;

const decoder = new TextDecoder();

export function assertResourceType(type: string): void {
  if (!isKnownResourceType(type)) throw errors.notFound('the resource type is not a FHIR R4 resource type');
}

export function assertId(id: string): void {
  if (!ID_PATTERN.test(id)) throw errors.badRequest("the resource id is not valid (1 to 64 of A-Z, a-z, 0-9, '-' and '.')");
}

export function toVersion(stored: VersionRecord & { anchor?: AnchorLocation }): ResourceVersion {
  return {
    type: stored.type,
    id: stored.id,
    versionId: stored.versionId,
    lastUpdated: stored.lastUpdated,
    deleted: stored.deleted,
    json: stored.content ? decoder.decode(stored.content) : undefined,
    digest: stored.digest ?? undefined,
    salt: stored.salt,
    anchor: stored.anchor,
  };
}

export function parseVersion(v: { content: Uint8Array | null } | ResourceVersion): Record<string, unknown> {
  const json = 'content' in v ? (v.content ? decoder.decode(v.content) : undefined) : v.json;
  return json ? (parseFhirJson(json) as Record<string, unknown>) : {};
}

/**
 * The answer for a resource that is not there, and for one a patient-bound token may not see: the same,
 * byte for byte, so that it tells nothing about other patients' data (and it names no id).
 */
export function unknownResource(type: string): FhirError {
  return errors.notFound(`no ${type} with this id is known`);
}

/** As unknownResource, for a version (vread). */
export function unknownVersion(type: string): FhirError {
  return errors.notFound(`no ${type} version with this id and version number is known`);
}

export function erasedError(type: string): FhirError {
  return errors.gone(`this ${type} was erased at the patient's request: its content is destroyed and cannot be recovered`);
}

export function goneError(type: string, versionId: number): FhirError {
  const e = errors.gone(`this ${type} was deleted`);
  return new FhirError(e.status, e.issues, { ETag: `W/"${versionId}"` });
}

const SUBSETTED = { system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'SUBSETTED' };

/** `_elements`: the resource with only the listed top-level elements (plus id and meta), tagged SUBSETTED. */
export function subsetted(v: ResourceVersion, elements: string[], parsed?: Record<string, unknown>): ResourceVersion {
  const resource = parsed ?? parseVersion(v);
  const keep = new Set(elements);
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(resource)) {
    const name = key.startsWith('_') ? key.slice(1) : key;
    const choice = /^([a-z][A-Za-z]*?)[A-Z]/.exec(name);
    let kept = key === 'resourceType' || key === 'id' || key === 'meta' || keep.has(name);
    if (!kept && choice) {
      // valueQuantity is kept by `value` (choice elements are named without their type).
      for (const e of keep) if (name.startsWith(e) && /^[A-Z]/.test(name.slice(e.length))) kept = true;
    }
    if (kept) out[key] = value;
  }
  const meta = { ...((out.meta as Record<string, unknown> | undefined) ?? {}) };
  const tags = Array.isArray(meta.tag) ? [...meta.tag] : [];
  if (!tags.some((t) => t?.system === SUBSETTED.system && t?.code === SUBSETTED.code)) tags.push(SUBSETTED);
  meta.tag = tags;
  out.meta = meta;
  const ordered: Record<string, unknown> = { resourceType: out.resourceType, id: out.id, meta };
  for (const [k, val] of Object.entries(out)) if (!(k in ordered)) ordered[k] = val;
  return { ...v, json: stringifyFhirJson(ordered) };
}
