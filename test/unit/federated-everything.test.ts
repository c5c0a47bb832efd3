/**
 * The caller's orchestration of the federated record (src/federation/federated-everything.ts) with fake
 * ports: holders that answer, page, go down, stay silent, refuse or tamper; a patient with no link identifier.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { FederatedRecord, type FederatedEverythingRequest } from '../../src/federation/federated-everything.ts';
import { linkToken, US_SSN_SYSTEM } from '../../src/federation/link-token.ts';
import type { LocalEntry } from '../../src/federation/merge.ts';
import { FhirError } from '../../src/fhir/outcome.ts';
import { bundleText, FakeHolders, FakeLedger, pagedHolder, silentHolder, type HolderBehaviour } from '../support/fake-holders.ts';

const KEY = randomBytes(32);
const SSN = '999-59-2277';
const TOKEN = linkToken(KEY, US_SSN_SYSTEM, SSN);
const L2 = 'A'.repeat(43);
const L3 = 'B'.repeat(43);
const patient = (id: string, ssn?: string) => ({ resourceType: 'Patient', id, ...(ssn ? { identifier: [{ system: US_SSN_SYSTEM, value: ssn }] } : {}) });
const obs = (id: string, patientId: string) => ({ resourceType: 'Observation', id, status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${patientId}` } });

const LOCAL: LocalEntry[] = [
  { type: 'Patient', id: 'p1', json: JSON.stringify(patient('p1', SSN)), commitment: 'c'.repeat(64), mode: 'match' },
  { type: 'Observation', id: 'o1', json: JSON.stringify(obs('o1', 'p1')), commitment: 'd'.repeat(64), mode: 'match' },
];

function request(over: Partial<FederatedEverythingRequest> = {}): FederatedEverythingRequest {
  return {
    target: { kind: 'patient', patientId: 'p1', patient: patient('p1', SSN) },
    requester: { sub: 'dr-who', role: 'clinician', pou: 'TREAT' },
    baseUrl: 'https://h1.test/fhir',
    readLocal: async () => LOCAL,
    canRead: () => true,
    ...over,
  };
}

/** A consortium seen from h1: h2 and h3 hold the patient, each with a Patient and an Observation anchored. */
function consortium(behaviours: (pages: { h2: string[]; h3: string[] }, ledger: FakeLedger) => Record<string, HolderBehaviour>, timeoutMs = 2000) {
  const ledger = new FakeLedger();
  ledger.link(TOKEN, 'h1', 'S'.repeat(43));
  ledger.link(TOKEN, 'h2', L2);
  ledger.link(TOKEN, 'h3', L3);
  const h2 = [ledger.anchor(patient('p2', SSN), 'h2', L2), ledger.anchor(obs('o2', 'p2'), 'h2', L2), ledger.anchor(obs('o2b', 'p2'), 'h2', L2)];
  const h3 = [ledger.anchor(patient('p3', SSN), 'h3', L3), ledger.anchor(obs('o3', 'p3'), 'h3', L3)];
  const pages = { h2: [bundleText(h2.slice(0, 2), 'p1'), bundleText(h2.slice(2))], h3: [bundleText(h3)] };
  const holders = new FakeHolders(behaviours(pages, ledger));
  const linkedPatients = { patientsWithLinkToken: async (t: string) => (t === TOKEN ? ['p1'] : []) };
  const record = new FederatedRecord({ self: 'h1', linkKey: KEY, linkSystems: [US_SSN_SYSTEM], ledger, client: holders, linkedPatients, timeoutMs });
  return { record, holders, ledger };
}

const resources = (entries: Array<{ resource?: unknown; resourceJson?: string }>) =>
  entries.map((e) => (e.resourceJson ? JSON.parse(e.resourceJson) : e.resource) as Record<string, any>);
const diagnostics = (r: { outcome?: { issue: Array<{ diagnostics?: string }> } }) => r.outcome?.issue.map((i) => i.diagnostics ?? "") ?? [];

describe('federated $everything: the caller', () => {
  it('gathers every holder in parallel, all pages, and merges them with the local record', async () => {
    const { record, holders } = consortium((p) => ({ h2: pagedHolder(p.h2), h3: pagedHolder(p.h3) }));
    const { record: merged } = await record.everything(request());
    const all = resources(merged.entries);
    assert.deepEqual(all.map((r) => `${r.resourceType}/${r.id ?? ''}`), [
      'Patient/p1', 'Observation/o1', 'Patient/p2', 'Observation/o2', 'Observation/o2b', 'Patient/p3', 'Observation/o3', 'Provenance/', 'Provenance/',
    ]);
    assert.equal(merged.total, 7);
    assert.equal(merged.outcome, undefined);
    // h2 was asked twice (two pages), h3 once; h1 (self) never. Each with the link token and the user's purpose.
    assert.deepEqual(holders.calls.map((c) => c.member), ['h2', 'h3', 'h2']);
    assert.deepEqual(holders.calls[2].query, [['_count', '1000'], ['_cursor', 'p1']]);
    assert.ok(holders.calls.every((c) => c.claims.link === TOKEN && c.claims.sub === 'dr-who' && c.claims.pou === 'TREAT'));
  });

  it('a holder that is down gives a partial record and an outcome naming it', async () => {
    const { record } = consortium((p) => ({ h3: pagedHolder(p.h3) })); // h2 has no address: the client fails
    const { record: merged } = await record.everything(request());
    assert.ok(!resources(merged.entries).some((r) => r.meta?.source === 'urn:medblock:member:h2'));
    assert.ok(resources(merged.entries).some((r) => r.meta?.source === 'urn:medblock:member:h3'));
    assert.deepEqual(diagnostics(merged), ['member h2 is unreachable; its part of the record is missing']);
  });

  it('a slow holder times out: the others are served, without waiting for it', async () => {
    const { record } = consortium((p) => ({ h2: silentHolder, h3: pagedHolder(p.h3) }), 100);
    const started = Date.now();
    const { record: merged } = await record.everything(request());
    assert.ok(Date.now() - started < 1500);
    assert.deepEqual(diagnostics(merged), ['member h2 did not answer within 100 ms; its part of the record is missing']);
    assert.equal(merged.total, 4);
  });

  it('a holder that ignores the abort still loses the race against the timeout', async () => {
    const { record } = consortium((p) => ({ h2: () => new Promise(() => {}), h3: pagedHolder(p.h3) }), 100);
    const { record: merged } = await record.everything(request());
    assert.match(diagnostics(merged)[0], /member h2 did not answer within 100 ms/);
  });

  it('a refusing holder (403) is reported with its status', async () => {
    const { record } = consortium((p) => ({ h2: async () => ({ status: 403, text: '{"resourceType":"OperationOutcome","issue":[]}' }), h3: pagedHolder(p.h3) }));
    const { record: merged } = await record.everything(request());
    assert.deepEqual(diagnostics(merged), ['member h2 refused the request (HTTP 403); its part of the record is missing']);
  });

  it('a holder answering nonsense is reported as such', async () => {
    const { record } = consortium((p) => ({ h2: async () => ({ status: 200, text: '<html>' }), h3: pagedHolder(p.h3) }));
    const { record: merged } = await record.everything(request());
    assert.match(diagnostics(merged)[0], /member h2 sent an answer that is not a searchset Bundle/);
  });

  it('an entry edited in flight is dropped and reported; the rest of that holder is served', async () => {
    const { record } = consortium((p) => ({
      h2: pagedHolder([p.h2[0].replace('"id":"o2"', '"id":"o2","note":[{"text":"edited"}]'), p.h2[1]]),
      h3: pagedHolder(p.h3),
    }));
    const { record: merged } = await record.everything(request());
    const ids = resources(merged.entries).map((r) => r.id);
    assert.ok(!ids.includes('o2'), 'the tampered Observation is never served');
    assert.ok(ids.includes('o2b') && ids.includes('p2'));
    assert.deepEqual(diagnostics(merged), [
      "member h2: 1 entries failed verification against this gateway's ledger and are left out (1 not-anchored)",
    ]);
    assert.ok(!JSON.stringify(merged.outcome).includes('edited'), 'the outcome says nothing of the content');
  });

  it('a patient with no link identifier: the local record only, and an outcome saying it is not linked', async () => {
    const { record, holders } = consortium((p) => ({ h2: pagedHolder(p.h2), h3: pagedHolder(p.h3) }));
    const { record: merged } = await record.everything(request({ target: { kind: 'patient', patientId: 'p1', patient: patient('p1') } }));
    assert.equal(holders.calls.length, 0);
    assert.deepEqual(resources(merged.entries).map((r) => r.id), ['p1', 'o1']);
    assert.match(diagnostics(merged)[0], /carries no identifier in a system this consortium links patients by/);
  });

  it('leaves out remote resources of types the user may not read', async () => {
    const { record } = consortium((p) => ({ h2: pagedHolder(p.h2), h3: pagedHolder(p.h3) }));
    const { record: merged } = await record.everything(request({ canRead: (t) => t === 'Patient' }));
    assert.ok(!resources(merged.entries).some((r) => r.resourceType === 'Observation' && r.meta?.source));
  });

  it('by identifier: the local Patients carrying its token, and the holders; an identifier that cannot link is a 400', async () => {
    const { record } = consortium((p) => ({ h2: pagedHolder(p.h2), h3: pagedHolder(p.h3) }));
    let asked: string[] = [];
    const result = await record.everything(request({
      target: { kind: 'identifier', system: US_SSN_SYSTEM, value: '999 59 2277' },
      readLocal: async (ids) => ((asked = ids), LOCAL),
    }));
    assert.deepEqual(asked, ['p1']);
    assert.equal(result.record.total, 7);
    for (const target of [{ system: 'http://example.org/mrn', value: '1' }, { system: US_SSN_SYSTEM, value: '000-00-0000' }]) {
      await assert.rejects(record.everything(request({ target: { kind: 'identifier', ...target } })), (e: unknown) => e instanceof FhirError && e.status === 400 && !e.message.includes('000'));
    }
  });

  it('records which hospitals it asked, and what came of it; no answer leaves if that record fails', async () => {
    const { ledger, holders } = consortium((p) => ({ h2: async () => ({ status: 403, text: '' }), h3: pagedHolder(p.h3) }));
    const records: unknown[] = [];
    const accessLog = { recordFederatedRequest: async (r: unknown) => void records.push(r), recordDisclosure: async () => {} };
    const linkedPatients = { patientsWithLinkToken: async () => ['p1'] };
    const deps = { self: 'h1', linkKey: KEY, linkSystems: [US_SSN_SYSTEM], ledger, client: holders, linkedPatients };
    await new FederatedRecord({ ...deps, accessLog }).everything(request({ requester: { sub: 'dr-who', role: 'clinician', pou: 'ETREAT', btg: 'unconscious' } }));
    assert.deepEqual(records, [{ user: 'dr-who', purpose: 'ETREAT', breakTheGlass: true, holders: [{ member: 'h2', result: 'refused' }, { member: 'h3', result: 'ok' }] }]);
    const failing = { ...accessLog, recordFederatedRequest: async () => { throw new Error('disk full'); } };
    await assert.rejects(new FederatedRecord({ ...deps, accessLog: failing }).everything(request()), (e: unknown) => e instanceof FhirError && e.status === 503);
  });
});
