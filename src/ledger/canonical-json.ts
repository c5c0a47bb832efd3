/**
 * Canonical JSON for digests: RFC 8785 (JCS) with one FHIR exception.
 *
 * - Objects: members sorted by the UTF-16 code units of their names, recursively; `undefined`-valued
 *   members are omitted (as JSON.stringify does). Arrays keep their order.
 * - No whitespace between tokens.
 * - Strings: exactly as ECMAScript JSON.stringify writes them (RFC 8785 §3.2.2.2). Strings holding a
 *   lone surrogate are rejected (RFC 8785 §3.2.2.2 requires an error; JSON.stringify would escape it).
 * - JS numbers: ECMAScript Number::toString (RFC 8785 §3.2.2.3), so `-0` is written `0`; NaN and
 *   ±Infinity are rejected.
 * - FHIR exception: a LosslessNumber (what `parseFhirJson` returns for every number whose lexeme a JS
 *   number would change, e.g. `1.50`, `0.0`, `1e2`, `12345678901234567890`) is written as its exact
 *   lexeme, after checking that the lexeme is a JSON number. Together with parseFhirJson this means
 *   every number of a received document is written exactly as it arrived.
 *
 * The digest of a value is SHA-256 over the UTF-8 bytes of its canonical form. What a resource version is
 * anchored with is its commitment: a salted digest that hides low-entropy content (versionCommitmentHex).
 * docs/proofs.md states both rules for third parties, with test vectors.
 */
import { createHash, type Hash } from 'node:crypto';
import { isLosslessNumber } from 'lossless-json';

/** Containers nested deeper than this are rejected (guards against cycles and stack exhaustion). */
export const MAX_CANONICAL_DEPTH = 1000;

const JSON_NUMBER_LEXEME = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$/;

/** A value canonical JSON cannot represent. `path` is a JSON Pointer to it (names and indices only). */
export class CanonicalJsonError extends TypeError {
  path: string;
  readonly problem: string;

  constructor(problem: string, path = '') {
    super(`Cannot canonicalize: ${problem} at ${path === '' ? '(root)' : path}`);
    this.name = 'CanonicalJsonError';
    this.problem = problem;
    this.path = path;
  }

  /** Prepend a parent segment while the error unwinds. */
  prepend(segment: string): this {
    this.path = `/${segment.replace(/~/g, '~0').replace(/\//g, '~1')}${this.path}`;
    this.message = `Cannot canonicalize: ${this.problem} at ${this.path}`;
    return this;
  }
}

interface WellFormedString {
  isWellFormed(): boolean; // ES2024; present in Node >= 20
}

function checkWellFormed(s: string): void {
  // O(1) for one-byte strings (V8 knows they hold no surrogates).
  if (!(s as unknown as WellFormedString).isWellFormed()) {
    throw new CanonicalJsonError('string contains a lone surrogate');
  }
}

/**
 * `"name":` and `,"name":` for member names, cached: FHIR reuses a small vocabulary of names, so this
 * saves an escape pass and two string concatenations per member.
 */
const firstMemberCache = new Map<string, string>();
const nextMemberCache = new Map<string, string>();
const MEMBER_CACHE_LIMIT = 4096;

function memberPrefix(k: string, first: boolean): string {
  const cache = first ? firstMemberCache : nextMemberCache;
  let p = cache.get(k);
  if (p === undefined) {
    checkWellFormed(k);
    p = (first ? '' : ',') + JSON.stringify(k) + ':';
    if (cache.size >= MEMBER_CACHE_LIMIT) cache.clear();
    cache.set(k, p);
  }
  return p;
}

/*
 * Output goes to one accumulator string. When it grows past CHUNK characters at a container
 * boundary it is flushed: into the hash (digest mode; the full text never exists) or onto a chunk
 * list (text mode). Keeping the live rope short avoids promoting millions of rope cells to the old
 * generation, which made large documents ~3x slower than the same data canonicalized per resource.
 */
const CHUNK = 1 << 16;
let acc = '';
let sinkHash: Hash | null = null;
let sinkChunks: string[] = [];

function flush(): void {
  if (sinkHash !== null) {
    sinkHash.update(acc, 'utf8');
  } else {
    // Number() reads the characters, which makes V8 flatten the rope once, here, so that its cells
    // die young. (The numeric result is irrelevant.)
    Number(acc);
    sinkChunks.push(acc);
  }
  acc = '';
}

function serialize(v: unknown, depth: number): void {
  switch (typeof v) {
    case 'string':
      checkWellFormed(v);
      // ECMAScript JSON.stringify escapes ", \ and U+0000..U+001F (\b \t \n \f \r short forms,
      // other controls as lowercase \u00hh) and nothing else: exactly RFC 8785 §3.2.2.2.
      acc += JSON.stringify(v);
      return;
    case 'number':
      if (!Number.isFinite(v)) throw new CanonicalJsonError('NaN or Infinity is not a JSON number');
      // Number::toString, as JSON.stringify writes numbers; String(-0) is "0" as RFC 8785 requires.
      acc += String(v);
      return;
    case 'boolean':
      acc += v ? 'true' : 'false';
      return;
    case 'object':
      if (v === null) {
        acc += 'null';
        return;
      }
      if (depth >= MAX_CANONICAL_DEPTH) {
        throw new CanonicalJsonError(`nesting deeper than ${MAX_CANONICAL_DEPTH} levels (or a cycle)`);
      }
      if (Array.isArray(v)) {
        serializeArray(v, depth + 1);
      } else if (isLosslessNumber(v)) {
        const lexeme = v.value;
        if (typeof lexeme !== 'string' || !JSON_NUMBER_LEXEME.test(lexeme)) {
          throw new CanonicalJsonError('LosslessNumber holds a value that is not a JSON number');
        }
        acc += lexeme;
        return;
      } else {
        serializeObject(v as Record<string, unknown>, depth + 1);
      }
      if (acc.length > CHUNK) flush();
      return;
    default:
      // undefined, function, symbol, bigint
      throw new CanonicalJsonError(`${typeof v} is not a JSON value`);
  }
}

function serializeArray(a: unknown[], depth: number): void {
  const n = a.length;
  let i = 0;
  try {
    acc += '[';
    for (; i < n; i++) {
      if (i !== 0) acc += ',';
      serialize(a[i], depth);
    }
    acc += ']';
  } catch (e) {
    if (e instanceof CanonicalJsonError) throw e.prepend(String(i));
    throw e;
  }
}

function serializeObject(o: Record<string, unknown>, depth: number): void {
  const proto = Object.getPrototypeOf(o);
  if (proto !== Object.prototype && proto !== null) {
    throw new CanonicalJsonError('only plain objects, arrays and LosslessNumbers can be canonicalized');
  }
  // Array.prototype.sort without a comparator compares the (string) elements by their sequences of
  // UTF-16 code units (ECMA-262 IsLessThan on Strings), independent of locale: exactly the order of
  // RFC 8785 §3.2.3. Object.keys lists integer-like names first, but sort() re-orders them as strings.
  const keys = Object.keys(o).sort();
  let first = true;
  let k = '';
  try {
    acc += '{';
    for (let i = 0; i < keys.length; i++) {
      k = keys[i];
      const v = o[k];
      if (v === undefined) continue; // as JSON.stringify: an undefined member is absent
      acc += memberPrefix(k, first);
      first = false;
      serialize(v, depth);
    }
    acc += '}';
  } catch (e) {
    if (e instanceof CanonicalJsonError) throw e.prepend(k);
    throw e;
  }
}

/** Run `serialize` with fresh sink state, restoring the caller's (re-entrancy through getters). */
function run(value: unknown, hash: Hash | null): string[] {
  const savedAcc = acc;
  const savedHash = sinkHash;
  const savedChunks = sinkChunks;
  acc = '';
  sinkHash = hash;
  sinkChunks = [];
  try {
    serialize(value, 0);
    if (hash !== null) {
      flush();
      return [];
    }
    const chunks = sinkChunks;
    chunks.push(acc);
    return chunks;
  } finally {
    acc = savedAcc;
    sinkHash = savedHash;
    sinkChunks = savedChunks;
  }
}

/**
 * The canonical JSON text of `value` (RFC 8785, except that LosslessNumbers keep their lexeme).
 * @throws CanonicalJsonError for values with no JSON form (undefined, functions, NaN, lone
 *   surrogates, non-plain objects, cycles/over-deep nesting).
 */
export function canonicalize(value: unknown): string {
  const chunks = run(value, null);
  return chunks.length === 1 ? chunks[0] : chunks.join('');
}

/** SHA-256 over the UTF-8 bytes of `canonicalize(value)`. */
export function canonicalDigest(value: unknown): Buffer {
  const hash = createHash('sha256');
  run(value, hash);
  return hash.digest();
}

/** Lowercase hex of {@link canonicalDigest}. */
export function canonicalDigestHex(value: unknown): string {
  return canonicalDigest(value).toString('hex');
}

/** Bytes of a version's commitment salt: 256 random bits, drawn per version. */
export const COMMITMENT_SALT_BYTES = 32;
/** Domain tag of version commitments; the NUL ends it, so no canonical JSON can be read as a tag. */
const COMMITMENT_TAG = Buffer.from('medblock/version-commitment/v1\0', 'utf8');

/**
 * The commitment a resource version is anchored with: lowercase hex of
 * SHA-256(COMMITMENT_TAG ‖ salt ‖ UTF-8 of canonicalize(value)). Without the 32-byte salt, which the vault
 * seals under the patient's data key, a guess of the content ("72 kg") cannot be tested against it.
 */
export function versionCommitmentHex(salt: Uint8Array, value: unknown): string {
  if (salt.byteLength !== COMMITMENT_SALT_BYTES) throw new RangeError(`a commitment salt is ${COMMITMENT_SALT_BYTES} bytes`);
  const hash = createHash('sha256').update(COMMITMENT_TAG).update(salt);
  run(value, hash);
  return hash.digest('hex');
}
