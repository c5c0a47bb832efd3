/**
 * Keyed blind indexes: an index term is stored as a 128-bit keyed pseudorandom token of its value under a
 * subkey of (type, param). The database can answer "which resources have this exact term" without learning
 * the term; it learns only which resources share a term (equality patterns). docs/security.md lists what
 * each kind of term reveals.
 *
 *   subkey(type, param) = HKDF-SHA-256(index key, salt = "", info = INDEX_FORMAT ‖ 0x00 ‖ type ‖ 0x00 ‖ param)
 *   token               = first 16 bytes of HMAC-SHA-256(subkey(type, param), value), base64url
 *
 * HMAC is a PRF under its key alone (no assumption about collisions of an unkeyed hash), and a truncated
 * PRF is a PRF: guessing a token is 2^-128; two different values of one (type, param) share a token with
 * probability 2^-128 each, so a vault of 2^40 terms sees a false match with probability about 2^-49.
 * Separate subkeys make equal values of different types or parameters unrelated even if one subkey leaks.
 * HMAC is computed from two one-shot SHA-256 calls over precomputed padded keys (RFC 2104), which costs
 * well under half of node's createHmac object per term; a unit test checks it against createHmac.
 */
import { createHash, hash, hkdfSync } from 'node:crypto';

/** Bumped whenever token derivation changes: tokens of another format never match (see docs/security.md). */
export const INDEX_FORMAT = 'medblock-index/2';

const TOKEN_BYTES = 16;
const BLOCK = 64;

/** HMAC-SHA-256 under one key, with the ipad/opad blocks laid out once in reusable buffers. */
class Hmac {
  private inner: Buffer;
  private readonly outer = Buffer.alloc(BLOCK + 32);

  constructor(key: Uint8Array) {
    const k = Buffer.alloc(BLOCK);
    (key.length > BLOCK ? createHash('sha256').update(key).digest() : Buffer.from(key)).copy(k);
    this.inner = Buffer.alloc(BLOCK + 256);
    for (let i = 0; i < BLOCK; i++) {
      this.inner[i] = k[i] ^ 0x36;
      this.outer[i] = k[i] ^ 0x5c;
    }
  }

  digest(message: string): Buffer {
    const length = Buffer.byteLength(message, 'utf8');
    if (BLOCK + length > this.inner.length) {
      const grown = Buffer.alloc(BLOCK + length);
      this.inner.copy(grown, 0, 0, BLOCK);
      this.inner = grown;
    }
    this.inner.write(message, BLOCK, 'utf8');
    const inner = hash('sha256', this.inner.subarray(0, BLOCK + length), 'buffer') as unknown as Buffer;
    inner.copy(this.outer, BLOCK);
    return hash('sha256', this.outer, 'buffer') as unknown as Buffer;
  }
}

export class BlindIndex {
  private readonly subkeys = new Map<string, Hmac>();

  constructor(private readonly key: Uint8Array) {}

  private subkey(type: string, param: string): Hmac {
    const name = `${type}\0${param}`;
    let mac = this.subkeys.get(name);
    if (!mac) {
      mac = new Hmac(new Uint8Array(hkdfSync('sha256', this.key, new Uint8Array(0), `${INDEX_FORMAT}\0${name}`, 32)));
      this.subkeys.set(name, mac);
    }
    return mac;
  }

  token(type: string, param: string, value: string): string {
    return this.subkey(type, param).digest(value).toString('base64url', 0, TOKEN_BYTES);
  }

  /** Tokens of many terms of one type. */
  tokens(type: string, terms: ReadonlyArray<{ param: string; value: string }>): string[] {
    return terms.map((t) => this.token(type, t.param, t.value));
  }

  /**
   * Tokens of many terms of any types (a whole commit batch). Equal terms are computed once: a bundle repeats
   * its patient, encounters and codes.
   */
  tokensOf(terms: ReadonlyArray<{ type: string; param: string; value: string }>): string[] {
    const seen = new Map<string, string>();
    return terms.map((t) => {
      const input = `${t.type}\0${t.param}\0${t.value}`;
      let token = seen.get(input);
      if (token === undefined) {
        token = this.token(t.type, t.param, t.value);
        seen.set(input, token);
      }
      return token;
    });
  }
}
