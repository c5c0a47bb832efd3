/**
 * The ledger's one signature scheme (envelopes, config approvals, attestations): ECDSA P-256 with SHA-256
 * over `prefix ‖ canonical JSON`, IEEE-P1363 encoding (r ‖ s, 64 bytes) in unpadded base64url, low-S only.
 * Each use has its own prefix, so a signature made for one never verifies as another.
 */
import { sign, verify, type KeyObject } from 'node:crypto';
import { canonicalize } from './canonical-json.ts';

export const SIGNATURE_BYTES = 64;

/** P-256 group order. A signature (r, s) also verifies as (r, n − s); accepting only s ≤ n/2 removes that twin. */
const P256_ORDER = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
const P256_HALF_ORDER = P256_ORDER >> 1n;
const BASE64URL_PATTERN = /^[A-Za-z0-9_-]*$/;

/** Base64url without padding, of exactly `byteLength` bytes, in its only (canonical) spelling. */
export function decodeBase64url(value: unknown, byteLength: number): Buffer | undefined {
  if (typeof value !== 'string' || value.length !== Math.ceil((byteLength * 4) / 3) || !BASE64URL_PATTERN.test(value)) {
    return undefined;
  }
  const bytes = Buffer.from(value, 'base64url');
  // Node ignores non-zero bits in the last character; re-encoding catches them (another spelling).
  return bytes.length === byteLength && bytes.toString('base64url') === value ? bytes : undefined;
}

export function signedBytes(prefix: string, content: unknown): Buffer {
  return Buffer.from(prefix + canonicalize(content), 'utf8');
}

function sOf(signature: Buffer): bigint {
  return BigInt(`0x${signature.subarray(32).toString('hex')}`);
}

export function signLowS(privateKey: KeyObject, message: Buffer): string {
  const signature = sign('sha256', message, { key: privateKey, dsaEncoding: 'ieee-p1363' });
  const s = sOf(signature);
  if (s > P256_HALF_ORDER) signature.write((P256_ORDER - s).toString(16).padStart(64, '0'), 32, 'hex');
  return signature.toString('base64url');
}

/** False for anything but a canonical low-S signature by `publicKey` over `message`; never throws. */
export function verifyLowS(publicKey: KeyObject, message: Buffer, signatureText: unknown): boolean {
  const signature = decodeBase64url(signatureText, SIGNATURE_BYTES);
  if (signature === undefined || sOf(signature) > P256_HALF_ORDER) return false;
  try {
    return verify('sha256', message, { key: publicKey, dsaEncoding: 'ieee-p1363' }, signature);
  } catch {
    return false; // OpenSSL refusing the input is a failed verification, not a crash
  }
}
