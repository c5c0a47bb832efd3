/**
 * Number and quantity search: exact decimal arithmetic on lexemes (no float rounding), the R4 prefix
 * semantics with the implicit precision of the search value, and the integer-floor bucket terms.
 *
 * Terms per numeric value: `f:<floor(value)>` and the presence term `*`. An `eq` (or `ap`) query whose
 * implicit range spans at most MAX_BUCKETS integers selects `anyOf f:<k>` over those integers; anything
 * else selects `*`. The exact comparison is always a post-filter on the real values.
 */

/** value = m · 10^e, exactly. */
export interface Decimal {
  m: bigint;
  e: number;
  /** Written with an exponent (`1e2`): R4 gives it one more digit of precision ([95, 105), not [50, 150)). */
  exponent?: boolean;
}

export type NumberPrefix = 'eq' | 'ne' | 'gt' | 'lt' | 'ge' | 'le' | 'sa' | 'eb' | 'ap';
export const NUMBER_PREFIXES: readonly NumberPrefix[] = ['eq', 'ne', 'gt', 'lt', 'ge', 'le', 'sa', 'eb', 'ap'];

/** Bucket terms an eq/ap query may OR together before it falls back to the presence term. */
export const MAX_BUCKETS = 16;
export const PRESENCE = '*';

const LEXEME = /^([+-]?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/;

export function parseDecimal(lexeme: string): Decimal | undefined {
  const m = LEXEME.exec(lexeme);
  if (!m) return undefined;
  const [, sign, int, frac = '', exp = '0'] = m;
  const e = Number(exp) - frac.length;
  if (!Number.isSafeInteger(e) || Math.abs(e) > 1000) return undefined;
  const mant = BigInt(int + frac);
  return { m: sign === '-' ? -mant : mant, e, ...(m[4] !== undefined ? { exponent: true } : {}) };
}

/** A JSON number value (JS number or lossless lexeme object) as a Decimal. */
export function decimalOf(value: unknown): Decimal | undefined {
  if (typeof value === 'number') return Number.isFinite(value) ? parseDecimal(String(value)) : undefined;
  if (value !== null && typeof value === 'object' && typeof (value as { value?: unknown }).value === 'string') {
    return parseDecimal((value as { value: string }).value);
  }
  return undefined;
}

const TEN = 10n;

function scale(d: Decimal, e: number): bigint {
  return d.m * TEN ** BigInt(d.e - e);
}

export function compareDecimal(a: Decimal, b: Decimal): number {
  const e = Math.min(a.e, b.e);
  const x = scale(a, e);
  const y = scale(b, e);
  return x < y ? -1 : x > y ? 1 : 0;
}

const SAFE_LIMIT: Decimal = { m: 2n ** 53n, e: 0 };

/** |d| ≤ 2^53: the range in which a JSON number is exact. */
export function withinSafeRange(d: Decimal): boolean {
  return compareDecimal({ m: d.m < 0n ? -d.m : d.m, e: d.e }, SAFE_LIMIT) <= 0;
}

/** floor(d) as a bigint. */
export function floorDecimal(d: Decimal): bigint {
  if (d.e >= 0) return d.m * TEN ** BigInt(d.e);
  const div = TEN ** BigInt(-d.e);
  const q = d.m / div;
  return d.m < 0n && q * div !== d.m ? q - 1n : q;
}

/** The implicit range of a search value: ± half a unit of its last significant digit (`100` → [99.5, 100.5); `1e2` → [95, 105) as R4 says). */
export function implicitRange(d: Decimal): { lo: Decimal; hi: Decimal } {
  if (d.exponent) return { lo: { m: d.m * 100n - 5n, e: d.e - 2 }, hi: { m: d.m * 100n + 5n, e: d.e - 2 } };
  return { lo: { m: d.m * TEN - 5n, e: d.e - 1 }, hi: { m: d.m * TEN + 5n, e: d.e - 1 } };
}

/** `ap`: within 10% of the value (R4 leaves the width to the server). */
function approxRange(d: Decimal): { lo: Decimal; hi: Decimal } {
  const abs = d.m < 0n ? -d.m : d.m;
  return { lo: { m: d.m * TEN - abs, e: d.e - 1 }, hi: { m: d.m * TEN + abs, e: d.e - 1 } };
}

/** R4 number prefix semantics: eq/ne use the search value's implicit range, the others its exact value. */
export function numberMatches(prefix: NumberPrefix, v: Decimal, q: Decimal): boolean {
  switch (prefix) {
    case 'eq':
    case 'ne': {
      const { lo, hi } = implicitRange(q);
      const inside = compareDecimal(v, lo) >= 0 && compareDecimal(v, hi) < 0;
      return prefix === 'eq' ? inside : !inside;
    }
    case 'ap': {
      const { lo, hi } = approxRange(q);
      return compareDecimal(v, lo) >= 0 && compareDecimal(v, hi) <= 0;
    }
    case 'gt':
    case 'sa':
      return compareDecimal(v, q) > 0;
    case 'lt':
    case 'eb':
      return compareDecimal(v, q) < 0;
    case 'ge':
      return compareDecimal(v, q) >= 0;
    case 'le':
      return compareDecimal(v, q) <= 0;
  }
}

/**
 * The same for a target that is itself a range [low, high] (a Range; missing ends are open): eq when the
 * ranges overlap, gt/ge when the target reaches above, lt/le when it reaches below.
 */
export function rangeMatches(prefix: NumberPrefix, low: Decimal | undefined, high: Decimal | undefined, q: Decimal): boolean {
  const overlaps = (lo: Decimal, hi: Decimal, hiInclusive: boolean) =>
    (high === undefined || compareDecimal(high, lo) >= 0) &&
    (low === undefined || (hiInclusive ? compareDecimal(low, hi) <= 0 : compareDecimal(low, hi) < 0));
  switch (prefix) {
    case 'eq':
    case 'ne': {
      const { lo, hi } = implicitRange(q);
      return overlaps(lo, hi, false) === (prefix === 'eq');
    }
    case 'ap': {
      const { lo, hi } = approxRange(q);
      return overlaps(lo, hi, true);
    }
    case 'gt':
    case 'sa':
      return high === undefined || compareDecimal(high, q) > 0;
    case 'ge':
      return high === undefined || compareDecimal(high, q) >= 0;
    case 'lt':
    case 'eb':
      return low === undefined || compareDecimal(low, q) < 0;
    case 'le':
      return low === undefined || compareDecimal(low, q) <= 0;
  }
}

/** The bucket term of a value. */
export function bucketTerm(d: Decimal): string {
  return `f:${floorDecimal(d)}`;
}

/** Terms selecting the candidates of a query value: bucket terms for narrow eq/ap, else the presence term. */
export function numberQueryTerms(prefix: NumberPrefix, q: Decimal, bucketsUsable: boolean): string[] {
  if (!bucketsUsable || (prefix !== 'eq' && prefix !== 'ap')) return [PRESENCE];
  const { lo, hi } = prefix === 'eq' ? implicitRange(q) : approxRange(q);
  const first = floorDecimal(lo);
  const last = floorDecimal(hi); // hi is exclusive for eq; including its bucket only adds candidates
  if (last - first >= BigInt(MAX_BUCKETS)) return [PRESENCE];
  const out: string[] = [];
  for (let k = first; k <= last; k++) out.push(`f:${k}`);
  return out;
}
