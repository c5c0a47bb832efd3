/**
 * String search: normalization, prefix terms and the parts of HumanName/Address that FHIR searches.
 *
 * Default string search is "starts with", case- and accent-insensitive: both sides are normalized
 * (Unicode NFD, combining marks removed, lower-cased, whitespace runs collapsed to one space, trimmed)
 * and the value must start with the query. The index holds `p:<first k chars>` for k = 1..PREFIX_TERMS of
 * the normalized value, so a query of up to PREFIX_TERMS characters is decided by one equality term; a
 * longer one selects by its PREFIX_TERMS-character prefix and is finished by a post-filter. `:exact`
 * (whole value, case- and accent-sensitive) is decided by the term `x:<value>`.
 */

export const PREFIX_TERMS = 8;

const COMBINING = /[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]/g;
const SPACES = /\s+/g;
const ASCII_WORD = /^[A-Za-z0-9]*$/;

export function normalizeString(s: string): string {
  if (ASCII_WORD.test(s)) return s.toLowerCase();
  return s.normalize('NFD').replace(COMBINING, '').toLowerCase().replace(SPACES, ' ').trim();
}

/** Adds the prefix terms and the exact term of one string value. */
export function stringTerms(value: string, out: Set<string>): void {
  if (value.length === 0) return;
  const n = normalizeString(value);
  const max = Math.min(PREFIX_TERMS, n.length);
  for (let k = 1; k <= max; k++) {
    // Never cut a surrogate pair: such a prefix cannot be a query's normalized form.
    const code = n.charCodeAt(k - 1);
    if (code >= 0xd800 && code <= 0xdbff) continue;
    out.add(`p:${n.slice(0, k)}`);
  }
  out.add(`x:${value}`);
}

const NAME_PARTS = ['family', 'given', 'prefix', 'suffix', 'text'] as const;
const ADDRESS_PARTS = ['line', 'city', 'district', 'state', 'postalCode', 'country', 'text'] as const;

/**
 * The strings a value of a string parameter contributes: itself (string, markdown), every part of a
 * HumanName (family, given, prefix, suffix, text) or of an Address (line, city, district, state,
 * postalCode, country, text).
 */
export function forEachStringPart(value: unknown, elementType: string | undefined, fn: (s: string) => void): void {
  if (typeof value === 'string') {
    fn(value);
    return;
  }
  if (value === null || typeof value !== 'object') return;
  const o = value as Record<string, unknown>;
  const parts =
    elementType === 'HumanName' ? NAME_PARTS
    : elementType === 'Address' ? ADDRESS_PARTS
    : elementType === undefined ? ('family' in o || 'given' in o ? NAME_PARTS : ADDRESS_PARTS)
    : undefined;
  if (!parts) return;
  for (const part of parts) {
    const v = o[part];
    if (typeof v === 'string') fn(v);
    else if (Array.isArray(v)) for (const x of v) if (typeof x === 'string') fn(x);
  }
}

/** The index term deciding (or, for long queries, pre-selecting) a default string query. */
export function stringQueryTerm(query: string): { term: string; exact: boolean } | undefined {
  const n = normalizeString(query);
  if (n.length === 0) return undefined;
  if (n.length <= PREFIX_TERMS) return { term: `p:${n}`, exact: true };
  let k = PREFIX_TERMS;
  const code = n.charCodeAt(k - 1);
  if (code >= 0xd800 && code <= 0xdbff) k--;
  return { term: `p:${n.slice(0, k)}`, exact: false };
}

/** Default string match: the normalized value starts with the normalized query. */
export function stringStartsWith(value: string, normalizedQuery: string): boolean {
  return normalizeString(value).startsWith(normalizedQuery);
}
