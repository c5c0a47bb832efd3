/**
 * The secrets behind what a version is anchored with, kept under the owner's data key so that erasing the
 * key ($erase) destroys them with the content:
 *
 * - the commitment salt (ledger/canonical-json.ts versionCommitmentHex) is sealed together with the
 *   content: the plaintext of a sealed version (seal format 0x02) is `salt (32 bytes) ‖ content`;
 * - the patient locator token (ledger/patient-token.ts) is derived from the patient's data key.
 */
import { COMMITMENT_SALT_BYTES } from '../ledger/canonical-json.ts';
import { locatorToken } from '../ledger/patient-token.ts';
import { open, seal, SealError } from './seal.ts';

/** Seal format of a resource version: its commitment salt, then its content. */
export const SALTED_CONTENT_FORMAT = 0x02;

export function sealVersion(key: Uint8Array, content: Uint8Array, salt: Uint8Array | undefined, aad: string): Uint8Array {
  if (salt?.byteLength !== COMMITMENT_SALT_BYTES) throw new TypeError(`a version is sealed with its ${COMMITMENT_SALT_BYTES}-byte commitment salt`);
  return seal(key, Buffer.concat([salt, content]), aad, SALTED_CONTENT_FORMAT);
}

/** @throws SealError when the value is not an authentic sealed version for this key and context. */
export function openVersion(key: Uint8Array, sealed: Uint8Array, aad: string): { content: Buffer; salt: Buffer } {
  const plaintext = open(key, sealed, aad, SALTED_CONTENT_FORMAT);
  if (plaintext.length < COMMITMENT_SALT_BYTES) throw new SealError('a sealed version too short to hold its salt');
  return { salt: plaintext.subarray(0, COMMITMENT_SALT_BYTES), content: plaintext.subarray(COMMITMENT_SALT_BYTES) };
}

/** Owners whose versions carry a locator token: patient compartments, not the audit key or a resource's own key. */
export function isPatientOwner(owner: string | undefined): owner is string {
  return owner !== undefined && owner.startsWith('Patient/');
}

/**
 * Locator tokens of a commit batch: one derivation per owner, whatever the number of its versions (a bundle's
 * versions mostly belong to one patient).
 */
export function locatorTokens(hospitalId: string): (owner: string, dataKey: Uint8Array) => string {
  const byOwner = new Map<string, string>();
  return (owner, dataKey) => {
    let token = byOwner.get(owner);
    if (token === undefined) byOwner.set(owner, (token = locatorToken(dataKey, hospitalId, owner)));
    return token;
  };
}
