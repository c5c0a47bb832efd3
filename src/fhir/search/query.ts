/**
 * Parses FHIR search URL parameters (strict: anything unsupported is a 400 naming what is supported) into
 * a store query of equality term clauses, plus a post-filter for what the terms cannot decide exactly,
 * and the result-shaping parameters (_sort, _include, _revinclude, _elements, _count, _summary, cursor).
 */
import { errors, FhirError } from '../outcome.ts';
import type { InstantBound, StoreQuery, TermClause } from '../../vault/store.ts';
import { isKnownResourceType } from '../validation/index.ts';
import { schemaFor } from '../validation/definitions.ts';
import { dateInterval, dateRange, datePrefixMatches, intervalQuery, prefixInterval, valueInterval, type DatePrefix, type Interval } from './dates.ts';
import { decimalOf, numberMatches, withinSafeRange, numberQueryTerms, parseDecimal, rangeMatches, type Decimal, type NumberPrefix } from './numbers.ts';
import { indexedParams, type IndexedParam } from './parameters.ts';
import { forEachStringPart, normalizeString, stringQueryTerm } from './strings.ts';
import { isUnindexed } from './low-cardinality.ts';
import { normalizeReference, paramTerms, tokenIsMixed } from './terms.ts';

export { dateRange };

/** A `_since` value (history, $everything): an instant, as the UTC start of its range. */
export function sinceInstant(value: string): string {
  const range = dateRange(value);
  if (!range || !value.includes('T')) throw errors.badRequest('_since must be an instant such as 2024-01-01T00:00:00Z');
  return range.start;
}

export const DEFAULT_PAGE_SIZE = 20;
export const MAX_PAGE_SIZE = 1000;

/**
 * A `_count` value: a non-negative integer (positive unless `allowZero`), capped at MAX_PAGE_SIZE. A value
 * beyond 2^53 is refused rather than rounded.
 */
export function parseCount(raw: string, allowZero = true): number {
  const n = /^\d{1,16}$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(n) || (!allowZero && n === 0)) {
    throw errors.badRequest(`_count must be a ${allowZero ? 'non-negative' : 'positive'} integer below 2^53`);
  }
  return Math.min(n, MAX_PAGE_SIZE);
}

export type Predicate = (resource: Record<string, unknown>) => boolean;

/** A chained parameter (`subject:Patient.identifier=X`), resolved by the repository into a reference clause. */
export interface ChainSpec {
  /** The reference parameter of the searched type. */
  param: string;
  /** Target types to search, each with the inner parameter. */
  targets: string[];
  inner: [string, string];
}

export interface SortSpec {
  /** `_id`, `_lastUpdated` or a date parameter code. */
  param: string;
  descending: boolean;
  /** A date parameter (needs the resource). */
  dateParam?: IndexedParam;
}

export interface IncludeSpec {
  /** The type holding the reference parameter. */
  sourceType: string;
  param: IndexedParam;
  targetType?: string;
}

export type Cursor = { kind: 'id'; afterId: string } | { kind: 'sort'; key: number | undefined; id: string };

/** `_total`: none (no count), estimate (exact when cheap, else an upper bound), accurate (exact or 400). */
export type TotalMode = 'none' | 'estimate' | 'accurate';

export interface ParsedSearch {
  query: StoreQuery;
  /** Exact test on the resource for what the index terms only pre-select (undefined: the terms decide). */
  postFilter?: Predicate;
  chains: ChainSpec[];
  sort?: SortSpec;
  include: IncludeSpec[];
  revinclude: IncludeSpec[];
  /** `_elements`: top-level elements to keep. */
  elements?: string[];
  cursor?: Cursor;
  /** `_summary=count`: total only, no entries. */
  countOnly: boolean;
  /** `_total` as asked; undefined: exact when it can be had within the scan cap, else left out with a warning. */
  total?: TotalMode;
  /** The parameters that were applied, for the self/next links. */
  applied: Array<[string, string]>;
}

export interface ParseOptions {
  /** This server's FHIR base: absolute references to it also match relative ones. */
  baseUrl?: string;
  /** `Prefer: handling=lenient`: unknown or unsupported parameters are left out (and out of `applied`), not a 400. */
  handling?: 'strict' | 'lenient';
}

/**
 * Parameters that shape the response rather than select resources. `_totalMethod` is Aidbox's name for
 * `_total` (fhirpy's count() sends `_totalMethod=count`).
 */
const RESULT_PARAMS = new Set([
  '_count', '_summary', '_total', '_totalMethod', '_format', '_pretty', '_cursor', '_sort', '_include', '_revinclude', '_elements',
]);
const TOTAL_MODES: Record<string, Record<string, TotalMode>> = {
  _total: { none: 'none', estimate: 'estimate', accurate: 'accurate' },
  _totalMethod: { none: 'none', estimate: 'estimate', count: 'accurate' },
};
const ID_PATTERN = /^[A-Za-z0-9\-.]{1,64}$/;
const SORT_CURSOR = /^(n|k-?\d{1,16})\.([A-Za-z0-9\-.]{1,64})$/;
const PREFIX = /^(eq|ne|gt|lt|ge|le|sa|eb|ap)?(.*)$/s;

const MODIFIERS: Record<IndexedParam['type'], string> = {
  token: ':not',
  reference: ':[type] (a target type)',
  string: ':exact',
  date: 'none',
  number: 'none',
  quantity: 'none',
  uri: 'none',
};

function lastUpdatedBounds(raw: string): InstantBound[] {
  const m = PREFIX.exec(raw)!;
  const prefix = m[1] ?? 'eq';
  const range = dateRange(m[2]);
  if (!range) throw errors.badRequest('_lastUpdated: a value is not a FHIR date/dateTime/instant');
  switch (prefix) {
    case 'eq':
      return [{ op: 'ge', value: range.start }, { op: 'lt', value: range.end }];
    case 'gt':
    case 'sa':
      return [{ op: 'ge', value: range.end }];
    case 'ge':
      return [{ op: 'ge', value: range.start }];
    case 'lt':
    case 'eb':
      return [{ op: 'lt', value: range.start }];
    case 'le':
      return [{ op: 'lt', value: range.end }];
    default:
      throw errors.notSupported(`_lastUpdated: prefix '${prefix}' is not supported (supported: eq, gt, ge, lt, le, sa, eb)`);
  }
}

function splitValues(name: string, raw: string): string[] {
  // A comma separates alternatives unless escaped as `\,`.
  const values = raw.split(/(?<!\\),/).map((v) => v.replace(/\\,/g, ','));
  for (const v of values) if (v === '') throw errors.badRequest(`${name}: a search value must not be empty`);
  return values;
}

// ---------------------------------------------------------------------------------------------
// Per parameter type
// ---------------------------------------------------------------------------------------------

interface Parsed {
  clauses: TermClause[];
  filter?: Predicate;
}

function tokenParam(type: string, param: IndexedParam, modifier: string | undefined, raw: string): Parsed {
  if (modifier !== undefined && modifier !== 'not') throw unsupportedModifier(param, modifier);
  const mixed = tokenIsMixed(param);
  const primitiveOnly = !mixed && param.accessors.every((a) => a.elementType !== undefined && isPrimitiveToken(a.elementType));
  const anyOf = splitValues(param.code, raw).map((v) => {
    const bar = v.indexOf('|');
    if (bar < 0) return v;
    if (bar === v.length - 1) {
      throw errors.notSupported(`${param.code}: 'system|' (any code of a system) is not supported; give a code: system|code, code or |code`);
    }
    if (bar === 0 && primitiveOnly) return v.slice(1);
    return v;
  });
  const negate = modifier === 'not';
  if (isUnindexed(type, param)) return { clauses: [], filter: unindexedTokenFilter(param, anyOf, negate) };
  return { clauses: [{ param: param.code, anyOf, ...(negate ? { negate: true } : {}) }] };
}

/**
 * A low-cardinality token parameter has no index terms (low-cardinality.ts): the post-filter builds the terms
 * the index would hold from the decrypted resource and tests the clause on them, so results are the same.
 */
function unindexedTokenFilter(param: IndexedParam, anyOf: string[], negate: boolean): Predicate {
  const wanted = new Set(anyOf);
  return (resource) => {
    const terms = new Set<string>();
    paramTerms(param, resource, terms);
    let found = false;
    for (const t of terms) if (wanted.has(t)) found = true;
    return found !== negate;
  };
}

function isPrimitiveToken(t: string): boolean {
  return t === 'code' || t === 'boolean' || t === 'string' || t === 'id' || t === 'uri' || t === 'ContactPoint';
}

function referenceParam(param: IndexedParam, modifier: string | undefined, raw: string, options: ParseOptions): Parsed {
  if (modifier !== undefined && !param.targets.includes(modifier)) {
    if (/^[A-Z]/.test(modifier)) throw errors.badRequest(`${param.code}: ':${modifier}' is not a target type of this parameter (targets: ${param.targets.join(', ')})`);
    throw unsupportedModifier(param, modifier);
  }
  const types = modifier ? [modifier] : param.targets;
  const anyOf = splitValues(param.code, raw).flatMap((v) => {
    if (ID_PATTERN.test(v) && !v.includes('/')) return types.map((t) => `${t}/${v}`);
    const normalized = normalizeReference(v);
    if (!normalized) throw errors.badRequest(`${param.code}: a value is not a reference`);
    if (modifier && !normalized.startsWith(`${modifier}/`) && !/^[a-z][a-z0-9+.-]*:/i.test(normalized)) {
      throw errors.badRequest(`${param.code}:${modifier}: a value is not a ${modifier} reference`);
    }
    const out = [normalized];
    if (options.baseUrl && normalized.startsWith(`${options.baseUrl}/`)) {
      const relative = normalizeReference(normalized.slice(options.baseUrl.length + 1));
      if (relative) out.push(relative);
    }
    return out;
  });
  return { clauses: [{ param: param.code, anyOf: [...new Set(anyOf)] }] };
}

function stringParam(param: IndexedParam, modifier: string | undefined, raw: string): Parsed {
  if (modifier === 'contains') {
    throw errors.notSupported(`${param.code}: ':contains' is not supported (the index only answers prefixes; supported: default starts-with, :exact)`);
  }
  if (modifier !== undefined && modifier !== 'exact') throw unsupportedModifier(param, modifier);
  const values = splitValues(param.code, raw);
  if (modifier === 'exact') return { clauses: [{ param: param.code, anyOf: values.map((v) => `x:${v}`) }] };
  const anyOf: string[] = [];
  const normalized: string[] = [];
  let exact = true;
  for (const v of values) {
    const q = stringQueryTerm(v);
    if (!q) throw errors.badRequest(`${param.code}: a string search value must have a letter or digit`);
    anyOf.push(q.term);
    normalized.push(normalizeString(v));
    exact &&= q.exact;
  }
  const filter: Predicate | undefined = exact
    ? undefined
    : (resource) => {
        let found = false;
        param.forEachValue(resource, (value, t) => {
          if (found) return;
          forEachStringPart(value, t, (s) => {
            if (!found) {
              const n = normalizeString(s);
              found = normalized.some((q) => n.startsWith(q));
            }
          });
        });
        return found;
      };
  return { clauses: [{ param: param.code, anyOf: [...new Set(anyOf)] }], filter };
}

function uriParam(param: IndexedParam, modifier: string | undefined, raw: string): Parsed {
  if (modifier !== undefined) throw unsupportedModifier(param, modifier);
  return { clauses: [{ param: param.code, anyOf: splitValues(param.code, raw) }] };
}

function dateParam(param: IndexedParam, modifier: string | undefined, raw: string): Parsed {
  if (modifier !== undefined) throw unsupportedModifier(param, modifier);
  const queries: Array<{ prefix: DatePrefix; s: Interval }> = [];
  const anyOf = new Set<string>();
  for (const v of splitValues(param.code, raw)) {
    const m = PREFIX.exec(v)!;
    const prefix = (m[1] ?? 'eq') as DatePrefix | 'ne' | 'ap';
    if (prefix === 'ne' || prefix === 'ap') {
      throw errors.notSupported(`${param.code}: prefix '${prefix}' is not supported (supported: eq, lt, gt, le, ge, sa, eb)`);
    }
    const s = dateInterval(m[2]);
    if (!s) throw errors.badRequest(`${param.code}: a value is not a FHIR date/dateTime/instant`);
    queries.push({ prefix, s });
    for (const t of intervalQuery(prefixInterval(prefix, s))) anyOf.add(t);
  }
  const filter: Predicate = (resource) => {
    let found = false;
    param.forEachValue(resource, (value, t) => {
      if (found) return;
      const v = valueInterval(value, t);
      if (v) found = queries.some((q) => datePrefixMatches(q.prefix, v, q.s));
    });
    return found;
  };
  return { clauses: [{ param: param.code, anyOf: [...anyOf] }], filter };
}

interface NumericQuery {
  prefix: NumberPrefix;
  q: Decimal;
  system?: string;
  /** With system: the code; without: matched against code or unit. */
  unit?: string;
}

function numericParam(param: IndexedParam, modifier: string | undefined, raw: string): Parsed {
  if (modifier !== undefined) throw unsupportedModifier(param, modifier);
  const hasRange = param.accessors.some((a) => a.elementType === 'Range' || a.elementType === undefined);
  const queries: NumericQuery[] = [];
  for (const v of splitValues(param.code, raw)) {
    const m = PREFIX.exec(v)!;
    const prefix = (m[1] ?? 'eq') as NumberPrefix;
    const parts = m[2].split('|');
    if (parts.length > 3 || (param.type === 'number' && parts.length > 1) || parts.length === 2) {
      throw errors.badRequest(
        param.type === 'number'
          ? `${param.code}: a value is not a number`
          : `${param.code}: a value is not [prefix]number, [prefix]number|system|code or [prefix]number||unit`,
      );
    }
    const q = parseDecimal(parts[0]);
    if (!q) throw errors.badRequest(`${param.code}: a value is not a number`);
    // Decimals compare exactly, but magnitudes beyond 2^53 are refused: no stored FHIR integer reaches them,
    // and a client that sends one most likely lost precision already.
    if (!withinSafeRange(q)) throw errors.badRequest(`${param.code}: numbers beyond ±2^53 are not supported`);
    const query: NumericQuery = { prefix, q };
    if (parts.length === 3) {
      if (parts[1] !== '') query.system = parts[1];
      if (parts[2] === '') {
        throw errors.badRequest(`${param.code}: a unit or code must follow the last '|' (number|system|code or number||unit)`);
      }
      query.unit = parts[2];
    }
    queries.push(query);
  }
  const clauses: TermClause[] = [];
  if (queries.length === 1) {
    const [q] = queries;
    const numeric = numberQueryTerms(q.prefix, q.q, !hasRange);
    if (!(q.unit !== undefined && numeric.length === 1 && numeric[0] === '*')) clauses.push({ param: param.code, anyOf: numeric });
    if (q.unit !== undefined) clauses.push({ param: param.code, anyOf: [`u:||${q.unit}`] });
  } else {
    const anyOf = new Set<string>();
    for (const q of queries) {
      if (q.unit !== undefined) anyOf.add(`u:||${q.unit}`);
      else for (const t of numberQueryTerms(q.prefix, q.q, !hasRange)) anyOf.add(t);
    }
    clauses.push({ param: param.code, anyOf: [...anyOf] });
  }
  const filter: Predicate = (resource) => {
    let found = false;
    param.forEachValue(resource, (value, t) => {
      if (!found) found = queries.some((q) => numericValueMatches(param, value, t, q));
    });
    return found;
  };
  return { clauses, filter };
}

function unitMatches(q: Record<string, unknown> | undefined, elementType: string | undefined, query: NumericQuery): boolean {
  if (query.unit === undefined) return true;
  if (!q) return false;
  if (elementType === 'Money' || (elementType === undefined && 'currency' in q)) {
    return q.currency === query.unit && (query.system === undefined || query.system === 'urn:iso:std:iso:4217');
  }
  if (query.system !== undefined) return q.system === query.system && q.code === query.unit;
  return q.code === query.unit || q.unit === query.unit;
}

function numericValueMatches(param: IndexedParam, value: unknown, t: string | undefined, query: NumericQuery): boolean {
  if (t === 'Range' || (t === undefined && value !== null && typeof value === 'object' && ('low' in value || 'high' in value))) {
    const r = value as { low?: Record<string, unknown>; high?: Record<string, unknown> };
    const low = r.low && decimalOf(r.low.value);
    const high = r.high && decimalOf(r.high.value);
    if (!low && !high) return false;
    if (param.type === 'quantity' && query.unit !== undefined) {
      if (!(r.low && low ? unitMatches(r.low, 'Quantity', query) : true) || !(r.high && high ? unitMatches(r.high, 'Quantity', query) : true)) return false;
    }
    return rangeMatches(query.prefix, low, high, query.q);
  }
  if (param.type === 'number') {
    const d = decimalOf(value);
    return d !== undefined && numberMatches(query.prefix, d, query.q);
  }
  if (value === null || typeof value !== 'object') return false;
  const o = value as Record<string, unknown>;
  const d = decimalOf(o.value);
  return d !== undefined && unitMatches(o, t, query) && numberMatches(query.prefix, d, query.q);
}

function unsupportedModifier(param: IndexedParam, modifier: string) {
  return errors.notSupported(`modifier ':${modifier}' is not supported on ${param.code} (${param.type}; supported: ${MODIFIERS[param.type]})`);
}

// ---------------------------------------------------------------------------------------------
// Result parameters
// ---------------------------------------------------------------------------------------------

function parseSort(type: string, raw: string, known: Map<string, IndexedParam>): SortSpec {
  const keys = raw.split(',');
  const sortable = ['_id', '_lastUpdated', ...[...known.values()].filter((p) => p.type === 'date').map((p) => p.code)];
  if (keys.length !== 1) throw errors.notSupported(`_sort: only one sort key is supported (sortable for ${type}: ${sortable.join(', ')})`);
  const descending = keys[0].startsWith('-');
  const code = descending ? keys[0].slice(1) : keys[0];
  if (code === '_id' || code === '_lastUpdated') return { param: code, descending };
  const param = known.get(code);
  if (!param || param.type !== 'date') throw errors.notSupported(`_sort: the key is not sortable for ${type} (sortable: ${sortable.join(', ')})`);
  return { param: code, descending, dateParam: param };
}

function parseInclude(type: string, raw: string, reverse: boolean): IncludeSpec {
  const parts = raw.split(':');
  const name = reverse ? '_revinclude' : '_include';
  if (parts.length < 2 || parts.length > 3) {
    throw errors.badRequest(`${name} must be Type:parameter or Type:parameter:TargetType ('*' and :iterate are not supported)`);
  }
  const [sourceType, code, targetType] = parts;
  if (!isKnownResourceType(sourceType)) throw errors.badRequest(`${name}: the source is not a resource type (${name}=Type:parameter[:TargetType])`);
  if (!reverse && sourceType !== type) throw errors.notSupported(`_include: only ${type}:… is supported on a ${type} search (no :iterate)`);
  const param = indexedParams(sourceType).get(code);
  if (!param || param.type !== 'reference') {
    const refs = [...indexedParams(sourceType).values()].filter((p) => p.type === 'reference').map((p) => p.code);
    throw errors.badRequest(`${name}: the parameter is not a reference parameter of ${sourceType} (supported: ${refs.join(', ')})`);
  }
  if (targetType !== undefined && !param.targets.includes(targetType)) {
    throw errors.badRequest(`${name}: the target type is not a target of ${sourceType}:${code} (targets: ${param.targets.join(', ')})`);
  }
  if (reverse) {
    if (targetType !== undefined && targetType !== type) throw errors.badRequest(`_revinclude: the target type must be ${type}`);
    if (!param.targets.includes(type)) throw errors.badRequest(`_revinclude: ${sourceType}:${code} cannot point at ${type}`);
  }
  return { sourceType, param, targetType };
}

/** Top-level element names of a type, and those that are mandatory (min ≥ 1). */
function elementNames(type: string): { all: Set<string>; mandatory: Set<string> } {
  const schema = schemaFor(type);
  const all = new Set<string>();
  const mandatory = new Set<string>();
  for (const [key, el] of Object.entries(schema.elements)) {
    if (key.includes('.')) continue;
    const name = key.replace(/\[x\]$/, '');
    all.add(name);
    if (el.min > 0) mandatory.add(name);
  }
  return { all, mandatory };
}

/**
 * `_elements`: the top-level elements to keep, plus the mandatory ones. `id`, `resourceType` and `meta` are
 * always kept, so naming them is accepted (fhirpy sends `id,resourceType`). Exclusion (`-name`) is R5.
 */
export function parseElements(type: string, raw: string): string[] {
  const { all, mandatory } = elementNames(type);
  const names = raw.split(',').map((s) => s.trim()).filter((s) => s !== '' && s !== 'id' && s !== 'resourceType' && s !== 'meta');
  for (const n of names) {
    if (n.startsWith('-')) throw errors.notSupported('_elements: excluding elements (-name) is not supported; list the elements to keep');
    if (!all.has(n)) throw errors.badRequest(`_elements: a name is not a top-level element of ${type}`);
  }
  return [...new Set([...names, ...mandatory])];
}

/** `params` are the URL query parameters in order. */
export function parseSearch(type: string, params: Array<[string, string]>, options: ParseOptions = {}): ParsedSearch {
  const clauses: TermClause[] = [];
  const filters: Predicate[] = [];
  const chains: ChainSpec[] = [];
  const lastUpdated: InstantBound[] = [];
  const applied: Array<[string, string]> = [];
  const include: IncludeSpec[] = [];
  const revinclude: IncludeSpec[] = [];
  let ids: string[] | undefined;
  let limit = DEFAULT_PAGE_SIZE;
  let countOnly = false;
  let rawCursor: string | undefined;
  let sort: SortSpec | undefined;
  let elements: string[] | undefined;
  let total: TotalMode | undefined;
  const known = indexedParams(type);
  const supported = () => `(supported: _id, _lastUpdated${[...known.keys()].map((k) => `, ${k}`).join('')})`;

  /** Applies one parameter; throws (before changing anything) when it is invalid or unsupported. */
  const apply = (key: string, raw: string): void => {
    const dot = key.indexOf('.');
    const [name, modifier] = (dot >= 0 ? key.slice(0, dot) : key).split(':', 2);
    if (RESULT_PARAMS.has(name)) {
      if (dot >= 0 || modifier !== undefined) {
        if (!((name === '_include' || name === '_revinclude') && modifier === undefined)) {
          throw errors.notSupported(`'${key.slice(0, 64)}' is not supported (no modifiers on result parameters; no :iterate)`);
        }
      }
      switch (name) {
        case '_count':
          limit = parseCount(raw);
          applied.push([key, String(limit)]);
          break;
        case '_summary':
          if (raw !== 'count' && raw !== 'false') throw errors.notSupported('_summary: only count and false are supported');
          countOnly = raw === 'count';
          applied.push([key, raw]);
          break;
        case '_total':
        case '_totalMethod':
          if (!Object.hasOwn(TOTAL_MODES[name], raw)) throw errors.badRequest(`${name} must be one of ${Object.keys(TOTAL_MODES[name]).join(', ')}`);
          total = TOTAL_MODES[name][raw];
          applied.push([key, raw]);
          break;
        case '_cursor':
          rawCursor = raw;
          break;
        case '_sort':
          sort = parseSort(type, raw, known);
          applied.push([key, raw]);
          break;
        case '_include':
          include.push(...raw.split(',').map((v) => parseInclude(type, v, false)));
          applied.push([key, raw]);
          break;
        case '_revinclude':
          revinclude.push(...raw.split(',').map((v) => parseInclude(type, v, true)));
          applied.push([key, raw]);
          break;
        case '_elements':
          elements = parseElements(type, raw);
          applied.push([key, raw]);
          break;
        default: // _format, _pretty: the HTTP layer's
      }
      return;
    }
    if (dot >= 0) {
      chains.push(parseChain(type, key, raw, known));
      applied.push([key, raw]);
      return;
    }
    if (name === '_id') {
      if (modifier !== undefined) throw errors.notSupported(`modifier ':${modifier}' is not supported on _id`);
      const values = splitValues(name, raw);
      for (const v of values) if (!ID_PATTERN.test(v)) throw errors.badRequest('_id: a value is not a valid id (1-64 of A-Z a-z 0-9 - .)');
      ids = ids ? ids.filter((id) => values.includes(id)) : values;
    } else if (name === '_lastUpdated') {
      if (modifier !== undefined) throw errors.notSupported(`modifier ':${modifier}' is not supported on _lastUpdated`);
      if (raw.includes(',')) throw errors.notSupported('_lastUpdated: several values (OR) are not supported; repeat the parameter for AND');
      lastUpdated.push(...lastUpdatedBounds(raw));
    } else {
      const param = known.get(name);
      if (!param) throw errors.notSupported(`search parameter '${name.slice(0, 64)}' is not supported for ${type} ${supported()}`);
      if (modifier === 'missing') throw errors.notSupported(`${name}: ':missing' is not supported`);
      const parsed = parseParam(type, param, modifier, raw, options);
      clauses.push(...parsed.clauses);
      if (parsed.filter) filters.push(parsed.filter);
    }
    applied.push([key, raw]);
  };

  for (const [key, raw] of params) {
    try {
      apply(key, raw);
    } catch (e) {
      // Lenient handling leaves out what is unsupported; a malformed value is still the client's error.
      const unsupported = e instanceof FhirError && e.issues.every((i) => i.code === 'not-supported');
      if (!(unsupported && options.handling === 'lenient')) throw e;
    }
  }

  let cursor: Cursor | undefined;
  if (rawCursor !== undefined) {
    if (sort && !(sort.param === '_id' && !sort.descending)) {
      const m = SORT_CURSOR.exec(rawCursor);
      const key = m && m[1] !== 'n' ? Number(m[1].slice(1)) : undefined;
      if (!m || (key !== undefined && !Number.isSafeInteger(key))) throw errors.badRequest('_cursor is malformed');
      cursor = { kind: 'sort', key, id: m[2] };
    } else {
      if (!ID_PATTERN.test(rawCursor)) throw errors.badRequest('_cursor is malformed');
      cursor = { kind: 'id', afterId: rawCursor };
    }
  }
  const postFilter: Predicate | undefined =
    filters.length === 0 ? undefined : filters.length === 1 ? filters[0] : (r) => filters.every((f) => f(r));
  return {
    query: { type, ids, clauses, lastUpdated, afterId: cursor?.kind === 'id' ? cursor.afterId : undefined, limit },
    postFilter,
    chains,
    sort,
    include,
    revinclude,
    elements,
    cursor,
    countOnly,
    total,
    applied,
  };
}

function parseParam(type: string, param: IndexedParam, modifier: string | undefined, raw: string, options: ParseOptions): Parsed {
  switch (param.type) {
    case 'token':
      return tokenParam(type, param, modifier, raw);
    case 'reference':
      return referenceParam(param, modifier, raw, options);
    case 'string':
      return stringParam(param, modifier, raw);
    case 'date':
      return dateParam(param, modifier, raw);
    case 'number':
    case 'quantity':
      return numericParam(param, modifier, raw);
    case 'uri':
      return uriParam(param, modifier, raw);
  }
}

/** `subject:Patient.identifier=X`, `subject.name=smith`: one level, checked here, resolved by the repository. */
function parseChain(type: string, key: string, raw: string, known: Map<string, IndexedParam>): ChainSpec {
  const dot = key.indexOf('.');
  const [name, targetType] = key.slice(0, dot).split(':', 2);
  const innerKey = key.slice(dot + 1);
  const param = known.get(name);
  if (!param || param.type !== 'reference') {
    throw errors.notSupported(`chained search: '${name.slice(0, 64)}' is not a reference parameter of ${type}`);
  }
  if (innerKey.includes('.')) throw errors.notSupported('chained search: only one level of chaining is supported');
  const [innerName] = innerKey.split(':', 1);
  if (innerName === '' || (innerName.startsWith('_') && innerName !== '_id' && innerName !== '_lastUpdated' && !RESOURCE_CHAINABLE.has(innerName))) {
    throw errors.notSupported(`chained search: '${innerKey.slice(0, 64)}' cannot be chained`);
  }
  let targets: string[];
  if (targetType !== undefined) {
    if (!param.targets.includes(targetType)) {
      throw errors.badRequest(`${name}: ':${targetType.slice(0, 64)}' is not a target type of this parameter (targets: ${param.targets.join(', ')})`);
    }
    targets = [targetType];
  } else {
    targets = param.targets.filter((t) => innerName.startsWith('_') || indexedParams(t).has(innerName));
  }
  const has = (t: string) => innerName === '_id' || innerName === '_lastUpdated' || indexedParams(t).has(innerName);
  if (targets.length === 0 || !targets.every(has)) {
    throw errors.notSupported(
      `chained search: '${innerName.slice(0, 64)}' is not a search parameter of ${targetType ?? param.targets.join('/')}` +
        (targetType ? '' : `; name the target type, e.g. ${name}:${param.targets[0]}.${innerName}`),
    );
  }
  // Validate the inner parameter now (a 400 before any store access).
  for (const t of targets) parseSearch(t, [[innerKey, raw]]);
  return { param: name, targets, inner: [innerKey, raw] };
}

const RESOURCE_CHAINABLE = new Set(['_tag', '_profile', '_security', '_source']);

/** The sort key of a resource for a date parameter: earliest start ascending, latest end descending. */
export function dateSortKey(param: IndexedParam, resource: unknown, descending: boolean): number | undefined {
  let key: number | undefined;
  param.forEachValue(resource, (value, t) => {
    const i = valueInterval(value, t);
    if (!i) return;
    const k = descending ? i.end : i.start;
    if (!Number.isFinite(k)) return;
    if (key === undefined || (descending ? k > key : k < key)) key = k;
  });
  return key;
}
