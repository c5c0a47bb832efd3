/** Baseline patient-compartment test for `patient/` scopes: the Patient itself or anything pointing at it. */
import { extractTerms } from '../fhir/search/terms.ts';
import { indexedParams } from '../fhir/search/parameters.ts';
import type { StoreQuery, TermClause } from '../vault/store.ts';
import { errors } from '../fhir/outcome.ts';

const LINK_PARAMS = ['patient', 'subject'];

export function inPatientCompartment(type: string, resource: unknown, patientId: string): boolean {
  if (type === 'Patient') return (resource as { id?: unknown }).id === patientId;
  const target = `Patient/${patientId}`;
  return extractTerms(type, resource).some((t) => LINK_PARAMS.includes(t.param) && t.value === target);
}

/** Narrows a search to one patient's compartment (403 for types the baseline cannot link to a patient). */
export function restrictToPatient(query: StoreQuery, patientId: string): StoreQuery {
  if (query.type === 'Patient') {
    const ids = query.ids ? query.ids.filter((id) => id === patientId) : [patientId];
    return { ...query, ids };
  }
  const params = indexedParams(query.type);
  const link = LINK_PARAMS.find((p) => params.has(p));
  if (!link) throw errors.forbidden(`${query.type} cannot be searched with a patient/ scope`);
  const clause: TermClause = { param: link, anyOf: [`Patient/${patientId}`] };
  return { ...query, clauses: [...query.clauses, clause] };
}
