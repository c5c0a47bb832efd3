/**
 * Index terms are built before validation refuses a resource, so term extraction must survive any JSON:
 * null inside arrays, strings or numbers where objects are due, objects where strings are due.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { patientCompartments } from '../../src/fhir/compartment.ts';
import { extractTerms } from '../../src/fhir/search/terms.ts';
import { FHIR_DATA } from '../support/gateway.ts';

type Json = Record<string, unknown>;

const termsOf = (resource: Json, param: string) =>
  extractTerms(resource.resourceType as string, resource).filter((t) => t.param === param).map((t) => t.value).sort();

/** Values that have the wrong shape for nearly every element. */
const JUNK: unknown[] = [null, 'x', 7, true, [], {}, [null], [[null]], { value: null }, [{ coding: null }]];

/** Calls `fn` once per (object member at depth <= maxDepth, junk value) with that member replaced. */
function forEachMutation(root: Json, maxDepth: number, fn: () => void): void {
  const visit = (node: unknown, depth: number): void => {
    if (node === null || typeof node !== 'object' || depth > maxDepth) return;
    for (const key of Object.keys(node)) {
      const record = node as Json;
      const original = record[key];
      if (key !== 'resourceType') {
        for (const junk of JUNK) {
          record[key] = structuredClone(junk);
          fn();
        }
        record[key] = original;
      }
      visit(original, depth + 1);
    }
  };
  visit(root, 0);
}

describe('index terms of malformed resources', () => {
  it('skip null items and keep the other values', () => {
    const patient = { resourceType: 'Patient', identifier: [null, { system: 'urn:mrn', value: '42' }], telecom: [null, { system: 'phone', value: '555' }] };
    assert.deepEqual(termsOf(patient, 'identifier'), ['42', 'urn:mrn|42']);
    assert.deepEqual(termsOf(patient, 'telecom'), ['555']);
    const observation = { resourceType: 'Observation', status: 'final', code: { coding: [null, { system: 'http://loinc.org', code: '8867-4' }] }, component: [null], category: [null] };
    assert.deepEqual(termsOf(observation, 'code'), ['8867-4', 'http://loinc.org|8867-4']);
  });

  it('never throw on any official example with members replaced by values of the wrong shape', () => {
    const dir = join(FHIR_DATA, 'examples');
    let mutations = 0;
    for (const file of readdirSync(dir).filter((f) => f.endsWith('.json'))) {
      const resource = JSON.parse(readFileSync(join(dir, file), 'utf8')) as Json;
      const type = resource.resourceType as string;
      forEachMutation(resource, 1, () => {
        mutations++;
        assert.doesNotThrow(() => extractTerms(type, resource), file);
        assert.doesNotThrow(() => patientCompartments(type, resource), file);
      });
    }
    assert.ok(mutations > 50_000, `${mutations} mutations`);
  });
});
