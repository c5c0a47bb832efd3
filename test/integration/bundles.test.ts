import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SqliteStore } from '../../src/adapters/sqlite/sqlite-store.ts';
import { transactionOf } from '../support/bundles.ts';
import { body, FHIR_JSON, forEachStore, type TestGateway } from '../support/gateway.ts';

forEachStore((start) => {
  let t: TestGateway;
  before(async () => {
    t = await start();
  });
  after(async () => t.close());

  const post = (path: string, resource: unknown, headers: Record<string, string> = {}) =>
    t.http.post(`/fhir/${path}`).set('Authorization', `Bearer ${t.admin}`).set('Content-Type', FHIR_JSON).set(headers).send(JSON.stringify(resource));
  const get = (path: string) => t.http.get(`/fhir/${path}`).set('Authorization', `Bearer ${t.admin}`);
  const count = async (q: string) => body(await get(`${q}${q.includes('?') ? '&' : '?'}_summary=count`)).total as number;

  describe('transaction bundles', () => {
    it('assigns ids and rewrites urn:uuid references everywhere, including contained and nested elements', async () => {
      const pat = 'urn:uuid:11111111-1111-4111-8111-111111111111';
      const enc = 'urn:uuid:22222222-2222-4222-8222-222222222222';
      const bundle = {
        resourceType: 'Bundle', type: 'transaction',
        entry: [
          {
            fullUrl: enc,
            resource: { resourceType: 'Encounter', status: 'finished', class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'AMB' }, subject: { reference: pat } },
            request: { method: 'POST', url: 'Encounter' },
          },
          {
            fullUrl: 'urn:uuid:33333333-3333-4333-8333-333333333333',
            resource: {
              resourceType: 'Claim', status: 'active', use: 'claim',
              type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/claim-type', code: 'institutional' }] },
              patient: { reference: pat }, created: '2024-01-01', provider: { reference: '#org' },
              priority: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/processpriority', code: 'normal' }] },
              insurance: [{ sequence: 1, focal: true, coverage: { reference: '#cov' } }],
              contained: [
                { resourceType: 'Organization', id: 'org', name: 'x' },
                { resourceType: 'Coverage', id: 'cov', status: 'active', beneficiary: { reference: pat }, payor: [{ reference: '#org' }] },
              ],
              item: [{ sequence: 1, productOrService: { text: 'visit' }, encounter: [{ reference: enc }] }],
            },
            request: { method: 'POST', url: 'Claim' },
          },
          { fullUrl: pat, resource: { resourceType: 'Patient', identifier: [{ system: 'urn:t', value: 'rewrite' }] }, request: { method: 'POST', url: 'Patient' } },
        ],
      };
      const res = await post('', bundle);
      assert.equal(res.status, 200, res.text);
      const out = body(res);
      assert.equal(out.type, 'transaction-response');
      assert.deepEqual(out.entry.map((e: any) => e.response.status), ['201 Created', '201 Created', '201 Created']);
      const [encLoc, claimLoc, patLoc] = out.entry.map((e: any) => e.response.location.split('/_history')[0]);
      assert.match(patLoc, /^Patient\/[0-9a-f-]{36}$/);
      const claim = body(await get(claimLoc));
      assert.equal(claim.patient.reference, patLoc);
      assert.equal(claim.contained[1].beneficiary.reference, patLoc);
      assert.equal(claim.item[0].encounter[0].reference, encLoc);
      assert.equal(claim.provider.reference, '#org');
      assert.equal(body(await get(encLoc)).subject.reference, patLoc);
      assert.ok(!JSON.stringify(claim).includes('urn:uuid'));
    });

    it('honours ifNoneExist and resolves conditional references against stored data', async () => {
      const practitioner = { resourceType: 'Practitioner', identifier: [{ system: 'http://hl7.org/fhir/sid/us-npi', value: '999000111' }] };
      const info = {
        resourceType: 'Bundle', type: 'batch',
        entry: [{ resource: practitioner, request: { method: 'POST', url: 'Practitioner', ifNoneExist: 'identifier=http://hl7.org/fhir/sid/us-npi|999000111' } }],
      };
      assert.equal(body(await post('', info)).entry[0].response.status, '201 Created');
      assert.equal(body(await post('', info)).entry[0].response.status, '200 OK');
      assert.equal(await count('Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|999000111'), 1);
      const tx = {
        resourceType: 'Bundle', type: 'transaction',
        entry: [{
          resource: { resourceType: 'Encounter', status: 'finished', class: { code: 'AMB' }, participant: [{ individual: { reference: 'Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|999000111' } }] },
          request: { method: 'POST', url: 'Encounter' },
        }],
      };
      const res = body(await post('', tx));
      const encounter = body(await get(res.entry[0].response.location));
      const practitionerId = body(await get('Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|999000111')).entry[0].resource.id;
      assert.equal(encounter.participant[0].individual.reference, `Practitioner/${practitionerId}`);
    });

    it('fails the whole transaction when a conditional reference matches nothing (404) or several (412)', async () => {
      const before = await count('Encounter');
      const tx = (ref: string) => ({
        resourceType: 'Bundle', type: 'transaction',
        entry: [
          { resource: { resourceType: 'Patient', identifier: [{ system: 'urn:t', value: `cond-${ref}` }] }, request: { method: 'POST', url: 'Patient' } },
          { resource: { resourceType: 'Encounter', status: 'finished', class: { code: 'AMB' }, serviceProvider: { reference: ref } }, request: { method: 'POST', url: 'Encounter' } },
        ],
      });
      const none = await post('', tx('Organization?identifier=urn:none|0'));
      assert.equal(none.status, 404, none.text);
      assert.ok(body(none).issue[0].diagnostics.includes('Bundle.entry[1]'));
      for (let i = 0; i < 2; i++) await post('Organization', { resourceType: 'Organization', identifier: [{ system: 'urn:twice', value: '1' }] });
      assert.equal((await post('', tx('Organization?identifier=urn:twice|1'))).status, 412);
      assert.equal(await count('Encounter'), before);
      assert.equal(await count('Patient?identifier=urn:t|cond-Organization?identifier=urn:none|0'), 0);
    });

    it('leaves nothing behind when any entry is invalid, and says where', async () => {
      const tx = transactionOf(3, 'all-or-nothing');
      (tx.entry[2].resource as Record<string, unknown>).status = 'not-a-status';
      const res = await post('', tx);
      assert.equal(res.status, 422, res.text);
      const oo = body(res);
      assert.ok(oo.issue.some((i: any) => i.expression?.some((e: string) => e.startsWith('Bundle.entry[2].resource.Observation.status'))), JSON.stringify(oo));
      assert.equal(await count('Patient?identifier=urn:test|all-or-nothing'), 0);
      assert.equal(await count('Observation?identifier=urn:test|all-or-nothing-0'), 0);
    });

    it('processes DELETE, POST, PUT, then GET, each entry answered in its place', async () => {
      const existing = body(await post('Patient', { resourceType: 'Patient', identifier: [{ system: 'urn:t', value: 'order' }] }));
      const other = body(await post('Patient', { resourceType: 'Patient', identifier: [{ system: 'urn:t', value: 'order-other' }] }));
      const tx = {
        resourceType: 'Bundle', type: 'transaction',
        entry: [
          { request: { method: 'GET', url: `Patient/${other.id}` } },
          { resource: { resourceType: 'Patient', id: 'order-put', active: true }, request: { method: 'PUT', url: 'Patient/order-put' } },
          { resource: { resourceType: 'Patient', active: false }, request: { method: 'POST', url: 'Patient' } },
          { request: { method: 'DELETE', url: `Patient/${existing.id}` } },
        ],
      };
      const res = await post('', tx);
      assert.equal(res.status, 200, res.text);
      const out = body(res);
      assert.deepEqual(out.entry.map((e: any) => e.response.status.slice(0, 3)), ['200', '201', '201', '200']);
      assert.equal(out.entry[0].resource.identifier[0].value, 'order-other');
      assert.equal((await get(`Patient/${existing.id}`)).status, 410);
      assert.equal(body(await get('Patient/order-put')).active, true);
    });

    it('fails as a whole when a GET entry fails, and leaves nothing behind', async () => {
      const tx = {
        resourceType: 'Bundle', type: 'transaction',
        entry: [
          { resource: { resourceType: 'Patient', identifier: [{ system: 'urn:t', value: 'read-fails' }] }, request: { method: 'POST', url: 'Patient' } },
          { request: { method: 'GET', url: 'Patient/12345' } },
        ],
      };
      const res = await post('', tx);
      assert.equal(res.status, 404, res.text);
      const oo = body(res);
      assert.equal(oo.resourceType, 'OperationOutcome');
      assert.match(oo.issue[0].diagnostics, /^Bundle\.entry\[1\]: /);
      assert.equal(await count('Patient?identifier=urn:t|read-fails'), 0);
    });

    it('refuses a GET entry of a resource the transaction writes (its new state is not readable before the commit)', async () => {
      const tx = {
        resourceType: 'Bundle', type: 'transaction',
        entry: [
          { resource: { resourceType: 'Patient', id: 'written-and-read', active: true }, request: { method: 'PUT', url: 'Patient/written-and-read' } },
          { request: { method: 'GET', url: 'Patient/written-and-read' } },
        ],
      };
      const res = await post('', tx);
      assert.equal(res.status, 400, res.text);
      assert.match(body(res).issue[0].diagnostics, /^Bundle\.entry\[1\]: GET of a resource this transaction writes/);
      assert.equal((await get('Patient/written-and-read')).status, 404);
    });
  });

  describe('batch bundles', () => {
    it('processes entries independently with per-entry status and outcome', async () => {
      const batch = {
        resourceType: 'Bundle', type: 'batch',
        entry: [
          { resource: { resourceType: 'Patient', identifier: [{ system: 'urn:t', value: 'batch-ok' }] }, request: { method: 'POST', url: 'Patient' } },
          { resource: { resourceType: 'Patient', gender: 'robot' }, request: { method: 'POST', url: 'Patient' } },
          { request: { method: 'GET', url: 'Patient/missing-one' } },
          { request: { method: 'FETCH', url: 'Patient' } },
        ],
      };
      const out = body(await post('', batch));
      assert.equal(out.type, 'batch-response');
      assert.deepEqual(out.entry.map((e: any) => e.response.status.slice(0, 3)), ['201', '422', '404', '400']);
      assert.equal(out.entry[1].response.outcome.resourceType, 'OperationOutcome');
      assert.equal(await count('Patient?identifier=urn:t|batch-ok'), 1);
    });

    it('rejects a Bundle that is neither batch nor transaction', async () => {
      const res = await post('', { resourceType: 'Bundle', type: 'collection', entry: [] });
      assert.equal(res.status, 400);
    });

    it('answers an entry whose resource holds null inside an array with a 4xx of its own, writing nothing of it', async () => {
      const batch = {
        resourceType: 'Bundle', type: 'batch',
        entry: [
          { resource: { resourceType: 'Patient', identifier: [null] }, request: { method: 'POST', url: 'Patient' } },
          { resource: { resourceType: 'Patient', id: 'batch-null-telecom', telecom: [null] }, request: { method: 'PUT', url: 'Patient/batch-null-telecom' } },
          { resource: { resourceType: 'Patient', identifier: [{ system: 'urn:t', value: 'batch-null-ok' }] }, request: { method: 'POST', url: 'Patient' } },
        ],
      };
      const res = await post('', batch);
      assert.equal(res.status, 200, res.text);
      const out = body(res);
      assert.deepEqual(out.entry.map((e: any) => e.response.status[0]), ['4', '4', '2']);
      assert.equal(out.entry[0].response.outcome.resourceType, 'OperationOutcome');
      assert.equal((await get('Patient/batch-null-telecom')).status, 404);
      assert.equal(await count('Patient?identifier=urn:t|batch-null-ok'), 1);
    });
  });

  describe('malformed bundles', () => {
    const ok = (value: string) => ({ resource: { resourceType: 'Patient', identifier: [{ system: 'urn:t', value }] }, request: { method: 'POST', url: 'Patient' } });

    for (const type of ['batch', 'transaction']) {
      it(`${type}: an entry that is null or has no request is a 400 for the whole Bundle, naming the entry`, async () => {
        const cases: Array<[unknown, string]> = [
          [null, 'Bundle.entry[1]'],
          [{ resource: { resourceType: 'Patient' } }, 'Bundle.entry[1].request'],
          [{ resource: { resourceType: 'Patient' }, request: null }, 'Bundle.entry[1].request'],
        ];
        for (const [entry, where] of cases) {
          const res = await post('', { resourceType: 'Bundle', type, entry: [ok(`malformed-${type}`), entry] });
          assert.equal(res.status, 400, res.text);
          const oo = body(res);
          assert.equal(oo.resourceType, 'OperationOutcome');
          assert.deepEqual(oo.issue[0].expression, [where]);
        }
        assert.equal(await count(`Patient?identifier=urn:t|malformed-${type}`), 0);
      });
    }

    it('transaction: null inside an array of a PUT or POST entry fails the transaction with a 4xx, writing nothing', async () => {
      for (const [i, resource] of [{ identifier: [null] }, { telecom: [null] }, { name: [{ given: [null] }] }].entries()) {
        const tx = {
          resourceType: 'Bundle', type: 'transaction',
          entry: [
            ok(`tx-null-${i}`),
            { resource: { resourceType: 'Patient', id: `tx-null-${i}`, ...resource }, request: { method: 'PUT', url: `Patient/tx-null-${i}` } },
          ],
        };
        const res = await post('', tx);
        assert.ok(res.status >= 400 && res.status < 500, `${res.status} ${res.text}`);
        assert.match(body(res).issue[0].diagnostics, /Bundle\.entry\[1\]/);
        assert.equal(await count(`Patient?identifier=urn:t|tx-null-${i}`), 0);
        assert.equal((await get(`Patient/tx-null-${i}`)).status, 404);
      }
    });
  });
});

describe('a transaction interrupted by a crash', () => {
  it('is invisible after restart when the process dies midway through the commit', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'medblock-crash-'));
    try {
      const script = join(import.meta.dirname, '..', 'support', 'crash-midway.ts');
      const child = spawnSync(process.execPath, ['--import', 'tsx', script, dataDir, '40', '25'], { encoding: 'utf8' });
      assert.equal(child.signal, 'SIGKILL', `the child was meant to die mid-commit: ${child.stdout}${child.stderr}`);
      const store = new SqliteStore(join(dataDir, 'vault.sqlite'));
      await store.init();
      const countOf = (type: string) => store.count({ type, clauses: [], lastUpdated: [], limit: 1 });
      assert.equal(await countOf('Patient'), 0);
      assert.equal(await countOf('Observation'), 0);
      assert.deepEqual(await store.history({ limit: 5 }), []);
      assert.deepEqual(await store.unanchored({ limit: 5 }), []);
      await store.close();
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
