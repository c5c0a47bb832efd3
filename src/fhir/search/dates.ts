/**
 * Dates for search: FHIR date/dateTime/instant values as UTC intervals, the R4 prefix semantics, and the
 * calendar bucket tree that turns "intersects this interval" into ONE equality clause.
 *
 * The tree has five levels — century > decade > year > month > day (UTC days) — over the years 0000–9999.
 * Node names: `20xx` (century), `201x` (decade), `2012` (year), `2012-03` (month), `2012-03-05` (day).
 * An interval I (rounded outward to whole days, open ends clamped to the domain) is covered by the unique
 * minimal set cover(I) of disjoint aligned nodes (greedy left to right, largest node first).
 *
 * Index: a value's interval V gets `c:<x>` for x ∈ cover(V) and `a:<y>` for every strict ancestor y of a
 * cover node. Two tree nodes are nested or disjoint, so V and a query interval Q share a day iff some
 * x ∈ cover(Q) and y ∈ cover(V) are equal or nested:
 *   y = x, or y is an ancestor of x  → the value has `c:y` with y ∈ cover(Q) ∪ ancestors(cover(Q));
 *   x is a strict ancestor of y       → the value has `a:x` with x ∈ cover(Q).
 * So candidates(Q) = anyOf({c:x | x ∈ cover(Q) ∪ ancestors(cover(Q))} ∪ {a:x | x ∈ cover(Q)}), a superset
 * of the values that intersect Q (day granularity); the exact prefix test runs afterwards on the values.
 */

const DAY = 86_400_000;
export const MIN_YEAR = 0;
export const MAX_YEAR = 9999;

/** Half-open interval in epoch milliseconds; ±Infinity for open ends. */
export interface Interval {
  start: number;
  end: number;
}

const DATE_PATTERN =
  /^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/;

/** Epoch ms of a UTC calendar date (correct for years 0–99, unlike Date.UTC). */
export function utcMs(year: number, month: number, day: number): number {
  const d = new Date(0);
  d.setUTCFullYear(year, month, day);
  return d.getTime();
}

/** The half-open UTC interval a FHIR date/dateTime/instant value denotes at its precision (undefined if malformed). */
export function dateInterval(value: string): Interval | undefined {
  const m = DATE_PATTERN.exec(value);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s, frac, tz] = m;
  const year = Number(y);
  if (mo === undefined) return { start: utcMs(year, 0, 1), end: utcMs(year + 1, 0, 1) };
  const month = Number(mo) - 1;
  if (month < 0 || month > 11) return undefined;
  if (d === undefined) return { start: utcMs(year, month, 1), end: utcMs(year, month + 1, 1) };
  const day = Number(d);
  if (day < 1 || day > 31 || utcMs(year, month, day) >= utcMs(year, month + 1, 1)) return undefined;
  if (h === undefined) return { start: utcMs(year, month, day), end: utcMs(year, month, day + 1) };
  const hours = Number(h);
  const minutes = Number(mi);
  const seconds = Number(s ?? 0);
  if (hours > 24 || minutes > 59 || seconds > 60) return undefined;
  const offsetMinutes = !tz || tz === 'Z' ? 0 : (tz[0] === '-' ? -1 : 1) * (Number(tz.slice(1, 3)) * 60 + Number(tz.slice(4, 6)));
  const ms = frac ? Math.floor(Number(`0${frac}`) * 1000) : 0;
  const base = utcMs(year, month, day) + ((hours * 60 + minutes - offsetMinutes) * 60 + seconds) * 1000 + ms;
  const width = s === undefined ? 60_000 : frac ? 1 : 1000;
  return { start: base, end: base + width };
}

/** The ISO form of dateInterval (kept for `_lastUpdated` and `_since`, which the stores compare as text). */
export function dateRange(value: string): { start: string; end: string } | undefined {
  const i = dateInterval(value);
  if (!i) return undefined;
  const iso = (ms: number) => {
    const d = new Date(ms);
    return Number.isNaN(d.getTime()) ? undefined : d.toISOString();
  };
  const start = iso(i.start);
  const end = iso(i.end);
  return start && end ? { start, end } : undefined;
}

// ---------------------------------------------------------------------------------------------
// Prefix semantics (R4 search, "date" parameters)
// ---------------------------------------------------------------------------------------------

export type DatePrefix = 'eq' | 'lt' | 'gt' | 'le' | 'ge' | 'sa' | 'eb';
export const DATE_PREFIXES: readonly DatePrefix[] = ['eq', 'lt', 'gt', 'le', 'ge', 'sa', 'eb'];

/**
 * R4 semantics of a prefix for a target value range V against the search value range S:
 * eq: S fully contains V; gt: the range above S intersects V; lt: the range below S intersects V;
 * ge: gt or eq; le: lt or eq; sa: V starts after S ends (V ⊆ [S.end, ∞)); eb: V ends before S starts.
 */
export function datePrefixMatches(prefix: DatePrefix, v: Interval, s: Interval): boolean {
  switch (prefix) {
    case 'eq':
      return s.start <= v.start && v.end <= s.end;
    case 'gt':
      return v.end > s.end;
    case 'lt':
      return v.start < s.start;
    case 'ge':
      return v.end > s.end || (s.start <= v.start && v.end <= s.end);
    case 'le':
      return v.start < s.start || (s.start <= v.start && v.end <= s.end);
    case 'sa':
      return v.start >= s.end;
    case 'eb':
      return v.end <= s.start;
  }
}

/** The interval every value matching `prefix` against S must intersect (the index step). */
export function prefixInterval(prefix: DatePrefix, s: Interval): Interval {
  switch (prefix) {
    case 'eq':
      return s;
    case 'lt':
    case 'eb':
      return { start: -Infinity, end: s.start };
    case 'gt':
    case 'sa':
      return { start: s.end, end: Infinity };
    case 'le':
      return { start: -Infinity, end: s.end };
    case 'ge':
      return { start: s.start, end: Infinity };
  }
}

// ---------------------------------------------------------------------------------------------
// The bucket tree
// ---------------------------------------------------------------------------------------------

const DOMAIN_START = utcMs(MIN_YEAR, 0, 1);
const DOMAIN_END = utcMs(MAX_YEAR + 1, 0, 1);

const pad = (n: number, w: number) => String(n).padStart(w, '0');

/** A day, as [year, month 0-11, day 1-31]. */
function civil(dayNumber: number): [number, number, number] {
  const d = new Date(dayNumber * DAY);
  return [d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()];
}

const dayNumberOf = (y: number, m: number, d: number) => Math.round(utcMs(y, m, d) / DAY);

/** Whole days [first, last) an interval touches, clamped to the domain; undefined when empty. */
function dayRange(i: Interval): [number, number] | undefined {
  const start = Math.max(i.start, DOMAIN_START);
  const end = Math.min(i.end, DOMAIN_END);
  if (!(end > start)) return undefined;
  return [Math.floor(start / DAY), Math.ceil(end / DAY)];
}

/** The minimal set of aligned tree nodes whose union is the interval's days (empty for an empty interval). */
export function cover(i: Interval): string[] {
  const range = dayRange(i);
  if (!range) return [];
  const [first, last] = range;
  const nodes: string[] = [];
  let p = first;
  while (p < last) {
    const [y, m, d] = civil(p);
    if (m === 0 && d === 1) {
      if (y % 100 === 0 && dayNumberOf(y + 100, 0, 1) <= last) {
        nodes.push(`${pad(y / 100, 2)}xx`);
        p = dayNumberOf(y + 100, 0, 1);
        continue;
      }
      if (y % 10 === 0 && dayNumberOf(y + 10, 0, 1) <= last) {
        nodes.push(`${pad(y / 10, 3)}x`);
        p = dayNumberOf(y + 10, 0, 1);
        continue;
      }
      if (dayNumberOf(y + 1, 0, 1) <= last) {
        nodes.push(pad(y, 4));
        p = dayNumberOf(y + 1, 0, 1);
        continue;
      }
    }
    if (d === 1 && dayNumberOf(y, m + 1, 1) <= last) {
      nodes.push(`${pad(y, 4)}-${pad(m + 1, 2)}`);
      p = dayNumberOf(y, m + 1, 1);
      continue;
    }
    nodes.push(`${pad(y, 4)}-${pad(m + 1, 2)}-${pad(d, 2)}`);
    p++;
  }
  return nodes;
}

/** Strict ancestors of a node, nearest first (`2012-03-05` → 2012-03, 2012, 201x, 20xx). */
export function ancestors(node: string): string[] {
  const out: string[] = [];
  if (node.length === 10) out.push(node.slice(0, 7));
  if (node.length >= 7) out.push(node.slice(0, 4));
  if (node.length >= 4 && node[3] !== 'x') out.push(`${node.slice(0, 3)}x`);
  if (node[2] !== 'x') out.push(`${node.slice(0, 2)}xx`);
  return out;
}

/** A closed interval whose cover is longer than this is coarsened (rounded outward) before indexing. */
export const MAX_COVER_TERMS = 8;

/** The interval rounded outward to whole months (unit 'month') or years, decades, centuries. */
export function roundOutward(i: Interval, unit: 'month' | 'year' | 'decade' | 'century'): Interval {
  const s = new Date(i.start);
  const e = new Date(i.end - 1);
  let sy = s.getUTCFullYear();
  let ey = e.getUTCFullYear();
  if (unit === 'month') return { start: utcMs(sy, s.getUTCMonth(), 1), end: utcMs(ey, e.getUTCMonth() + 1, 1) };
  const span = unit === 'year' ? 1 : unit === 'decade' ? 10 : 100;
  sy -= ((sy % span) + span) % span;
  ey -= ((ey % span) + span) % span;
  return { start: utcMs(sy, 0, 1), end: utcMs(ey + span, 0, 1) };
}

/**
 * Index terms of one value interval, added to `out`:
 *  - closed [s, e): `c:<x>` for x ∈ cover, `a:<y>` for the strict ancestors of the cover nodes; a cover of
 *    more than MAX_COVER_TERMS nodes is computed on the interval rounded outward to months, years, decades
 *    or centuries (a superset, so still sound; the post-filter is exact);
 *  - right-open [s, +∞): the day of s as a point in the `r` family (`rc:<day>`, `ra:<ancestors>`), since
 *    such a value meets Q exactly when s < Q.end;
 *  - left-open (-∞, e): the last day of the value in the `l` family (`lc:`, `la:`): it meets Q when e > Q.start;
 *  - (-∞, +∞): the single term `all`.
 * So an open Period costs 5 terms instead of a cover reaching the end of the domain.
 */
export function intervalTerms(i: Interval, out: Set<string>): void {
  if (i.start === -Infinity && i.end === Infinity) {
    out.add('all');
    return;
  }
  if (i.end === Infinity) return pointTerms('r', i.start, out);
  if (i.start === -Infinity) return pointTerms('l', i.end - 1, out);
  let nodes = cover(i);
  for (const unit of ['month', 'year', 'decade', 'century'] as const) {
    if (nodes.length <= MAX_COVER_TERMS) break;
    nodes = cover(roundOutward(i, unit));
  }
  for (const n of nodes) out.add(`c:${n}`);
  for (const n of nodes) for (const a of ancestors(n)) out.add(`a:${a}`);
}

function pointTerms(family: 'r' | 'l', ms: number, out: Set<string>): void {
  const nodes = cover({ start: ms, end: ms + 1 });
  if (nodes.length === 0) {
    // Outside the domain: before year 0 or after 9999 — indexed at the domain's edge.
    const edge = ms < DOMAIN_START ? DOMAIN_START : DOMAIN_END - 1;
    return pointTerms(family, edge, out);
  }
  const day = nodes[0];
  out.add(`${family}c:${day}`);
  for (const a of ancestors(day)) out.add(`${family}a:${a}`);
}

/** cover(q) ∪ ancestors as the c/a query values, with an optional family prefix. */
function coverQuery(q: Interval, family: string, out: Set<string>): void {
  const nodes = cover(q);
  for (const n of nodes) {
    out.add(`${family}c:${n}`);
    out.add(`${family}a:${n}`);
  }
  for (const n of nodes) for (const a of ancestors(n)) out.add(`${family}c:${a}`);
}

/**
 * The anyOf values of ONE clause that selects every value interval intersecting `q` (a superset at day
 * granularity; empty when q is empty): closed values by the cover scheme, right-open values whose start
 * lies before q.end, left-open values whose end lies after q.start, and fully open values.
 */
export function intervalQuery(q: Interval): string[] {
  if (!(q.end > q.start)) return [];
  const out = new Set<string>();
  coverQuery(q, '', out);
  coverQuery({ start: -Infinity, end: q.end }, 'r', out);
  coverQuery({ start: q.start, end: Infinity }, 'l', out);
  out.add('all');
  return [...out];
}

// ---------------------------------------------------------------------------------------------
// Values of the FHIR date-like types
// ---------------------------------------------------------------------------------------------

/**
 * The interval of a date-like element: date/dateTime/instant strings at their precision; a Period from
 * its start's lower bound to its end's upper bound (a missing end or start is open: ±∞); a Timing from its
 * earliest to its latest event or bounds (its outer limits, as R4 says). Undefined when there is none.
 */
export function valueInterval(value: unknown, elementType: string | undefined): Interval | undefined {
  if (typeof value === 'string') {
    if (elementType !== undefined && elementType !== 'date' && elementType !== 'dateTime' && elementType !== 'instant') return undefined;
    return dateInterval(value);
  }
  if (value === null || typeof value !== 'object') return undefined;
  const o = value as Record<string, unknown>;
  if (elementType === 'Period' || (elementType === undefined && ('start' in o || 'end' in o))) return periodInterval(o);
  if (elementType === 'Timing' || (elementType === undefined && ('event' in o || 'repeat' in o))) {
    let start = Infinity;
    let end = -Infinity;
    const events = Array.isArray(o.event) ? o.event : [];
    for (const e of events) {
      const i = typeof e === 'string' ? dateInterval(e) : undefined;
      if (i) {
        start = Math.min(start, i.start);
        end = Math.max(end, i.end);
      }
    }
    const bounds = (o.repeat as { boundsPeriod?: Record<string, unknown> } | undefined)?.boundsPeriod;
    if (bounds) {
      const i = periodInterval(bounds);
      if (i) {
        start = Math.min(start, i.start);
        end = Math.max(end, i.end);
      }
    }
    return start <= end ? { start, end } : undefined;
  }
  return undefined;
}

function periodInterval(o: Record<string, unknown>): Interval | undefined {
  const s = typeof o.start === 'string' ? dateInterval(o.start) : undefined;
  const e = typeof o.end === 'string' ? dateInterval(o.end) : undefined;
  if (!s && !e) return undefined;
  const start = s ? s.start : -Infinity;
  const end = e ? e.end : Infinity;
  return end > start ? { start, end } : { start, end: start + 1 };
}
