/**
 * Patient locator tokens: the pseudonym a hospital anchors a patient's versions under, so that the ledger's
 * locator (token → hospital) and an erasure or consent envelope can name "this patient at this hospital"
 * without naming the patient.
 *
 * token = base64url(HKDF-SHA256(ikm = the patient's data key, salt = none,
 *                              info = "medblock/patient-locator/v2\0" ‖ hospital ‖ "\0" ‖ reference, 32 bytes))
 *
 * where the reference is the patient compartment (`Patient/123`). Only the vault holds data keys, so only the
 * hospital holding the patient can compute the token, and nobody else (not another member, not the orderer,
 * not an outsider) can test a guessed id against the ledger. Crypto-shredding the data key ($erase) destroys
 * the only way to recompute it: the erased patient's anchors stay on the ledger under a token that is
 * linked to no one, the hospital included. Tokens differ between hospitals on purpose: members find each
 * other's records of one person through identifier link tokens (federation), never through these. Exactly
 * 32 bytes, so envelope validation can tell a token from PHI by its shape. docs/ledger.md, "Patient tokens".
 */
import { hkdfSync } from 'node:crypto';

const INFO_PREFIX = 'medblock/patient-locator/v2\0';
const RESOURCE_INFO_PREFIX = 'medblock/resource-locator/v1\0';
const PATIENT_TOKEN_BYTES = 32;

function derive(dataKey: Uint8Array, prefix: string, hospitalId: string, reference: string): string {
  const info = Buffer.from(`${prefix}${hospitalId}\0${reference}`, 'utf8');
  return Buffer.from(hkdfSync('sha256', dataKey, Buffer.alloc(0), info, PATIENT_TOKEN_BYTES)).toString('base64url');
}

export function locatorToken(dataKey: Uint8Array, hospitalId: string, patientReference: string): string {
  return derive(dataKey, INFO_PREFIX, hospitalId, patientReference);
}

/**
 * Resource locator token: names one resource (`Observation/abc`, all its versions) of a patient at this
 * hospital, under the same key and with the same properties as the patient's locator token, so the ledger
 * can tell the newest anchored version of a resource from a superseded one without naming it.
 *
 * token = base64url(HKDF-SHA256(ikm = the patient's data key, salt = none,
 *                              info = "medblock/resource-locator/v1\0" ‖ hospital ‖ "\0" ‖ "Type/id", 32 bytes))
 *
 * docs/federation.md, "Resource locator tokens" (with test vectors).
 */
export function resourceLocatorToken(dataKey: Uint8Array, hospitalId: string, resourceReference: string): string {
  return derive(dataKey, RESOURCE_INFO_PREFIX, hospitalId, resourceReference);
}
