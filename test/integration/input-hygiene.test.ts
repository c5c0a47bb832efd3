/**
 * Hostile or malformed resource bodies get a clear 4xx OperationOutcome that names the element (never
 * echoing its value), and nothing is stored: null inside arrays, unsafe narrative XHTML, broken datatype
 * invariants, and bodies with more issues than an answer should list.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { body, FHIR_DATA, FHIR_JSON, forEachStore, type TestGateway } from '../support/gateway.ts';

const XHTML = 'http://www.w3.org/1999/xhtml';
const SECRET = 'SECRET-PHI-4711';

forEachStore((start) => {
  let t: TestGateway;
  before(async () => {
    t = await start();
  });
  after(async () => t.close());

  const auth = () => ({ Authorization: `Bearer ${t.admin}` });
  const send = (method: 'post' | 'put', path: string, resource: unknown) =>
    t.http[method](`/fhir/${path}`).set(auth()).set('Content-Type', FHIR_JSON).send(JSON.stringify(resource));
  const count = async (type: string) => body(await t.http.get(`/fhir/${type}?_summary=count`).set(auth())).total as number;

  /** Asserts a 422 whose issues include `code` at `expression`, and that no value from the body is echoed. */
  function assertRefused(res: { status: number; text: string }, expression: string, code?: string) {
    assert.equal(res.status, 422, res.text);
    const outcome = body(res);
    assert.equal(outcome.resourceType, 'OperationOutcome');
    const issue = outcome.issue.find((i: any) => i.severity === 'error' && i.expression?.includes(expression));
    assert.ok(issue, `no error at ${expression}: ${res.text}`);
    if (code) assert.equal(issue.code, code, res.text);
    assert.ok(!res.text.includes(SECRET), res.text);
    return issue;
  }

  describe('null inside arrays', () => {
    const cases: Array<{ name: string; resource: Record<string, unknown>; expression: string }> = [
      { name: 'identifier:[null]', resource: { resourceType: 'Patient', identifier: [null] }, expression: 'Patient.identifier[0]' },
      { name: 'telecom:[null]', resource: { resourceType: 'Patient', telecom: [null] }, expression: 'Patient.telecom[0]' },
      { name: 'name:[{given:[null]}]', resource: { resourceType: 'Patient', name: [{ family: SECRET, given: [null] }] }, expression: 'Patient.name[0].given[0]' },
      {
        name: 'an Observation with null components, categories and performers',
        resource: { resourceType: 'Observation', status: 'final', code: { text: SECRET }, category: [null], component: [null], performer: [null] },
        expression: 'Observation.category[0]',
      },
    ];

    for (const c of cases) {
      it(`POST ${c.name} is a 422 naming the element, and stores nothing`, async () => {
        const type = c.resource.resourceType as string;
        const before = await count(type);
        const issue = assertRefused(await send('post', type, c.resource), c.expression, 'structure');
        assert.match(issue.diagnostics, /null/);
        assert.equal(await count(type), before);
      });

      it(`PUT ${c.name} is a 422 naming the element, and stores nothing`, async () => {
        const type = c.resource.resourceType as string;
        assertRefused(await send('put', `${type}/null-in-array`, { ...c.resource, id: 'null-in-array' }), c.expression, 'structure');
        assert.equal((await t.http.get(`/fhir/${type}/null-in-array`).set(auth())).status, 404);
      });
    }

    it('in a batch, the entry with null fails with 422 and the others are stored', async () => {
      const batch = {
        resourceType: 'Bundle', type: 'batch',
        entry: [
          { resource: { resourceType: 'Patient', identifier: [null] }, request: { method: 'POST', url: 'Patient' } },
          { resource: { resourceType: 'Patient', active: true }, request: { method: 'POST', url: 'Patient' } },
        ],
      };
      const res = await send('post', '', batch);
      assert.equal(res.status, 200, res.text);
      const [bad, good] = body(res).entry;
      assert.match(bad.response.status, /^422/);
      assert.ok(bad.response.outcome.issue.some((i: any) => i.expression?.some((e: string) => e.endsWith('identifier[0]'))), JSON.stringify(bad));
      assert.match(good.response.status, /^201/);
    });

    it('in a transaction, the entry with null fails the whole transaction', async () => {
      const before = await count('Patient');
      const tx = {
        resourceType: 'Bundle', type: 'transaction',
        entry: [
          { resource: { resourceType: 'Patient', active: true }, request: { method: 'POST', url: 'Patient' } },
          { resource: { resourceType: 'Patient', telecom: [null] }, request: { method: 'POST', url: 'Patient' } },
        ],
      };
      const res = await send('post', '', tx);
      assert.equal(res.status, 422, res.text);
      assert.ok(body(res).issue.some((i: any) => i.expression?.some((e: string) => e.includes('telecom[0]'))), res.text);
      assert.equal(await count('Patient'), before);
    });

    it('a null that stands in for a primitive with extensions is accepted', async () => {
      const patient = {
        resourceType: 'Patient',
        name: [{ family: 'Ada', given: ['Augusta', null], _given: [null, { extension: [{ url: 'http://example.org/nick', valueString: 'Ada' }] }] }],
      };
      const res = await send('post', 'Patient', patient);
      assert.equal(res.status, 201, res.text);
      assert.deepEqual(body(res).name, patient.name);
    });
  });

  describe('narrative XHTML', () => {
    const narrative = (div: string) => ({ resourceType: 'Patient', text: { status: 'generated', div } });

    it('a <script> in text.div is refused with 422 naming Patient.text.div', async () => {
      const res = await send('post', 'Patient', narrative(`<div xmlns="${XHTML}"><p>${SECRET}</p><script>alert(1)</script></div>`));
      const issue = assertRefused(res, 'Patient.text.div', 'invariant');
      assert.match(issue.diagnostics, /txt-1/);
      assert.match(issue.diagnostics, /<script>/);
    });

    it('an onclick attribute, a javascript: link, a <style>, an <iframe> or a processing instruction is refused', async () => {
      for (const inner of [
        `<p onclick="steal()">${SECRET}</p>`,
        `<a href="javascript:steal()">${SECRET}</a>`,
        `<style>p { color: red }</style><p>${SECRET}</p>`,
        `<iframe src="https://example.org/"></iframe><p>${SECRET}</p>`,
        `<?php echo 1 ?><p>${SECRET}</p>`,
      ]) {
        const res = await send('post', 'Patient', narrative(`<div xmlns="${XHTML}">${inner}</div>`));
        assertRefused(res, 'Patient.text.div');
      }
    });

    it('a div that is not well-formed XML, or not in the XHTML namespace, is refused', async () => {
      assertRefused(await send('post', 'Patient', narrative(`<div xmlns="${XHTML}"><p>${SECRET}</div>`)), 'Patient.text.div', 'value');
      assertRefused(await send('post', 'Patient', narrative(`<div>${SECRET}</div>`)), 'Patient.text.div', 'value');
    });

    it('a real Synthea narrative is accepted and returned unchanged', async () => {
      const dir = join(FHIR_DATA, 'synthea', 'smart-2019');
      const file = JSON.parse(readFileSync(join(dir, 'Buster_Hoeger_ad2e3fc5-2b5d-4cb9-8d03-9ea0f4ac8423.json'), 'utf8'));
      const patient = file.entry.find((e: any) => e.resource.resourceType === 'Patient').resource;
      assert.ok(patient.text.div.length > 100);
      const res = await send('put', `Patient/${patient.id}`, patient);
      assert.equal(res.status, 201, res.text);
      assert.equal(body(res).text.div, patient.text.div);
    });
  });

  describe('datatype invariants', () => {
    const encounter = (period: object) => ({ resourceType: 'Encounter', status: 'finished', class: { code: 'AMB' }, period });

    it('an Encounter.period that ends before it starts is a 422 naming per-1 and Encounter.period', async () => {
      const issue = assertRefused(await send('post', 'Encounter', encounter({ start: '2020-02-01T10:00:00Z', end: '2020-01-01T10:00:00Z' })), 'Encounter.period', 'invariant');
      assert.match(issue.diagnostics, /per-1/);
    });

    it('periods of different precisions that may overlap are accepted', async () => {
      for (const period of [{ start: '2020', end: '2020-01' }, { start: '2020-01-15', end: '2020-01' }, { start: '2020-01-01', end: '2020-01-01T10:00:00Z' }]) {
        const res = await send('post', 'Encounter', encounter(period));
        assert.equal(res.status, 201, `${JSON.stringify(period)}: ${res.text}`);
      }
    });

    it('a Range whose low is above its high is a 422 (rng-2), also without units', async () => {
      const observation = (valueRange: object) => ({ resourceType: 'Observation', status: 'final', code: { text: 'x' }, valueRange });
      const issue = assertRefused(await send('post', 'Observation', observation({ low: { value: 5 }, high: { value: 3 } })), 'Observation.valueRange', 'invariant');
      assert.match(issue.diagnostics, /rng-2/);
    });
  });

  describe('issue count', () => {
    it('a body with 200,000 unknown properties gets at most 101 issues, the last saying validation stopped', async () => {
      const resource: Record<string, unknown> = { resourceType: 'Patient' };
      for (let i = 0; i < 200_000; i++) resource[`x${i}`] = i;
      const res = await send('post', 'Patient', resource);
      assert.equal(res.status, 422);
      assert.ok(res.text.length < 50_000, `${res.text.length} bytes`);
      const issues = body(res).issue;
      assert.equal(issues.length, 101);
      assert.deepEqual(issues[0].expression, ['Patient.x0']);
      assert.equal(issues[100].code, 'too-costly');
      assert.match(issues[100].diagnostics, /stopped after 100 issues/);
    });
  });
});
