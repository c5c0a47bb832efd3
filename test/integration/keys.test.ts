/**
 * `medblock keys rotate` against a live gateway, on every adapter: online, resumable after a SIGKILL,
 * never re-encrypting a resource; the retired master key is gone from the key file afterwards.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { body, FHIR_JSON, forEachStore, type TestGateway } from '../support/gateway.ts';
import { createGateway } from '../../src/gateway.ts';
import type { EncryptedStore } from '../../src/vault/encrypted-store.ts';
import supertest from 'supertest';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'medblock.js');

function cliEnv(t: TestGateway): NodeJS.ProcessEnv {
  const { MEDBLOCK_MONGODB_URI: _m, MEDBLOCK_KAFKA_BROKERS: _k, MEDBLOCK_MASTER_KEY: _mk, ...rest } = process.env;
  const env: NodeJS.ProcessEnv = { ...rest, MEDBLOCK_DATA_DIR: t.dataDir, MEDBLOCK_HOSPITAL_ID: t.gateway.config.hospitalId };
  const mongodb = t.gateway.config.mongodb;
  if (mongodb) env.MEDBLOCK_MONGODB_URI = `${mongodb.uri.replace(/\/?$/, '')}/${mongodb.database}`;
  return env;
}

function keyFile(t: TestGateway) {
  const file = join(t.dataDir, 'keys', 'master-keys.json');
  return { file, ring: JSON.parse(readFileSync(file, 'utf8')) as { current: string; retiring: string[]; keys: Record<string, string> } };
}

forEachStore((start, store) => {
  describe(`master key rotation (${store})`, () => {
    let t: TestGateway;
    const patients: string[] = [];
    const post = (path: string, resource: object) =>
      t.http.post(`/fhir/${path}`).set('Authorization', `Bearer ${t.admin}`).set('Content-Type', FHIR_JSON).send(JSON.stringify(resource));

    before(async () => {
      t = await start();
      // Forty patients, each with an Observation: forty-one data keys with the index key.
      for (let i = 0; i < 40; i++) {
        const p = body(await post('Patient', { resourceType: 'Patient', identifier: [{ system: 'urn:rotation', value: `p${i}` }] }));
        patients.push(p.id);
        await post('Observation', { resourceType: 'Observation', status: 'final', code: { text: 'pulse' }, subject: { reference: `Patient/${p.id}` } });
      }
    });
    after(async () => t?.close());

    it('re-wraps every data key online, resumes after a SIGKILL, and retires the old master key', async () => {
      const vault = t.gateway.store as EncryptedStore;
      const before = keyFile(t);
      assert.equal(statSync(before.file).mode & 0o777, 0o600);
      const oldMaster = before.ring.current;
      const sealedBefore = await vault.inner.current('Patient', patients[0]);

      // Slow rotation (one key per round trip, 20/s), killed after its first progress report.
      const child = spawn(process.execPath, [BIN, 'keys', 'rotate', '--batch-size', '1', '--max-rate', '20'], { env: cliEnv(t) });
      await new Promise<void>((resolve, reject) => {
        child.stderr.on('data', (chunk: Buffer) => {
          if (/re-wrapped [1-9]/.test(chunk.toString())) child.kill('SIGKILL');
        });
        child.on('exit', () => resolve());
        child.on('error', reject);
      });
      const midway = keyFile(t);
      assert.deepEqual(midway.ring.retiring, [oldMaster]);
      assert.notEqual(midway.ring.current, oldMaster);
      const status = spawnSync(process.execPath, [BIN, 'keys', 'status'], { env: cliEnv(t), encoding: 'utf8' });
      assert.equal(status.status, 1, status.stderr);
      assert.match(status.stdout, /data keys not yet under the current master key: [1-9]/);

      // Online: the running gateway reads keys under either master and creates new ones under the new one.
      for (const id of patients) assert.equal((await t.http.get(`/fhir/Patient/${id}`).set('Authorization', `Bearer ${t.admin}`)).status, 200);
      const during = body(await post('Patient', { resourceType: 'Patient', identifier: [{ system: 'urn:rotation', value: 'during' }] }));
      const duringKey = await vault.inner.getKey(vault.keyIdFor(`Patient/${during.id}`));
      assert.equal(duringKey?.masterKeyId, midway.ring.current);

      const resumed = spawnSync(process.execPath, [BIN, 'keys', 'rotate'], { env: cliEnv(t), encoding: 'utf8', timeout: 120_000 });
      assert.equal(resumed.status, 0, resumed.stderr);
      assert.match(resumed.stdout, /resumed and finished rotation to master key mk-\w+: \d+ data keys re-wrapped/);
      const done = keyFile(t);
      assert.deepEqual(Object.keys(done.ring.keys), [midway.ring.current]);
      assert.deepEqual(done.ring.retiring, []);
      assert.equal(spawnSync(process.execPath, [BIN, 'keys', 'status'], { env: cliEnv(t), encoding: 'utf8' }).status, 0);
      assert.deepEqual(await vault.inner.listKeys({ notWrappedUnder: done.ring.current, limit: 1000 }), []);

      // No resource was re-encrypted: the stored ciphertext is byte for byte the same.
      const sealedAfter = await vault.inner.current('Patient', patients[0]);
      assert.deepEqual(Buffer.from(sealedAfter!.content!), Buffer.from(sealedBefore!.content!));

      // A fresh gateway with only the new master key reads everything.
      const fresh = await createGateway({ ...t.gateway.config, port: 0 });
      try {
        const http = supertest(fresh.app);
        for (const id of [...patients, during.id]) {
          assert.equal((await http.get(`/fhir/Patient/${id}`).set('Authorization', `Bearer ${t.admin}`)).status, 200);
        }
        const observations = body(await http.get('/fhir/Observation?_summary=count').set('Authorization', `Bearer ${t.admin}`));
        assert.equal(observations.total, patients.length);
      } finally {
        await fresh.close();
      }
    });

    it('refuses to rotate a master key given in the environment', () => {
      const res = spawnSync(process.execPath, [BIN, 'keys', 'rotate'], {
        env: { ...cliEnv(t), MEDBLOCK_MASTER_KEY: Buffer.alloc(32, 7).toString('base64') },
        encoding: 'utf8',
      });
      assert.equal(res.status, 2);
      assert.match(res.stderr, /rotation needs a key file/);
    });
  });
});
