/**
 * Keyed blind indexes: an index term is stored as HMAC-SHA-256(index key, type ‖ param ‖ value), truncated
 * to 128 bits. The database can answer "which resources have this exact term" without learning the term;
 * it learns only which resources share a term (equality patterns). docs/security.md lists what each kind
 * of term reveals.
 */
import { createHmac, type KeyObject, createSecretKey } from 'node:crypto';

const TOKEN_BYTES = 16;

export class BlindIndex {
  private readonly key: KeyObject;

  constructor(key: Uint8Array) {
    this.key = createSecretKey(key);
  }

  /** `type` and `param` are part of the input, so the same value yields unrelated tokens elsewhere. */
  token(type: string, param: string, value: string): string {
    return createHmac('sha256', this.key).update(`${type}\0${param}\0${value}`).digest().subarray(0, TOKEN_BYTES).toString('base64url');
  }
}
