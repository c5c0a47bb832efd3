/**
 * Every official R4 example in ../shared/fhir-data/examples is accepted (PUT with its own id) and reads
 * back semantically equal: decimals, `_field` primitive extensions and contained resources intact.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { deepEqualFhir, parseFhirJson } from '../../src/fhir/json.ts';
import { INVALID_EXAMPLES } from '../support/invalid-examples.ts';
import { FHIR_DATA, FHIR_JSON, startTestGateway, type TestGateway } from '../support/gateway.ts';


let t: TestGateway;
before(async () => {
  t = await startTestGateway();
});
after(async () => t.close());

/** The resource without the meta the server assigns (versionId, lastUpdated). */
function withoutServerMeta(resource: Record<string, any>) {
  const { meta, ...rest } = resource;
  if (!meta) return rest;
  const { versionId: _v, lastUpdated: _l, ...clientMeta } = meta;
  return Object.keys(clientMeta).length ? { ...rest, meta: clientMeta } : rest;
}

describe('official R4 examples', () => {
  const dir = join(FHIR_DATA, 'examples');
  const files = readdirSync(dir).filter((f) => f.endsWith('.json')).sort();

  it('has the 706 examples to test', () => {
    assert.equal(files.length, 706);
  });

  it('accepts every valid example and reads it back semantically equal', async () => {
    const failures: string[] = [];
    for (const file of files) {
      const text = readFileSync(join(dir, file), 'utf8');
      const original = parseFhirJson(text) as Record<string, any>;
      const url = `/fhir/${original.resourceType}/${original.id}`;
      const res = await t.http.put(url).set('Authorization', `Bearer ${t.admin}`).set('Content-Type', FHIR_JSON).send(text);
      // AuditEvent is the gateway's append-only access log: the API writes none (docs/security.md).
      if (original.resourceType === 'AuditEvent') {
        if (res.status !== 405) failures.push(`${file}: expected 405 (the access log is append-only), got ${res.status}`);
        continue;
      }
      if (INVALID_EXAMPLES[file]) {
        if (res.status !== 422) failures.push(`${file}: expected 422 (${INVALID_EXAMPLES[file].reason}), got ${res.status}`);
        continue;
      }
      if (res.status !== 201 && res.status !== 200) {
        failures.push(`${file}: ${res.status} ${res.text.slice(0, 300)}`);
        continue;
      }
      const read = await t.http.get(url).set('Authorization', `Bearer ${t.admin}`);
      const stored = parseFhirJson(read.text) as Record<string, any>;
      if (!deepEqualFhir(withoutServerMeta(stored), withoutServerMeta(original))) failures.push(`${file}: read back differs`);
    }
    assert.deepEqual(failures, []);
  });
});
