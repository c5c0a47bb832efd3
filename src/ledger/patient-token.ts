/**
 * Pseudonymous patient tokens: what the ledger's record locator (patient token → hospitals) is keyed by.
 *
 * token = base64url(HMAC-SHA256(consortium patient-token key, "medblock/patient-token/v1\n" ‖ reference)),
 * where the reference is the patient compartment (`Patient/123`). The key is shared by the consortium's
 * members (never by the orderer or outsiders), so members holding the same patient under the same id find
 * each other, and nobody without the key can test a guessed id against the ledger. Exactly 32 bytes, so
 * envelope validation can tell a token from PHI by its shape.
 */
import { createHmac, type KeyObject } from 'node:crypto';

const PREFIX = 'medblock/patient-token/v1\n';

export type PatientTokenFunction = (patientReference: string) => string;

export function patientTokens(key: KeyObject | Uint8Array): PatientTokenFunction {
  // The last reference's token is kept: a bundle's versions mostly belong to one patient, one after the other.
  let last: { reference: string; token: string } | undefined;
  return (reference) => {
    if (last?.reference !== reference) {
      last = { reference, token: createHmac('sha256', key).update(PREFIX).update(reference, 'utf8').digest('base64url') };
    }
    return last.token;
  };
}
