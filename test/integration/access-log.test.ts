/**
 * The access log as compliance sees it: every answered FHIR request has its AuditEvent durable before the
 * answer leaves (so it is searchable the moment the client has its response), with who, what, and the
 * outcome, and no PHI; the records are anchored in `audit` envelopes; a request whose record cannot be
 * written gets 503 and no data.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { body, FHIR_JSON, startTestGateway, type TestGateway } from '../support/gateway.ts';
import { untilWithin } from '../support/until.ts';

const until = untilWithin(15_000, 50);

describe('access log', () => {
  let t: TestGateway;
  let patientId: string;
  before(async () => {
    t = await startTestGateway();
    const created = await t.http.post('/fhir/Patient').set('Authorization', `Bearer ${t.admin}`).set('Content-Type', FHIR_JSON)
      .send(JSON.stringify({ resourceType: 'Patient', name: [{ family: 'Zyxwvutsrq', given: ['Onmlk'] }], birthDate: '1971-02-03' }));
    assert.equal(created.status, 201);
    patientId = body(created).id;
  });
  after(async () => t.close());

  const recordsAbout = async (reference: string) =>
    (body(await t.http.get(`/fhir/AuditEvent?entity=${encodeURIComponent(reference)}&_count=100`).set('Authorization', `Bearer ${t.admin}`)).entry ?? [])
      .map((e: { resource: any }) => e.resource);

  it('has every answered request on record before the answer, with actor, interaction and outcome, and no PHI', async () => {
    const reader = await t.token('user/Patient.rs');
    const outsider = await t.token('user/Observation.rs');
    assert.equal((await t.http.get(`/fhir/Patient/${patientId}`).set('Authorization', `Bearer ${reader}`)).status, 200);
    assert.equal((await t.http.get(`/fhir/Patient/${patientId}`).set('Authorization', `Bearer ${outsider}`)).status, 403);
    // No waiting: the two records are already durable and searchable.
    const records = await recordsAbout(`Patient/${patientId}`);
    const reads = records.filter((r: any) => r.subtype[0].code === 'read');
    assert.deepEqual(reads.map((r: any) => r.outcome).sort(), ['0', '4'], 'one success, one refusal (403)');
    for (const r of reads) {
      assert.equal(r.agent[0].who.identifier.value, 'tester');
      assert.equal(r.action, 'R');
      assert.equal(r.source.observer.display, 'test-hospital');
      const text = JSON.stringify(r);
      assert.doesNotMatch(text, /Zyxwvutsrq|Onmlk|1971-02-03/, 'no PHI in an access record');
    }
    assert.ok(records.some((r: any) => r.subtype[0].code === 'create' && r.outcome === '0'), 'the create is on record too');
  });

  it('logs requests for unknown types and malformed ids without failing them', async () => {
    const unknown = await t.http.get('/fhir/NotAType/1').set('Authorization', `Bearer ${t.admin}`);
    assert.equal(unknown.status, 404);
    const malformed = await t.http.get('/fhir/Patient/not_an_id!').set('Authorization', `Bearer ${t.admin}`);
    assert.equal(malformed.status, 400);
  });

  it('anchors access records in audit envelopes', async () => {
    const [record] = await recordsAbout(`Patient/${patientId}`);
    const ledger = t.gateway.ledger!;
    await until('the access record anchored', async () => {
      const res = await t.http.get(`/fhir/AuditEvent/${record.id}`).set('Authorization', `Bearer ${t.admin}`);
      return /^block=\d+/.test(res.headers['x-medblock-anchor'] ?? '');
    });
    const version = await t.gateway.repo.read('AuditEvent', record.id);
    const location = (await ledger.store.locate(ledger.member.channel, [version.digest!])).get(version.digest!);
    assert.equal(location?.kind, 'audit');
    assert.equal(location?.creator, 'test-hospital');
  });

  it('answers 503 and returns no data when the record cannot be written', async () => {
    const repo = t.gateway.repo;
    const write = repo.write.bind(repo);
    repo.write = async () => {
      throw new Error('injected: the vault refuses writes');
    };
    try {
      const res = await t.http.get(`/fhir/Patient/${patientId}`).set('Authorization', `Bearer ${t.admin}`);
      assert.equal(res.status, 503);
      assert.equal(res.headers['retry-after'], '5');
      assert.equal(body(res).resourceType, 'OperationOutcome');
      assert.doesNotMatch(res.text, /Zyxwvutsrq/);
    } finally {
      repo.write = write;
    }
    assert.equal((await t.http.get(`/fhir/Patient/${patientId}`).set('Authorization', `Bearer ${t.admin}`)).status, 200);
  });
});
