/**
 * Keyed blind indexes: an index term is stored as a 128-bit keyed pseudorandom token of
 * (type ‖ param ‖ value). The database can answer "which resources have this exact term" without learning
 * the term; it learns only which resources share a term (equality patterns). docs/security.md lists what
 * each kind of term reveals.
 *
 * token = AES-256(index key, first 16 bytes of SHA-256(type ‖ 0x00 ‖ param ‖ 0x00 ‖ value)): hash-then-PRP,
 * a PRF as long as the truncated hash does not collide (2^64 work to force one). Chosen over HMAC-SHA-256
 * because a resource has ~50 terms: one SHA-256 per term plus a single AES-ECB call over all of them costs
 * about half of 50 HMAC computations, and the tokens are the same size.
 */
import { createCipheriv, hash } from 'node:crypto';

const TOKEN_BYTES = 16;

export class BlindIndex {
  constructor(private readonly key: Uint8Array) {}

  /** `type` and `param` are part of the input, so the same value yields unrelated tokens elsewhere. */
  token(type: string, param: string, value: string): string {
    return this.tokens(type, [{ param, value }])[0];
  }

  /** Tokens of many terms of one type in one AES pass. */
  tokens(type: string, terms: ReadonlyArray<{ param: string; value: string }>): string[] {
    return this.tokensOf(terms.map((t) => ({ type, param: t.param, value: t.value })));
  }

  /**
   * Tokens of many terms of any types in one AES pass (a whole commit batch: one cipher, not one per
   * resource). Equal terms are hashed and encrypted once: a bundle repeats its patient, encounters and codes.
   */
  tokensOf(terms: ReadonlyArray<{ type: string; param: string; value: string }>): string[] {
    if (terms.length === 0) return [];
    const blocks = Buffer.allocUnsafe(terms.length * TOKEN_BYTES);
    const slots = new Map<string, number>();
    const slotOf = terms.map((t) => {
      const input = `${t.type}\0${t.param}\0${t.value}`;
      let slot = slots.get(input);
      if (slot === undefined) {
        slot = slots.size;
        slots.set(input, slot);
        (hash('sha256', input, 'buffer') as unknown as Buffer).copy(blocks, slot * TOKEN_BYTES, 0, TOKEN_BYTES);
      }
      return slot;
    });
    const aes = createCipheriv('aes-256-ecb', this.key, null).setAutoPadding(false);
    const out = aes.update(blocks.subarray(0, slots.size * TOKEN_BYTES));
    const tokens = Array.from({ length: slots.size }, (_, i) => out.toString('base64url', i * TOKEN_BYTES, (i + 1) * TOKEN_BYTES));
    return slotOf.map((slot) => tokens[slot]);
  }
}
