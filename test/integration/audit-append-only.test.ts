/**
 * Issue #11 item 6, "an access log the API cannot rewrite", as the review ran it and then the defence:
 *
 * - with `user/*.cruds` (the README's own token) an AuditEvent was deleted and a forged one created that
 *   blamed another user: every write of AuditEvent (create, update, patch, delete, their conditional forms,
 *   and bundle entries of each) is refused (405) and the log is unchanged;
 * - a wildcard grant no longer reads the access log; the auditor scope (`user/AuditEvent.rs`) does;
 * - `Patient.d` alone cannot `$erase`: the erase scope can;
 * - `medblock verify` reports a data key tombstoned directly in the database (no anchored erasure) as
 *   tampering, and accepts a real `$erase`;
 * - with MEDBLOCK_ERASE_APPROVAL=second-approver, a first `$erase` is only a durable request (it survives a
 *   restart) until a different user with the erase scope confirms it.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import supertest from 'supertest';
import { mintToken } from '../../src/access/tokens.ts';
import { ERASURE_SYSTEM } from '../../src/audit/erasure.ts';
import { createGateway } from '../../src/gateway.ts';
import type { EncryptedStore } from '../../src/vault/encrypted-store.ts';
import { testConsortium } from '../support/consortium.ts';
import { body, FHIR_JSON, startTestGateway, type TestGateway } from '../support/gateway.ts';
import { untilWithin } from '../support/until.ts';

const until = untilWithin(20_000, 50);
const AUDITOR = 'user/AuditEvent.rs';
const ERASER = 'user/Patient.$erase';

type Agent = supertest.Agent;
const send = (http: Agent, method: 'get' | 'post' | 'put' | 'patch' | 'delete', path: string, token: string, json?: unknown, headers: Record<string, string> = {}) => {
  let req = http[method](`/fhir/${path}`).set('Authorization', `Bearer ${token}`);
  for (const [k, v] of Object.entries(headers)) req = req.set(k, v);
  if (json !== undefined) req = req.set('Content-Type', headers['Content-Type'] ?? FHIR_JSON).send(JSON.stringify(json));
  return req;
};

async function createPatient(t: TestGateway, family: string): Promise<string> {
  const res = await send(t.http, 'post', 'Patient', t.admin, { resourceType: 'Patient', name: [{ family }] });
  assert.equal(res.status, 201, res.text);
  return body(res).id;
}

/** Every access record whose agent is `subject`, as an auditor reads them. */
async function recordsBlaming(http: Agent, auditor: string, subject: string): Promise<unknown[]> {
  const res = await send(http, 'get', 'AuditEvent?_count=1000', auditor);
  assert.equal(res.status, 200, res.text);
  return (body(res).entry ?? []).map((e: any) => e.resource).filter((r: any) => r.agent.some((a: any) => a.who?.identifier?.value === subject));
}

describe('the access log is append-only and read under the auditor scope', () => {
  let t: TestGateway;
  let auditor: string;
  let wildcard: string;
  let patientId: string;
  let target: any;
  before(async () => {
    t = await startTestGateway();
    auditor = await t.token(AUDITOR);
    wildcard = await t.token('user/*.cruds');
    patientId = await createPatient(t, 'Auditee');
    assert.equal((await send(t.http, 'get', `Patient/${patientId}`, wildcard)).status, 200);
    const records = body(await send(t.http, 'get', `AuditEvent?entity=${encodeURIComponent(`Patient/${patientId}`)}&_count=100`, auditor)).entry;
    target = records.find((e: any) => e.resource.subtype[0].code === 'read').resource;
  });
  after(async () => t?.close());

  const forged = () => ({ ...target, id: undefined, meta: undefined, agent: [{ who: { identifier: { system: 'urn:medblock:token-subject', value: 'victim' } }, requestor: true }] });
  const refused = (res: { status: number; text: string }, what: string) => {
    assert.equal(res.status, 405, `${what}: ${res.text}`);
    assert.equal(body(res).resourceType, 'OperationOutcome');
    assert.match(body(res).issue[0].diagnostics, /append-only access log/);
  };
  const assertLogUnchanged = async () => {
    const now = await send(t.http, 'get', `AuditEvent/${target.id}`, auditor);
    assert.equal(now.status, 200, 'the record is still there');
    assert.deepEqual(body(now), target, 'and unchanged');
    assert.deepEqual(await recordsBlaming(t.http, auditor, 'victim'), [], 'no forged record blames another user');
  };

  it('refuses delete, update, patch and create of an AuditEvent with user/*.cruds, and their conditional forms', async () => {
    const entity = `entity=${encodeURIComponent(`Patient/${patientId}`)}`;
    refused(await send(t.http, 'delete', `AuditEvent/${target.id}`, wildcard), 'delete');
    refused(await send(t.http, 'put', `AuditEvent/${target.id}`, wildcard, { ...target, agent: forged().agent }), 'update');
    refused(await send(t.http, 'patch', `AuditEvent/${target.id}`, wildcard, [{ op: 'replace', path: '/agent/0/who/identifier/value', value: 'victim' }], { 'Content-Type': 'application/json-patch+json' }), 'patch');
    refused(await send(t.http, 'post', 'AuditEvent', wildcard, forged()), 'create');
    refused(await send(t.http, 'post', 'AuditEvent', wildcard, forged(), { 'If-None-Exist': entity }), 'conditional create');
    refused(await send(t.http, 'put', `AuditEvent?${entity}`, wildcard, forged()), 'conditional update');
    refused(await send(t.http, 'delete', `AuditEvent?${entity}`, wildcard), 'conditional delete');
    // Not even the auditor, nor a token naming AuditEvent explicitly with every permission.
    const explicit = await t.token('user/AuditEvent.cruds system/AuditEvent.cruds');
    refused(await send(t.http, 'delete', `AuditEvent/${target.id}`, explicit), 'delete with an explicit grant');
    refused(await send(t.http, 'post', 'AuditEvent', explicit, forged()), 'create with an explicit grant');
    await assertLogUnchanged();
    // The CapabilityStatement says so too.
    const metadata = body(await t.http.get('/fhir/metadata'));
    const auditEvent = metadata.rest[0].resource.find((r: any) => r.type === 'AuditEvent');
    assert.deepEqual(auditEvent.interaction.map((i: any) => i.code).sort(), ['history-instance', 'history-type', 'read', 'search-type', 'vread']);
  });

  it('refuses the same writes as entries of a batch and of a transaction', async () => {
    const entries = [
      { request: { method: 'DELETE', url: `AuditEvent/${target.id}` } },
      { resource: { ...target, agent: forged().agent }, request: { method: 'PUT', url: `AuditEvent/${target.id}` } },
      {
        resource: { resourceType: 'Binary', contentType: 'application/json-patch+json', data: Buffer.from(JSON.stringify([{ op: 'replace', path: '/agent/0/who/identifier/value', value: 'victim' }])).toString('base64') },
        request: { method: 'PATCH', url: `AuditEvent/${target.id}` },
      },
      { resource: forged(), request: { method: 'POST', url: 'AuditEvent' } },
      // Criteria that match nothing: whether matching may run at all is the bundle authorization's concern (item 1).
      { resource: forged(), request: { method: 'POST', url: 'AuditEvent', ifNoneExist: 'entity=Patient/no-such-patient' } },
    ];
    const batch = await send(t.http, 'post', '', wildcard, { resourceType: 'Bundle', type: 'batch', entry: entries });
    assert.equal(batch.status, 200, batch.text);
    const statuses = body(batch).entry.map((e: any) => e.response.status);
    assert.deepEqual(statuses, entries.map(() => '405'), JSON.stringify(statuses));
    for (const entry of entries) {
      const tx = await send(t.http, 'post', '', wildcard, { resourceType: 'Bundle', type: 'transaction', entry: [entry] });
      refused(tx, `transaction ${entry.request.method}`);
    }
    await assertLogUnchanged();
  });

  it('does not let a wildcard or patient/ scope read the access log; the auditor scope reads it and writes nothing', async () => {
    const forbidden = async (token: string, path: string) => {
      const res = await send(t.http, 'get', path, token);
      assert.equal(res.status, 403, `${path}: ${res.text}`);
      assert.match(body(res).issue[0].diagnostics, /auditor scope/);
    };
    for (const token of [wildcard, await t.token('user/*.rs'), await t.token('system/*.rs'), await t.token('patient/AuditEvent.rs', patientId)]) {
      await forbidden(token, `AuditEvent/${target.id}`);
      await forbidden(token, `AuditEvent/${target.id}/_history/1`);
      await forbidden(token, `AuditEvent?entity=${encodeURIComponent(`Patient/${patientId}`)}`);
      await forbidden(token, `AuditEvent/_history`);
    }
    await forbidden(wildcard, '?_type=AuditEvent');
    // Across types, and through _revinclude: the wildcard gets everything but the access log.
    const across = body(await send(t.http, 'get', '?_count=1000', wildcard));
    assert.ok(!(across.entry ?? []).some((e: any) => e.resource.resourceType === 'AuditEvent'));
    // System history spans every type: the access log's versions are left out, and so is the total that would count them.
    const history = body(await send(t.http, 'get', '_history?_count=1000', wildcard));
    assert.ok(history.entry.length > 0);
    assert.ok(!history.entry.some((e: any) => e.resource?.resourceType === 'AuditEvent' || e.request.url.startsWith('AuditEvent')));
    assert.equal(history.total, undefined);
    const audited = body(await send(t.http, 'get', '_history?_count=1000', await t.token('user/*.rs user/AuditEvent.rs')));
    assert.ok(audited.entry.some((e: any) => e.resource?.resourceType === 'AuditEvent'));
    assert.equal(typeof audited.total, 'number');
    const revinclude = await send(t.http, 'get', `Patient?_id=${patientId}&_revinclude=AuditEvent:entity`, wildcard);
    assert.equal(revinclude.status, 200, revinclude.text);
    assert.deepEqual(body(revinclude).entry.map((e: any) => e.resource.resourceType), ['Patient']);

    const read = await send(t.http, 'get', `AuditEvent/${target.id}`, auditor);
    assert.equal(read.status, 200);
    assert.equal(body(read).id, target.id);
    const search = body(await send(t.http, 'get', `AuditEvent?entity=${encodeURIComponent(`Patient/${patientId}`)}`, await t.token('system/AuditEvent.rs')));
    assert.ok(search.entry.length >= 1);
    // The auditor scope is for the access log only: no patient data.
    assert.equal((await send(t.http, 'get', `Patient/${patientId}`, auditor)).status, 403);
  });
});

describe('$erase needs the erase scope', () => {
  let t: TestGateway;
  before(async () => {
    t = await startTestGateway();
  });
  after(async () => t?.close());

  it('refuses Patient.d, user/*.cruds and a patient-bound erase scope; the erase scope erases', async () => {
    const id = await createPatient(t, 'Erasable');
    for (const token of [await t.token('user/Patient.cruds'), await t.token('user/*.cruds system/*.cruds'), await t.token('patient/Patient.$erase patient/*.cruds', id)]) {
      const res = await send(t.http, 'post', `Patient/${id}/$erase`, token);
      assert.equal(res.status, 403, res.text);
      assert.match(body(res).issue[0].diagnostics, /erase scope/);
      assert.equal((await send(t.http, 'get', `Patient/${id}`, t.admin)).status, 200, 'nothing was erased');
    }
    const erased = await send(t.http, 'post', `Patient/${id}/$erase`, await t.token(ERASER));
    assert.equal(erased.status, 200, erased.text);
    assert.equal((await send(t.http, 'get', `Patient/${id}`, t.admin)).status, 410);
  });
});

describe('medblock verify tells an $erase from a key destroyed in the database', () => {
  const BIN = join(import.meta.dirname, '..', '..', 'bin', 'medblock.js');
  const work = mkdtempSync(join(tmpdir(), 'medblock-erasure-verify-'));
  const consortiumReady = testConsortium(['test-hospital']);
  let t: TestGateway;
  let erasedId: string;
  let tamperedKey: string;
  before(async () => {
    t = await startTestGateway();
    erasedId = await createPatient(t, 'ErasedProperly');
    const victim = await createPatient(t, 'ShreddedBehindTheGatewaysBack');
    tamperedKey = (t.gateway.store as EncryptedStore).keyIdFor(`Patient/${victim}`);
    assert.equal((await send(t.http, 'post', `Patient/${erasedId}/$erase`, t.admin)).status, 200);
    await t.gateway.accessLog!.drain();
    await until('everything anchored', async () => (await t.gateway.store.unanchored({ limit: 1 })).length === 0);
    await t.gateway.close();
  });
  after(() => {
    rmSync(t.dataDir, { recursive: true, force: true });
    rmSync(work, { recursive: true, force: true });
  });

  async function verifyCopy(name: string, tamper: (vault: Database.Database) => void): Promise<{ status: number | null; stdout: string }> {
    const dir = join(work, name);
    cpSync(t.dataDir, dir, { recursive: true });
    const vault = new Database(join(dir, 'vault.sqlite'));
    try {
      tamper(vault);
    } finally {
      vault.close();
    }
    const env: NodeJS.ProcessEnv = { ...process.env, MEDBLOCK_LOG: 'off', MEDBLOCK_DATA_DIR: dir, MEDBLOCK_HOSPITAL_ID: 'test-hospital', MEDBLOCK_CONSORTIUM_DIR: await consortiumReady };
    delete env.MEDBLOCK_MONGODB_URI;
    delete env.MEDBLOCK_KAFKA_BROKERS;
    return new Promise((resolve) => {
      execFile(process.execPath, [BIN, 'verify'], { env, encoding: 'utf8', timeout: 60_000 }, (error, stdout) => {
        resolve({ status: error ? (typeof error.code === 'number' ? error.code : null) : 0, stdout });
      });
    });
  }

  it('accepts a real $erase: its erasure record is anchored', async () => {
    const res = await verifyCopy('untampered', () => {});
    assert.equal(res.status, 0, res.stdout);
    assert.match(res.stdout, /^OK: .* \(\d+ anchored, 0 pending, 1 erased\)$/m);
  });

  it('reports a data key tombstoned directly in the database as tampering', async () => {
    const res = await verifyCopy('tombstoned', (vault) => {
      const changes = vault.prepare('UPDATE data_keys SET wrapped = NULL, master_key_id = NULL, erased_at = ? WHERE key_id = ?').run(new Date().toISOString(), tamperedKey).changes;
      assert.equal(changes, 1);
    });
    assert.equal(res.status, 1, res.stdout);
    const fails = res.stdout.split('\n').filter((l) => l.startsWith('FAIL'));
    // The key alone was tombstoned: the patient's index terms are still there, which a real $erase removes.
    assert.deepEqual(fails.map((l) => l.replace(/^FAIL Patient\/[^ ]+ (v1|current \(v1\)): /, '').replace(/^\d+ index term\(s\) remain .*/, 'terms remain')), [
      `its data key ${tamperedKey} was destroyed without an anchored erasure record: not an $erase, tampering`,
      'terms remain',
    ]);
  });

  it('reports a data key deleted from the database', async () => {
    const res = await verifyCopy('key-deleted', (vault) => {
      assert.equal(vault.prepare('DELETE FROM data_keys WHERE key_id = ?').run(tamperedKey).changes, 1);
    });
    assert.equal(res.status, 1, res.stdout);
    assert.match(res.stdout, /^FAIL Patient\/[^ ]+ v1: cannot be opened: /m);
  });
});

describe('$erase with a second approver (MEDBLOCK_ERASE_APPROVAL=second-approver)', () => {
  let t: TestGateway;
  let http: Agent;
  let tokenOf: (subject: string, scope: string) => Promise<string>;
  let restarted: Awaited<ReturnType<typeof createGateway>> | undefined;
  before(async () => {
    t = await startTestGateway({ eraseApproval: 'second-approver' });
    http = t.http;
    tokenOf = (subject, scope) => mintToken(t.gateway.issuer, { subject, scope });
  });
  after(async () => {
    if (restarted) await restarted.close();
    else await t.gateway.close();
    rmSync(t.dataDir, { recursive: true, force: true });
  });

  it('records a request, refuses the requester as approver, survives a restart, and erases when another eraser confirms', async () => {
    const id = await createPatient(t, 'TwoPeopleAgree');
    const alice = await tokenOf('alice', ERASER);
    const first = await send(http, 'post', `Patient/${id}/$erase`, alice);
    assert.equal(first.status, 202, first.text);
    const requestedAt = body(first).parameter.find((p: any) => p.name === 'requestedAt').valueInstant;
    // The requester calling again is still only a request.
    const again = await send(http, 'post', `Patient/${id}/$erase`, alice);
    assert.equal(again.status, 202);
    assert.equal(body(again).parameter.find((p: any) => p.name === 'requestedAt').valueInstant, requestedAt);
    assert.equal((await send(http, 'get', `Patient/${id}`, t.admin)).status, 200, 'not erased yet');
    // A second user without the erase scope cannot confirm.
    assert.equal((await send(http, 'post', `Patient/${id}/$erase`, await tokenOf('mallory', 'user/*.cruds'))).status, 403);

    // The pending request is in the vault: a restarted gateway still has it.
    await t.gateway.close();
    restarted = await createGateway(t.gateway.config);
    http = supertest.agent(restarted.app);
    tokenOf = (subject, scope) => mintToken(restarted!.issuer, { subject, scope });
    assert.equal((await send(http, 'get', `Patient/${id}`, await tokenOf('tester', 'user/Patient.rs'))).status, 200);

    const confirmed = await send(http, 'post', `Patient/${id}/$erase`, await tokenOf('bob', ERASER));
    assert.equal(confirmed.status, 200, confirmed.text);
    assert.equal((await send(http, 'get', `Patient/${id}`, await tokenOf('tester', 'user/Patient.rs'))).status, 410);

    // Both the request and the erasure are on record, naming who asked and who approved.
    const auditor = await tokenOf('compliance', AUDITOR);
    const records = async (code: string) =>
      (body(await send(http, 'get', `AuditEvent?subtype=${encodeURIComponent(`${ERASURE_SYSTEM}|${code}`)}&entity=${encodeURIComponent(`Patient/${id}`)}`, auditor)).entry ?? [])
        .map((e: any) => e.resource.agent.map((a: any) => a.who.identifier.value));
    assert.deepEqual(await records('request'), [['alice']]);
    assert.deepEqual(await records('erasure'), [['alice', 'bob']]);
  });
});
