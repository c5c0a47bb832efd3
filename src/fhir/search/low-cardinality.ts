/**
 * Parameters whose values are too few to blind: a deterministic token of a value from a handful (gender,
 * a status, a boolean) or of a birth date is read off its frequency alone (half the Patients share one
 * gender token; the most frequent status token of Observations is `final`; birth days and years follow the
 * hospital's age pyramid). So these are not indexed as they are (docs/security.md, "Low-cardinality
 * parameters"):
 *   - unindexed: token parameters of the resource types in the Patient compartment (patient data) whose
 *     elements are all `code` or `boolean` (gender, every `status`, `intent`, `priority`, `active`,
 *     `address-use` …), plus their CodeableConcept statuses (`clinical-status`, `verification-status` …)
 *     and `deceased`; of every type, `gender` and boolean parameters (`active` …). A search on one gets no
 *     index clause: the post-filter decides on the decrypted resource, with exactly the terms the index
 *     would have held.
 *   - coarse: `birthdate` is indexed at decade granularity only (`c:197x`, `a:19xx`): the index narrows a
 *     search to the decades it meets and the post-filter applies the exact prefix semantics.
 * AuditEvent (the access log, sealed under its own key and queried by compliance) keeps its codes indexed.
 */
import { compartmentParams } from '../compartment.ts';
import { roundOutward, type Interval } from './dates.ts';
import type { IndexedParam } from './parameters.ts';

const LOW_CARDINALITY_ELEMENTS = new Set(['code', 'boolean']);
const BOOLEAN = new Set(['boolean']);
const EXEMPT_TYPES = new Set(['AuditEvent']);
/** The granularity birth dates are indexed at. */
export const COARSE_DATE_UNIT = 'decade';

const unindexed = new Map<string, boolean>();

/** True when the parameter gets no index terms (its searches are decided by the post-filter alone). */
export function isUnindexed(type: string, param: IndexedParam): boolean {
  if (param.type !== 'token') return false;
  const key = `${type}\0${param.code}`;
  let result = unindexed.get(key);
  if (result === undefined) {
    const patientData = compartmentParams().has(type) && !EXEMPT_TYPES.has(type);
    const elementsAre = (types: Set<string>) => param.accessors.every((a) => a.elementType !== undefined && types.has(a.elementType));
    const lowElements = elementsAre(LOW_CARDINALITY_ELEMENTS);
    result =
      param.code === 'gender' ||
      (elementsAre(BOOLEAN) && !EXEMPT_TYPES.has(type)) ||
      (patientData && (lowElements || param.code.includes('status') || param.code === 'deceased'));
    unindexed.set(key, result);
  }
  return result;
}

/** True for date parameters indexed at COARSE_DATE_UNIT only. */
export function isCoarseDate(param: IndexedParam): boolean {
  return param.type === 'date' && param.code === 'birthdate';
}

/** A value interval as a coarse date parameter indexes it (open ends stay open). */
export function coarseInterval(i: Interval): Interval {
  return Number.isFinite(i.start) && Number.isFinite(i.end) ? roundOutward(i, COARSE_DATE_UNIT) : i;
}
