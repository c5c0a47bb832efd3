/**
 * A three-hospital consortium on the real Kafka: h1 and h2 are gateways in this process, h3 a separate
 * `medblock start` process. They write concurrently; every acknowledged version gets anchored; all reach
 * the same head hash; each hospital anchors a patient under its own locator token; h3 is SIGKILLed mid-way
 * and, restarted, anchors what it acknowledged and catches up; a forged attestation raises the divergence
 * alarm on the others (/readyz degraded, anchoring stopped).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import supertest from 'supertest';
import { loadDevIssuer, mintToken } from '../../src/access/tokens.ts';
import { KafkaOrderer } from '../../src/adapters/kafka/kafka-orderer.ts';
import { SqliteLedgerStore } from '../../src/adapters/sqlite/sqlite-ledger-store.ts';
import { createGateway, openVault, type Gateway } from '../../src/gateway.ts';
import { loadMemberConsortium } from '../../src/identity/consortium-dir.ts';
import { createAttestation } from '../../src/ledger/attestation.ts';
import { blockHeaderHash } from '../../src/ledger/block.ts';
import { canonicalize } from '../../src/ledger/canonical-json.ts';
import { createEnvelope, encodeEnvelope } from '../../src/ledger/envelope.ts';
import { encodeChannelMessage } from '../../src/ledger/orderer.ts';
import type { EncryptedStore } from '../../src/vault/encrypted-store.ts';
import { keySource } from '../../src/vault/keyring.ts';
import { testConsortium } from '../support/consortium.ts';
import { describeWithEngine } from '../support/engines.ts';
import { transactionOf } from '../support/bundles.ts';
import { untilWithin } from '../support/until.ts';
import { freePorts } from '../engines/index.ts';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'medblock.js');
const FHIR = 'application/fhir+json';
const work = mkdtempSync(join(tmpdir(), 'medblock-consortium-e2e-'));
after(() => rmSync(work, { recursive: true, force: true }));

const until = untilWithin(60_000, 100);

describeWithEngine('kafka', 'a three-member consortium on Kafka', (brokers) => {
  let consortiumDir: string;
  const gateways: Record<string, Gateway> = {};
  const tokens: Record<string, string> = {};
  const h3 = { dataDir: join(work, 'h3'), port: 0, process: undefined as ChildProcess | undefined, token: '' };
  const env = () => ({
    ...process.env, MEDBLOCK_LOG: 'off', MEDBLOCK_DATA_DIR: h3.dataDir, MEDBLOCK_HOSPITAL_ID: 'h3', MEDBLOCK_CONSORTIUM_DIR: consortiumDir,
    MEDBLOCK_KAFKA_BROKERS: brokers, MEDBLOCK_KAFKA_REPLICATION_FACTOR: '1', MEDBLOCK_MONGODB_URI: '', PORT: String(h3.port), HOST: '127.0.0.1',
  });

  async function startH3(): Promise<void> {
    h3.process = spawn(process.execPath, [BIN, 'start'], { env: env(), stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    h3.process.stderr!.on('data', (d) => (stderr += d));
    await until('h3 ready', async () => {
      if (h3.process!.exitCode !== null) throw new Error(`h3 exited: ${stderr}`);
      const res = await fetch(`http://127.0.0.1:${h3.port}/readyz`).catch(() => undefined);
      return res?.status === 200;
    });
  }

  const h3Post = (body: unknown) =>
    fetch(`http://127.0.0.1:${h3.port}/fhir`, { method: 'POST', headers: { Authorization: `Bearer ${h3.token}`, 'Content-Type': FHIR }, body: JSON.stringify(body) });

  before(async () => {
    consortiumDir = await testConsortium(['h1', 'h2', 'h3']);
    for (const id of ['h1', 'h2']) {
      const dataDir = join(work, id);
      gateways[id] = await createGateway({
        host: '127.0.0.1', port: 0, dataDir, maxBodyBytes: 8 * 1024 * 1024, baseUrl: `http://${id}.test/fhir`,
        hospitalId: id, masterKey: keySource(dataDir, {}), consortiumDir, kafkaBrokers: brokers.split(','),
        kafkaReplication: { replicationFactor: 1, minInsyncReplicas: 1 }, mode: 'dev',
      });
      tokens[id] = await mintToken(gateways[id].issuer, { subject: `${id}-tester`, scope: 'user/*.cruds' });
    }
    [h3.port] = await freePorts(1);
    await startH3();
    h3.token = await mintToken(await loadDevIssuer(h3.dataDir), { subject: 'h3-tester', scope: 'user/*.cruds' });
  });

  after(async () => {
    h3.process?.kill('SIGKILL');
    for (const gateway of Object.values(gateways)) await gateway.close();
  });

  /** Every version in the gateway's vault is anchored. */
  const fullyAnchored = async (gateway: Gateway) => (await gateway.store.unanchored({ limit: 1 })).length === 0;

  it('anchors every acknowledged write of three members writing concurrently, on one chain', async () => {
    const writes = [];
    for (let i = 0; i < 4; i++) {
      writes.push(supertest(gateways.h1.app).post('/fhir').set('Authorization', `Bearer ${tokens.h1}`).set('Content-Type', FHIR).send(JSON.stringify(transactionOf(20, `h1-${i}`))));
      writes.push(supertest(gateways.h2.app).post('/fhir').set('Authorization', `Bearer ${tokens.h2}`).set('Content-Type', FHIR).send(JSON.stringify(transactionOf(20, `h2-${i}`))));
      writes.push(h3Post(transactionOf(20, `h3-${i}`)));
    }
    const responses = await Promise.all(writes);
    for (const res of responses) assert.equal(res.status, 200);
    await until('h1 and h2 anchored everything', async () => (await fullyAnchored(gateways.h1)) && (await fullyAnchored(gateways.h2)));
    // Every member's writes are in the chain h1 holds, h3's (another process) included: 4 bundles × 21 versions each.
    const anchoredBy = async () => {
      const byCreator = new Map<string, number>();
      const channel = gateways.h1.ledger!.member.channel;
      const head = (await gateways.h1.ledger!.store.head(channel))!;
      for (let n = 0; n <= head.number; n++) {
        const block = (await gateways.h1.ledger!.store.block(channel, n))!;
        block.envelopes.forEach((bytes, i) => {
          if (!block.validity[i].valid) return;
          const envelope = JSON.parse(Buffer.from(bytes).toString('utf8'));
          if (envelope.type === 'anchor') byCreator.set(envelope.creator, (byCreator.get(envelope.creator) ?? 0) + envelope.payload.entries.length);
        });
      }
      return byCreator;
    };
    await until('h3\'s versions in h1\'s chain', async () => ((await anchoredBy()).get('h3') ?? 0) >= 84);
    const byCreator = await anchoredBy();
    for (const id of ['h1', 'h2', 'h3']) assert.ok((byCreator.get(id) ?? 0) >= 84, `${id} anchored its 84 versions (got ${byCreator.get(id)})`);
    // No envelope of an honest member was marked invalid.
    const channel = gateways.h1.ledger!.member.channel;
    const head = (await gateways.h1.ledger!.store.head(channel))!;
    for (let n = 0; n <= head.number; n++) {
      const block = (await gateways.h1.ledger!.store.block(channel, n))!;
      assert.ok(block.validity.every((v) => v.valid), `block ${n}: ${JSON.stringify(block.validity.filter((v) => !v.valid))}`);
    }
  });

  it('anchors one patient id under a different locator token at each hospital, each found by its holder only', async () => {
    const patient = { resourceType: 'Patient', id: 'shared-patient-1', identifier: [{ system: 'urn:test', value: 'shared' }] };
    for (const id of ['h1', 'h2']) {
      const res = await supertest(gateways[id].app).put('/fhir/Patient/shared-patient-1').set('Authorization', `Bearer ${tokens[id]}`).set('Content-Type', FHIR).send(JSON.stringify(patient));
      assert.equal(res.status, 201);
    }
    const { channel } = loadMemberConsortium(consortiumDir, 'h1');
    // Tokens come from each hospital's data key for the patient: the same id gives unrelated tokens, so a member
    // cannot test a known id against another's anchors (cross-hospital linking uses identifier link tokens).
    const [h1Token, h2Token] = await Promise.all(['h1', 'h2'].map((id) => (gateways[id].store as EncryptedStore).locatorTokenFor('Patient/shared-patient-1')));
    assert.ok(h1Token && h2Token && h1Token !== h2Token);
    const holders = (token: string) => gateways.h2.ledger!.store.hospitalsForPatient(channel, token);
    await until('both anchors committed', async () => (await holders(h1Token)).length === 1 && (await holders(h2Token)).length === 1);
    assert.deepEqual(await holders(h1Token), ['h1']);
    assert.deepEqual(await holders(h2Token), ['h2']);
  });

  it('a member killed right after acknowledging writes anchors them after a restart and reaches the same head', async () => {
    const acknowledged = await Promise.all([h3Post(transactionOf(30, 'h3-kill-a')), h3Post(transactionOf(30, 'h3-kill-b'))]);
    for (const res of acknowledged) assert.equal(res.status, 200);
    h3.process!.kill('SIGKILL');
    await new Promise((r) => h3.process!.once('exit', r));
    // The others keep writing while h3 is down.
    const res = await supertest(gateways.h1.app).post('/fhir').set('Authorization', `Bearer ${tokens.h1}`).set('Content-Type', FHIR).send(JSON.stringify(transactionOf(10, 'h1-while-h3-down')));
    assert.equal(res.status, 200);
    await startH3();
    await until('h1 and h2 anchored everything', async () => (await fullyAnchored(gateways.h1)) && (await fullyAnchored(gateways.h2)));
    // Stop h3 cleanly, then look at its own stores.
    await until('h3 drained its outbox', async () => {
      const metrics = await (await fetch(`http://127.0.0.1:${h3.port}/metrics`)).text();
      return /medblock_anchor_in_flight 0\b/.test(metrics) && Number(/medblock_anchor_anchored_total (\d+)/.exec(metrics)?.[1]) > 0;
    });
    h3.process!.kill('SIGTERM');
    await new Promise((r) => h3.process!.once('exit', r));
    const h3Vault = openVault({ ...gateways.h1.config, dataDir: h3.dataDir, hospitalId: 'h3', masterKey: keySource(h3.dataDir, {}) });
    await h3Vault.init();
    await until('h3 anchored every acknowledged version', async () => (await h3Vault.unanchored({ limit: 1 })).length === 0, 5_000).finally(() => h3Vault.close());
    const h3Ledger = new SqliteLedgerStore(join(h3.dataDir, 'ledger.sqlite'));
    await h3Ledger.init();
    const channel = gateways.h1.ledger!.member.channel;
    const h3Head = (await h3Ledger.head(channel))!;
    await h3Ledger.close();
    await until('h1 reached h3\'s height', async () => ((await gateways.h1.ledger!.store.head(channel))?.number ?? -1) >= h3Head.number);
    const [h1Header] = await gateways.h1.ledger!.store.headers(channel, h3Head.number, h3Head.number);
    assert.equal(blockHeaderHash(h1Header), blockHeaderHash(h3Head), 'h3 committed the same chain as h1');
    const [h2Header] = await gateways.h2.ledger!.store.headers(channel, h3Head.number, h3Head.number);
    assert.equal(blockHeaderHash(h2Header), blockHeaderHash(h3Head));
  });

  it('marks forged envelopes and garbage on the topic invalid on every member, without forking', async () => {
    const channel = gateways.h1.ledger!.member.channel;
    const h3Consortium = loadMemberConsortium(consortiumDir, 'h3');
    const entries = [{ digest: 'ab'.repeat(32), type: 'Patient' }];
    // h3's key signs an envelope that names h1 as its creator; and bytes that are not an envelope at all.
    const impersonation = { ...createEnvelope(h3Consortium.self, { channel, type: 'anchor', payload: { entries } }), creator: 'h1' };
    const rogue = await KafkaOrderer.connect({ brokers: brokers.split(','), channel, replicationFactor: 1, minInsyncReplicas: 1 });
    const before = (await gateways.h1.ledger!.store.head(channel))!.number;
    await rogue.append([
      encodeChannelMessage({ kind: 'envelope', bytes: encodeEnvelope(impersonation) }),
      encodeChannelMessage({ kind: 'envelope', bytes: Buffer.from('{"not":"an envelope"}') }),
      Buffer.from('not even a channel message'),
    ]);
    await rogue.close();
    const verdicts = async (gateway: Gateway) => {
      const found: string[] = [];
      const head = (await gateway.ledger!.store.head(channel))!;
      for (let n = before + 1; n <= head.number; n++) {
        const block = (await gateway.ledger!.store.block(channel, n))!;
        block.validity.forEach((v) => found.push(v.valid ? 'valid' : v.reason));
      }
      return found;
    };
    await until('both rogue envelopes committed', async () => (await verdicts(gateways.h1)).filter((v) => v !== 'valid').length === 2);
    assert.deepEqual((await verdicts(gateways.h1)).filter((v) => v !== 'valid'), ['bad-signature', 'malformed']);
    assert.equal((await gateways.h1.ledger!.store.locate(channel, [entries[0].digest])).size, 0, 'an invalid envelope indexes nothing');
    await until('h2 at the same height', async () => (await gateways.h2.ledger!.store.head(channel))!.number >= (await gateways.h1.ledger!.store.head(channel))!.number);
    const height = (await gateways.h1.ledger!.store.head(channel))!.number;
    const [h1Header] = await gateways.h1.ledger!.store.headers(channel, height, height);
    const [h2Header] = await gateways.h2.ledger!.store.headers(channel, height, height);
    assert.equal(blockHeaderHash(h1Header), blockHeaderHash(h2Header));
    for (const id of ['h1', 'h2']) assert.equal(gateways[id].ledger!.member.status().divergences.length, 0);
  });

  it('raises the divergence alarm when a member attests a forged block, and stops anchoring', async () => {
    const channel = gateways.h1.ledger!.member.channel;
    const head = (await gateways.h1.ledger!.store.head(channel))!;
    // h3 (down now) claims a block with other contents: its key signs a header the others never built.
    const h3Consortium = loadMemberConsortium(consortiumDir, 'h3');
    const forged = createAttestation(h3Consortium.self, { ...head, dataHash: '00'.repeat(32) });
    const rogue = await KafkaOrderer.connect({ brokers: brokers.split(','), channel, replicationFactor: 1, minInsyncReplicas: 1 });
    await rogue.append([encodeChannelMessage({ kind: 'attestation', bytes: Buffer.from(canonicalize(forged)) })]);
    await rogue.close();
    for (const id of ['h1', 'h2']) {
      await until(`${id} raises the alarm`, () => gateways[id].ledger!.member.status().divergences.length > 0);
      const ready = await supertest(gateways[id].app).get('/readyz');
      assert.equal(ready.status, 503);
      assert.equal(ready.body.status, 'degraded');
      assert.match(ready.body.checks.ledger, new RegExp(`diverged at block ${head.number}`));
      const metrics = await supertest(gateways[id].app).get('/metrics');
      assert.match(metrics.text, /medblock_ledger_divergences 1/);
    }
    const before = (await gateways.h1.ledger!.store.head(channel))!.number;
    const res = await supertest(gateways.h1.app).post('/fhir/Patient').set('Authorization', `Bearer ${tokens.h1}`).set('Content-Type', FHIR).send(JSON.stringify({ resourceType: 'Patient' }));
    assert.equal(res.status, 201, 'the vault still accepts writes');
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal((await gateways.h1.store.unanchored({ limit: 10 })).length > 0, true, 'but nothing more is anchored while diverged');
    assert.equal((await gateways.h1.ledger!.store.head(channel))!.number >= before, true);
  });
});
