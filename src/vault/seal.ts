/**
 * AES-256-GCM sealing with additional authenticated data. A sealed value is
 * `format ‖ 12-byte nonce ‖ ciphertext ‖ 16-byte tag`; the AAD is never stored, the opener must know it, so a
 * ciphertext moved to another record (other hospital, resource, version or key) fails authentication. The
 * format byte says what the plaintext is: 0x01 a bare value (wrapped data keys), 0x02 a resource version's
 * commitment salt followed by its content (vault/commitment.ts).
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

/** A bare value: what data keys are wrapped as. */
export const PLAIN_FORMAT = 0x01;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
export const KEY_BYTES = 32;

/** The value could not be authenticated: wrong key, wrong context, or altered bytes. */
export class SealError extends Error {
  constructor(message = 'the sealed value cannot be opened with this key and context') {
    super(message);
    this.name = 'SealError';
  }
}

export function seal(key: Uint8Array, plaintext: Uint8Array, aad: string, format = PLAIN_FORMAT): Uint8Array {
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(Buffer.from(aad, 'utf8'));
  const body = cipher.update(plaintext);
  const final = cipher.final();
  return Buffer.concat([Buffer.of(format), nonce, body, final, cipher.getAuthTag()]);
}

export function open(key: Uint8Array, sealed: Uint8Array, aad: string, format = PLAIN_FORMAT): Buffer {
  if (sealed.length < 1 + NONCE_BYTES + TAG_BYTES || sealed[0] !== format) throw new SealError('not a sealed value of the expected format');
  const bytes = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength);
  const decipher = createDecipheriv('aes-256-gcm', key, bytes.subarray(1, 1 + NONCE_BYTES));
  decipher.setAAD(Buffer.from(aad, 'utf8'));
  decipher.setAuthTag(bytes.subarray(bytes.length - TAG_BYTES));
  try {
    return Buffer.concat([decipher.update(bytes.subarray(1 + NONCE_BYTES, bytes.length - TAG_BYTES)), decipher.final()]);
  } catch {
    throw new SealError();
  }
}

export function newKey(): Buffer {
  return randomBytes(KEY_BYTES);
}
