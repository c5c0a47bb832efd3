/**
 * Turns a resource into the index terms of its searchable parameters — plaintext strings that a store
 * decorator blinds (keyed tokens) later, so every query must be answerable by EQUALITY on whole terms.
 *
 * Term formats per parameter type (the term's `param` is the search parameter code):
 *   token      `code`, plus `system|code` when the value has a system or `|code` when it has none
 *              (Coding, CodeableConcept codings, Identifier system|value). ContactPoint, code, boolean,
 *              string, id and uri values: just `value` (and `|value` when the parameter also has coded
 *              values, so that `|value` queries stay exact).
 *   reference  `Type/id` (version and local base dropped), absolute URLs and canonicals whole (a canonical
 *              with `|version` also without it).
 *   string     `p:<normalized prefix>` for prefix lengths 1..PREFIX_TERMS, and `x:<value>` (exact).
 *   date       `c:<node>` / `a:<node>` of the calendar bucket tree (see dates.ts); birthdate at decade level.
 *   number     `f:<floor>` and `*`.
 *   quantity   `f:<floor>`, `*`, `u:||<code>` and `u:||<unit>` (Money: `u:||<currency>`).
 *   uri        the uri.
 * Low-cardinality token parameters (gender, statuses, booleans: low-cardinality.ts) get no terms.
 */
import type { IndexTerm, TypedTerm } from '../../vault/store.ts';
import { COMPARTMENT_PARAM, compartmentParams, compartmentTerm } from '../compartment.ts';
import { knownResourceTypes } from '../validation/index.ts';
import { intervalTerms, valueInterval } from './dates.ts';
import { coarseInterval, isCoarseDate, isUnindexed } from './low-cardinality.ts';
import { bucketTerm, decimalOf, PRESENCE } from './numbers.ts';
import { indexedParams, referenceType, type IndexedParam } from './parameters.ts';
import { forEachStringPart, stringTerms } from './strings.ts';

const PRIMITIVE_TOKEN_TYPES = new Set(['code', 'boolean', 'string', 'id', 'uri', 'ContactPoint']);

/** True when a token parameter has both primitive and coded values (then primitives also get `|value`). */
const mixedCache = new WeakMap<IndexedParam, boolean>();
export function tokenIsMixed(param: IndexedParam): boolean {
  let mixed = mixedCache.get(param);
  if (mixed === undefined) {
    const types = param.accessors.map((a) => a.elementType);
    mixed = types.some((t) => t === undefined || !PRIMITIVE_TOKEN_TYPES.has(t)) && types.some((t) => t === undefined || PRIMITIVE_TOKEN_TYPES.has(t));
    mixedCache.set(param, mixed);
  }
  return mixed;
}

/**
 * A member of a value that should be an object. Terms are built before validation, so a value may be
 * null, a string or an array where the type wants an object: it then simply has no such member.
 */
function member(value: unknown, key: string): unknown {
  return value !== null && typeof value === 'object' ? (value as Record<string, unknown>)[key] : undefined;
}

function coded(out: Set<string>, system: unknown, code: unknown): void {
  if (typeof code !== 'string' || code === '') return;
  out.add(code);
  out.add(typeof system === 'string' && system !== '' ? `${system}|${code}` : `|${code}`);
}

function primitive(out: Set<string>, value: unknown, mixed: boolean): void {
  if (typeof value !== 'string' && typeof value !== 'boolean') return;
  const v = String(value);
  if (v === '') return;
  out.add(v);
  if (mixed) out.add(`|${v}`);
}

/** Token terms of one value of a known (or, for fhirpath.js values, guessed) type. */
export function tokenValueTerms(value: unknown, elementType: string | undefined, mixed: boolean, out: Set<string>): void {
  switch (elementType) {
    case 'CodeableConcept': {
      const codings = member(value, 'coding');
      if (Array.isArray(codings)) for (const c of codings) coded(out, member(c, 'system'), member(c, 'code'));
      return;
    }
    case 'Coding':
      coded(out, member(value, 'system'), member(value, 'code'));
      return;
    case 'Identifier':
      coded(out, member(value, 'system'), member(value, 'value'));
      return;
    case 'ContactPoint':
      primitive(out, member(value, 'value'), mixed);
      return;
    case undefined:
      if (value !== null && typeof value === 'object') {
        const o = value as Record<string, unknown>;
        if (Array.isArray(o.coding)) tokenValueTerms(value, 'CodeableConcept', mixed, out);
        else if ('code' in o) tokenValueTerms(value, 'Coding', mixed, out);
        else if ('value' in o) tokenValueTerms(value, 'Identifier', mixed, out);
        return;
      }
      primitive(out, value, mixed);
      return;
    default:
      primitive(out, value, mixed);
  }
}

/** `Patient/1/_history/2` → `Patient/1`; absolute URLs are kept whole (without `/_history/n`); `#id` is not indexed. */
export function normalizeReference(reference: string): string | undefined {
  if (reference.startsWith('#') || reference === '') return undefined;
  if (/^[a-z][a-z0-9+.-]*:/i.test(reference)) return reference.replace(/\/_history\/[^/]+$/, '');
  const type = referenceType(reference);
  if (!type) return undefined;
  return reference.replace(/\/_history\/[^/]+$/, '');
}

/** Reference terms of one value: a Reference's target, or a canonical/uri (also without its `|version`). */
export function referenceValueTerms(value: unknown, out: Set<string>): void {
  if (typeof value === 'string') {
    if (value === '') return;
    out.add(value);
    const bar = value.indexOf('|');
    if (bar > 0) out.add(value.slice(0, bar));
    return;
  }
  const ref = member(value, 'reference');
  if (typeof ref !== 'string') return;
  const normalized = normalizeReference(ref);
  if (normalized) out.add(normalized);
}

function quantityTerms(q: Record<string, unknown>, elementType: string | undefined, out: Set<string>): void {
  const d = decimalOf(q.value);
  if (d) {
    out.add(bucketTerm(d));
    out.add(PRESENCE);
  }
  if (elementType === 'Money') {
    if (typeof q.currency === 'string') out.add(`u:||${q.currency}`);
    return;
  }
  if (typeof q.code === 'string') out.add(`u:||${q.code}`);
  if (typeof q.unit === 'string') out.add(`u:||${q.unit}`);
}

function numericTerms(param: IndexedParam, value: unknown, elementType: string | undefined, out: Set<string>): void {
  if (elementType === 'Range' || (elementType === undefined && value !== null && typeof value === 'object' && ('low' in value || 'high' in value))) {
    let any = false;
    for (const end of [member(value, 'low'), member(value, 'high')]) {
      if (decimalOf(member(end, 'value')) === undefined) continue;
      any = true;
      if (param.type === 'quantity') {
        const code = member(end, 'code');
        const unit = member(end, 'unit');
        if (typeof code === 'string') out.add(`u:||${code}`);
        if (typeof unit === 'string') out.add(`u:||${unit}`);
      }
    }
    if (any) out.add(PRESENCE);
    return;
  }
  if (param.type === 'number') {
    const d = decimalOf(value);
    if (d) {
      out.add(bucketTerm(d));
      out.add(PRESENCE);
    }
    return;
  }
  if (value !== null && typeof value === 'object') quantityTerms(value as Record<string, unknown>, elementType, out);
}

/** The terms of one parameter's values in a resource (deduplicated, in `out`). */
export function paramTerms(param: IndexedParam, resource: unknown, out: Set<string>): void {
  switch (param.type) {
    case 'token': {
      const mixed = tokenIsMixed(param);
      param.forEachValue(resource, (v, t) => tokenValueTerms(v, t, mixed, out));
      return;
    }
    case 'reference':
      param.forEachValue(resource, (v) => referenceValueTerms(v, out));
      return;
    case 'string':
      param.forEachValue(resource, (v, t) => forEachStringPart(v, t, (s) => stringTerms(s, out)));
      return;
    case 'date':
      param.forEachValue(resource, (v, t) => {
        const i = valueInterval(v, t);
        if (i) intervalTerms(isCoarseDate(param) ? coarseInterval(i) : i, out);
      });
      return;
    case 'number':
    case 'quantity':
      param.forEachValue(resource, (v, t) => numericTerms(param, v, t, out));
      return;
    case 'uri':
      param.forEachValue(resource, (v) => {
        if (typeof v === 'string' && v !== '') out.add(v);
      });
      return;
  }
}

export function extractTerms(resourceType: string, resource: unknown): IndexTerm[] {
  const terms: IndexTerm[] = [];
  const set = new Set<string>();
  for (const param of indexedParams(resourceType).values()) {
    if (isUnindexed(resourceType, param)) continue;
    paramTerms(param, resource, set);
    if (set.size === 0) continue;
    for (const value of set) terms.push({ param: param.code, value });
    set.clear();
  }
  return terms;
}

/** Every index term of a resource version: its parameters' terms, and `_compartment` per patient compartment. */
export function indexTerms(resourceType: string, resource: unknown, patients: readonly string[]): IndexTerm[] {
  const terms = extractTerms(resourceType, resource);
  for (const patient of patients) terms.push({ param: COMPARTMENT_PARAM, value: compartmentTerm(patient) });
  return terms;
}

let patientReferenceParams: Array<{ type: string; param: string }> | undefined;

/**
 * The terms that can name a patient in any resource: `Patient/<id>` under every reference parameter that may
 * target Patient, and `_compartment`. Erasure removes them from resources sealed under other keys.
 * AuditEvents keep theirs: the access log keeps who accessed an erased patient (see write-session.ts).
 */
export function termsNamingPatient(patientId: string): TypedTerm[] {
  patientReferenceParams ??= knownResourceTypes()
    .filter((type) => type !== 'AuditEvent')
    .flatMap((type) => [
      ...[...indexedParams(type).values()].filter((p) => p.type === 'reference' && p.targets.includes('Patient')).map((p) => ({ type, param: p.code })),
      ...(compartmentParams().has(type) ? [{ type, param: COMPARTMENT_PARAM }] : []),
    ]);
  const value = compartmentTerm(patientId);
  return patientReferenceParams.map((p) => ({ ...p, value }));
}
