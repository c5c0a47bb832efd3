/** One real Synthea patient record loaded into a test gateway, for the client suites to search and page over. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { body, FHIR_DATA, FHIR_JSON, type TestGateway } from '../../support/gateway.ts';

/** A transaction of 66 POSTs: one Patient, their Organization and Practitioner, 33 Observations, 6 Encounters… */
const BUNDLE = join(FHIR_DATA, 'synthea', 'smart-2019', 'Buster_Hoeger_ad2e3fc5-2b5d-4cb9-8d03-9ea0f4ac8423.json');

export interface LoadedPatient {
  patientId: string;
  /** The ids the gateway assigned, by resource type. */
  ids: Map<string, string[]>;
  /** Every resource the bundle created, as `Type/id`. */
  references: string[];
}

export async function loadSyntheaPatient(t: TestGateway): Promise<LoadedPatient> {
  const res = await t.http.post('/fhir').set('Authorization', `Bearer ${t.admin}`).set('Content-Type', FHIR_JSON).send(readFileSync(BUNDLE, 'utf8'));
  assert.equal(res.status, 200, res.text.slice(0, 500));
  const references = body(res).entry.map((e: { response: { location: string } }) => e.response.location.split('/_history/')[0]) as string[];
  const ids = new Map<string, string[]>();
  for (const ref of references) {
    const [type, id] = ref.split('/');
    ids.set(type, [...(ids.get(type) ?? []), id]);
  }
  return { patientId: ids.get('Patient')![0], ids, references };
}
