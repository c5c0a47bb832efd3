/**
 * A patient's Consents as the holder's own vault has them: an internal read by the gateway itself (no
 * user token, so a caller's scopes neither hide nor reveal one), for consent.ts to decide with.
 */
import type { FhirRepository } from '../fhir/repository.ts';
import { parseVersion } from '../fhir/resource-version.ts';
import { inPatientCompartment, reportOutsideCompartment, restrictToPatient } from './compartment.ts';

const PAGE = '1000';

/**
 * The current versions of the patient's active Consents (every scope: consent.ts keeps the patient-privacy
 * ones), each with `meta.versionId` and `meta.lastUpdated` as the vault recorded them, so a decision can
 * name the exact version that made it.
 */
export async function activeConsents(repo: FhirRepository, patientId: string): Promise<Array<Record<string, unknown>>> {
  const consents: Array<Record<string, unknown>> = [];
  let cursor: string | undefined;
  do {
    const params: Array<[string, string]> = [['status', 'active'], ['_count', PAGE], ...(cursor ? [['_cursor', cursor] as [string, string]] : [])];
    const page = await repo.search('Consent', params, (query) => restrictToPatient(query, patientId));
    for (const v of page.versions) {
      const resource = parseVersion(v);
      // The index chose it; the decrypted Consent must be about this patient (else: forged index terms).
      if (!inPatientCompartment('Consent', resource, patientId)) {
        reportOutsideCompartment('consent', v);
        continue;
      }
      const meta = typeof resource.meta === 'object' && resource.meta !== null ? resource.meta : {};
      consents.push({ ...resource, meta: { ...meta, versionId: String(v.versionId), lastUpdated: v.lastUpdated } });
    }
    cursor = page.nextCursor;
  } while (cursor !== undefined);
  return consents;
}
