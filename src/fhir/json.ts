/**
 * FHIR JSON that keeps number lexemes.
 *
 * FHIR decimals carry their precision in the lexeme: `1.50` is not `1.5`, and `0.0` is not `0`.
 * A JS number cannot remember that, so `parseFhirJson` returns a {@link FhirDecimal} (a lossless-json
 * {@link LosslessNumber}) for every number whose lexeme does not survive `String(Number(lexeme))`,
 * and a plain JS number for every other one. `stringifyFhirJson` writes the lexemes back verbatim.
 *
 * Speed: lossless-json's own parser is ~10x slower than `JSON.parse`, so the common path is
 *   1. `JSON.parse(text)` (native; also the validator),
 *   2. one scan of the text that counts string/number tokens and records the lexemes that do not
 *      round-trip, by ordinal,
 *   3. one walk of the parsed tree in document order that counts the same tokens and swaps the
 *      recorded ordinals for `FhirDecimal`s.
 * A post-parse walk replaces a `JSON.parse` reviver: on a Synthea bundle a reviver made JSON.parse
 * ~3x slower, while the walk adds ~5-10% of the parse time. The token counts must agree; they differ
 * only when an object repeats a key (JSON.parse silently keeps the last one; FHIR forbids duplicates),
 * which is reported as a syntax error. Objects with keys that start with a digit (never in FHIR) are
 * enumerated by JS in a different order than the text, so when such a document also holds decimals it
 * is re-parsed by lossless-json's `parse` (the slow, order-independent path).
 *
 * Errors never echo document content (documents hold PHI): {@link FhirJsonSyntaxError} carries only a
 * fixed reason, a position, a line and a column.
 */
import { LosslessNumber, isLosslessNumber as isLosslessNumberImpl, parse as losslessParse } from 'lossless-json';
import { randomBytes } from 'node:crypto';

export { LosslessNumber };

/** Containers nested deeper than this are rejected (also protects the recursive walks' stack). */
export const MAX_JSON_DEPTH = 1000;

const JSON_NUMBER_LEXEME = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$/;

/** True when `lexeme` is a JSON number (RFC 8259 grammar). */
export function isJsonNumberLexeme(lexeme: string): boolean {
  return JSON_NUMBER_LEXEME.test(lexeme);
}

// ---------------------------------------------------------------------------------------------
// FhirDecimal
// ---------------------------------------------------------------------------------------------

interface StringifyContext {
  prefix: string;
  count: number;
}

/** Set only while `stringifyFhirJson` runs `JSON.stringify` (which is synchronous). */
let activeStringify: StringifyContext | null = null;

/**
 * A JSON number kept as its exact lexeme. It is a {@link LosslessNumber} (so `isLosslessNumber`,
 * lossless-json's `stringify` and `canonicalize` all recognise it); the subclass only adds a
 * `toJSON` that lets `stringifyFhirJson` serialise it at native `JSON.stringify` speed.
 *
 * Plain `JSON.stringify` of a value holding a FhirDecimal throws: it cannot write a number lexeme
 * verbatim, and silently writing `0` for `0.0` would lose precision. Use `stringifyFhirJson`.
 */
export class FhirDecimal extends LosslessNumber {
  toJSON(): string {
    const ctx = activeStringify;
    if (ctx === null) {
      throw new TypeError('A FhirDecimal cannot be serialised by JSON.stringify; use stringifyFhirJson()');
    }
    const lexeme = this.value;
    if (!JSON_NUMBER_LEXEME.test(lexeme)) {
      throw new TypeError('A FhirDecimal holds a value that is not a JSON number');
    }
    ctx.count++;
    return ctx.prefix + lexeme;
  }
}

/** True for any lossless-json number (including {@link FhirDecimal}). */
export function isLosslessNumber(v: unknown): v is LosslessNumber {
  return isLosslessNumberImpl(v);
}

/** Numeric value of a JS number or a LosslessNumber (may round, as any JS number does). */
export function toNumber(v: number | LosslessNumber): number {
  return typeof v === 'number' ? v : Number(v.value);
}

/**
 * The JSON lexeme of a number: a LosslessNumber's exact text, or ECMAScript `Number#toString` of a
 * JS number (which is what `JSON.stringify` writes). Throws for NaN and ±Infinity.
 */
export function numberLexeme(v: number | LosslessNumber): string {
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new TypeError('NaN and Infinity are not JSON numbers');
    return String(v);
  }
  return v.value;
}

/** True when the JS number parsed from `lexeme` prints back as exactly `lexeme`. */
function roundTrips(lexeme: string): boolean {
  return String(Number(lexeme)) === lexeme;
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/**
 * Malformed JSON. The message holds a fixed reason and a location, never document content.
 * `position` is a 0-based UTF-16 offset into the string given to `parseFhirJson` (a leading BOM
 * counts); `line` and `column` are 1-based.
 */
export class FhirJsonSyntaxError extends SyntaxError {
  readonly reason: string;
  readonly position: number | undefined;
  readonly line: number | undefined;
  readonly column: number | undefined;

  constructor(reason: string, position?: number, line?: number, column?: number) {
    super(
      position === undefined
        ? `Invalid JSON: ${reason}`
        : `Invalid JSON: ${reason} at line ${line}, column ${column} (position ${position})`,
    );
    this.name = 'FhirJsonSyntaxError';
    this.reason = reason;
    this.position = position;
    this.line = line;
    this.column = column;
  }
}

/** Build the error for `text` (BOM already stripped; `offset` = 1 if one was). */
function syntaxError(text: string, offset: number, fallbackReason: string): FhirJsonSyntaxError {
  const found = locateJsonError(text);
  if (found === null) return new FhirJsonSyntaxError(fallbackReason);
  const pos = found.pos;
  let line = 1;
  let lineStart = 0;
  for (let i = text.indexOf('\n'); i !== -1 && i < pos; i = text.indexOf('\n', i + 1)) {
    line++;
    lineStart = i + 1;
  }
  // The BOM sits on line 1, so it shifts the column only there.
  const column = pos - lineStart + 1 + (line === 1 ? offset : 0);
  return new FhirJsonSyntaxError(found.reason, pos + offset, line, column);
}

class Located {
  constructor(
    readonly pos: number,
    readonly reason: string,
  ) {}
}

/**
 * A strict RFC 8259 validator used only on error paths, to find where and why a text is not
 * acceptable (including duplicate keys). Returns null when it finds nothing wrong.
 */
function locateJsonError(t: string): { pos: number; reason: string } | null {
  const n = t.length;
  let i = 0;

  const ws = (): void => {
    for (;;) {
      const c = t.charCodeAt(i);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) i++;
      else return;
    }
  };
  const fail = (reason: string, pos = i): never => {
    throw new Located(pos, reason);
  };
  const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39;

  /** Returns the raw string token (with quotes); `i` moves past it. */
  const str = (): string => {
    const start = i;
    i++; // opening quote
    for (;;) {
      if (i >= n) fail('unterminated string', start);
      const c = t.charCodeAt(i);
      if (c === 0x22) {
        i++;
        return t.slice(start, i);
      }
      if (c < 0x20) fail('unescaped control character in string');
      if (c === 0x5c) {
        const e = t.charCodeAt(i + 1);
        if (e === 0x75) {
          for (let k = 2; k < 6; k++) {
            const h = t.charCodeAt(i + k);
            const hex = isDigit(h) || (h >= 0x41 && h <= 0x46) || (h >= 0x61 && h <= 0x66);
            if (!hex) fail('invalid \\u escape in string');
          }
          i += 6;
        } else if (
          e === 0x22 || e === 0x5c || e === 0x2f || e === 0x62 ||
          e === 0x66 || e === 0x6e || e === 0x72 || e === 0x74
        ) {
          i += 2;
        } else {
          fail('invalid escape sequence in string');
        }
      } else {
        i++;
      }
    }
  };

  const num = (): void => {
    const start = i;
    if (t.charCodeAt(i) === 0x2d) i++;
    const c = t.charCodeAt(i);
    if (c === 0x30) i++;
    else if (c >= 0x31 && c <= 0x39) while (isDigit(t.charCodeAt(i))) i++;
    else fail('invalid number', start);
    if (t.charCodeAt(i) === 0x2e) {
      i++;
      if (!isDigit(t.charCodeAt(i))) fail('invalid number', start);
      while (isDigit(t.charCodeAt(i))) i++;
    }
    const e = t.charCodeAt(i);
    if (e === 0x65 || e === 0x45) {
      i++;
      const s = t.charCodeAt(i);
      if (s === 0x2b || s === 0x2d) i++;
      if (!isDigit(t.charCodeAt(i))) fail('invalid number', start);
      while (isDigit(t.charCodeAt(i))) i++;
    }
  };

  const literal = (word: string): void => {
    if (t.startsWith(word, i)) i += word.length;
    else fail('unexpected character');
  };

  const value = (depth: number): void => {
    ws();
    if (i >= n) fail('unexpected end of input');
    const c = t.charCodeAt(i);
    if (c === 0x7b) obj(depth + 1);
    else if (c === 0x5b) arr(depth + 1);
    else if (c === 0x22) str();
    else if (c === 0x2d || isDigit(c)) num();
    else if (c === 0x74) literal('true');
    else if (c === 0x66) literal('false');
    else if (c === 0x6e) literal('null');
    else fail('unexpected character');
  };

  const arr = (depth: number): void => {
    if (depth > MAX_JSON_DEPTH) fail(`nesting deeper than ${MAX_JSON_DEPTH} levels`);
    i++;
    ws();
    if (t.charCodeAt(i) === 0x5d) {
      i++;
      return;
    }
    for (;;) {
      value(depth);
      ws();
      if (i >= n) fail('unexpected end of input');
      const c = t.charCodeAt(i);
      if (c === 0x2c) {
        i++;
        continue;
      }
      if (c === 0x5d) {
        i++;
        return;
      }
      fail("expected ',' or ']' after an array element");
    }
  };

  const obj = (depth: number): void => {
    if (depth > MAX_JSON_DEPTH) fail(`nesting deeper than ${MAX_JSON_DEPTH} levels`);
    i++;
    ws();
    if (t.charCodeAt(i) === 0x7d) {
      i++;
      return;
    }
    const seen = new Set<string>();
    for (;;) {
      ws();
      if (i >= n) fail('unexpected end of input');
      if (t.charCodeAt(i) !== 0x22) fail('expected a double-quoted object key');
      const keyPos = i;
      const raw = str();
      const key = raw.indexOf('\\') === -1 ? raw.slice(1, -1) : (JSON.parse(raw) as string);
      if (seen.has(key)) fail('duplicate object key', keyPos);
      seen.add(key);
      ws();
      if (i >= n) fail('unexpected end of input');
      if (t.charCodeAt(i) !== 0x3a) fail("expected ':' after an object key");
      i++;
      value(depth);
      ws();
      if (i >= n) fail('unexpected end of input');
      const c = t.charCodeAt(i);
      if (c === 0x2c) {
        i++;
        continue;
      }
      if (c === 0x7d) {
        i++;
        return;
      }
      fail("expected ',' or '}' after an object member");
    }
  };

  try {
    ws();
    if (i >= n) fail('empty document');
    value(0);
    ws();
    if (i < n) fail('unexpected content after the JSON value');
    return null;
  } catch (e) {
    if (e instanceof Located) return { pos: e.pos, reason: e.reason };
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

interface ScanResult {
  /** Number of string tokens (keys and values) plus number tokens. */
  tokens: number;
  /** Ordinals (0-based, document order, numbers only) of lexemes that do not round-trip. */
  badOrdinals: number[];
  badLexemes: string[];
}

/**
 * One pass over a text that JSON.parse has accepted: skips strings (indexOf to the closing quote,
 * honouring backslash runs), counts tokens, and records the number lexemes that a JS number would
 * change. Outside strings, valid JSON holds only whitespace, punctuation, true/false/null and numbers,
 * so a '-' or a digit always starts a number, and it runs while the characters can belong to one.
 */
function scanTokens(t: string): ScanResult {
  const n = t.length;
  let tokens = 0;
  let ordinal = 0;
  const badOrdinals: number[] = [];
  const badLexemes: string[] = [];
  let i = 0;
  while (i < n) {
    const c = t.charCodeAt(i);
    if (c === 0x22) {
      let from = i + 1;
      for (;;) {
        const q = t.indexOf('"', from);
        if (q === -1) {
          // Unreachable for text JSON.parse accepted; stop scanning (the counts will then disagree).
          return { tokens: -1, badOrdinals, badLexemes };
        }
        if (t.charCodeAt(q - 1) !== 0x5c) {
          i = q + 1;
          break;
        }
        let k = q - 1;
        while (t.charCodeAt(k) === 0x5c) k--;
        if (((q - 1 - k) & 1) === 0) {
          i = q + 1;
          break;
        }
        from = q + 1;
      }
      tokens++;
    } else if ((c >= 0x30 && c <= 0x39) || c === 0x2d) {
      let j = i + 1;
      while (j < n) {
        const d = t.charCodeAt(j);
        if ((d >= 0x30 && d <= 0x39) || d === 0x2e || d === 0x65 || d === 0x45 || d === 0x2b || d === 0x2d) j++;
        else break;
      }
      const lexeme = t.slice(i, j);
      if (!roundTrips(lexeme)) {
        badOrdinals.push(ordinal);
        badLexemes.push(lexeme);
      }
      ordinal++;
      tokens++;
      i = j;
    } else {
      i++;
    }
  }
  return { tokens, badOrdinals, badLexemes };
}

class TooDeep extends Error {}

/** Walk state; `next` is the number ordinal to replace next (-1: none left). */
interface WalkState {
  tokens: number;
  numbers: number;
  next: number;
  badIndex: number;
  badOrdinals: number[];
  badLexemes: string[];
  digitKey: boolean;
}

function advance(s: WalkState): FhirDecimal {
  const d = new FhirDecimal(s.badLexemes[s.badIndex]);
  s.badIndex++;
  s.next = s.badIndex < s.badOrdinals.length ? s.badOrdinals[s.badIndex] : -1;
  return d;
}

function walkArray(a: unknown[], s: WalkState, depth: number): void {
  if (depth > MAX_JSON_DEPTH) throw new TooDeep();
  for (let i = 0; i < a.length; i++) {
    const v = a[i];
    switch (typeof v) {
      case 'string':
        s.tokens++;
        break;
      case 'number':
        s.tokens++;
        if (s.numbers++ === s.next) a[i] = advance(s);
        break;
      case 'object':
        if (v !== null) {
          if (Array.isArray(v)) walkArray(v, s, depth + 1);
          else walkObject(v as Record<string, unknown>, s, depth + 1);
        }
        break;
    }
  }
}

function walkObject(o: Record<string, unknown>, s: WalkState, depth: number): void {
  if (depth > MAX_JSON_DEPTH) throw new TooDeep();
  // for-in over a JSON.parse object yields own keys in insertion (= document) order, except that
  // integer-like keys come first; those are flagged. It is ~3x faster than Object.keys here.
  for (const k in o) {
    s.tokens++;
    const k0 = k.charCodeAt(0);
    if (k0 >= 0x30 && k0 <= 0x39) s.digitKey = true;
    const v = o[k];
    switch (typeof v) {
      case 'string':
        s.tokens++;
        break;
      case 'number':
        s.tokens++;
        if (s.numbers++ === s.next) o[k] = advance(s);
        break;
      case 'object':
        if (v !== null) {
          if (Array.isArray(v)) walkArray(v, s, depth + 1);
          else walkObject(v as Record<string, unknown>, s, depth + 1);
        }
        break;
    }
  }
}

function parseNumberKeepingLexeme(lexeme: string): number | FhirDecimal {
  return roundTrips(lexeme) ? Number(lexeme) : new FhirDecimal(lexeme);
}

/**
 * Parse FHIR JSON text. Numbers whose lexeme survives `String(Number(lexeme))` become JS numbers,
 * all others become {@link FhirDecimal}s holding the exact lexeme. One leading BOM is ignored.
 * Duplicate object keys and nesting deeper than {@link MAX_JSON_DEPTH} are syntax errors.
 *
 * @throws FhirJsonSyntaxError
 */
export function parseFhirJson(text: string): unknown {
  if (typeof text !== 'string') throw new TypeError('parseFhirJson expects a string');
  let offset = 0;
  if (text.charCodeAt(0) === 0xfeff) {
    text = text.slice(1);
    offset = 1;
  }

  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    // The engine's message quotes the document; never pass it on.
    if (e instanceof SyntaxError) throw syntaxError(text, offset, 'malformed document');
    throw e;
  }

  const scan = scanTokens(text);
  if (typeof value !== 'object' || value === null) {
    if (typeof value === 'number' && scan.badLexemes.length === 1) return new FhirDecimal(scan.badLexemes[0]);
    return value;
  }

  const state: WalkState = {
    tokens: 0,
    numbers: 0,
    next: scan.badOrdinals.length > 0 ? scan.badOrdinals[0] : -1,
    badIndex: 0,
    badOrdinals: scan.badOrdinals,
    badLexemes: scan.badLexemes,
    digitKey: false,
  };
  try {
    if (Array.isArray(value)) walkArray(value, state, 1);
    else walkObject(value as Record<string, unknown>, state, 1);
  } catch (e) {
    if (e instanceof TooDeep) throw syntaxError(text, offset, `nesting deeper than ${MAX_JSON_DEPTH} levels`);
    throw e;
  }

  if (state.tokens !== scan.tokens) {
    // JSON.parse dropped tokens: an object repeats a key.
    throw syntaxError(text, offset, 'duplicate object key');
  }
  if (state.digitKey && scan.badOrdinals.length > 0) {
    // Enumeration order differs from document order, so the ordinals may have been applied to the
    // wrong numbers: re-parse without relying on order. (Duplicates were excluded above.)
    try {
      return losslessParse(text, null, parseNumberKeepingLexeme);
    } catch {
      throw syntaxError(text, offset, 'malformed document');
    }
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Stringifying
// ---------------------------------------------------------------------------------------------

/** Per-process secret + per-call counter: sentinels no document can predict or collide with. */
const SENTINEL_SECRET = `@fhirdecimal:${randomBytes(16).toString('hex')}:`;
let sentinelCounter = 0;

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * `JSON.stringify(value, null, space)`, except that LosslessNumbers (FhirDecimal or plain) are
 * written as their exact lexeme. Costs one native `JSON.stringify` plus a substring check when the
 * value holds no decimals, and one extra regex pass over the output when it holds FhirDecimals.
 * Plain (non-FhirDecimal) LosslessNumbers take a slower replacer pass.
 */
export function stringifyFhirJson(value: unknown, space?: number): string {
  const ctx: StringifyContext = { prefix: `${SENTINEL_SECRET}${(sentinelCounter++).toString(36)}:`, count: 0 };
  const previous = activeStringify;
  activeStringify = ctx;
  let out: string | undefined;
  try {
    out = JSON.stringify(value, null, space);
    // A LosslessNumber that is not a FhirDecimal serialises as {"value":…,"isLosslessNumber":true}.
    if (out !== undefined && out.includes('"isLosslessNumber"')) {
      ctx.count = 0;
      out = JSON.stringify(
        value,
        (_key: string, v: unknown) => {
          if (v !== null && typeof v === 'object' && isLosslessNumberImpl(v)) {
            const lexeme = (v as LosslessNumber).value;
            if (!JSON_NUMBER_LEXEME.test(lexeme)) throw new TypeError('A LosslessNumber holds a value that is not a JSON number');
            ctx.count++;
            return ctx.prefix + lexeme;
          }
          return v;
        },
        space,
      );
    }
  } finally {
    activeStringify = previous;
  }
  if (out === undefined) throw new TypeError('Value has no JSON representation');
  if (ctx.count === 0) return out;
  let replaced = 0;
  const sentinel = new RegExp(`"${escapeRegExp(ctx.prefix)}([-+.0-9eE]+)"`, 'g');
  out = out.replace(sentinel, (_m: string, lexeme: string) => {
    replaced++;
    return lexeme;
  });
  if (replaced !== ctx.count) throw new Error('stringifyFhirJson: internal sentinel mismatch');
  return out;
}

// ---------------------------------------------------------------------------------------------
// Copying
// ---------------------------------------------------------------------------------------------

/**
 * A deep copy of parsed FHIR JSON that a handler may change without touching the caller's value.
 * `structuredClone` would not do: it turns a FhirDecimal into a plain object (its class is lost), which
 * validation no longer sees as a number. LosslessNumbers are immutable and shared; a `__proto__` key stays
 * an own member (Object.fromEntries defines, it does not assign).
 */
export function cloneFhirJson<T>(value: T): T {
  if (Array.isArray(value)) return value.map(cloneFhirJson) as T;
  if (value === null || typeof value !== 'object' || isLosslessNumberImpl(value)) return value;
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, cloneFhirJson(v)])) as T;
}

// ---------------------------------------------------------------------------------------------
// Test helper
// ---------------------------------------------------------------------------------------------

/**
 * Structural equality for parsed FHIR JSON: object key order is ignored, members whose value is
 * `undefined` count as absent, and when either side of a number comparison is a LosslessNumber the
 * two are equal only if their lexemes are (`1.50` ≠ `1.5`; a JS number's lexeme is `String(n)`).
 */
export function deepEqualFhir(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  const aNum = typeof a === 'number' || isLosslessNumberImpl(a);
  const bNum = typeof b === 'number' || isLosslessNumberImpl(b);
  if (aNum || bNum) {
    if (!(aNum && bNum)) return false;
    if (typeof a === 'number' && typeof b === 'number') return a === b; // NaN ≠ NaN, 0 === -0
    return lexemeOf(a as number | LosslessNumber) === lexemeOf(b as number | LosslessNumber);
  }
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  const aArr = Array.isArray(a);
  if (aArr !== Array.isArray(b)) return false;
  if (aArr) {
    const x = a as unknown[];
    const y = b as unknown[];
    if (x.length !== y.length) return false;
    for (let i = 0; i < x.length; i++) if (!deepEqualFhir(x[i], y[i])) return false;
    return true;
  }
  const x = a as Record<string, unknown>;
  const y = b as Record<string, unknown>;
  const xKeys = Object.keys(x).filter((k) => x[k] !== undefined);
  const yKeys = Object.keys(y).filter((k) => y[k] !== undefined);
  if (xKeys.length !== yKeys.length) return false;
  for (const k of xKeys) {
    if (!Object.prototype.hasOwnProperty.call(y, k) || !deepEqualFhir(x[k], y[k])) return false;
  }
  return true;
}

function lexemeOf(v: number | LosslessNumber): string {
  return typeof v === 'number' ? String(v) : v.value;
}
