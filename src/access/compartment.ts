/** Patient-bound access (`patient/` scopes): the token's patient compartment, by the R4 definition. */
import { COMPARTMENT_PARAM, compartmentParams, compartmentTerm, patientCompartments } from '../fhir/compartment.ts';
import type { StoreQuery, TermClause } from '../vault/store.ts';
import { errors } from '../fhir/outcome.ts';

export function inPatientCompartment(type: string, resource: unknown, patientId: string): boolean {
  return patientCompartments(type, resource as { id?: unknown }).includes(patientId);
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
