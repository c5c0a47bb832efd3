/** Parses FHIR search URL parameters into a store query (strict: anything unsupported is a 400). */
import { errors } from '../outcome.ts';
import type { InstantBound, StoreQuery, TermClause } from '../../vault/store.ts';
import { indexedParams } from './parameters.ts';
import { normalizeReference } from './terms.ts';

export const DEFAULT_PAGE_SIZE = 20;
export const MAX_PAGE_SIZE = 1000;

export interface ParsedSearch {
  query: StoreQuery;
  /** `_summary=count`: total only, no entries. */
  countOnly: boolean;
  /** The parameters that were applied, for the self/next links. */
  applied: Array<[string, string]>;
}

/** Parameters that shape the response rather than select resources. */
const RESULT_PARAMS = new Set(['_count', '_summary', '_format', '_pretty', '_cursor']);
const ID_PATTERN = /^[A-Za-z0-9\-.]{1,64}$/;

const DATE_PATTERN =
  /^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/;

/** The half-open UTC interval [start, end) a FHIR date/dateTime/instant value denotes at its precision. */
export function dateRange(value: string): { start: string; end: string } | undefined {
  const m = DATE_PATTERN.exec(value);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s, frac, tz] = m;
  const year = Number(y);
  if (mo === undefined) return { start: utc(year, 0, 1), end: utc(year + 1, 0, 1) };
  const month = Number(mo) - 1;
  if (month > 11) return undefined;
  if (d === undefined) return { start: utc(year, month, 1), end: utc(year, month + 1, 1) };
  const day = Number(d);
  if (day < 1 || day > 31) return undefined;
  if (h === undefined) return { start: utc(year, month, day), end: utc(year, month, day + 1) };
  const offsetMinutes = !tz || tz === 'Z' ? 0 : (tz[0] === '-' ? -1 : 1) * (Number(tz.slice(1, 3)) * 60 + Number(tz.slice(4, 6)));
  const ms = frac ? Math.floor(Number(`0${frac}`) * 1000) : 0;
  const base = Date.UTC(year, month, day, Number(h), Number(mi), Number(s ?? 0), ms) - offsetMinutes * 60_000;
  if (Number.isNaN(base)) return undefined;
  const width = s === undefined ? 60_000 : frac ? 1 : 1000;
  return { start: new Date(base).toISOString(), end: new Date(base + width).toISOString() };
}

function utc(year: number, month: number, day: number): string {
  return new Date(Date.UTC(year, month, day)).toISOString();
}

function lastUpdatedBounds(raw: string): InstantBound[] {
  const m = /^(eq|ne|gt|lt|ge|le|sa|eb|ap)?(.*)$/.exec(raw)!;
  const prefix = m[1] ?? 'eq';
  const range = dateRange(m[2]);
  if (!range) throw errors.badRequest(`_lastUpdated: '${raw}' is not a FHIR date/dateTime/instant`);
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
      throw errors.notSupported(`_lastUpdated: prefix '${prefix}' is not supported`);
  }
}

function splitValues(raw: string): string[] {
  // A comma separates alternatives unless escaped as `\,`.
  return raw.split(/(?<!\\),/).map((v) => v.replace(/\\,/g, ','));
}

function tokenValues(raw: string): string[] {
  return splitValues(raw).map((v) => {
    if (v === '' || v === '|') throw errors.badRequest('a token search value must not be empty');
    return v;
  });
}

function referenceValues(name: string, modifier: string | undefined, raw: string, targets: string[]): string[] {
  const types = modifier ? [modifier] : targets;
  if (modifier && !targets.includes(modifier)) {
    throw errors.badRequest(`${name}: ':${modifier}' is not a target type of this parameter`);
  }
  return splitValues(raw).flatMap((v) => {
    if (ID_PATTERN.test(v)) return types.map((t) => `${t}/${v}`);
    const normalized = normalizeReference(v);
    if (!normalized) throw errors.badRequest(`${name}: '${v}' is not a reference`);
    return [normalized];
  });
}

/** `params` are the URL query parameters in order. */
export function parseSearch(type: string, params: Array<[string, string]>): ParsedSearch {
  const clauses: TermClause[] = [];
  const lastUpdated: InstantBound[] = [];
  const applied: Array<[string, string]> = [];
  let ids: string[] | undefined;
  let limit = DEFAULT_PAGE_SIZE;
  let countOnly = false;
  let afterId: string | undefined;
  const known = indexedParams(type);

  for (const [key, raw] of params) {
    const [name, modifier] = key.split(':', 2);
    if (RESULT_PARAMS.has(name)) {
      if (name === '_count') {
        const n = Number(raw);
        if (!/^\d+$/.test(raw)) throw errors.badRequest('_count must be a non-negative integer');
        limit = Math.min(n, MAX_PAGE_SIZE);
        applied.push([key, String(limit)]);
      } else if (name === '_summary') {
        if (raw !== 'count' && raw !== 'false') {
          throw errors.notSupported(`_summary=${raw} is not supported (supported: count, false)`);
        }
        countOnly = raw === 'count';
        applied.push([key, raw]);
      } else if (name === '_cursor') {
        if (!ID_PATTERN.test(raw)) throw errors.badRequest('_cursor is malformed');
        afterId = raw;
      }
      continue;
    }
    if (modifier !== undefined && name.startsWith('_')) {
      throw errors.notSupported(`modifier ':${modifier}' is not supported on ${name}`);
    }
    if (name === '_id') {
      const values = splitValues(raw);
      for (const v of values) if (!ID_PATTERN.test(v)) throw errors.badRequest(`_id: '${v}' is not a valid id`);
      ids = ids ? ids.filter((id) => values.includes(id)) : values;
    } else if (name === '_lastUpdated') {
      lastUpdated.push(...lastUpdatedBounds(raw));
    } else {
      const param = known.get(name);
      if (!param) {
        throw errors.notSupported(
          `search parameter '${name}' is not supported for ${type}` +
            ` (supported: _id, _lastUpdated${[...known.keys()].map((k) => `, ${k}`).join('')})`,
        );
      }
      if (param.type === 'token') {
        if (modifier !== undefined) throw errors.notSupported(`modifier ':${modifier}' is not supported on ${name}`);
        clauses.push({ param: name, anyOf: tokenValues(raw) });
      } else {
        clauses.push({ param: name, anyOf: referenceValues(name, modifier, raw, param.targets) });
      }
    }
    applied.push([key, raw]);
  }
  return { query: { type, ids, clauses, lastUpdated, afterId, limit }, countOnly, applied };
}
