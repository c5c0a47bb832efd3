/** Patient-bound access (`patient/` scopes): the token's patient compartment, by the R4 definition. */
import { COMPARTMENT_PARAM, compartmentParams, compartmentTerm, patientCompartments } from '../fhir/compartment.ts';
import type { StoreQuery, TermClause } from '../vault/store.ts';
import { errors } from '../fhir/outcome.ts';
import { log } from '../log.ts';
import { parseVersion, type ResourceVersion } from '../fhir/resource-version.ts';

export function inPatientCompartment(type: string, resource: unknown, patientId: string): boolean {
  return patientCompartments(type, resource as { id?: unknown }).includes(patientId);
}

/**
 * Whether the resource lies in this patient's compartment and in no other: what a patient-bound token may
 * write. A resource that is also in another patient's compartment (subject the other, performer this one)
 * is that other patient's data too.
 */
export function onlyInPatientCompartment(type: string, resource: unknown, patientId: string): boolean {
  const patients = patientCompartments(type, resource as { id?: unknown });
  return patients.length > 0 && patients.every((p) => p === patientId);
}

/**
 * A result the index routed to a patient's compartment whose decrypted content is not in it: the index
 * terms were forged or corrupted in the store. Logged as an integrity alarm (type, id and version only, no
 * PHI); the caller drops the resource from its answer.
 */
export function reportOutsideCompartment(interaction: string, v: { type: string; id: string; versionId: number }): void {
  log('error', 'vault_integrity_alarm', { interaction, reason: 'outside-compartment', type: v.type, id: v.id, version: v.versionId });
}

/**
 * The versions the index routed to `patientId`'s compartment whose decrypted content agrees (deletions, with
 * no content, too); each of the others is reported (reportOutsideCompartment) and left out.
 */
export function keepInCompartment<V extends ResourceVersion>(interaction: string, versions: readonly V[], patientId: string): V[] {
  return versions.filter((v) => {
    if (!v.json || inPatientCompartment(v.type, parseVersion(v), patientId)) return true;
    reportOutsideCompartment(interaction, v);
    return false;
  });
}

/** Narrows a search to one patient's compartment (403 for types outside the Patient compartment). */
export function restrictToPatient(query: StoreQuery, patientId: string): StoreQuery {
  if (query.type === 'Patient') {
    const ids = query.ids ? query.ids.filter((id) => id === patientId) : [patientId];
    return { ...query, ids };
  }
  if (!compartmentParams().has(query.type)) throw errors.forbidden(`${query.type} is outside the patient compartment`);
  const clause: TermClause = { param: COMPARTMENT_PARAM, anyOf: [compartmentTerm(patientId)] };
  return { ...query, clauses: [...query.clauses, clause] };
}
